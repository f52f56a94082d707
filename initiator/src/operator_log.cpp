// The initiator's log for the operator (Options::log): failures counted and
// summed up at most once a second, capacity changes, and the text helpers
// they use.
//
// Thread-safety: loop thread only (log() calls Options::log there).
#include <cstdio>

#include "initiator_impl.h"

namespace hyperscsi::initiator {

std::string Initiator::Impl::who() const {
  return "target '" + target_.name + "' (" + io::to_string(target_.mac) + ")";
}

// "60", "1.5": whole seconds without a fraction.
std::string Initiator::Impl::seconds_text(proto::Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  char b[32];
  if (ms % 1000 == 0)
    std::snprintf(b, sizeof b, "%lld", static_cast<long long>(ms / 1000));
  else
    std::snprintf(b, sizeof b, "%.3g", static_cast<double>(ms) / 1000.0);
  return b;
}

std::string Initiator::Impl::hex32(uint32_t v) {
  char b[12];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

void Initiator::Impl::log(LogLevel level, const std::string& text) const {
  if (options_.log) options_.log(level, text);
}

void Initiator::Impl::note_unit_attention(uint16_t lun, const std::vector<uint8_t>& sense) {
  const scsi::SenseInfo s = scsi::parse_sense(sense);
  if (s.asc == 0x2a && s.ascq == 0x09)
    log(LogLevel::kWarning, "LUN " + std::to_string(lun) + " of " + who() +
                                ": capacity changed (unit attention CAPACITY DATA HAS "
                                "CHANGED); the attached size stays until it is attached again");
}

// Counts a command completed without GOOD; logs at most one line a second.
void Initiator::Impl::note_failure(const ScsiCommand& cmd, const CommandResult& r) {
  ++stats_.failed;
  if (r.error == CompletionError::kDeadTime) ++stats_.timed_out;
  if (r.error == CompletionError::kIdentityMismatch) ++stats_.fenced;
  if (r.error == CompletionError::kShutdown) return;  // counted, not news
  ++fail_log_.count;
  if (r.error == CompletionError::kDeadTime) ++fail_log_.timed_out;
  fail_log_.last = "LUN " + std::to_string(cmd.lun) + " " + opcode_name(cmd.cdb) + ": " +
                   (r.error == CompletionError::kIdentityMismatch
                        ? std::string("LUN fenced (identity mismatch, logged above)")
                        : r.describe());
  flush_failure_log(SteadyClock::now());
}

void Initiator::Impl::flush_failure_log(TimePoint now) {
  if (fail_log_.count == 0 || now - fail_log_.logged < std::chrono::seconds(1)) return;
  std::string line = fail_log_.count == 1
                         ? (fail_log_.timed_out ? "command timed out: " : "command failed: ")
                         : std::to_string(fail_log_.count) + " commands failed (" +
                               std::to_string(fail_log_.timed_out) + " timed out), last: ";
  log(LogLevel::kError, line + fail_log_.last);
  fail_log_.count = fail_log_.timed_out = 0;
  fail_log_.logged = now;
}

std::string Initiator::Impl::opcode_name(const std::vector<uint8_t>& cdb) {
  if (cdb.empty()) return "(no CDB)";
  switch (cdb[0]) {
    case 0x28:
      return "READ(10)";
    case 0x88:
      return "READ(16)";
    case 0x2a:
      return "WRITE(10)";
    case 0x8a:
      return "WRITE(16)";
    case 0x35:
      return "SYNCHRONIZE CACHE(10)";
    case 0x91:
      return "SYNCHRONIZE CACHE(16)";
    case 0x42:
      return "UNMAP";
    case 0x12:
      return "INQUIRY";
    case 0x25:
      return "READ CAPACITY(10)";
    case 0x9e:
      return "READ CAPACITY(16)";
    default: {
      char b[16];
      std::snprintf(b, sizeof b, "opcode 0x%02x", cdb[0]);
      return b;
    }
  }
}

}  // namespace hyperscsi::initiator

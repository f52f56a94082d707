#include "hyperscsi/scsi/logical_unit.h"

#include <algorithm>
#include <cstring>

#include "cdb.h"
#include "hyperscsi/scsi/lun_map.h"
#include "hyperscsi/scsi/opcodes.h"
#include "inquiry.h"
#include "mode_pages.h"
#include "opcodes.h"
#include "range_lock.h"
#include "reservations.h"

namespace hyperscsi::scsi {

using store::IoStatus;

struct LogicalUnit::Cmd {
  std::vector<std::uint8_t> cdb;  // exactly the CDB length of the opcode
  std::span<const std::uint8_t> data_out;
  std::uint32_t expected_in = 0;
  Nexus nexus;
  CommandCallback done;
  CommandResult result;
  std::size_t consumed_out = 0;  // data-out bytes used by the command
  bool sender_busy = false;      // CommandRequest::sender_busy

  // Media commands.
  std::uint64_t lba = 0;
  std::uint64_t blocks = 0;
  bool fua = false;
  std::uint8_t bytchk = 0;
  bool unmap_instead = false;
  std::vector<std::uint8_t> scratch;                             // read-back buffers
  std::shared_ptr<const std::vector<std::uint8_t>> pattern;      // WRITE SAME data
  std::vector<std::pair<std::uint64_t, std::uint64_t>> extents;  // UNMAP (bytes)
  std::size_t pending_io = 0;
  IoStatus first_error = IoStatus::kOk;
  std::optional<RangeLock::Handle> lock;
  bool finished = false;
};

namespace {

AccessClass classify(std::uint8_t opcode, bool* known) {
  *known = true;
  switch (opcode) {
    case op::kInquiry:
    case op::kReportLuns:
    case op::kRequestSense:
    case op::kMaintenanceIn:
      return AccessClass::kAlways;
    case op::kTestUnitReady:
    case op::kReadCapacity10:
    case op::kServiceActionIn16:
    case op::kPersistentReserveIn:
    case op::kPersistentReserveOut:
    case op::kPreventAllowMediumRemoval:
      return AccessClass::kInfo;
    case op::kRead6:
    case op::kRead10:
    case op::kRead12:
    case op::kRead16:
    case op::kVerify10:
    case op::kVerify16:
    case op::kModeSense6:
    case op::kModeSense10:
      return AccessClass::kRead;
    case op::kWrite6:
    case op::kWrite10:
    case op::kWrite12:
    case op::kWrite16:
    case op::kWriteSame10:
    case op::kWriteSame16:
    case op::kUnmap:
    case op::kCompareAndWrite:
    case op::kSynchronizeCache10:
    case op::kSynchronizeCache16:
    case op::kModeSelect6:
    case op::kModeSelect10:
    case op::kStartStopUnit:
      return AccessClass::kWrite;
    case op::kReserve6:
    case op::kRelease6:
      return AccessClass::kLegacy;
    default:
      *known = false;
      return AccessClass::kAlways;
  }
}

bool needs_medium(std::uint8_t opcode, AccessClass ac) {
  if (opcode == op::kTestUnitReady) return true;
  if (opcode == op::kStartStopUnit || opcode == op::kModeSense6 || opcode == op::kModeSense10 ||
      opcode == op::kModeSelect6 || opcode == op::kModeSelect10) {
    return false;
  }
  return ac == AccessClass::kRead || ac == AccessClass::kWrite;
}

Sense sense_for(IoStatus s, bool write) {
  switch (s) {
    case IoStatus::kNoSpace:
      return sense::space_allocation_failed();
    case IoStatus::kReadOnly:
      return sense::write_protected();
    case IoStatus::kOutOfRange:
      return sense::lba_out_of_range();
    case IoStatus::kUnsupported:
      return sense::internal_target_failure();
    case IoStatus::kTimedOut:
      return sense::command_timeout();
    case IoStatus::kUnavailable:
      return sense::not_ready_manual_intervention();
    case IoStatus::kMiscompare:
      return sense::miscompare(0);
    case IoStatus::kMediumError:
    case IoStatus::kOk:
      break;
  }
  return write ? sense::write_error() : sense::unrecovered_read_error();
}

std::span<std::byte> as_store_buf(std::vector<std::uint8_t>& v) {
  return std::as_writable_bytes(std::span<std::uint8_t>(v));
}
std::span<const std::byte> as_store_buf(std::span<const std::uint8_t> v) {
  return std::as_bytes(v);
}

constexpr std::uint64_t kWriteSameChunkBytes = 1 << 20;

// Byte offset of the TRANSFER LENGTH field for READ/WRITE/VERIFY CDBs.
std::uint16_t transfer_length_field(std::size_t cdb_len) {
  switch (cdb_len) {
    case 6:
      return 4;
    case 10:
      return 7;
    case 12:
      return 6;
    default:
      return 10;
  }
}

}  // namespace

LogicalUnit::LogicalUnit(LuConfig config, std::unique_ptr<store::BlockStore> store)
    : config_(std::move(config)),
      store_(std::move(store)),
      reservations_(std::make_unique<Reservations>()),
      range_lock_(std::make_unique<RangeLock>()),
      wce_(config_.write_cache_enabled) {
  if (config_.max_transfer_bytes < store_->block_size()) {
    config_.max_transfer_bytes = store_->block_size();
  }
}

LogicalUnit::~LogicalUnit() {
  // Completions reference this LU: run them while every member is still alive.
  if (store_) store_->drain();
}

std::array<std::uint8_t, 8> LogicalUnit::naa_identifier() const {
  return make_naa_identifier(config_, store_->identity());
}

LogicalUnit::NexusState& LogicalUnit::nexus_state(const Nexus& n) {
  for (auto& s : nexuses_) {
    if (s.nexus == n) return s;
  }
  nexuses_.push_back(NexusState{n, {}});
  nexuses_.back().unit_attentions.push_back(sense::power_on_or_reset());
  return nexuses_.back();
}

namespace {
void push_ua(std::deque<Sense>& q, const Sense& s) {
  if (std::find(q.begin(), q.end(), s) != q.end()) return;
  if (q.size() >= 8) q.pop_back();  // keep the oldest (highest precedence) conditions
  q.push_back(s);
}
}  // namespace

void LogicalUnit::queue_ua_for_initiator(const std::string& initiator, const Sense& s,
                                         const Nexus* except) {
  for (auto& st : nexuses_) {
    if (st.nexus.initiator == initiator && !(except && st.nexus == *except)) {
      push_ua(st.unit_attentions, s);
    }
  }
}

void LogicalUnit::queue_ua_all(const Sense& s, const Nexus* except) {
  for (auto& st : nexuses_) {
    if (!(except && st.nexus == *except)) push_ua(st.unit_attentions, s);
  }
}

void LogicalUnit::reset() {
  reservations_->reset_legacy();
  queue_ua_all(sense::lu_reset_occurred());
}

void LogicalUnit::capacity_changed() {
  queue_ua_all(sense::capacity_changed());
}

void LogicalUnit::nexus_gone(const Nexus& nexus) {
  nexuses_.erase(std::remove_if(nexuses_.begin(), nexuses_.end(),
                                [&](const NexusState& s) { return s.nexus == nexus; }),
                 nexuses_.end());
  if (owner_ == nexus) owner_.reset();
  fenced_.erase(std::remove(fenced_.begin(), fenced_.end(), nexus), fenced_.end());
}

std::vector<Nexus> LogicalUnit::nexuses() const {
  std::vector<Nexus> out;
  for (const auto& s : nexuses_) out.push_back(s.nexus);
  for (const auto& n : fenced_)
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  return out;
}

void LogicalUnit::succeed(const std::vector<Nexus>& nexuses, const std::optional<Nexus>& owner,
                          Succession how, bool capacity_changed) {
  for (const Nexus& n : nexuses) {
    if (how == Succession::kOtherData) {
      if (std::find(fenced_.begin(), fenced_.end(), n) == fenced_.end()) fenced_.push_back(n);
      continue;
    }
    NexusState& st = nexus_state(n);  // starts with POWER ON OR RESET
    if (capacity_changed) st.unit_attentions.assign(1, sense::capacity_changed());
  }
  if (how == Succession::kSameData && config_.exclusive && owner) owner_ = owner;
}

void LogicalUnit::execute(const CommandRequest& req, CommandCallback done) {
  auto c = std::make_shared<Cmd>();
  c->cdb.assign(req.cdb.begin(), req.cdb.end());
  c->data_out = req.data_out;
  c->expected_in = req.expected_data_in;
  c->nexus = req.nexus;
  c->sender_busy = req.sender_busy;
  c->done = std::move(done);
  ++in_flight_;
  // A store that grew or shrank under us (an rbd image resized elsewhere):
  // every nexus hears of it once, this command included.
  if (store_->take_capacity_change()) capacity_changed();
  dispatch(c);
}

void LogicalUnit::finish(const std::shared_ptr<Cmd>& c) {
  if (c->finished) return;
  c->finished = true;
  CommandResult& r = c->result;
  if (r.residual == Residual::kNone) {
    if (!c->data_out.empty()) {
      if (c->consumed_out < c->data_out.size()) {
        r.residual = Residual::kUnderflow;
        r.residual_count = static_cast<std::uint32_t>(c->data_out.size() - c->consumed_out);
      }
    } else if (r.data_size() < c->expected_in) {
      r.residual = Residual::kUnderflow;
      r.residual_count = static_cast<std::uint32_t>(c->expected_in - r.data_size());
    }
  }
  if (c->lock) {
    const RangeLock::Handle h = *c->lock;
    c->lock.reset();
    range_lock_->release(h);  // may start waiting commands
  }
  --in_flight_;
  auto done = std::move(c->done);
  if (done) done(std::move(c->result));
}

void LogicalUnit::fail(const std::shared_ptr<Cmd>& c, const Sense& s) {
  c->result.status = status::kCheckCondition;
  c->result.sense = encode_fixed_sense(s);
  c->result.data_in.clear();
  c->result.read_buffer.reset();
  c->result.read_size = 0;
  c->result.data_in_offset = 0;
  finish(c);
}

void LogicalUnit::good_data(const std::shared_ptr<Cmd>& c, std::vector<std::uint8_t> data,
                            std::uint32_t allocation_length, std::uint32_t headroom) {
  // The allocation length truncates silently (SPC-4 4.2.5.6); the expected
  // length from the transport decides over/underflow.
  if (data.size() - headroom > allocation_length) data.resize(headroom + allocation_length);
  CommandResult& r = c->result;
  r.status = status::kGood;
  if (data.size() - headroom > c->expected_in) {
    r.residual = Residual::kOverflow;
    r.residual_count = static_cast<std::uint32_t>(data.size() - headroom - c->expected_in);
    data.resize(headroom + c->expected_in);
  }
  r.data_in = std::move(data);
  r.data_in_offset = headroom;
  finish(c);
}

bool LogicalUnit::take_data_out(const std::shared_ptr<Cmd>& c, std::size_t needed) {
  if (c->data_out.size() < needed) {
    c->result.residual = Residual::kOverflow;
    c->result.residual_count =
        static_cast<std::uint32_t>(std::min<std::size_t>(needed - c->data_out.size(), UINT32_MAX));
    fail(c, sense::invalid_field_in_cdb(0));
    return false;
  }
  c->consumed_out = needed;
  return true;
}

void LogicalUnit::with_range_lock(const std::shared_ptr<Cmd>& c, std::uint64_t lba,
                                  std::uint64_t blocks, bool exclusive,
                                  void (LogicalUnit::*body)(const std::shared_ptr<Cmd>&)) {
  range_lock_->acquire(lba, blocks, exclusive, [this, c, body](RangeLock::Handle h) {
    c->lock = h;
    (this->*body)(c);
  });
}

void LogicalUnit::dispatch(const std::shared_ptr<Cmd>& c) {
  AccessClass ac{};
  if (!check_cdb(c, ac)) return;
  if (!check_access(c, ac)) return;
  execute_opcode(c);
}

// The opcode is one we implement, the CDB long enough (trailing padding cut)
// and without NACA / LINK. False: the command was failed.
bool LogicalUnit::check_cdb(const std::shared_ptr<Cmd>& c, AccessClass& ac) {
  if (c->cdb.empty()) {
    fail(c, sense::invalid_opcode());
    return false;
  }
  const std::uint8_t opcode = c->cdb[0];
  bool known = false;
  ac = classify(opcode, &known);
  if (!known) {
    fail(c, sense::invalid_opcode());
    return false;
  }
  const std::size_t len = op::cdb_length(opcode);
  if (c->cdb.size() < len) {
    fail(c, sense::invalid_field_in_cdb(static_cast<std::uint16_t>(c->cdb.size())));
    return false;
  }
  c->cdb.resize(len);  // trailing padding from the transport is ignored
  const std::span<const std::uint8_t> cdb(c->cdb);
  if (cdb[len - 1] & 0x05) {  // NACA / LINK are not supported
    fail(c, sense::invalid_field_in_cdb(static_cast<std::uint16_t>(len - 1),
                                        (cdb[len - 1] & 0x04) ? 2 : 0));
    return false;
  }
  return true;
}

// The nexus may run the command now: not fenced, no unit attention pending,
// no reservation conflict, the medium started if it needs it. False: the
// command was finished (failed or RESERVATION CONFLICT).
bool LogicalUnit::check_access(const std::shared_ptr<Cmd>& c, AccessClass ac) {
  const std::uint8_t opcode = c->cdb[0];
  // A session that knew another disk under this LUN number never reaches
  // this one's data (the initiator checks the identity when it logs in again).
  if (ac != AccessClass::kAlways && !fenced_.empty() &&
      std::find(fenced_.begin(), fenced_.end(), c->nexus) != fenced_.end()) {
    fail(c, sense::lun_not_supported());
    return false;
  }
  NexusState& ns = nexus_state(c->nexus);
  if (opcode != op::kInquiry && opcode != op::kReportLuns && opcode != op::kRequestSense &&
      !ns.unit_attentions.empty()) {
    const Sense ua = ns.unit_attentions.front();
    ns.unit_attentions.pop_front();
    fail(c, ua);
    return false;
  }
  if (config_.exclusive && ac != AccessClass::kAlways) {
    if (!owner_) owner_ = c->nexus;
    if (*owner_ != c->nexus) {
      c->result.status = status::kReservationConflict;
      finish(c);
      return false;
    }
  }
  if (reservations_->conflicts(c->nexus.initiator, ac, opcode)) {
    c->result.status = status::kReservationConflict;
    finish(c);
    return false;
  }
  if (!started_ && needs_medium(opcode, ac)) {
    fail(c, sense::not_ready_stopped());
    return false;
  }
  return true;
}

// Runs a command that passed the checks: the opcode's handler.
void LogicalUnit::execute_opcode(const std::shared_ptr<Cmd>& c) {
  const std::uint8_t opcode = c->cdb[0];
  const std::span<const std::uint8_t> cdb(c->cdb);
  switch (opcode) {
    case op::kTestUnitReady:
      c->result.status = status::kGood;
      return finish(c);
    case op::kRequestSense:
      return do_request_sense(c);
    case op::kInquiry:
      return do_inquiry(c);
    case op::kReadCapacity10:
      return do_read_capacity10(c);
    case op::kServiceActionIn16:
      return do_service_action_in16(c);
    case op::kPreventAllowMediumRemoval:
      // The medium of a disk cannot be removed (RMB = 0 in INQUIRY): there is
      // nothing to prevent or allow, so every PREVENT value is a no-op with
      // GOOD status, what targets for fixed disks answer.
      c->result.status = status::kGood;
      return finish(c);
    case op::kRead6: {
      const std::uint64_t lba = be24(cdb, 1) & 0x1FFFFF;
      const std::uint64_t n = cdb[4] == 0 ? 256 : cdb[4];
      return do_read(c, lba, n, 0);
    }
    case op::kRead10:
      return do_read(c, be32(cdb, 2), be16(cdb, 7), cdb[1] >> 5);
    case op::kRead12:
      return do_read(c, be32(cdb, 2), be32(cdb, 6), cdb[1] >> 5);
    case op::kRead16:
      return do_read(c, be64(cdb, 2), be32(cdb, 10), cdb[1] >> 5);
    case op::kWrite6: {
      const std::uint64_t lba = be24(cdb, 1) & 0x1FFFFF;
      const std::uint64_t n = cdb[4] == 0 ? 256 : cdb[4];
      return do_write(c, lba, n, false, 0);
    }
    case op::kWrite10:
      return do_write(c, be32(cdb, 2), be16(cdb, 7), (cdb[1] & 0x08) != 0, cdb[1] >> 5);
    case op::kWrite12:
      return do_write(c, be32(cdb, 2), be32(cdb, 6), (cdb[1] & 0x08) != 0, cdb[1] >> 5);
    case op::kWrite16:
      return do_write(c, be64(cdb, 2), be32(cdb, 10), (cdb[1] & 0x08) != 0, cdb[1] >> 5);
    case op::kVerify10:
      return do_verify(c, be32(cdb, 2), be16(cdb, 7), cdb[1]);
    case op::kVerify16:
      return do_verify(c, be64(cdb, 2), be32(cdb, 10), cdb[1]);
    case op::kSynchronizeCache10:
      return do_sync_cache(c, be32(cdb, 2), be16(cdb, 7));
    case op::kSynchronizeCache16:
      return do_sync_cache(c, be64(cdb, 2), be32(cdb, 10));
    case op::kModeSense6:
      return do_mode_sense(c, false);
    case op::kModeSense10:
      return do_mode_sense(c, true);
    case op::kModeSelect6:
      return do_mode_select(c, false);
    case op::kModeSelect10:
      return do_mode_select(c, true);
    case op::kStartStopUnit:
      return do_start_stop(c);
    case op::kUnmap:
      return do_unmap(c);
    case op::kWriteSame10:
      return do_write_same(c, false);
    case op::kWriteSame16:
      return do_write_same(c, true);
    case op::kCompareAndWrite:
      return do_compare_and_write(c);
    case op::kPersistentReserveIn:
      return do_pr_in(c);
    case op::kPersistentReserveOut:
      return do_pr_out(c);
    case op::kReserve6:
      return do_reserve6(c);
    case op::kRelease6:
      return do_release6(c);
    case op::kReportLuns: {  // a unit on its own reports itself
      const std::uint64_t self = config_.lun;
      c->result = report_luns(cdb, std::span<const std::uint64_t>(&self, 1), c->expected_in);
      return finish(c);
    }
    case op::kMaintenanceIn:
      if ((cdb[1] & 0x1F) != op::kSaReportSupportedOpcodes) {
        return fail(c, sense::invalid_field_in_cdb(1, 4));
      }
      return do_report_opcodes(c);
    default:
      return fail(c, sense::invalid_opcode());
  }
}

// SERVICE ACTION IN(16): READ CAPACITY(16) and GET LBA STATUS.
void LogicalUnit::do_service_action_in16(const std::shared_ptr<Cmd>& c) {
  const std::span<const std::uint8_t> cdb(c->cdb);
  switch (cdb[1] & 0x1F) {
    case op::kSaReadCapacity16:
      return do_read_capacity16(c);
    case op::kSaGetLbaStatus:
      return do_get_lba_status(c);
    default:
      return fail(c, sense::invalid_field_in_cdb(1, 4));
  }
}

void LogicalUnit::do_reserve6(const std::shared_ptr<Cmd>& c) {
  const std::span<const std::uint8_t> cdb(c->cdb);
  if (cdb[1] != 0 || cdb[2] != 0 || cdb[3] != 0 || cdb[4] != 0) {
    return fail(c, sense::invalid_field_in_cdb(1));
  }
  if (!reservations_->reserve6(c->nexus.initiator)) {
    c->result.status = status::kReservationConflict;
  } else {
    c->result.status = status::kGood;
  }
  return finish(c);
}

void LogicalUnit::do_release6(const std::shared_ptr<Cmd>& c) {
  reservations_->release6(c->nexus.initiator);
  c->result.status = status::kGood;
  return finish(c);
}

void LogicalUnit::do_request_sense(const std::shared_ptr<Cmd>& c) {
  NexusState& ns = nexus_state(c->nexus);
  Sense s;
  if (!ns.unit_attentions.empty()) {
    s = ns.unit_attentions.front();
    ns.unit_attentions.pop_front();
  } else if (!started_) {
    s = sense::not_ready_stopped();
  }
  good_data(c, encode_fixed_sense(s), c->cdb[4]);
}

void LogicalUnit::do_inquiry(const std::shared_ptr<Cmd>& c) {
  const auto& cdb = c->cdb;
  if (cdb[1] & 0x02) return fail(c, sense::invalid_field_in_cdb(1, 1));  // CMDDT
  if (cdb[1] & 0xFC) return fail(c, sense::invalid_field_in_cdb(1));
  const std::uint32_t alloc = be16(cdb, 3);
  if ((cdb[1] & 0x01) == 0) {
    if (cdb[2] != 0) return fail(c, sense::invalid_field_in_cdb(2));
    return good_data(c, standard_inquiry_data(config_), alloc);
  }
  auto page = vpd_page(cdb[2], config_, *store_, naa_identifier());
  if (!page) return fail(c, sense::invalid_field_in_cdb(2));
  good_data(c, std::move(*page), alloc);
}

void LogicalUnit::do_read_capacity10(const std::shared_ptr<Cmd>& c) {
  const auto& cdb = c->cdb;
  if ((cdb[8] & 0x01) == 0 && be32(cdb, 2) != 0) return fail(c, sense::invalid_field_in_cdb(2));
  std::vector<std::uint8_t> d(8, 0);
  const std::uint64_t last = store_->num_blocks() - 1;
  put32(d, 0, last > 0xFFFFFFFFull ? 0xFFFFFFFFu : static_cast<std::uint32_t>(last));
  put32(d, 4, store_->block_size());
  good_data(c, std::move(d), 8);
}

void LogicalUnit::do_read_capacity16(const std::shared_ptr<Cmd>& c) {
  std::vector<std::uint8_t> d(32, 0);
  put64(d, 0, store_->num_blocks() - 1);
  put32(d, 8, store_->block_size());
  if (store_->supports_unmap()) d[14] = 0x80;        // LBPME
  if (store_->unmapped_reads_zero()) d[14] |= 0x40;  // LBPRZ
  good_data(c, std::move(d), be32(c->cdb, 10));
}

void LogicalUnit::do_get_lba_status(const std::shared_ptr<Cmd>& c) {
  // SBC-3 5.7: one LBA status descriptor for the run starting at the LBA.
  const std::uint64_t lba = be64(c->cdb, 2);
  const std::uint64_t blocks = store_->num_blocks();
  if (lba >= blocks) return fail(c, sense::lba_out_of_range());
  const std::uint32_t bs = store_->block_size();
  bool mapped = true;
  std::uint64_t run = blocks - lba;
  if (store_->supports_unmap()) {  // without it every block is mapped
    if (const auto a = store_->allocation_at(lba * bs)) {
      mapped = a->allocated;
      run = std::clamp<std::uint64_t>(a->length / bs, 1, blocks - lba);
    }
  }
  std::vector<std::uint8_t> d(24, 0);
  put32(d, 0, 20);  // parameter data length: the bytes after this field
  put64(d, 8, lba);
  put32(d, 16, static_cast<std::uint32_t>(std::min<std::uint64_t>(run, 0xFFFFFFFFu)));
  d[20] = mapped ? 0x00 : 0x01;  // PROVISIONING STATUS: mapped / deallocated
  good_data(c, std::move(d), be32(c->cdb, 10));
}

void LogicalUnit::do_read(const std::shared_ptr<Cmd>& c, std::uint64_t lba, std::uint64_t blocks,
                          std::uint8_t protect) {
  const std::uint32_t bs = store_->block_size();
  if (protect != 0) return fail(c, sense::invalid_field_in_cdb(1, 7));
  if (blocks * bs > config_.max_transfer_bytes) {
    return fail(c, sense::invalid_field_in_cdb(transfer_length_field(c->cdb.size())));
  }
  if (!range_ok(lba, blocks, store_->num_blocks())) return fail(c, sense::lba_out_of_range());
  if (blocks == 0) {
    c->result.status = status::kGood;
    return finish(c);
  }
  c->lba = lba;
  c->blocks = blocks;
  with_range_lock(c, lba, blocks, false, &LogicalUnit::run_read);
}

void LogicalUnit::run_read(const std::shared_ptr<Cmd>& c) {
  const std::uint32_t bs = store_->block_size();
  // The data lands after the transport's header room: the reply goes out
  // from this buffer without another copy.
  const std::uint32_t room = config_.reply_headroom;
  const std::size_t length = c->blocks * bs;
  store_->set_read_offload(c->sender_busy);
  if (room == 0) {
    c->scratch.resize(length);
    store_->submit_read(c->lba * bs, as_store_buf(c->scratch), [this, c](IoStatus s) {
      if (s != IoStatus::kOk) return fail(c, sense_for(s, false));
      const auto n = static_cast<std::uint32_t>(c->scratch.size());
      good_data(c, std::move(c->scratch), n);
    });
    return;
  }
  // Not zero-filled: a successful read writes every data byte (a store that
  // reads short reports an error, and then the buffer is dropped unsent);
  // the headroom is zeroed, so no byte of it is ever uninitialised either.
  std::shared_ptr<std::uint8_t[]> buf =
      std::make_shared_for_overwrite<std::uint8_t[]>(room + length);
  std::memset(buf.get(), 0, room);
  const auto data = std::span<std::uint8_t>(buf.get() + room, length);
  store_->submit_read(c->lba * bs, std::as_writable_bytes(data),
                      [this, c, room, length, buf = std::move(buf)](IoStatus s) mutable {
                        if (s != IoStatus::kOk) return fail(c, sense_for(s, false));
                        good_read(c, std::move(buf), length, room);
                      });
}

void LogicalUnit::good_read(const std::shared_ptr<Cmd>& c, std::shared_ptr<std::uint8_t[]> buf,
                            std::size_t length, std::uint32_t headroom) {
  // As good_data(), without a copy: an overflow only shortens the view.
  CommandResult& r = c->result;
  r.status = status::kGood;
  if (length > c->expected_in) {
    r.residual = Residual::kOverflow;
    r.residual_count = static_cast<std::uint32_t>(length - c->expected_in);
    length = c->expected_in;
  }
  r.read_buffer = std::move(buf);
  r.read_size = headroom + length;
  r.data_in_offset = headroom;
  finish(c);
}

void LogicalUnit::do_write(const std::shared_ptr<Cmd>& c, std::uint64_t lba, std::uint64_t blocks,
                           bool fua, std::uint8_t protect) {
  const std::uint32_t bs = store_->block_size();
  if (protect != 0) return fail(c, sense::invalid_field_in_cdb(1, 7));
  if (blocks * bs > config_.max_transfer_bytes) {
    return fail(c, sense::invalid_field_in_cdb(transfer_length_field(c->cdb.size())));
  }
  if (!range_ok(lba, blocks, store_->num_blocks())) return fail(c, sense::lba_out_of_range());
  if (store_->read_only()) return fail(c, sense::write_protected());
  if (!take_data_out(c, blocks * bs)) return;
  if (blocks == 0) {
    c->result.status = status::kGood;
    return finish(c);
  }
  c->lba = lba;
  c->blocks = blocks;
  c->fua = fua || !wce_;  // without a write cache every write is write-through
  with_range_lock(c, lba, blocks, false, &LogicalUnit::run_write);
}

void LogicalUnit::run_write(const std::shared_ptr<Cmd>& c) {
  const std::uint32_t bs = store_->block_size();
  store_->submit_write(c->lba * bs, as_store_buf(c->data_out.first(c->blocks * bs)), c->fua,
                       [this, c](IoStatus s) {
                         if (s != IoStatus::kOk) return fail(c, sense_for(s, true));
                         c->result.status = status::kGood;
                         finish(c);
                       });
}

void LogicalUnit::do_verify(const std::shared_ptr<Cmd>& c, std::uint64_t lba, std::uint64_t blocks,
                            std::uint8_t byte1) {
  const std::uint32_t bs = store_->block_size();
  if (byte1 >> 5) return fail(c, sense::invalid_field_in_cdb(1, 7));
  const std::uint8_t bytchk = (byte1 >> 1) & 0x03;
  if (bytchk == 2) return fail(c, sense::invalid_field_in_cdb(1, 2));
  if (blocks * bs > config_.max_transfer_bytes) {
    return fail(c, sense::invalid_field_in_cdb(transfer_length_field(c->cdb.size())));
  }
  if (!range_ok(lba, blocks, store_->num_blocks())) return fail(c, sense::lba_out_of_range());
  const std::uint64_t needed = bytchk == 0 ? 0 : bytchk == 1 ? blocks * bs : (blocks ? bs : 0);
  if (!take_data_out(c, needed)) return;
  if (blocks == 0) {
    c->result.status = status::kGood;
    return finish(c);
  }
  c->lba = lba;
  c->blocks = blocks;
  c->bytchk = bytchk;
  with_range_lock(c, lba, blocks, false, &LogicalUnit::run_verify);
}

void LogicalUnit::run_verify(const std::shared_ptr<Cmd>& c) {
  const std::uint32_t bs = store_->block_size();
  c->scratch.resize(c->blocks * bs);
  store_->submit_read(c->lba * bs, as_store_buf(c->scratch), [this, c, bs](IoStatus s) {
    if (s != IoStatus::kOk) return fail(c, sense_for(s, false));
    if (c->bytchk != 0) {
      for (std::size_t i = 0; i < c->scratch.size(); ++i) {
        const std::uint8_t want = c->bytchk == 1 ? c->data_out[i] : c->data_out[i % bs];
        if (c->scratch[i] != want) return fail(c, sense::miscompare(i));
      }
    }
    c->result.status = status::kGood;
    finish(c);
  });
}

void LogicalUnit::do_sync_cache(const std::shared_ptr<Cmd>& c, std::uint64_t lba,
                                std::uint64_t blocks) {
  if (!range_ok(lba, blocks, store_->num_blocks())) return fail(c, sense::lba_out_of_range());
  // IMMED is honoured conservatively: status only after the flush completed.
  store_->submit_flush([this, c](IoStatus s) {
    if (s != IoStatus::kOk) return fail(c, sense_for(s, true));
    c->result.status = status::kGood;
    finish(c);
  });
}

void LogicalUnit::do_mode_sense(const std::shared_ptr<Cmd>& c, bool ten) {
  const auto& cdb = c->cdb;
  ModeSenseArgs a;
  a.ten = ten;
  a.dbd = (cdb[1] & 0x08) != 0;
  a.llbaa = ten && (cdb[1] & 0x10) != 0;
  a.pc = cdb[2] >> 6;
  a.page = cdb[2] & 0x3F;
  a.subpage = cdb[3];
  const ModeState st{wce_, store_->read_only(), store_->block_size(), store_->num_blocks()};
  auto r = build_mode_sense(a, st);
  if (auto* s = std::get_if<Sense>(&r)) return fail(c, *s);
  good_data(c, std::move(std::get<std::vector<std::uint8_t>>(r)), ten ? be16(cdb, 7) : cdb[4]);
}

void LogicalUnit::do_mode_select(const std::shared_ptr<Cmd>& c, bool ten) {
  const auto& cdb = c->cdb;
  if (cdb[1] & 0x01) return fail(c, sense::invalid_field_in_cdb(1, 0));  // SP: cannot save
  const std::size_t len = ten ? be16(cdb, 7) : cdb[4];
  if (!take_data_out(c, len)) return;
  const ModeState st{wce_, store_->read_only(), store_->block_size(), store_->num_blocks()};
  auto r = parse_mode_select(ten, c->data_out.first(len), st);
  if (auto* s = std::get_if<Sense>(&r)) return fail(c, *s);
  const bool wce = std::get<bool>(r);
  if (wce != wce_) {
    wce_ = wce;
    queue_ua_all(sense::mode_parameters_changed(), &c->nexus);
  }
  c->result.status = status::kGood;
  finish(c);
}

void LogicalUnit::do_start_stop(const std::shared_ptr<Cmd>& c) {
  const auto& cdb = c->cdb;
  if (cdb[4] & 0xF0) return fail(c, sense::invalid_field_in_cdb(4, 7));  // power conditions
  const bool start = (cdb[4] & 0x01) != 0;
  const bool no_flush = (cdb[4] & 0x04) != 0;
  if (start) {
    started_ = true;
    c->result.status = status::kGood;
    return finish(c);
  }
  if (no_flush || store_->read_only()) {
    started_ = false;
    c->result.status = status::kGood;
    return finish(c);
  }
  // Stopping writes the cache back first.
  store_->submit_flush([this, c](IoStatus s) {
    if (s != IoStatus::kOk) return fail(c, sense_for(s, true));
    started_ = false;
    c->result.status = status::kGood;
    finish(c);
  });
}

void LogicalUnit::do_unmap(const std::shared_ptr<Cmd>& c) {
  const auto& cdb = c->cdb;
  if (!store_->supports_unmap() && !store_->read_only()) return fail(c, sense::invalid_opcode());
  if (cdb[1] & 0x01) return fail(c, sense::invalid_field_in_cdb(1, 0));  // ANCHOR
  const std::size_t len = be16(cdb, 7);
  if (store_->read_only()) return fail(c, sense::write_protected());
  if (!take_data_out(c, len)) return;
  if (len == 0) {
    c->result.status = status::kGood;
    return finish(c);
  }
  if (len < 8) return fail(c, sense::parameter_list_length_error());
  const auto p = c->data_out.first(len);
  const std::size_t desc_bytes = std::min<std::size_t>(be16(p, 2), len - 8);
  const std::size_t count = desc_bytes / 16;
  if (count > config_.max_unmap_descriptors) {
    return fail(c, sense::invalid_field_in_parameter_list(2));
  }
  const std::uint32_t bs = store_->block_size();
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t at = 8 + 16 * i;
    const std::uint64_t lba = be64(p, at);
    const std::uint64_t n = be32(p, at + 8);
    if (!range_ok(lba, n, store_->num_blocks())) return fail(c, sense::lba_out_of_range());
    total += n;
    if (total > config_.max_unmap_blocks) {
      return fail(c, sense::invalid_field_in_parameter_list(static_cast<std::uint16_t>(at + 8)));
    }
    if (n > 0) c->extents.emplace_back(lba * bs, n * bs);
  }
  run_unmap(c);
}

void LogicalUnit::run_unmap(const std::shared_ptr<Cmd>& c) {
  if (c->extents.empty()) {
    c->result.status = status::kGood;
    return finish(c);
  }
  c->pending_io = c->extents.size();
  for (const auto& [off, len] : c->extents) {
    store_->submit_unmap(off, len, [this, c](IoStatus s) {
      if (s != IoStatus::kOk && c->first_error == IoStatus::kOk) c->first_error = s;
      if (--c->pending_io > 0) return;
      if (c->first_error != IoStatus::kOk) return fail(c, sense_for(c->first_error, true));
      c->result.status = status::kGood;
      finish(c);
    });
  }
}

void LogicalUnit::do_write_same(const std::shared_ptr<Cmd>& c, bool sixteen) {
  const auto& cdb = c->cdb;
  const std::uint32_t bs = store_->block_size();
  if (cdb[1] >> 5) return fail(c, sense::invalid_field_in_cdb(1, 7));
  if (cdb[1] & 0x10) return fail(c, sense::invalid_field_in_cdb(1, 4));  // ANCHOR
  if (!sixteen && (cdb[1] & 0x01)) return fail(c, sense::invalid_field_in_cdb(1, 0));
  const bool unmap = (cdb[1] & 0x08) != 0;
  const bool ndob = sixteen && (cdb[1] & 0x01) != 0;
  const std::uint64_t lba = sixteen ? be64(cdb, 2) : be32(cdb, 2);
  const std::uint64_t n = sixteen ? be32(cdb, 10) : be16(cdb, 7);
  const std::uint16_t len_field = sixteen ? 10 : 7;
  if (n == 0 || n > config_.max_write_same_blocks) {
    return fail(c, sense::invalid_field_in_cdb(len_field));  // WSNZ=1
  }
  if (!range_ok(lba, n, store_->num_blocks())) return fail(c, sense::lba_out_of_range());
  if (store_->read_only()) return fail(c, sense::write_protected());
  if (!take_data_out(c, ndob ? 0 : bs)) return;
  auto pattern_block =
      ndob ? std::vector<std::uint8_t>(bs, 0)
           : std::vector<std::uint8_t>(c->data_out.begin(), c->data_out.begin() + bs);
  const bool zero = std::all_of(pattern_block.begin(), pattern_block.end(),
                                [](std::uint8_t b) { return b == 0; });
  c->lba = lba;
  c->blocks = n;
  c->fua = !wce_;
  // Unmapped blocks read back as zeros (LBPRZ), so a zero pattern with UNMAP
  // can deallocate instead of writing.
  c->unmap_instead = (unmap || ndob) && zero && store_->unmapped_reads_zero();
  if (!c->unmap_instead && store_->offloads_write_same()) {
    c->pattern = std::make_shared<std::vector<std::uint8_t>>(std::move(pattern_block));
  } else if (!c->unmap_instead) {
    const std::uint64_t chunk_blocks = std::min<std::uint64_t>(n, kWriteSameChunkBytes / bs);
    auto buf = std::make_shared<std::vector<std::uint8_t>>(chunk_blocks * bs);
    for (std::uint64_t i = 0; i < chunk_blocks; ++i) {
      std::memcpy(buf->data() + i * bs, pattern_block.data(), bs);
    }
    c->pattern = std::move(buf);
  }
  with_range_lock(c, lba, n, false, &LogicalUnit::run_write_same);
}

void LogicalUnit::run_write_same(const std::shared_ptr<Cmd>& c) {
  const std::uint32_t bs = store_->block_size();
  if (c->unmap_instead) {
    c->extents.emplace_back(c->lba * bs, c->blocks * bs);
    return run_unmap(c);
  }
  if (store_->offloads_write_same()) {  // one request; c->pattern is one block
    store_->submit_write_same(c->lba * bs, c->blocks * bs, as_store_buf(*c->pattern), c->fua,
                              [this, c](IoStatus s) {
                                if (s != IoStatus::kOk) return fail(c, sense_for(s, true));
                                c->result.status = status::kGood;
                                finish(c);
                              });
    return;
  }
  const std::uint64_t chunk_blocks = c->pattern->size() / bs;
  const std::uint64_t writes = (c->blocks + chunk_blocks - 1) / chunk_blocks;
  c->pending_io = writes;
  for (std::uint64_t i = 0; i < writes; ++i) {
    const std::uint64_t first = c->lba + i * chunk_blocks;
    const std::uint64_t count = std::min(chunk_blocks, c->lba + c->blocks - first);
    std::span<const std::uint8_t> data(c->pattern->data(), count * bs);
    store_->submit_write(first * bs, as_store_buf(data), c->fua, [this, c](IoStatus s) {
      if (s != IoStatus::kOk && c->first_error == IoStatus::kOk) c->first_error = s;
      if (--c->pending_io > 0) return;
      if (c->first_error != IoStatus::kOk) return fail(c, sense_for(c->first_error, true));
      c->result.status = status::kGood;
      finish(c);
    });
  }
}

void LogicalUnit::do_compare_and_write(const std::shared_ptr<Cmd>& c) {
  const auto& cdb = c->cdb;
  const std::uint32_t bs = store_->block_size();
  if (cdb[1] >> 5) return fail(c, sense::invalid_field_in_cdb(1, 7));
  const std::uint64_t lba = be64(cdb, 2);
  const std::uint64_t n = cdb[13];
  if (n > config_.max_compare_and_write_blocks) return fail(c, sense::invalid_field_in_cdb(13));
  if (!range_ok(lba, n, store_->num_blocks())) return fail(c, sense::lba_out_of_range());
  if (store_->read_only()) return fail(c, sense::write_protected());
  if (!take_data_out(c, 2 * n * bs)) return;
  if (n == 0) {
    c->result.status = status::kGood;
    return finish(c);
  }
  c->lba = lba;
  c->blocks = n;
  c->fua = (cdb[1] & 0x08) != 0 || !wce_;
  // Exclusive: no overlapping read or write runs between our compare and write.
  with_range_lock(c, lba, n, true, &LogicalUnit::run_compare_and_write);
}

void LogicalUnit::run_compare_and_write(const std::shared_ptr<Cmd>& c) {
  const std::uint32_t bs = store_->block_size();
  const std::size_t bytes = c->blocks * bs;
  if (store_->offloads_compare_and_write(bytes)) {  // atomic in the store (and across gateways)
    store_->submit_compare_and_write(c->lba * bs, as_store_buf(c->data_out.first(bytes)),
                                     as_store_buf(c->data_out.subspan(bytes, bytes)), c->fua,
                                     [this, c](IoStatus s, std::uint64_t at) {
                                       if (s == IoStatus::kMiscompare)
                                         return fail(c, sense::miscompare(at));
                                       if (s != IoStatus::kOk) return fail(c, sense_for(s, true));
                                       c->result.status = status::kGood;
                                       finish(c);
                                     });
    return;
  }
  c->scratch.resize(bytes);
  store_->submit_read(c->lba * bs, as_store_buf(c->scratch), [this, c, bytes, bs](IoStatus s) {
    if (s != IoStatus::kOk) return fail(c, sense_for(s, false));
    for (std::size_t i = 0; i < bytes; ++i) {
      if (c->scratch[i] != c->data_out[i]) return fail(c, sense::miscompare(i));
    }
    store_->submit_write(c->lba * bs, as_store_buf(c->data_out.subspan(bytes, bytes)), c->fua,
                         [this, c](IoStatus ws) {
                           if (ws != IoStatus::kOk) return fail(c, sense_for(ws, true));
                           c->result.status = status::kGood;
                           finish(c);
                         });
  });
}

void LogicalUnit::do_pr_in(const std::shared_ptr<Cmd>& c) {
  auto d = reservations_->persistent_in(c->cdb[1] & 0x1F);
  if (!d) return fail(c, sense::invalid_field_in_cdb(1, 4));
  good_data(c, std::move(*d), be16(c->cdb, 7));
}

void LogicalUnit::do_pr_out(const std::shared_ptr<Cmd>& c) {
  const auto& cdb = c->cdb;
  const std::uint32_t len = be32(cdb, 5);
  if (!take_data_out(c, len)) return;
  auto out = reservations_->persistent_out(c->nexus.initiator, cdb[1] & 0x1F, cdb[2] >> 4,
                                           cdb[2] & 0x0F, c->data_out.first(len));
  for (const auto& who : out.preempted) {
    queue_ua_for_initiator(who, sense::registrations_preempted());
  }
  for (const auto& who : out.released) {
    queue_ua_for_initiator(who, sense::reservations_released());
  }
  if (out.status == status::kCheckCondition && out.sense) return fail(c, *out.sense);
  c->result.status = out.status;
  finish(c);
}

void LogicalUnit::do_report_opcodes(const std::shared_ptr<Cmd>& c) {
  auto r = report_supported_opcodes(c->cdb);
  if (auto* s = std::get_if<Sense>(&r)) return fail(c, *s);
  good_data(c, std::move(std::get<std::vector<std::uint8_t>>(r)), be32(c->cdb, 6));
}

}  // namespace hyperscsi::scsi

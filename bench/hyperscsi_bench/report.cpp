#include "report.h"

#include <fmt/format.h>

namespace hyperscsi::bench {
namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}
std::string number(double v) {
  return fmt::format("{:.6g}", v);
}
std::string optional_number(const std::optional<double>& v) {
  return v ? number(*v) : "null";
}
std::string optional_count(const std::optional<uint64_t>& v) {
  return v ? std::to_string(*v) : "null";
}
std::string optional_text(const std::optional<double>& v, const char* format) {
  return v ? fmt::format(fmt::runtime(format), *v) : "n/a";
}

}  // namespace

std::string to_json(const Record& r) {
  std::string j = "{";
  auto add = [&](const char* key, const std::string& value) {
    if (j.size() > 1) j += ", ";
    j += quote(key) + ": " + value;
  };
  add("transport", quote(r.transport));
  add("backend", quote(r.backend));
  add("workload", quote(r.workload));
  add("bs", std::to_string(r.bs));
  add("qd", std::to_string(r.qd));
  add("read_pct", std::to_string(r.read_pct));
  add("mtu", quote(r.mtu));
  add("shaped", quote(r.shaped));
  add("verify", r.verify ? "true" : "false");
  add("seconds", number(r.seconds));
  add("ios", std::to_string(r.ios));
  add("reads", std::to_string(r.reads));
  add("writes", std::to_string(r.writes));
  add("bytes", std::to_string(r.bytes));
  add("iops", number(r.iops));
  add("mb_s", number(r.mb_s));
  if (r.mb_s_in_time) add("mb_s_in_time", number(*r.mb_s_in_time));
  if (r.mb_s_before_mark) add("mb_s_before_mark", number(*r.mb_s_before_mark));
  if (r.mb_s_after_mark) add("mb_s_after_mark", number(*r.mb_s_after_mark));
  add("longest_gap_ms", number(r.longest_gap_ms));
  add("lat_p50_us", number(r.lat_p50_us));
  add("lat_p99_us", number(r.lat_p99_us));
  add("lat_p999_us", number(r.lat_p999_us));
  add("cpu_s_per_gib_client", number(r.cpu_s_per_gib_client));
  add("cpu_s_per_gib_target", optional_number(r.cpu_s_per_gib_target));
  add("ctx_per_io_client", number(r.ctx_per_io_client));
  add("ctx_per_io_target", optional_number(r.ctx_per_io_target));
  add("frames_per_io", optional_number(r.frames_per_io));
  add("client_retransmits", optional_count(r.client_retransmits));
  add("client_timeouts", optional_count(r.client_timeouts));
  add("client_spurious_timeouts", optional_count(r.client_spurious_timeouts));
  if (r.start_late_s) add("start_late_s", number(*r.start_late_s));
  add("client_poll_s", optional_number(r.client_poll_s));
  add("client_wakeups_per_io", optional_number(r.client_wakeups_per_io));
  add("client_holds_per_io", optional_number(r.client_holds_per_io));
  add("client_foreign_frames", optional_count(r.client_foreign_frames));
  if (!r.paths.empty()) {
    std::string list = "[";
    for (const PathFigures& p : r.paths) {
      if (list.size() > 1) list += ", ";
      list += fmt::format(
          "{{\"id\": {}, \"state\": {}, \"local\": {}, \"target\": {}, \"frames_sent\": {}, "
          "\"frames_received\": {}, \"retransmits\": {}, \"failovers\": {}, \"srtt_us\": {}}}",
          p.id, quote(p.state), quote(p.local), quote(p.target), p.frames_sent, p.frames_received,
          p.retransmits, p.failovers, number(p.srtt_us));
    }
    add("paths", list + "]");
  }
  add("errors", std::to_string(r.errors));
  add("verify_mismatches", std::to_string(r.mismatches));
  add("first_error", quote(r.first_error));
  add("first_mismatch", quote(r.first_mismatch));
  return j + "}";
}

std::string to_table(const Record& r) {
  std::string t;
  auto row = [&](const std::string& k, const std::string& v) {
    t += fmt::format("{:<26}{}\n", k, v);
  };
  row("transport", r.transport + " (" + r.backend + ")");
  row("workload", fmt::format("{} bs={} qd={} read%={}{}", r.workload, r.bs, r.qd, r.read_pct,
                              r.verify ? " verify" : ""));
  row("duration", fmt::format("{:.2f} s", r.seconds));
  row("I/Os", fmt::format("{} ({} reads, {} writes)", r.ios, r.reads, r.writes));
  row("IOPS", fmt::format("{:.0f}", r.iops));
  row("throughput", fmt::format("{:.1f} MB/s", r.mb_s));
  if (r.mb_s_before_mark && r.mb_s_after_mark)
    row("throughput at the mark",
        fmt::format("{:.1f} MB/s before, {:.1f} after", *r.mb_s_before_mark, *r.mb_s_after_mark));
  row("longest completion gap", fmt::format("{:.1f} ms", r.longest_gap_ms));
  row("latency p50/p99/p99.9",
      fmt::format("{:.1f} / {:.1f} / {:.1f} us", r.lat_p50_us, r.lat_p99_us, r.lat_p999_us));
  row("CPU s/GiB client", fmt::format("{:.3f}", r.cpu_s_per_gib_client));
  row("CPU s/GiB target", optional_text(r.cpu_s_per_gib_target, "{:.3f}"));
  row("ctx switches/IO client", fmt::format("{:.2f}", r.ctx_per_io_client));
  row("ctx switches/IO target", optional_text(r.ctx_per_io_target, "{:.2f}"));
  row("frames/IO", optional_text(r.frames_per_io, "{:.2f}"));
  if (r.client_retransmits)
    row("client recovery",
        fmt::format("{} retransmits, {} timeouts ({} spurious)", *r.client_retransmits,
                    r.client_timeouts.value_or(0), r.client_spurious_timeouts.value_or(0)));
  if (r.client_poll_s)
    row("client I/O thread",
        fmt::format("{:.3f} s busy polling, {:.2f} wake-ups/IO, {:.2f} holds/IO", *r.client_poll_s,
                    r.client_wakeups_per_io.value_or(0), r.client_holds_per_io.value_or(0)));
  for (const PathFigures& p : r.paths)
    row(fmt::format("path {}", p.id),
        fmt::format("{} {} -> {}: {} frames sent, {} received, {} retransmits, {} failovers, "
                    "srtt {:.0f} us",
                    p.state, p.local, p.target, p.frames_sent, p.frames_received, p.retransmits,
                    p.failovers, p.srtt_us));
  if (!r.mtu.empty() || !r.shaped.empty()) row("labels", "mtu=" + r.mtu + " shaped=" + r.shaped);
  row("errors",
      std::to_string(r.errors) + (r.first_error.empty() ? "" : " (" + r.first_error + ")"));
  if (r.verify)
    row("verify", r.mismatches == 0
                      ? "passed"
                      : fmt::format("{} mismatches (first: {})", r.mismatches, r.first_mismatch));
  return t;
}

}  // namespace hyperscsi::bench

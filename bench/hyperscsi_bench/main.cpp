// hyperscsi-bench: one workload against one transport (HyperSCSI, iSCSI or a
// local file/device), with a live progress line, a final table or --json.
// Exit status: 0 ok, 1 bad arguments or setup failure, 2 verify mismatches,
// 3 I/O errors.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <map>

#include "report.h"
#include "sys_stats.h"
#include "transport.h"
#include "workload.h"

using namespace hyperscsi::bench;

namespace {

// "4k", "1M", "512", "2G" (binary units).
std::optional<uint64_t> parse_size(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t used = 0;
  uint64_t v = 0;
  try {
    v = std::stoull(text, &used);
  } catch (...) {
    return std::nullopt;
  }
  const std::string unit = text.substr(used);
  static const std::map<std::string, uint64_t> units = {{"", 1},
                                                        {"k", 1ull << 10},
                                                        {"K", 1ull << 10},
                                                        {"m", 1ull << 20},
                                                        {"M", 1ull << 20},
                                                        {"g", 1ull << 30},
                                                        {"G", 1ull << 30},
                                                        {"KiB", 1ull << 10},
                                                        {"MiB", 1ull << 20},
                                                        {"GiB", 1ull << 30}};
  const auto it = units.find(unit);
  if (it == units.end()) return std::nullopt;
  return v * it->second;
}

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hyperscsi-bench: block I/O workloads over HyperSCSI, iSCSI or a local file"};
  app.set_version_flag("--version", std::string("hyperscsi-bench ") + HYPERSCSI_VERSION);
  std::string transport_name = "local", port, target, url, path, workload = "randread";
  std::string bs_text = "4k", bytes_text, size_text, iface, mtu, shaped;
  std::string secret_file, protection = "off", checksum = "on";
  uint16_t lun = 0;
  unsigned read_pct = 0, qd = 1;
  unsigned busy_poll_us = HyperscsiOptions{}.busy_poll_us;
  double seconds = 0, start_at = 0, warmup = 0, mark_at = 0;
  bool verify = false, json = false, quiet = false, direct = false;
  int target_pid = 0;
  bool read_pct_given = false;
  app.add_option("--transport", transport_name, "hyperscsi, iscsi or local")
      ->check(CLI::IsMember({"hyperscsi", "iscsi", "local"}));
  app.add_option("--port", port,
                 "HyperSCSI port spec (afpacket:IFACE, pcap:IFACE, ...); repeat (or A,B) for one "
                 "session over several ports (multipath)")
      ->multi_option_policy(CLI::MultiOptionPolicy::Join);
  app.add_option("--target", target, "HyperSCSI target name (default: the only one)");
  app.add_option("--lun", lun, "HyperSCSI LUN");
  app.add_option("--secret-file", secret_file,
                 "HyperSCSI: file with the secret shared with the target (authenticates the "
                 "login as initiator 'hyperscsi-bench')");
  app.add_option("--protection", protection,
                 "HyperSCSI: weakest per-frame protection accepted: off, integrity, encrypt");
  app.add_option("--checksum", checksum,
                 "HyperSCSI: offer crc32 on every frame (on, the default) or not (off); iSCSI "
                 "digests stay as the target sets them")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--busy-poll-us", busy_poll_us,
                 "HyperSCSI: poll up to this many microseconds for a reply before sleeping "
                 "(0: always sleep)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 10000u));
  app.add_option("--url", url, "iSCSI URL iscsi://HOST[:PORT]/IQN/LUN");
  app.add_option("--path", path, "local file or block device");
  app.add_flag("--direct", direct, "local: open with O_DIRECT");
  app.add_option("--workload,-w", workload, "read, write, randread, randwrite, rw, randrw")
      ->check(CLI::IsMember({"read", "write", "randread", "randwrite", "rw", "randrw"}));
  auto* pct = app.add_option("--read-pct", read_pct, "read share of rw/randrw in percent")
                  ->check(CLI::Range(0u, 100u));
  app.add_option("--bs", bs_text, "block size 512..1M (k/M suffixes)");
  app.add_option("--qd", qd, "queue depth 1..256")->check(CLI::Range(1u, 256u));
  app.add_option("--time", seconds, "run time in seconds")->check(CLI::NonNegativeNumber);
  app.add_option("--start-at", start_at,
                 "begin the timed run at this wall-clock time (seconds since the epoch, after "
                 "connecting), so that several clients measure the same interval")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--mark-at", mark_at,
                 "with --time: also report MB/s before and after this many seconds into the run "
                 "(a path taken down then, say)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup", warmup,
                 "with --time: leave the first S seconds out of mb_s_in_time (the ramp-up)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--bytes", bytes_text, "stop after this many bytes (k/M/G suffixes)");
  app.add_option("--size", size_text, "use only the first SIZE bytes of the device");
  app.add_flag("--verify", verify, "write checksummed patterns, check every read");
  app.add_option("--target-pid", target_pid, "target process for CPU and context switches");
  app.add_option("--iface", iface, "count Ethernet frames on this interface");
  app.add_option("--mtu", mtu, "label recorded in the result");
  app.add_option("--shaped", shaped, "label recorded in the result");
  app.add_flag("--json", json, "print one JSON record instead of the table");
  app.add_flag("--quiet,-q", quiet, "no progress line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help/--version exit 0; any bad argument exits 1 as documented (not CLI11's own codes).
    const int code = app.exit(e);
    return code == 0 ? 0 : 1;
  }
  std::replace(port.begin(), port.end(), '\n', ',');  // Join's separator
  read_pct_given = pct->count() > 0;

  WorkloadConfig config;
  config.random = workload.rfind("rand", 0) == 0;
  const std::string kind = config.random ? workload.substr(4) : workload;
  config.read_pct = kind == "read" ? 100 : kind == "write" ? 0 : (read_pct_given ? read_pct : 50);
  const auto bs = parse_size(bs_text);
  if (!bs || *bs > (1u << 20)) {
    std::fprintf(stderr, "error: bad --bs '%s'\n", bs_text.c_str());
    return 1;
  }
  config.bs = uint32_t(*bs);
  config.qd = qd;
  config.verify = verify;
  if (!bytes_text.empty()) {
    const auto b = parse_size(bytes_text);
    if (!b) {
      std::fprintf(stderr, "error: bad --bytes '%s'\n", bytes_text.c_str());
      return 1;
    }
    config.bytes = *b;
  }
  if (!size_text.empty()) {
    const auto s = parse_size(size_text);
    if (!s) {
      std::fprintf(stderr, "error: bad --size '%s'\n", size_text.c_str());
      return 1;
    }
    config.region = *s;
  }
  if (seconds == 0 && config.bytes == 0) seconds = 5;
  config.duration = std::chrono::nanoseconds(int64_t(seconds * 1e9));
  if (mark_at > 0 && (config.duration.count() == 0 || mark_at >= seconds)) {
    std::fprintf(stderr, "error: --mark-at needs --time and must be shorter than it\n");
    return 1;
  }
  config.mark = std::chrono::nanoseconds(int64_t(mark_at * 1e9));
  if (warmup >= seconds && warmup > 0) {
    std::fprintf(stderr, "error: --warmup must be shorter than --time\n");
    return 1;
  }
  config.warmup = std::chrono::nanoseconds(int64_t(warmup * 1e9));

  TransportResult opened = hyperscsi::Unexpected(std::string("no transport"));
  if (transport_name == "local")
    opened = open_local({.path = path, .direct = direct, .threads = qd});
  else if (transport_name == "hyperscsi")
    opened = open_hyperscsi({.port_spec = port,
                             .target = target,
                             .lun = lun,
                             .max_outstanding = std::max(qd, 1u) * 2,
                             .secret_file = secret_file,
                             .protection = protection,
                             .checksum = checksum == "on",
                             .busy_poll_us = busy_poll_us});
  else
    opened = open_iscsi({.url = url});
  if (!opened) {
    std::fprintf(stderr, "error: %s\n", opened.error().c_str());
    return 1;
  }
  Transport& transport = **opened;
  if (const std::string problem = validate(config, transport); !problem.empty()) {
    std::fprintf(stderr, "error: %s\n", problem.c_str());
    return 1;
  }

  if (start_at > 0) {
    // Connected: wait for the common start. A client that connected too late
    // starts at once and says by how much (start_late_s in the record).
    timespec ts{};
    ts.tv_sec = time_t(start_at);
    ts.tv_nsec = long((start_at - double(ts.tv_sec)) * 1e9);
    while (::clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
  }
  timespec began{};
  ::clock_gettime(CLOCK_REALTIME, &began);
  const double start_late =
      start_at > 0 ? std::max(0.0, double(began.tv_sec) + double(began.tv_nsec) / 1e9 - start_at)
                   : 0.0;

  const auto self_before = sample_self();
  const auto target_before = target_pid ? sample_process(target_pid) : std::nullopt;
  if (target_pid && !target_before)
    std::fprintf(stderr, "warning: cannot read /proc/%d; no target figures\n", target_pid);
  const auto iface_before = iface.empty() ? std::nullopt : sample_interface(iface);
  if (!iface.empty() && !iface_before)
    std::fprintf(stderr, "warning: no counters for interface %s\n", iface.c_str());
  const auto frames_before = transport.frames();
  const auto recovery_before = transport.recovery();
  const auto loop_before = transport.loop();
  const auto paths_before = transport.paths();

  Progress progress;
  if (!quiet) {
    progress = [](const WorkloadResult& r, double elapsed) {
      const double ios = double(r.reads + r.writes);
      std::fprintf(stderr, "\r%6.1f s  %10.0f IOPS  %9.1f MB/s  p99 %8.1f us  errors %llu  ",
                   elapsed, ios / elapsed, double(r.bytes) / elapsed / 1e6,
                   double(r.latency.quantile(0.99)) / 1e3, (unsigned long long)r.errors);
    };
  }
  const WorkloadResult result = run_workload(transport, config, progress);
  if (!quiet) std::fprintf(stderr, "\n");

  const auto self_after = sample_self();
  const auto target_after = target_pid ? sample_process(target_pid) : std::nullopt;
  const auto iface_after = iface.empty() ? std::nullopt : sample_interface(iface);
  const auto frames_after = transport.frames();
  const auto recovery_after = transport.recovery();
  const auto loop_after = transport.loop();
  const auto paths_after = transport.paths();

  Record rec;
  rec.transport = transport.name();
  rec.backend = transport.backend();
  rec.workload = workload;
  rec.mtu = mtu;
  rec.shaped = shaped;
  rec.bs = config.bs;
  rec.qd = config.qd;
  rec.read_pct = config.read_pct;
  rec.verify = verify;
  rec.seconds = result.seconds;
  if (start_at > 0) rec.start_late_s = start_late;
  rec.reads = result.reads;
  rec.writes = result.writes;
  rec.ios = result.reads + result.writes;
  rec.bytes = result.bytes;
  rec.errors = result.errors;
  rec.mismatches = result.mismatches;
  rec.first_error = result.first_error;
  rec.first_mismatch = result.first_mismatch;
  const double secs = result.seconds > 0 ? result.seconds : 1e-9;
  const double ios = rec.ios ? double(rec.ios) : 1;
  const double gib = rec.bytes ? double(rec.bytes) / kGiB : 1;
  rec.iops = double(rec.ios) / secs;
  rec.mb_s = double(rec.bytes) / secs / 1e6;
  if (config.duration.count() > 0)
    rec.mb_s_in_time = double(result.bytes_in_time) /
                       std::chrono::duration<double>(config.duration - config.warmup).count() / 1e6;
  if (config.mark.count() > 0) {
    const double before = std::chrono::duration<double>(config.mark).count();
    const double after = std::chrono::duration<double>(config.duration - config.mark).count();
    rec.mb_s_before_mark = double(result.bytes_before_mark) / before / 1e6;
    rec.mb_s_after_mark = double(result.bytes_after_mark) / after / 1e6;
  }
  rec.longest_gap_ms = result.longest_gap_s * 1e3;
  rec.lat_p50_us = double(result.latency.quantile(0.50)) / 1e3;
  rec.lat_p99_us = double(result.latency.quantile(0.99)) / 1e3;
  rec.lat_p999_us = double(result.latency.quantile(0.999)) / 1e3;
  rec.cpu_s_per_gib_client = (self_after.cpu_seconds - self_before.cpu_seconds) / gib;
  rec.ctx_per_io_client = double(self_after.context_switches - self_before.context_switches) / ios;
  if (target_before && target_after) {
    rec.cpu_s_per_gib_target = (target_after->cpu_seconds - target_before->cpu_seconds) / gib;
    rec.ctx_per_io_target =
        double(target_after->context_switches - target_before->context_switches) / ios;
  }
  if (iface_before && iface_after)
    rec.frames_per_io =
        double((iface_after->tx - iface_before->tx) + (iface_after->rx - iface_before->rx)) / ios;
  else if (frames_before && frames_after)
    rec.frames_per_io =
        double((frames_after->tx - frames_before->tx) + (frames_after->rx - frames_before->rx)) /
        ios;
  if (frames_before && frames_after)
    rec.client_foreign_frames = frames_after->foreign - frames_before->foreign;
  if (recovery_before && recovery_after) {
    rec.client_retransmits = recovery_after->retransmits - recovery_before->retransmits;
    rec.client_timeouts = recovery_after->timeouts - recovery_before->timeouts;
    rec.client_spurious_timeouts = recovery_after->spurious - recovery_before->spurious;
  }
  if (loop_before && loop_after) {
    rec.client_poll_s = loop_after->poll_seconds - loop_before->poll_seconds;
    rec.client_wakeups_per_io = double(loop_after->wakeups - loop_before->wakeups) / ios;
    rec.client_holds_per_io = double(loop_after->holds - loop_before->holds) / ios;
  }

  // Per path: the run's counters (a path first seen during the run counts whole).
  for (PathFigures p : paths_after) {
    for (const PathFigures& b : paths_before) {
      if (b.id != p.id || b.local != p.local || b.target != p.target) continue;
      p.frames_sent -= std::min(p.frames_sent, b.frames_sent);
      p.frames_received -= std::min(p.frames_received, b.frames_received);
      p.retransmits -= std::min(p.retransmits, b.retransmits);
      p.failovers -= std::min(p.failovers, b.failovers);
    }
    rec.paths.push_back(std::move(p));
  }

  std::fputs((json ? to_json(rec) + "\n" : to_table(rec)).c_str(), stdout);
  std::fflush(stdout);
  if (!result.drained) std::fprintf(stderr, "error: I/Os still in flight at the end\n");
  if (rec.mismatches) {
    std::fprintf(stderr, "verify FAILED: %llu mismatches, first: %s\n",
                 (unsigned long long)rec.mismatches, rec.first_mismatch.c_str());
    return 2;
  }
  if (rec.errors || !result.drained) {
    std::fprintf(stderr, "I/O errors: %llu, first: %s\n", (unsigned long long)rec.errors,
                 rec.first_error.c_str());
    return 3;
  }
  return 0;
}

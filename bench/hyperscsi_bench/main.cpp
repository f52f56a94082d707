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
#include <optional>

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

// The command line, as parsed.
struct Args {
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
};

// Declares every option on `app`, bound to `a`; returns --read-pct (whether
// it was given matters).
CLI::Option* add_options(CLI::App& app, Args& a) {
  app.add_option("--transport", a.transport_name, "hyperscsi, iscsi or local")
      ->check(CLI::IsMember({"hyperscsi", "iscsi", "local"}));
  app.add_option("--port", a.port,
                 "HyperSCSI port spec (afpacket:IFACE, pcap:IFACE, ...); repeat (or A,B) for one "
                 "session over several ports (multipath)")
      ->multi_option_policy(CLI::MultiOptionPolicy::Join);
  app.add_option("--target", a.target, "HyperSCSI target name (default: the only one)");
  app.add_option("--lun", a.lun, "HyperSCSI LUN");
  app.add_option("--secret-file", a.secret_file,
                 "HyperSCSI: file with the secret shared with the target (authenticates the "
                 "login as initiator 'hyperscsi-bench')");
  app.add_option("--protection", a.protection,
                 "HyperSCSI: weakest per-frame protection accepted: off, integrity, encrypt");
  app.add_option("--checksum", a.checksum,
                 "HyperSCSI: offer crc32 on every frame (on, the default) or not (off); iSCSI "
                 "digests stay as the target sets them")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--busy-poll-us", a.busy_poll_us,
                 "HyperSCSI: poll up to this many microseconds for a reply before sleeping "
                 "(0: always sleep)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 10000u));
  app.add_option("--url", a.url, "iSCSI URL iscsi://HOST[:PORT]/IQN/LUN");
  app.add_option("--path", a.path, "local file or block device");
  app.add_flag("--direct", a.direct, "local: open with O_DIRECT");
  app.add_option("--workload,-w", a.workload, "read, write, randread, randwrite, rw, randrw")
      ->check(CLI::IsMember({"read", "write", "randread", "randwrite", "rw", "randrw"}));
  auto* pct = app.add_option("--read-pct", a.read_pct, "read share of rw/randrw in percent")
                  ->check(CLI::Range(0u, 100u));
  app.add_option("--bs", a.bs_text, "block size 512..1M (k/M suffixes)");
  app.add_option("--qd", a.qd, "queue depth 1..256")->check(CLI::Range(1u, 256u));
  app.add_option("--time", a.seconds, "run time in seconds")->check(CLI::NonNegativeNumber);
  app.add_option("--start-at", a.start_at,
                 "begin the timed run at this wall-clock time (seconds since the epoch, after "
                 "connecting), so that several clients measure the same interval")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--mark-at", a.mark_at,
                 "with --time: also report MB/s before and after this many seconds into the run "
                 "(a path taken down then, say)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup", a.warmup,
                 "with --time: leave the first S seconds out of mb_s_in_time (the ramp-up)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--bytes", a.bytes_text, "stop after this many bytes (k/M/G suffixes)");
  app.add_option("--size", a.size_text, "use only the first SIZE bytes of the device");
  app.add_flag("--verify", a.verify, "write checksummed patterns, check every read");
  app.add_option("--target-pid", a.target_pid, "target process for CPU and context switches");
  app.add_option("--iface", a.iface, "count Ethernet frames on this interface");
  app.add_option("--mtu", a.mtu, "label recorded in the result");
  app.add_option("--shaped", a.shaped, "label recorded in the result");
  app.add_flag("--json", a.json, "print one JSON record instead of the table");
  app.add_flag("--quiet,-q", a.quiet, "no progress line");
  return pct;
}

// The workload from the arguments; nullopt (the error printed) when one is
// bad. Defaults --time to 5 s when neither --time nor --bytes is given.
std::optional<WorkloadConfig> workload_config(Args& a) {
  WorkloadConfig config;
  config.random = a.workload.rfind("rand", 0) == 0;
  const std::string kind = config.random ? a.workload.substr(4) : a.workload;
  config.read_pct = kind == "read"    ? 100
                    : kind == "write" ? 0
                                      : (a.read_pct_given ? a.read_pct : 50);
  const auto bs = parse_size(a.bs_text);
  if (!bs || *bs > (1u << 20)) {
    std::fprintf(stderr, "error: bad --bs '%s'\n", a.bs_text.c_str());
    return std::nullopt;
  }
  config.bs = uint32_t(*bs);
  config.qd = a.qd;
  config.verify = a.verify;
  if (!a.bytes_text.empty()) {
    const auto b = parse_size(a.bytes_text);
    if (!b) {
      std::fprintf(stderr, "error: bad --bytes '%s'\n", a.bytes_text.c_str());
      return std::nullopt;
    }
    config.bytes = *b;
  }
  if (!a.size_text.empty()) {
    const auto s = parse_size(a.size_text);
    if (!s) {
      std::fprintf(stderr, "error: bad --size '%s'\n", a.size_text.c_str());
      return std::nullopt;
    }
    config.region = *s;
  }
  if (a.seconds == 0 && config.bytes == 0) a.seconds = 5;
  config.duration = std::chrono::nanoseconds(int64_t(a.seconds * 1e9));
  if (a.mark_at > 0 && (config.duration.count() == 0 || a.mark_at >= a.seconds)) {
    std::fprintf(stderr, "error: --mark-at needs --time and must be shorter than it\n");
    return std::nullopt;
  }
  config.mark = std::chrono::nanoseconds(int64_t(a.mark_at * 1e9));
  if (a.warmup >= a.seconds && a.warmup > 0) {
    std::fprintf(stderr, "error: --warmup must be shorter than --time\n");
    return std::nullopt;
  }
  config.warmup = std::chrono::nanoseconds(int64_t(a.warmup * 1e9));
  return config;
}

TransportResult open_transport(const Args& a) {
  if (a.transport_name == "local")
    return open_local({.path = a.path, .direct = a.direct, .threads = a.qd});
  if (a.transport_name == "hyperscsi")
    return open_hyperscsi({.port_spec = a.port,
                           .target = a.target,
                           .lun = a.lun,
                           .max_outstanding = std::max(a.qd, 1u) * 2,
                           .secret_file = a.secret_file,
                           .protection = a.protection,
                           .checksum = a.checksum == "on",
                           .busy_poll_us = a.busy_poll_us});
  return open_iscsi({.url = a.url});
}

// Connected: wait for the common start (--start-at). A client that connected
// too late starts at once; returns by how much (start_late_s in the record).
double wait_for_start(double start_at) {
  if (start_at > 0) {
    timespec ts{};
    ts.tv_sec = time_t(start_at);
    ts.tv_nsec = long((start_at - double(ts.tv_sec)) * 1e9);
    while (::clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
  }
  timespec began{};
  ::clock_gettime(CLOCK_REALTIME, &began);
  return start_at > 0 ? std::max(0.0, double(began.tv_sec) + double(began.tv_nsec) / 1e9 - start_at)
                      : 0.0;
}

// The counters read before and after the run (each may be missing).
struct Samples {
  ProcessSample self;
  std::optional<ProcessSample> target;
  std::optional<InterfaceSample> iface;
  std::optional<FrameCounts> frames;
  std::optional<RecoveryCounts> recovery;
  std::optional<LoopCounts> loop;
  std::vector<PathFigures> paths;
};

Samples sample_all(const Args& a, const Transport& transport) {
  Samples s;
  s.self = sample_self();
  s.target = a.target_pid ? sample_process(a.target_pid) : std::nullopt;
  s.iface = a.iface.empty() ? std::nullopt : sample_interface(a.iface);
  s.frames = transport.frames();
  s.recovery = transport.recovery();
  s.loop = transport.loop();
  s.paths = transport.paths();
  return s;
}

Progress progress_line(bool quiet) {
  if (quiet) return {};
  return [](const WorkloadResult& r, double elapsed) {
    const double ios = double(r.reads + r.writes);
    std::fprintf(stderr, "\r%6.1f s  %10.0f IOPS  %9.1f MB/s  p99 %8.1f us  errors %llu  ", elapsed,
                 ios / elapsed, double(r.bytes) / elapsed / 1e6,
                 double(r.latency.quantile(0.99)) / 1e3, (unsigned long long)r.errors);
  };
}

// The result record: the workload's figures, then the per-GiB and per-I/O
// costs from the counters' differences.
Record make_record(const Args& a, const Transport& transport, const WorkloadConfig& config,
                   const WorkloadResult& result, const Samples& before, const Samples& after,
                   double start_late) {
  Record rec;
  rec.transport = transport.name();
  rec.backend = transport.backend();
  rec.workload = a.workload;
  rec.mtu = a.mtu;
  rec.shaped = a.shaped;
  rec.bs = config.bs;
  rec.qd = config.qd;
  rec.read_pct = config.read_pct;
  rec.verify = a.verify;
  rec.seconds = result.seconds;
  if (a.start_at > 0) rec.start_late_s = start_late;
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
    const double before_s = std::chrono::duration<double>(config.mark).count();
    const double after_s = std::chrono::duration<double>(config.duration - config.mark).count();
    rec.mb_s_before_mark = double(result.bytes_before_mark) / before_s / 1e6;
    rec.mb_s_after_mark = double(result.bytes_after_mark) / after_s / 1e6;
  }
  rec.longest_gap_ms = result.longest_gap_s * 1e3;
  rec.lat_p50_us = double(result.latency.quantile(0.50)) / 1e3;
  rec.lat_p99_us = double(result.latency.quantile(0.99)) / 1e3;
  rec.lat_p999_us = double(result.latency.quantile(0.999)) / 1e3;
  rec.cpu_s_per_gib_client = (after.self.cpu_seconds - before.self.cpu_seconds) / gib;
  rec.ctx_per_io_client = double(after.self.context_switches - before.self.context_switches) / ios;
  if (before.target && after.target) {
    rec.cpu_s_per_gib_target = (after.target->cpu_seconds - before.target->cpu_seconds) / gib;
    rec.ctx_per_io_target =
        double(after.target->context_switches - before.target->context_switches) / ios;
  }
  if (before.iface && after.iface)
    rec.frames_per_io =
        double((after.iface->tx - before.iface->tx) + (after.iface->rx - before.iface->rx)) / ios;
  else if (before.frames && after.frames)
    rec.frames_per_io =
        double((after.frames->tx - before.frames->tx) + (after.frames->rx - before.frames->rx)) /
        ios;
  if (before.frames && after.frames)
    rec.client_foreign_frames = after.frames->foreign - before.frames->foreign;
  if (before.recovery && after.recovery) {
    rec.client_retransmits = after.recovery->retransmits - before.recovery->retransmits;
    rec.client_timeouts = after.recovery->timeouts - before.recovery->timeouts;
    rec.client_spurious_timeouts = after.recovery->spurious - before.recovery->spurious;
  }
  if (before.loop && after.loop) {
    rec.client_poll_s = after.loop->poll_seconds - before.loop->poll_seconds;
    rec.client_wakeups_per_io = double(after.loop->wakeups - before.loop->wakeups) / ios;
    rec.client_holds_per_io = double(after.loop->holds - before.loop->holds) / ios;
  }
  // Per path: the run's counters (a path first seen during the run counts whole).
  for (PathFigures p : after.paths) {
    for (const PathFigures& b : before.paths) {
      if (b.id != p.id || b.local != p.local || b.target != p.target) continue;
      p.frames_sent -= std::min(p.frames_sent, b.frames_sent);
      p.frames_received -= std::min(p.frames_received, b.frames_received);
      p.retransmits -= std::min(p.retransmits, b.retransmits);
      p.failovers -= std::min(p.failovers, b.failovers);
    }
    rec.paths.push_back(std::move(p));
  }
  return rec;
}

// Prints the record and returns the exit status (0, 2 verify mismatches,
// 3 I/O errors).
int report(const Record& rec, const WorkloadResult& result, bool json) {
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hyperscsi-bench: block I/O workloads over HyperSCSI, iSCSI or a local file"};
  app.set_version_flag("--version", std::string("hyperscsi-bench ") + HYPERSCSI_VERSION);
  Args args;
  CLI::Option* pct = add_options(app, args);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help/--version exit 0; any bad argument exits 1 as documented (not CLI11's own codes).
    const int code = app.exit(e);
    return code == 0 ? 0 : 1;
  }
  std::replace(args.port.begin(), args.port.end(), '\n', ',');  // Join's separator
  args.read_pct_given = pct->count() > 0;

  const std::optional<WorkloadConfig> config = workload_config(args);
  if (!config) return 1;
  TransportResult opened = open_transport(args);
  if (!opened) {
    std::fprintf(stderr, "error: %s\n", opened.error().c_str());
    return 1;
  }
  Transport& transport = **opened;
  if (const std::string problem = validate(*config, transport); !problem.empty()) {
    std::fprintf(stderr, "error: %s\n", problem.c_str());
    return 1;
  }

  const double start_late = wait_for_start(args.start_at);
  const Samples before = sample_all(args, transport);
  if (args.target_pid && !before.target)
    std::fprintf(stderr, "warning: cannot read /proc/%d; no target figures\n", args.target_pid);
  if (!args.iface.empty() && !before.iface)
    std::fprintf(stderr, "warning: no counters for interface %s\n", args.iface.c_str());

  const WorkloadResult result = run_workload(transport, *config, progress_line(args.quiet));
  if (!args.quiet) std::fprintf(stderr, "\n");
  const Samples after = sample_all(args, transport);

  const Record rec = make_record(args, transport, *config, result, before, after, start_late);
  return report(rec, result, args.json);
}

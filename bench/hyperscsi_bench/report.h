// The measured record of one run, printed as a table or as one JSON object.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hyperscsi::bench {

// One path of a multipath session during the run (HyperSCSI with several
// ports): counters are the run's (after minus before), state and srtt at
// the end. MACs as text.
struct PathFigures {
  uint32_t id = 0;
  std::string state, local, target;
  uint64_t frames_sent = 0, frames_received = 0, retransmits = 0, failovers = 0;
  double srtt_us = 0;
};

struct Record {
  std::string transport, backend, workload, mtu, shaped;
  uint32_t bs = 0, qd = 0, read_pct = 0;
  bool verify = false;
  double seconds = 0;
  uint64_t ios = 0, reads = 0, writes = 0, bytes = 0, errors = 0, mismatches = 0;
  double iops = 0, mb_s = 0;
  // With --time: MB/s of the I/Os completed within the timed interval alone.
  std::optional<double> mb_s_in_time;
  // With --mark-at: MB/s of the I/Os completed before and after the mark.
  std::optional<double> mb_s_before_mark, mb_s_after_mark;
  // The longest time without a completion until the deadline (the stall).
  double longest_gap_ms = 0;
  double lat_p50_us = 0, lat_p99_us = 0, lat_p999_us = 0;
  double cpu_s_per_gib_client = 0;
  std::optional<double> cpu_s_per_gib_target;
  double ctx_per_io_client = 0;
  std::optional<double> ctx_per_io_target;
  std::optional<double> frames_per_io;
  // The client's retransmitted frames, timeouts and spurious (undone)
  // timeouts during the run; empty for transports that do not count them.
  std::optional<uint64_t> client_retransmits, client_timeouts, client_spurious_timeouts;
  // With --start-at: how late this client began the timed run (0 when on time).
  std::optional<double> start_late_s;
  // How the client's I/O thread waited during the run: seconds busy
  // polling, and per I/O its wake-ups (voluntary context switches) and holds
  // (sleeps without watching the port); empty for transports without one.
  std::optional<double> client_poll_s, client_wakeups_per_io, client_holds_per_io;
  // Frames the client's port received during the run that were another
  // session's on the same host (HyperSCSI; the kernel filter keeps it near 0).
  std::optional<uint64_t> client_foreign_frames;
  // A multipath session's paths (empty for one path and other transports).
  std::vector<PathFigures> paths;
  std::string first_error, first_mismatch;
};

std::string to_json(const Record& r);
std::string to_table(const Record& r);

}  // namespace hyperscsi::bench

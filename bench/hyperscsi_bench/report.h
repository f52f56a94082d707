// The measured record of one run, printed as a table or as one JSON object.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace hyperscsi::bench {

struct Record {
  std::string transport, backend, workload, mtu, shaped;
  uint32_t bs = 0, qd = 0, read_pct = 0;
  bool verify = false;
  double seconds = 0;
  uint64_t ios = 0, reads = 0, writes = 0, bytes = 0, errors = 0, mismatches = 0;
  double iops = 0, mb_s = 0;
  double lat_p50_us = 0, lat_p99_us = 0, lat_p999_us = 0;
  double cpu_s_per_gib_client = 0;
  std::optional<double> cpu_s_per_gib_target;
  double ctx_per_io_client = 0;
  std::optional<double> ctx_per_io_target;
  std::optional<double> frames_per_io;
  // The client's retransmitted frames, timeouts and spurious (undone)
  // timeouts during the run; empty for transports that do not count them.
  std::optional<uint64_t> client_retransmits, client_timeouts, client_spurious_timeouts;
  // Frames the client's port received during the run that were another
  // session's on the same host (HyperSCSI; the kernel filter keeps it near 0).
  std::optional<uint64_t> client_foreign_frames;
  std::string first_error, first_mismatch;
};

std::string to_json(const Record& r);
std::string to_table(const Record& r);

}  // namespace hyperscsi::bench

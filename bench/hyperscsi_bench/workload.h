// The workload engine: keeps `qd` I/Os in flight on a Transport, chooses
// offsets (sequential or random, per bs-sized chunk), mixes reads and writes,
// and in verify mode writes patterns and checks every read against them.
// Thread-safety: run() blocks the calling thread; completions from the
// transport's threads are serialised by an internal mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "histogram.h"
#include "transport.h"

namespace hyperscsi::bench {

struct WorkloadConfig {
  bool random = false;
  unsigned read_pct = 100;  // 0..100
  uint32_t bs = 4096;
  uint32_t qd = 1;
  std::chrono::nanoseconds duration{0};  // 0: until `bytes`
  std::chrono::nanoseconds warmup{0};    // not counted in bytes_in_time (within duration)
  // Non-zero: bytes completed by the deadline are also counted apart before
  // and after this point of the run (a path taken down then, say).
  std::chrono::nanoseconds mark{0};
  uint64_t bytes = 0;   // 0: until `duration`
  uint64_t region = 0;  // bytes of the device used (0: all)
  bool verify = false;
  uint64_t seed = 1;
};

struct WorkloadResult {
  uint64_t reads = 0, writes = 0;
  uint64_t bytes = 0;
  // Bytes of I/Os completed after the warm-up and by the deadline (--time):
  // with several clients started together, each client's share of one
  // common interval, without the drain of the I/Os in flight at the deadline.
  uint64_t bytes_in_time = 0;
  // With `mark`: bytes_in_time's split (no warm-up taken off).
  uint64_t bytes_before_mark = 0, bytes_after_mark = 0;
  // The longest time without a successful completion, from the start to the
  // deadline (the stall a failover causes, say).
  double longest_gap_s = 0;
  uint64_t errors = 0;
  uint64_t mismatches = 0;
  std::string first_error;     // first I/O error
  std::string first_mismatch;  // first verify problem
  double seconds = 0;
  LatencyHistogram latency;
  bool drained = true;  // false: I/Os were still in flight at the end (timed out)
};

// Called about once a second from run()'s thread with the totals so far.
using Progress = std::function<void(const WorkloadResult& so_far, double elapsed_s)>;

// Validates `config` against the transport (sizes, alignment); empty on success.
std::string validate(const WorkloadConfig& config, const Transport& transport);

WorkloadResult run_workload(Transport& transport, const WorkloadConfig& config,
                            const Progress& progress);

}  // namespace hyperscsi::bench

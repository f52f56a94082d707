// The path scheduler of a multipath session (docs/protocol.md 14.8): which
// path a new PDU goes to. Each PDU goes whole to the usable path with the
// shortest expected service time
//
//   EST(p, B) = (backlog_p + B) / rate_p + min_rtt_p / 2
//
// (backlog: bytes queued or unacknowledged on p; rate: p's estimated delivery
// rate), so work spreads in proportion to capacity: a path gets a PDU when
// its backlog would drain no later than the others'. A PDU that would finish
// sooner by waiting behind a fast path's backlog than on an idle slow path
// goes to the fast path, as dm-multipath's service-time selector and MPTCP's
// ECF/BLEST schedulers do.
//
// DeliveryRate estimates rate_p from the path's acknowledged bytes: one sample
// per interval (at least 20 ms and one smoothed RTT) in which the path had
// more data than its window let out (so the sample measures capacity, not
// the offered load); the estimate is the largest of the last 25 samples
// (about half a second: longer than a path may stall without being declared
// failed, so a stall does not starve a path of work afterwards). A sample
// from an application-limited interval only counts if it raises the
// estimate. A new path generation starts again from the initial rate.
//
// Both estimates of a path are renewed only by its own traffic, and a path
// the ranking passes over carries none: a path measured once in a bad moment
// (its first RTT samples taken while the hosts were loaded, a slow first
// interval) would lose every PDU afterwards and never be measured again.
// So a usable path with no backlog that was given no PDU for
// kRetryIdlePath (or none yet in its generation) is ranked hopefully: at
// the smallest one-way time and the best rate among the usable paths. No
// other path can then beat it, so it gets the next PDU it can take, and that
// PDU's acknowledgements re-measure it. The cost is bounded: at most one such
// PDU per kRetryIdlePath per idle path, even when the path really is slow.
// Pure functions and a small value type. Thread-safety: none needed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "hyperscsi/proto/clock.h"

namespace hyperscsi::proto {

struct PathLoad {
  uint8_t id = 0;
  bool usable = false;         // active (verified) and not failed
  uint64_t backlog_bytes = 0;  // queued or unacknowledged on the path
  double rate = 0;             // estimated delivery rate, bytes per second (> 0)
  Duration one_way{};          // half the smallest RTT seen
  // Given no PDU for kRetryIdlePath, or none yet in its generation (the
  // owner's bookkeeping); with no backlog it is ranked hopefully.
  bool retry_due = false;
};

// How long an idle usable path goes without a PDU before it is tried again.
inline constexpr Duration kRetryIdlePath = milliseconds(200);

Duration expected_service_time(const PathLoad& p, size_t bytes);

// Indices into `paths` of the usable ones, best first by
// expected_service_time, a path due a retry (retry_due and no backlog) at
// the usable paths' best rate and smallest one-way time (ties: a path due a
// retry, then smaller backlog, then lower id). `out` is cleared first.
void rank_paths(std::span<const PathLoad> paths, size_t bytes, std::vector<size_t>& out);

class DeliveryRate {
 public:
  explicit DeliveryRate(double initial_bytes_per_second) : rate_(initial_bytes_per_second) {}

  // Called at every poll with the path's cumulative acknowledged bytes and
  // whether it has data it could not send yet (window-limited: a sample of
  // its capacity, not of the offered load). `srtt` sizes the interval.
  void on_poll(TimePoint now, uint64_t bytes_acked, bool backlogged, Duration srtt);
  // A new generation of the path: its counters start again from `bytes_acked`.
  void restart(TimePoint now, uint64_t bytes_acked);

  double bytes_per_second() const { return rate_; }
  bool measured() const { return count_ > 0; }

 private:
  static constexpr size_t kSamples = 25;
  void add(double sample);

  double rate_;
  std::array<double, kSamples> samples_{};
  size_t count_ = 0;  // samples taken (the ring holds the last kSamples)
  bool started_ = false;
  TimePoint start_{};
  uint64_t start_bytes_ = 0;
  bool backlogged_throughout_ = true;
};

}  // namespace hyperscsi::proto

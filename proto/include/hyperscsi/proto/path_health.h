// PathHealth: the failure detector of one path of a multipath session
// (docs/protocol.md 14.7). A path is failed when
//
//   stuck:  it has unacknowledged frames and no ack has brought news (a new
//           cumulative ack or SACK block) for T_fail, or
//   silent: (on the side that probes, the initiator) nothing at all arrived
//           on it for T_fail; a keepalive goes out after T_fail / 4 of
//           silence, so a healthy idle path answers three or four times
//           before that,
//
// with T_fail = clamp(rto_multiple x RTO, min_timeout, max_timeout), RTO
// being the path's retransmission timeout without backoff (srtt + max(4
// rttvar, 2 ms); 50 ms before the first sample). With the defaults (4 x RTO,
// 200 ms .. 500 ms) a path that stops delivering at t0 is declared failed by
// t0 + 500 ms: last progress and last frame heard are both <= t0.
//
// Pure state: the owner (PathSet) reports what it sees and asks for the
// verdict. No I/O, no clock. Thread-safety: none; one owner.
#pragma once

#include <cstdint>

#include "hyperscsi/proto/clock.h"

namespace hyperscsi::proto {

struct PathHealthConfig {
  uint32_t rto_multiple = 4;
  Duration min_timeout = milliseconds(200);  // a stalled peer CPU is not a dead path
  Duration max_timeout = milliseconds(500);  // the bound on detection
  uint32_t keepalives_per_timeout = 4;       // keepalive after T_fail / this of silence
};

// T_fail for a path whose RTO (without backoff) is `base_rto`.
Duration failure_timeout(const PathHealthConfig& config, Duration base_rto);

enum class PathVerdict : uint8_t { kHealthy, kStuck, kSilent };

class PathHealth {
 public:
  PathHealth(const PathHealthConfig& config, TimePoint now);

  // A valid frame of the path arrived.
  void on_heard(TimePoint now);
  // The path's Connection counters now: progress is a change of
  // `frames_acked`; nothing outstanding is never stuck.
  void on_ack_state(TimePoint now, uint64_t frames_acked, uint32_t unacked_frames);
  // The path's current RTO without backoff (moves T_fail).
  void set_rto(Duration base_rto) { timeout_ = failure_timeout(config_, base_rto); }

  PathVerdict check(TimePoint now, bool watch_silence) const;
  bool keepalive_due(TimePoint now) const;
  void keepalive_sent(TimePoint now) { last_keepalive_ = now; }
  // The next time check() or keepalive_due() may change its answer.
  TimePoint next_deadline(bool watch_silence) const;

  Duration timeout() const { return timeout_; }
  TimePoint last_heard() const { return last_heard_; }
  TimePoint progress_at() const { return progress_at_; }

 private:
  Duration keepalive_interval() const;

  PathHealthConfig config_;
  Duration timeout_;
  TimePoint last_heard_;
  TimePoint progress_at_;
  TimePoint last_keepalive_;
  uint64_t frames_acked_ = 0;
  bool outstanding_ = false;
};

}  // namespace hyperscsi::proto

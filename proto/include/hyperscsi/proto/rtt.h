// Retransmission-timeout estimation: Jacobson/Karels smoothing (RFC 6298),
// clamped to RtoParams, exponential backoff on timeout, Karn's rule.
// Thread-safety: none; owned by one Connection.
#pragma once

#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/connection.h"

namespace hyperscsi::proto {

class RttEstimator {
 public:
  explicit RttEstimator(const RtoParams& params);

  // Feeds one round-trip measurement. Karn's rule: a sample taken from a
  // retransmitted frame is ambiguous (which copy was acked?) and is ignored;
  // returns false then. A valid sample also clears the timeout backoff.
  bool on_sample(Duration rtt, bool retransmitted = false);

  // The retransmission timer fired: doubles the RTO (capped at params.max).
  void on_timeout();

  // The last timeout was spurious: the RTO returns to the estimate.
  void cancel_backoff() { backoff_ = 0; }

  // The RTO to arm now, including backoff.
  Duration rto() const;
  // The RTO from the estimates alone, without backoff.
  Duration base_rto() const { return base_rto_; }
  Duration srtt() const { return srtt_; }
  // The smallest valid sample so far (zero before the first).
  Duration min_rtt() const { return min_rtt_; }
  Duration rttvar() const { return rttvar_; }
  bool has_sample() const { return has_sample_; }
  unsigned backoff_shift() const { return backoff_; }

 private:
  Duration clamp(Duration d) const;

  RtoParams params_;
  Duration srtt_{};
  Duration rttvar_{};
  Duration min_rtt_{};
  Duration base_rto_{};
  unsigned backoff_ = 0;
  bool has_sample_ = false;
};

}  // namespace hyperscsi::proto

// Retransmission-timeout estimation: Jacobson/Karels smoothing (RFC 6298),
// clamped to RtoParams, exponential backoff on timeout, Karn's rule.
//
// Two changes for a sample per frame instead of one per round trip (RFC 6298
// assumes the latter; with hundreds per round its gains forget a delay spike
// within the round, and a queue that fills and drains then fires the timer):
// the variance used for the RTO is the largest of the last completed round,
// decaying by 1/4 per round (Linux's mdev_max), and the RTO is at least
// srtt + RtoParams::min (Linux's rule), not just RtoParams::min.
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
  // `ends_round`: the sampled frame was sent after the previous round's
  // sample was taken (default: every sample is a round, as in RFC 6298).
  bool on_sample(Duration rtt, bool retransmitted = false, bool ends_round = true);

  // The retransmission timer fired: doubles the RTO (capped at params.max).
  void on_timeout();

  // The last timeout was spurious: the RTO returns to the estimate.
  void cancel_backoff() { backoff_ = 0; }

  // A spurious timeout's original frame was acknowledged `rtt` after it was
  // sent (a delay the estimate missed): srtt and rttvar become at least rtt
  // and rtt / 2 (the Eifel response, RFC 4015), so the next RTO covers it.
  void on_spurious_timeout(Duration rtt);

  // The RTO to arm now, including backoff.
  Duration rto() const;
  // The RTO from the estimates alone, without backoff.
  Duration base_rto() const { return base_rto_; }
  Duration srtt() const { return srtt_; }
  // The smallest valid sample so far (zero before the first).
  Duration min_rtt() const { return min_rtt_; }
  Duration rttvar() const { return rttvar_; }
  // The variance the RTO uses: max(rttvar, this round's peak, the held peak).
  Duration rto_variance() const;
  bool has_sample() const { return has_sample_; }
  unsigned backoff_shift() const { return backoff_; }

 private:
  Duration clamp(Duration d) const;

  RtoParams params_;
  Duration srtt_{};
  Duration rttvar_{};
  Duration round_peak_{};  // largest rttvar in the round under way
  Duration held_peak_{};   // from completed rounds, decaying by 1/4 per round
  Duration min_rtt_{};
  Duration base_rto_{};
  unsigned backoff_ = 0;
  bool has_sample_ = false;
};

}  // namespace hyperscsi::proto

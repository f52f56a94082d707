#include "hyperscsi/proto/rtt.h"

#include <algorithm>

namespace hyperscsi::proto {

namespace {
constexpr unsigned kMaxBackoffShift = 16;  // 2^16 x min RTO is far beyond any sane max
}

RttEstimator::RttEstimator(const RtoParams& params) : params_(params) {
  if (params_.max < params_.min) params_.max = params_.min;
  base_rto_ = clamp(params_.initial);
}

Duration RttEstimator::clamp(Duration d) const {
  return std::clamp(d, params_.min, params_.max);
}

bool RttEstimator::on_sample(Duration rtt, bool retransmitted, bool ends_round) {
  if (retransmitted || rtt < Duration::zero()) return false;  // Karn's rule
  if (!has_sample_) {
    // RFC 6298 2.2: first measurement.
    srtt_ = rtt;
    rttvar_ = rtt / 2;
    min_rtt_ = rtt;
    has_sample_ = true;
  } else {
    const Duration err = rtt - srtt_;
    const Duration abs_err = err < Duration::zero() ? -err : err;
    Duration growth = abs_err - rttvar_;
    // A falling RTT is no reason for a longer RTO: such a rise counts 1/8
    // (Linux; the Eifel finding).
    if (err < Duration::zero() && growth > Duration::zero()) growth /= 8;
    rttvar_ += growth / 4;
    srtt_ += err / 8;
    min_rtt_ = std::min(min_rtt_, rtt);
  }
  round_peak_ = std::max(round_peak_, rttvar_);
  if (ends_round) {
    held_peak_ = std::max(round_peak_, held_peak_ - (held_peak_ - round_peak_) / 4);
    round_peak_ = Duration::zero();
  }
  base_rto_ = clamp(srtt_ + std::max(4 * rto_variance(), params_.min));
  backoff_ = 0;
  return true;
}

void RttEstimator::on_spurious_timeout(Duration rtt) {
  if (rtt <= Duration::zero()) return;
  if (!has_sample_) {
    on_sample(rtt);
    return;
  }
  srtt_ = std::max(srtt_, rtt);
  rttvar_ = std::max(rttvar_, rtt / 2);
  round_peak_ = std::max(round_peak_, rttvar_);
  base_rto_ = clamp(srtt_ + std::max(4 * rto_variance(), params_.min));
}

Duration RttEstimator::rto_variance() const {
  return std::max({rttvar_, round_peak_, held_peak_});
}

void RttEstimator::on_timeout() {
  if (rto() < params_.max && backoff_ < kMaxBackoffShift) ++backoff_;
}

Duration RttEstimator::rto() const {
  Duration r = base_rto_;
  for (unsigned i = 0; i < backoff_ && r < params_.max; ++i) r *= 2;
  return std::min(r, params_.max);
}

}  // namespace hyperscsi::proto

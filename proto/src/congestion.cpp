#include "hyperscsi/proto/congestion.h"

#include <algorithm>

#include "hyperscsi/proto/seq.h"

namespace hyperscsi::proto {

CongestionControl::CongestionControl(uint32_t initial_cwnd, uint32_t max_cwnd)
    : cwnd_(std::max<uint32_t>(1, std::min(initial_cwnd, std::max<uint32_t>(1, max_cwnd)))),
      ssthresh_(std::max<uint32_t>(1, max_cwnd)),
      max_cwnd_(std::max<uint32_t>(1, max_cwnd)) {}

void CongestionControl::on_ack(uint32_t frames, uint32_t cum_ack) {
  if (in_recovery_ && seq_geq(cum_ack, recovery_point_)) {
    in_recovery_ = false;
    timeout_episode_ = false;
  }
  while (frames > 0 && cwnd_ < max_cwnd_) {
    if (cwnd_ < ssthresh_) {
      // Slow start: +1 per acked frame, up to ssthresh.
      const uint32_t step = std::min(frames, ssthresh_ - cwnd_);
      cwnd_ += step;
      frames -= step;
    } else {
      // Congestion avoidance: +1 per window's worth of acked frames.
      const uint32_t need = cwnd_ - acked_in_ca_;
      if (frames >= need) {
        frames -= need;
        acked_in_ca_ = 0;
        ++cwnd_;
      } else {
        acked_in_ca_ += frames;
        frames = 0;
      }
    }
  }
  cwnd_ = std::min(cwnd_, max_cwnd_);
}

uint32_t CongestionControl::half_flight(uint32_t in_flight) const {
  // RFC 5681: half the data in flight, but a window-limited sender whose
  // cwnd is below its flight halves cwnd instead.
  const uint32_t base = std::min(cwnd_, std::max<uint32_t>(in_flight, 1));
  return std::max<uint32_t>(base / 2, 2);
}

bool CongestionControl::on_loss(uint32_t in_flight, uint32_t snd_nxt) {
  if (in_recovery_) return false;  // one reduction per window of data
  ssthresh_ = half_flight(in_flight);
  cwnd_ = std::min(ssthresh_, max_cwnd_);
  acked_in_ca_ = 0;
  in_recovery_ = true;
  recovery_point_ = snd_nxt;
  return true;
}

void CongestionControl::on_timeout(uint32_t in_flight, uint32_t snd_nxt) {
  if (!have_undo_) {
    before_timeout_ = {cwnd_, ssthresh_, acked_in_ca_, recovery_point_, in_recovery_};
    have_undo_ = true;
  }
  // A further timeout before the first one's data is acknowledged (the same
  // episode, the timer backing off) keeps the first one's ssthresh: halving
  // the already collapsed window again set ssthresh to the floor of 2, and the
  // session then crawled back at one frame per round trip (issue 21).
  if (!timeout_episode_) ssthresh_ = half_flight(in_flight);
  timeout_episode_ = true;
  cwnd_ = 1;
  acked_in_ca_ = 0;
  in_recovery_ = true;
  recovery_point_ = snd_nxt;
}

void CongestionControl::undo_timeout() {
  if (!have_undo_) return;
  have_undo_ = false;
  timeout_episode_ = false;
  cwnd_ = before_timeout_.cwnd;
  ssthresh_ = before_timeout_.ssthresh;
  acked_in_ca_ = before_timeout_.acked_in_ca;
  recovery_point_ = before_timeout_.recovery_point;
  in_recovery_ = before_timeout_.in_recovery;
}

}  // namespace hyperscsi::proto

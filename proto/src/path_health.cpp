#include "hyperscsi/proto/path_health.h"

#include <algorithm>

namespace hyperscsi::proto {

Duration failure_timeout(const PathHealthConfig& c, Duration base_rto) {
  const Duration t = base_rto * std::max<uint32_t>(c.rto_multiple, 1);
  return std::clamp(t, c.min_timeout, std::max(c.min_timeout, c.max_timeout));
}

PathHealth::PathHealth(const PathHealthConfig& config, TimePoint now)
    : config_(config),
      timeout_(failure_timeout(config, milliseconds(50))),
      last_heard_(now),
      progress_at_(now),
      last_keepalive_(now) {}

void PathHealth::on_heard(TimePoint now) {
  last_heard_ = std::max(last_heard_, now);
}

void PathHealth::on_ack_state(TimePoint now, uint64_t frames_acked, uint32_t unacked_frames) {
  if (frames_acked != frames_acked_ || unacked_frames == 0)
    progress_at_ = std::max(progress_at_, now);
  frames_acked_ = frames_acked;
  outstanding_ = unacked_frames > 0;
}

PathVerdict PathHealth::check(TimePoint now, bool watch_silence) const {
  if (outstanding_ && now - progress_at_ >= timeout_) return PathVerdict::kStuck;
  if (watch_silence && now - last_heard_ >= timeout_) return PathVerdict::kSilent;
  return PathVerdict::kHealthy;
}

Duration PathHealth::keepalive_interval() const {
  return timeout_ / std::max<uint32_t>(config_.keepalives_per_timeout, 1);
}

bool PathHealth::keepalive_due(TimePoint now) const {
  return now - std::max(last_heard_, last_keepalive_) >= keepalive_interval();
}

TimePoint PathHealth::next_deadline(bool watch_silence) const {
  TimePoint t = kNever;
  if (outstanding_) t = progress_at_ + timeout_;
  if (watch_silence) {
    t = std::min(t, last_heard_ + timeout_);
    t = std::min(t, std::max(last_heard_, last_keepalive_) + keepalive_interval());
  }
  return t;
}

}  // namespace hyperscsi::proto

#include "hyperscsi/io/wake_policy.h"

#include <algorithm>

namespace hyperscsi::io {

namespace {

Duration at_rate(size_t bytes, double bytes_per_ns) {
  return Duration(static_cast<int64_t>(static_cast<double>(bytes) / bytes_per_ns));
}

}  // namespace

void WakePolicy::on_turn(TimePoint woke, size_t rx_bytes) {
  // A wait while a PDU streamed in measures the link: the ring filled for a
  // known time (a hold), or its first frame ended a sleep on the port.
  if (wait_start_ != kNotWaiting && wait_streaming_ && asked_ && woke > wait_start_ &&
      rx_bytes > 0) {
    const double sample =
        static_cast<double>(rx_bytes) / static_cast<double>((woke - wait_start_).count());
    if (wait_held_ && hold_window_ > 0 && rx_bytes >= hold_window_ / 2) {
      // The peer may have run out of window while we held: the link is at
      // least this fast, maybe much faster. Halve the next hold.
      rx_rate_ = std::max(sample, 2 * rx_rate_);
    } else {
      rx_rate_ = rx_rate_ == 0 ? sample : rx_rate_ + (sample - rx_rate_) / 8;
    }
  }
  wait_start_ = kNotWaiting;
  asked_ = false;
}

Duration WakePolicy::hold(TimePoint now, TimePoint deadline, const proto::FlowHints& hints,
                          size_t commands_in_flight) {
  asked_ = true;
  wait_streaming_ = hints.rx_missing >= config_.coalesce_min_bytes;
  hold_window_ = hints.rx_window_bytes;
  // A sender with frames waiting for its window must see the next ack.
  if (deadline <= now || hints.tx_waiting) return Duration::zero();
  const Duration left = deadline - now;
  Duration want = Duration::zero();
  if (wait_streaming_) {
    // Until the PDU is in, or a quarter of the peer's window has come (its
    // sender must not run dry while we sleep), whichever is sooner.
    const size_t aim = std::max(config_.coalesce_min_bytes, hints.rx_window_bytes / 4);
    want = rx_rate_ > 0 ? at_rate(std::min(aim, hints.rx_missing), rx_rate_) : config_.coalesce_min;
  }
  if (commands_in_flight >= config_.pipeline_min && have_reply_ &&
      reply_ewma_ >= 8 * config_.coalesce_min)
    want = std::max(want, reply_ewma_ / 8);
  want = std::min(want, config_.coalesce_max);
  // The peer may send at most a window ahead of our acks, which go out only
  // when we wake: never hold longer than a quarter of the time it lasts.
  if (rx_rate_ > 0 && hints.rx_window_bytes > 0)
    want = std::min(want, at_rate(hints.rx_window_bytes, rx_rate_) / 4);
  want = std::min(want, left);
  if (want < config_.coalesce_min) return Duration::zero();
  return want;
}

void WakePolicy::on_wait(TimePoint now, bool holding) {
  wait_start_ = now;
  wait_held_ = holding;
}

void WakePolicy::on_reply(Duration reply_time) {
  if (!have_reply_) {
    reply_ewma_ = reply_time;
    have_reply_ = true;
    return;
  }
  reply_ewma_ += (reply_time - reply_ewma_) / 8;
}

bool WakePolicy::should_poll(size_t commands_in_flight) {
  if (config_.busy_poll <= Duration::zero() || commands_in_flight == 0) return false;
  // Replies that take many budgets come from a busy link or a slow device:
  // a poll would spin through frames that complete nothing soon.
  if (have_reply_ && reply_ewma_ > config_.busy_poll * config_.poll_reply_budgets) return false;
  // Polls that mostly come back empty cost a CPU for nothing; try again now
  // and then in case the traffic changed.
  if (poll_share_ < 64) {
    if (++skipped_polls_ < 32) return false;
    skipped_polls_ = 0;
  }
  return true;
}

void WakePolicy::on_poll(bool found, Duration /*spent*/) {
  poll_share_ = poll_share_ - poll_share_ / 16 + (found ? 16 : 0);
}

}  // namespace hyperscsi::io

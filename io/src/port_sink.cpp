#include "hyperscsi/io/port_sink.h"

#include <algorithm>
#include <utility>

namespace hyperscsi::io {

namespace {
// A lateness sample counts at most this much (a sender preempted for long
// would otherwise pull the releases early for many turns after).
constexpr double kMaxLateNs = 2e6;
}  // namespace

PortSink::PortSink(Port& port, size_t max_pending) : port_(port), max_pending_(max_pending) {
  queued_.reserve(max_pending);
}

std::span<uint8_t> PortSink::acquire(size_t size) {
  if (queued_.size() >= max_pending_) flush();
  if (queued_.size() >= max_pending_) return {};
  if (!current_) current_ = port_.alloc();
  if (!current_) return {};
  std::span<uint8_t> room = current_.writable();
  if (room.size() < size) return {};
  return room.first(size);
}

void PortSink::commit(size_t length) {
  if (!current_ || !current_.resize(length)) return;
  queued_.push_back(std::move(current_));
}

void PortSink::commit_gather(std::span<uint8_t> frame, size_t header_length,
                             std::span<const uint8_t> payload,
                             const std::shared_ptr<const void>& owner) {
  if (!port_.tx_gather()) return FrameSink::commit_gather(frame, header_length, payload, owner);
  if (!current_ || !current_.resize(header_length)) return;
  current_.set_tail(payload, owner);
  queued_.push_back(std::move(current_));
}

size_t PortSink::flush() {
  if (follow_port_) {
    const uint64_t rate = port_.tx_rate();
    const uint64_t bucket = port_.tx_bucket();
    if (rate != port_rate_ || bucket != port_bucket_) apply_port_rate(rate, bucket);
  }
  held_by_pacing_ = false;
  size_t allowed = queued_.size();
  if (rate_ > 0 && !queued_.empty()) {
    const proto::TimePoint now = now_();
    // A flush at or after the release last announced to the owner measures
    // how late its wake-up (and its turn up to here) came; an earlier one (a
    // new submission woke it) says nothing about that.
    if (announced_ != proto::kNever && now >= announced_) {
      const double late = static_cast<double>((now - announced_).count());
      late_ns_ += (std::min(late, kMaxLateNs) - late_ns_) / 8;
    }
    announced_ = proto::kNever;
    credit_ = std::min(burst_, credit_ + static_cast<double>((now - credit_at_).count()) * rate_);
    credit_at_ = now;
    double bytes = 0;
    allowed = 0;
    while (allowed < queued_.size() &&
           bytes + static_cast<double>(queued_[allowed].frame_size()) <= credit_)
      bytes += static_cast<double>(queued_[allowed++].frame_size());
    held_by_pacing_ = allowed < queued_.size();
  }
  size_t sent = 0;
  while (sent < allowed) {
    const size_t offered = allowed - sent;
    // Sizes before the port takes the packets: it empties the handles it takes.
    sizes_.clear();
    if (rate_ > 0)
      for (size_t i = 0; i < offered; ++i) sizes_.push_back(queued_[i].frame_size());
    const size_t n = port_.tx_burst(std::span<Packet>(queued_.data(), offered));
    if (n == 0) {
      held_by_pacing_ = false;  // the port refused: that is what holds them now
      break;
    }
    if (rate_ > 0)
      for (size_t i = 0; i < n; ++i) credit_ -= static_cast<double>(sizes_[i]);
    queued_.erase(queued_.begin(), queued_.begin() + static_cast<ptrdiff_t>(n));
    sent += n;
  }
  return sent;
}

void PortSink::set_pacing(uint64_t bytes_per_second, size_t burst_bytes) {
  follow_port_ = false;
  rate_ = static_cast<double>(bytes_per_second) / 1e9;
  burst_ = static_cast<double>(burst_bytes);
  credit_ = burst_;
  credit_at_ = now_();
  announced_ = proto::kNever;
}

void PortSink::pace_at_port_rate() {
  apply_port_rate(port_.tx_rate(), port_.tx_bucket());
}

void PortSink::apply_port_rate(uint64_t rate, uint64_t bucket) {
  if (rate == 0) {
    set_pacing(0, 0);
  } else {
    const size_t frame = port_.mtu() + 14;
    const auto of_time = [rate](double seconds) {
      return static_cast<size_t>(static_cast<double>(rate) * seconds);
    };
    // Three quarters of the shaper's bucket, so that it always has tokens for
    // what arrives and never queues (measured on a 1 Gbit/s tbf with a 256 KiB
    // bucket: 0 overlimits, line rate kept); at most 2 ms of the rate, so that a
    // deep bucket does not turn pacing into long silences. Unknown bucket: 400 us.
    const size_t burst =
        bucket > 0 ? std::min<size_t>(bucket / 4 * 3, of_time(2e-3)) : of_time(400e-6);
    set_pacing(rate, std::max(burst, 2 * frame));
  }
  follow_port_ = true;
  port_rate_ = rate;
  port_bucket_ = bucket;
}

proto::TimePoint PortSink::release_time() const {
  if (!paced()) return proto::kNever;
  double waiting = 0;
  for (const Packet& p : queued_) waiting += static_cast<double>(p.frame_size());
  double want = std::min(waiting, burst_ / 2);
  // Named earlier by the lateness seen, so that a late flush finds about
  // `want` and not the bucket's overflow (issue 20: the writing client woke
  // 0.8 times per 128 KiB write where on-time releases wake 1.4 times, and
  // the wake-ups later than half a burst left the link idle). At most half
  // of `want`: the releases stay at least a quarter burst.
  want -= std::min(late_ns_ * rate_, want / 2);
  if (credit_ >= want) return credit_at_;  // due now: no wake-up to measure
  announced_ = credit_at_ + proto::Duration(static_cast<int64_t>((want - credit_) / rate_));
  return announced_;
}

bool PortSink::release_covered() const {
  if (!paced()) return false;
  double waiting = 0;
  for (const Packet& p : queued_) {
    waiting += static_cast<double>(p.frame_size());
    if (waiting >= burst_ / 2) return true;
  }
  return false;
}

}  // namespace hyperscsi::io

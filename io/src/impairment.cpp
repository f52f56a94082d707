#include "hyperscsi/io/impairment.h"

#include <algorithm>
#include <cstring>

#include "ether.h"

namespace hyperscsi::io {

using proto::Duration;
using proto::TimePoint;

ImpairedQueue::ImpairedQueue(const Impairment& imp, uint64_t seed, size_t max_frame,
                             std::function<Packet()> alloc)
    : imp_(imp), rng_(seed), max_frame_(max_frame), alloc_(std::move(alloc)) {}

bool ImpairedQueue::chance(double p) {
  if (p <= 0) return false;
  if (p >= 1) return true;
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < p;
}

void ImpairedQueue::enqueue(Packet pkt, TimePoint ready) {
  ready = std::max(ready, last_ready_);
  last_ready_ = ready;
  queue_.push_back({std::move(pkt), ready});
}

void ImpairedQueue::release_due(TimePoint now) {
  for (size_t i = 0; i < held_.size();) {
    if (held_[i].deadline <= now) {
      enqueue(std::move(held_[i].pkt), held_[i].ready);
      held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

void ImpairedQueue::tick_held() {
  for (size_t i = 0; i < held_.size();) {
    if (--held_[i].frames_left == 0) {
      enqueue(std::move(held_[i].pkt), held_[i].ready);
      held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

void ImpairedQueue::offer(Packet pkt, TimePoint now) {
  const size_t len = pkt.size();
  ++stats_.offered;
  if (detail::ether_type(pkt.data(), len) != detail::kEtherTypeHyperScsi) {
    ++stats_.filtered;
    return;
  }
  if (len > max_frame_) {
    ++stats_.mtu_drops;
    return;
  }
  if (in_flight() >= imp_.queue_limit) {
    ++stats_.queue_drops;
    return;
  }
  if (chance(imp_.loss)) {
    ++stats_.lost;
    return;
  }
  if (chance(imp_.corrupt)) {
    const uint64_t bit = std::uniform_int_distribution<uint64_t>(0, len * 8 - 1)(rng_);
    pkt.data()[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    ++stats_.corrupted;
  }
  Packet copy;
  if (chance(imp_.duplicate)) {
    if (alloc_) copy = alloc_();
    if (copy && copy.resize(len)) {
      std::memcpy(copy.data(), pkt.data(), len);
      ++stats_.duplicated;
    } else {
      copy.reset();
    }
  }
  TimePoint ready = now;
  if (imp_.rate_bps > 0) {
    const auto serialize = Duration(static_cast<Duration::rep>(
        static_cast<double>(len) * 8.0 * 1e9 / static_cast<double>(imp_.rate_bps)));
    wire_free_at_ = std::max(wire_free_at_, now) + serialize;
    ready = wire_free_at_;
  }
  ready += imp_.delay;
  if (imp_.jitter.count() > 0) {
    ready += Duration(std::uniform_int_distribution<Duration::rep>(0, imp_.jitter.count())(rng_));
  }
  if (imp_.reorder_gap > 0 && chance(imp_.reorder)) {
    ++stats_.reordered;
    held_.push_back({std::move(pkt), ready, imp_.reorder_gap, now + imp_.reorder_timeout});
  } else {
    enqueue(std::move(pkt), ready);
    tick_held();
  }
  if (copy) {
    enqueue(std::move(copy), ready);
    tick_held();
  }
}

size_t ImpairedQueue::take(TimePoint now, std::span<Packet> out) {
  release_due(now);
  size_t n = 0;
  while (n < out.size() && !queue_.empty() && queue_.front().ready <= now) {
    out[n] = std::move(queue_.front().pkt);
    queue_.pop_front();
    ++stats_.delivered;
    ++n;
  }
  return n;
}

TimePoint ImpairedQueue::next_due() const {
  TimePoint due = TimePoint::max();
  if (!queue_.empty()) due = queue_.front().ready;
  for (const auto& h : held_) due = std::min(due, h.deadline);
  return due;
}

void ImpairedQueue::clear() {
  queue_.clear();
  held_.clear();
}

}  // namespace hyperscsi::io

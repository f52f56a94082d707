#include "hyperscsi/proto/reply_cache.h"

#include <bit>

namespace hyperscsi::proto {

namespace {
uint32_t round_up_pow2(uint32_t v) {
  return v <= 1 ? 1 : std::bit_ceil(v);
}
}  // namespace

const char* to_string(CacheDecision d) {
  switch (d) {
    case CacheDecision::kExecute:
      return "execute";
    case CacheDecision::kInProgress:
      return "in-progress";
    case CacheDecision::kReplay:
      return "replay";
    case CacheDecision::kReexecuteIdempotent:
      return "re-execute-idempotent";
    case CacheDecision::kStale:
      return "stale";
    case CacheDecision::kOutOfWindow:
      return "out-of-window";
  }
  return "?";
}

ReplyCache::ReplyCache(const ReplyCacheLimits& limits) : limits_(limits) {
  limits_.max_ahead = round_up_pow2(limits_.max_ahead == 0 ? 1 : limits_.max_ahead);
  if (limits_.max_ahead > (1u << 30)) limits_.max_ahead = 1u << 30;
  slots_.resize(limits_.max_ahead);
}

bool ReplyCache::in_window(uint32_t cmd_sn) const {
  return static_cast<uint32_t>(cmd_sn - low_) < limits_.max_ahead;
}

CacheDecision ReplyCache::begin(uint32_t cmd_sn) {
  if (!low_known_) {
    low_ = cmd_sn;
    low_known_ = true;
  }
  if (!in_window(cmd_sn)) {
    // Serial arithmetic: behind `low` by less than 2^31 is an old duplicate.
    const auto behind = static_cast<int32_t>(cmd_sn - low_) < 0;
    if (behind && static_cast<uint32_t>(low_ - cmd_sn) <= limits_.max_ahead) {
      ++stats_.stale;
      return CacheDecision::kStale;
    }
    ++stats_.out_of_window;
    return CacheDecision::kOutOfWindow;
  }
  Slot& s = slot(cmd_sn);
  if (s.state != SlotState::kEmpty && s.cmd_sn == cmd_sn) {
    if (s.state == SlotState::kInProgress) {
      ++stats_.in_progress_duplicates;
      return CacheDecision::kInProgress;
    }
    if (!s.data_dropped) {
      ++stats_.replays;
      return CacheDecision::kReplay;
    }
    clear_slot(s);
    s.cmd_sn = cmd_sn;
    s.state = SlotState::kInProgress;
    ++stats_.reexecutions;
    return CacheDecision::kReexecuteIdempotent;
  }
  // In the window the slot can only hold this cmd_sn or be empty (slots of
  // cmd_sn below `low` are cleared by release_below).
  clear_slot(s);
  s.cmd_sn = cmd_sn;
  s.state = SlotState::kInProgress;
  ++stats_.executed;
  return CacheDecision::kExecute;
}

bool ReplyCache::complete(uint32_t cmd_sn, std::vector<uint8_t> reply, size_t data_offset,
                          bool reexecutable) {
  return complete_shared(cmd_sn, share_bytes(std::move(reply)), data_offset, reexecutable);
}

bool ReplyCache::complete_shared(uint32_t cmd_sn, SharedBytes reply, size_t data_offset,
                                 bool reexecutable) {
  if (!low_known_ || !in_window(cmd_sn) || !reply) return false;
  Slot& s = slot(cmd_sn);
  if (s.state != SlotState::kInProgress || s.cmd_sn != cmd_sn) return false;
  s.state = SlotState::kDone;
  const size_t size = reply.size();
  s.data_offset = data_offset < size ? data_offset : size;
  s.reexecutable = reexecutable && s.data_offset < size;
  s.reply = std::move(reply);
  ++stats_.cached_entries;
  stats_.cached_bytes += size;
  if (s.reexecutable) {
    stats_.cached_data_bytes += size - s.data_offset;
    droppable_order_.push_back(cmd_sn);
    if (droppable_order_.size() > 2 * slots_.size()) compact_order();
    enforce_budget();
  }
  return true;
}

void ReplyCache::abandon(uint32_t cmd_sn) {
  if (!low_known_ || !in_window(cmd_sn)) return;
  Slot& s = slot(cmd_sn);
  if (s.cmd_sn == cmd_sn && s.state == SlotState::kInProgress) clear_slot(s);
}

std::span<const uint8_t> ReplyCache::stored_reply(uint32_t cmd_sn) const {
  if (!low_known_ || !in_window(cmd_sn)) return {};
  const Slot& s = slot(cmd_sn);
  if (s.state != SlotState::kDone || s.cmd_sn != cmd_sn || s.data_dropped || !s.reply) return {};
  return s.reply.span();
}

SharedBytes ReplyCache::stored_reply_bytes(uint32_t cmd_sn) const {
  if (!low_known_ || !in_window(cmd_sn)) return {};
  const Slot& s = slot(cmd_sn);
  if (s.state != SlotState::kDone || s.cmd_sn != cmd_sn || s.data_dropped) return {};
  return s.reply;
}

void ReplyCache::release_below(uint32_t reply_ack_sn) {
  if (!low_known_) {
    low_ = reply_ack_sn;
    low_known_ = true;
    return;
  }
  const uint32_t advance = reply_ack_sn - low_;
  if (advance == 0 || static_cast<int32_t>(advance) < 0) return;  // not forward
  if (advance > limits_.max_ahead) {
    ++stats_.out_of_window;
    return;
  }
  for (uint32_t sn = low_; sn != reply_ack_sn; ++sn) {
    Slot& s = slot(sn);
    if (s.cmd_sn == sn) clear_slot(s);
  }
  low_ = reply_ack_sn;
  while (!droppable_order_.empty() && !in_window(droppable_order_.front()))
    droppable_order_.pop_front();
}

void ReplyCache::clear_slot(Slot& s) {
  if (s.state == SlotState::kDone) {
    --stats_.cached_entries;
    stats_.cached_bytes -= size_of(s);
    if (s.reexecutable && !s.data_dropped) stats_.cached_data_bytes -= size_of(s) - s.data_offset;
  }
  s.state = SlotState::kEmpty;
  s.data_dropped = false;
  s.reexecutable = false;
  s.data_offset = 0;
  s.reply.reset();  // the buffer goes with the last holder (maybe the connection)
}

void ReplyCache::drop_data(Slot& s) {
  const size_t dropped = size_of(s) - s.data_offset;
  stats_.cached_data_bytes -= dropped;
  stats_.cached_bytes -= dropped;
  stats_.data_dropped_bytes += dropped;
  // Keep the header alone, in a buffer of its own.
  s.reply = share_bytes(std::vector<uint8_t>(
      s.reply.begin(), s.reply.begin() + static_cast<ptrdiff_t>(s.data_offset)));
  s.data_dropped = true;
}

// Re-executions can queue a cmd_sn twice; keep the queue proportional to the window.
void ReplyCache::compact_order() {
  std::deque<uint32_t> kept;
  for (uint32_t sn : droppable_order_) {
    const Slot& s = slot(sn);
    if (in_window(sn) && s.cmd_sn == sn && s.state == SlotState::kDone && s.reexecutable &&
        !s.data_dropped)
      kept.push_back(sn);
  }
  droppable_order_.swap(kept);
}

void ReplyCache::enforce_budget() {
  while (stats_.cached_data_bytes > limits_.data_budget_bytes && !droppable_order_.empty()) {
    const uint32_t sn = droppable_order_.front();
    droppable_order_.pop_front();
    if (!in_window(sn)) continue;
    Slot& s = slot(sn);
    if (s.cmd_sn == sn && s.state == SlotState::kDone && s.reexecutable && !s.data_dropped)
      drop_data(s);
  }
}

}  // namespace hyperscsi::proto

#include "hyperscsi/proto/command_order.h"

#include <algorithm>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/seq.h"

namespace hyperscsi::proto {

void CommandOrderer::push(ReceivedPdu pdu, TimePoint now) {
  if (pdu.opcode != Opcode::kCommandRequest || pdu.bytes.size() < 8) {
    ++stats_.passed_through;
    ready_.push_back(std::move(pdu));
    return;
  }
  const uint32_t cmd_sn = bytes::load_be32(pdu.bytes.data());
  const uint32_t reply_ack_sn = bytes::load_be32(pdu.bytes.data() + 4);
  if (!started_) {
    started_ = true;
    next_ = reply_ack_sn;
  }
  // Everything below reply_ack_sn was answered: nothing there is pending.
  if (seq_gt(reply_ack_sn, next_) && seq_diff(reply_ack_sn, next_) <= int32_t(config_.max_ahead))
    next_ = reply_ack_sn;
  const int32_t ahead = seq_diff(cmd_sn, next_);
  if (ahead < 0) {
    ++stats_.duplicates;
    ready_.push_back(std::move(pdu));
  } else if (ahead >= static_cast<int32_t>(config_.max_ahead)) {
    ++stats_.passed_through;  // the ReplyCache calls it out of window
    ready_.push_back(std::move(pdu));
  } else if (ahead == 0) {
    ++stats_.in_order;
    ready_.push_back(std::move(pdu));
    ++next_;
  } else if (held_.contains(cmd_sn)) {
    ++stats_.duplicates;  // a second copy of a held one: the cache sorts it out
    ready_.push_back(std::move(pdu));
  } else {
    ++stats_.held;
    held_.emplace(cmd_sn, Held{std::move(pdu), now});
    if (held_.size() > config_.max_held) skip_gap();
  }
  release_in_order();
}

void CommandOrderer::release_in_order() {
  while (!held_.empty()) {
    auto it = held_.begin();
    const int32_t d = seq_diff(it->first, next_);
    if (d > 0) break;
    if (d == 0) ++next_;
    ready_.push_back(std::move(it->second.pdu));
    held_.erase(it);
  }
}

void CommandOrderer::skip_gap() {
  if (held_.empty()) return;
  ++stats_.gaps_skipped;
  next_ = held_.begin()->first;
  release_in_order();
}

std::optional<ReceivedPdu> CommandOrderer::pop(TimePoint now) {
  while (!held_.empty() && next_deadline() <= now) skip_gap();
  if (ready_.empty()) return std::nullopt;
  ReceivedPdu p = std::move(ready_.front());
  ready_.pop_front();
  return p;
}

TimePoint CommandOrderer::next_deadline() const {
  TimePoint t = kNever;
  for (const auto& [sn, h] : held_) t = std::min(t, h.arrived + config_.max_hold);
  return t;
}

}  // namespace hyperscsi::proto

#include "tx_scheduler.h"

#include <algorithm>

namespace hyperscsi::engine {

namespace {

// Passes a session's frames to the port's sink while its budget lasts, and
// tells apart the two refusals: the budget (the session gets another round)
// and the port (the pass ends).
class BudgetSink final : public proto::FrameSink {
 public:
  BudgetSink(proto::FrameSink& inner, size_t budget) : inner_(inner), budget_(budget) {}

  std::span<uint8_t> acquire(size_t size) override {
    if (port_full_) return {};
    if (size > budget_) {
      held_back_ = true;
      largest_refused_ = std::max(largest_refused_, size);
      return {};
    }
    std::span<uint8_t> buf = inner_.acquire(size);
    if (buf.size() < size) {
      port_full_ = true;
      return {};
    }
    return buf;
  }
  void commit(size_t length) override {
    inner_.commit(length);
    budget_ -= std::min(budget_, length);
    ++frames_;
  }
  // Passed on as it is, so that the port may send the payload without a copy.
  void commit_gather(std::span<uint8_t> frame, size_t header_length,
                     std::span<const uint8_t> payload,
                     const std::shared_ptr<const void>& owner) override {
    inner_.commit_gather(frame, header_length, payload, owner);
    budget_ -= std::min(budget_, header_length + payload.size());
    ++frames_;
  }

  size_t budget_left() const { return budget_; }
  bool held_back() const { return held_back_; }
  bool port_full() const { return port_full_; }
  size_t largest_refused() const { return largest_refused_; }
  size_t frames() const { return frames_; }

 private:
  proto::FrameSink& inner_;
  size_t budget_;
  size_t largest_refused_ = 0;
  size_t frames_ = 0;
  bool held_back_ = false;
  bool port_full_ = false;
};

// Bounds one pass even if a session misbehaved (emitting without end).
constexpr uint64_t kMaxRounds = 4096;

}  // namespace

TxScheduler::TxScheduler(size_t quantum) : quantum_(std::max<size_t>(quantum, 64)) {}

size_t TxScheduler::deficit(uint32_t session_id) const {
  auto it = deficit_.find(session_id);
  return it == deficit_.end() ? 0 : it->second;
}

void TxScheduler::run(std::span<const uint32_t> sessions, proto::FrameSink& sink,
                      const PollSession& poll) {
  ++stats_.passes;
  ids_.assign(sessions.begin(), sessions.end());
  std::sort(ids_.begin(), ids_.end());
  ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
  // Forget sessions that are gone.
  for (auto it = deficit_.begin(); it != deficit_.end();) {
    if (std::binary_search(ids_.begin(), ids_.end(), it->first))
      ++it;
    else
      it = deficit_.erase(it);
  }
  if (ids_.empty()) return;
  const size_t n = ids_.size();
  // Start where the last pass was cut off (or one after where it started).
  size_t start = 0;
  if (have_resume_)
    start =
        static_cast<size_t>(std::lower_bound(ids_.begin(), ids_.end(), resume_at_) - ids_.begin()) %
        n;
  // A session cut off by the port continues its round: no new quantum.
  const bool continue_round = cut_off_ && ids_[start] == resume_at_;
  cut_off_ = false;
  have_resume_ = true;
  resume_at_ = ids_[(start + 1) % n];

  std::vector<bool> waiting(n, true);  // still in the running this pass
  for (uint64_t round = 0; round < kMaxRounds; ++round) {
    ++stats_.rounds;
    bool any_held = false;
    for (size_t k = 0; k < n; ++k) {
      const size_t idx = (start + k) % n;
      if (!waiting[idx]) continue;
      const uint32_t id = ids_[idx];
      size_t& owed = deficit_[id];
      const bool fresh_quantum = !(continue_round && round == 0 && k == 0);
      BudgetSink budget(sink, owed + (fresh_quantum ? quantum_ : 0));
      poll(id, budget);
      if (budget.port_full()) {
        // Cut off: it keeps the rest of this round's budget and goes first
        // next time, finishing its round before the others start theirs.
        owed = budget.budget_left();
        resume_at_ = id;
        cut_off_ = true;
        ++stats_.port_full;
        return;
      }
      if (budget.held_back()) {
        // Backlogged: carries the rest of its budget into the next round.
        // A quantum smaller than a frame would never let it through.
        quantum_ = std::max(quantum_, budget.largest_refused());
        owed = budget.budget_left();
        ++stats_.budget_stops;
        any_held = true;
      } else {
        owed = 0;  // sent all it had: nothing is owed (DRR resets an idle flow)
        waiting[idx] = false;
      }
    }
    if (!any_held) return;
  }
}

void TxScheduler::poll(proto::TargetEndpoint& endpoint, proto::TimePoint now,
                       proto::FrameSink& sink) {
  endpoint.poll_control(now, sink);
  std::vector<uint32_t> ids;
  endpoint.session_ids(ids);
  run(ids, sink, [&](uint32_t id, proto::FrameSink& s) { endpoint.poll_session(id, now, s); });
}

}  // namespace hyperscsi::engine

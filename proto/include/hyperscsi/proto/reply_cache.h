// ReplyCache: the target side of exactly-once command execution, one per
// session (it survives a session resume; the Connection does not).
//
// Keyed by CommandHeader::cmd_sn with serial-number arithmetic. The window of
// acceptable cmd_sn is [low, low + max_ahead), where `low` is the highest
// reply_ack_sn the initiator has sent (every reply below it has reached the
// initiator, so those entries are freed).
//
// The rule for bounded memory: a stored reply always keeps its header (status,
// sense); its data-in is kept too unless the command was declared
// re-executable (a READ-like command: data-in only, no side effects) and the
// cached data-in of all entries exceeds the byte budget, in which case the
// oldest re-executable entries lose their data first. A duplicate of such an
// entry gets kReexecuteIdempotent: the owner executes the read again and
// completes it as usual. Writes and other commands with side effects are never
// re-executed: their reply is small (header only) and always kept.
//
// Thread-safety: none; owned and used by one thread (the session's owner).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "hyperscsi/proto/shared_bytes.h"

namespace hyperscsi::proto {

enum class CacheDecision : uint8_t {
  kExecute,              // new command: execute it, then complete()
  kInProgress,           // duplicate of a command still executing: do nothing
  kReplay,               // duplicate of a completed command: resend stored_reply()
  kReexecuteIdempotent,  // duplicate of a completed read whose data was dropped: execute again
  kStale,                // below the window: the initiator already holds its reply; drop
  kOutOfWindow,          // too far ahead (or far behind): a protocol error; drop
};
const char* to_string(CacheDecision d);

struct ReplyCacheLimits {
  uint32_t max_ahead = 4096;             // power of two; cmd_sn accepted in [low, low+max_ahead)
  size_t data_budget_bytes = 16u << 20;  // cached data-in of re-executable replies
};

struct ReplyCacheStats {
  uint64_t executed = 0;
  uint64_t in_progress_duplicates = 0;
  uint64_t replays = 0;
  uint64_t reexecutions = 0;
  uint64_t stale = 0;
  uint64_t out_of_window = 0;
  uint64_t data_dropped_bytes = 0;
  size_t cached_entries = 0;
  size_t cached_bytes = 0;       // all stored reply bytes
  size_t cached_data_bytes = 0;  // the droppable part (counted against the budget)
};

class ReplyCache {
 public:
  explicit ReplyCache(const ReplyCacheLimits& limits = {});

  // Classifies an incoming command. kExecute and kReexecuteIdempotent mark it
  // in progress; the owner must call complete() (or abandon()) for it.
  CacheDecision begin(uint32_t cmd_sn);

  // Stores the reply PDU of a command begun with kExecute/kReexecuteIdempotent.
  // `data_offset` is where data-in starts within `reply` (the reply header
  // size); `reexecutable` says the data-in may be dropped and recomputed.
  // Returns false (storing nothing) if cmd_sn is not in progress. The shared
  // form keeps a reference to bytes the connection sends too (no copy).
  bool complete(uint32_t cmd_sn, std::vector<uint8_t> reply, size_t data_offset, bool reexecutable);
  bool complete_shared(uint32_t cmd_sn, SharedBytes reply, size_t data_offset, bool reexecutable);

  // Forgets an in-progress command that will never complete (the owner could
  // not execute it); a later duplicate is executed afresh.
  void abandon(uint32_t cmd_sn);

  // The stored reply of a completed command with its data, or an empty span.
  std::span<const uint8_t> stored_reply(uint32_t cmd_sn) const;
  // The same bytes, shared (null when there are none), to resend without a copy.
  SharedBytes stored_reply_bytes(uint32_t cmd_sn) const;

  // The initiator holds every reply for cmd_sn before `reply_ack_sn`: frees
  // them and moves the window. Ignored if it would move the window backwards
  // or by more than max_ahead (a protocol error, counted as out_of_window).
  void release_below(uint32_t reply_ack_sn);

  uint32_t low() const { return low_; }
  const ReplyCacheStats& stats() const { return stats_; }

 private:
  enum class SlotState : uint8_t { kEmpty, kInProgress, kDone };
  struct Slot {
    uint32_t cmd_sn = 0;
    SlotState state = SlotState::kEmpty;
    bool data_dropped = false;
    bool reexecutable = false;
    size_t data_offset = 0;
    SharedBytes reply;  // null when empty
  };
  static size_t size_of(const Slot& s) { return s.reply.size(); }
  Slot& slot(uint32_t cmd_sn) { return slots_[cmd_sn & (slots_.size() - 1)]; }
  const Slot& slot(uint32_t cmd_sn) const { return slots_[cmd_sn & (slots_.size() - 1)]; }
  bool in_window(uint32_t cmd_sn) const;
  void clear_slot(Slot& s);
  void drop_data(Slot& s);
  void enforce_budget();
  void compact_order();

  ReplyCacheLimits limits_;
  std::vector<Slot> slots_;
  std::deque<uint32_t> droppable_order_;  // cmd_sn of completed re-executable replies, oldest first
  uint32_t low_ = 0;
  bool low_known_ = false;
  ReplyCacheStats stats_;
};

}  // namespace hyperscsi::proto

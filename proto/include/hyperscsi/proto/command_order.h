// CommandOrderer: the target side of "commands keep their session-wide
// order" in a multipath session (docs/protocol.md 14.9). Command PDUs of one
// session arrive over several paths out of cmd_sn order; the orderer hands
// them on (to the ReplyCache and execution) in cmd_sn order, as iSCSI does
// for a session with several connections:
//
//  - `next` is the lowest cmd_sn not yet handed on. It starts at the first
//    command's reply_ack_sn and never goes below any command's reply_ack_sn
//    (the initiator holds the replies of everything below it).
//  - A command at `next` goes on at once, followed by held ones that are
//    now in order. One above `next` is held. One below `next` (a duplicate, a
//    resend after failover or resume) goes on at once: the ReplyCache
//    answers it without executing it again.
//  - A hole is not waited for forever: when the oldest held command has
//    waited max_hold (longer than the path failure bound plus a resend), or
//    more than max_held commands wait, `next` skips to the lowest held one.
//    The late command still executes when it comes (counted).
//
// Only the cmd_sn (offset 0) and reply_ack_sn (offset 4) of each PDU are
// read; anything shorter, or not a command, passes through for the owner to
// reject. Ownership: the orderer owns held PDUs. No I/O, no clock.
// Thread-safety: none; one owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>

#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/connection.h"

namespace hyperscsi::proto {

struct CommandOrderConfig {
  size_t max_held = 512;           // the 9-bit tag space: more cannot be in flight
  Duration max_hold = seconds(2);  // > T_fail (0.5 s) + a resend on another path
  uint32_t max_ahead = 4096;       // farther than this above `next`: passed through
};

struct CommandOrderStats {
  uint64_t in_order = 0;        // handed on without waiting
  uint64_t held = 0;            // waited for an earlier cmd_sn
  uint64_t duplicates = 0;      // below `next`: passed through at once
  uint64_t gaps_skipped = 0;    // holes given up on
  uint64_t passed_through = 0;  // not a command, too short, or too far ahead
};

class CommandOrderer {
 public:
  explicit CommandOrderer(CommandOrderConfig config = {}) : config_(config) {}

  void push(ReceivedPdu pdu, TimePoint now);
  // The next PDU that may go on (skipping holes that waited too long).
  std::optional<ReceivedPdu> pop(TimePoint now);
  // When a held command's wait runs out (kNever if none is held).
  TimePoint next_deadline() const;

  size_t held_count() const { return held_.size(); }
  std::optional<uint32_t> next() const { return started_ ? std::optional(next_) : std::nullopt; }
  const CommandOrderStats& stats() const { return stats_; }

 private:
  struct Held {
    ReceivedPdu pdu;
    TimePoint arrived;
  };
  void release_in_order();
  void skip_gap();

  CommandOrderConfig config_;
  bool started_ = false;
  uint32_t next_ = 0;
  // Keyed by distance from `next_` at insertion is fragile across wrap; keyed
  // by cmd_sn with a serial-order comparator instead.
  struct SerialLess {
    bool operator()(uint32_t a, uint32_t b) const { return static_cast<int32_t>(a - b) < 0; }
  };
  std::map<uint32_t, Held, SerialLess> held_;
  std::deque<ReceivedPdu> ready_;
  CommandOrderStats stats_;
};

}  // namespace hyperscsi::proto

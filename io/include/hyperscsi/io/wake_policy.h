// WakePolicy: how an event loop that owns a port waits between its turns.
// Pure decisions from what the turns reported, with the time passed in (no
// clock, no system calls); the target's port loops and the initiator's I/O
// thread each own one.
//
// Three ways to wait, cheapest first when the link, not the CPU, sets the
// pace:
//  - hold: sleep without reading the port. While an incoming PDU streams in,
//    until its rest or a quarter of the peer's window has come at the
//    measured receive rate; while a pipeline of commands is long
//    (initiator), for an eighth of the measured reply time. Frames pile up
//    in the receive ring meanwhile and are taken in one turn, so a 128 KiB
//    read costs a wake-up or two instead of one per frame. A hold never
//    exceeds coalesce_max, nor a quarter of the time the peer's window lasts
//    at the receive rate (its sender must not run dry); a hold that found
//    half a window waiting halves the next. A loop whose own frames wait for
//    the send window never holds: the next ack lets them go.
//  - busy poll (initiator): worth it only while replies come back within a
//    few budgets of the command (the measured reply time) and polls find
//    something; otherwise it costs a spinning CPU for nothing.
//  - sleep on the port: everything else.
//
// Thread-safety: none; used by its loop's thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/connection.h"

namespace hyperscsi::io {

using proto::Duration;
using proto::TimePoint;

struct WakeConfig {
  Duration coalesce_min = std::chrono::microseconds(50);  // shorter holds: wait on the port
  Duration coalesce_max = std::chrono::milliseconds(1);
  // A PDU is held for only when this many bytes of it are still to come
  // (a few frames; a 4 KiB reply is never waited for).
  size_t coalesce_min_bytes = 16 * 1024;
  // Initiator: hold for a pipeline of at least this many commands.
  uint32_t pipeline_min = 4;
  Duration busy_poll{0};  // budget of one busy poll (0: never poll)
  // Poll only while the reply time is at most this many budgets.
  uint32_t poll_reply_budgets = 8;
};

// Counters a loop reports (target stats, initiator Stats).
struct WakeCounters {
  uint64_t turns = 0;          // loop iterations
  uint64_t sleeps = 0;         // waits that blocked (wake-ups by the kernel)
  uint64_t holds = 0;          // of those, holds: the port was not watched
  uint64_t paced_sleeps = 0;   // of the holds: paced frames filled the next release, no fd watched
  uint64_t polls = 0;          // busy polls
  uint64_t poll_hits = 0;      // busy polls that found something within the budget
  uint64_t poll_ns = 0;        // time spent busy polling
  uint64_t tx_full_waits = 0;  // waits for a full transmit path (writable or a pause)
};

class WakePolicy {
 public:
  explicit WakePolicy(WakeConfig config = {}) : config_(config) {}

  // Each turn: `woke` is when it began, `rx_bytes` what it received (bytes
  // of frames).
  void on_turn(TimePoint woke, size_t rx_bytes);

  // How long to hold (sleep without watching the port) before the next
  // turn; zero: do not hold. `deadline` is the loop's earliest timer.
  Duration hold(TimePoint now, TimePoint deadline, const proto::FlowHints& hints,
                size_t commands_in_flight = 0);
  // The loop is about to wait from `now`: a hold (true) or on the port.
  // Call after hold(), for waits that may block.
  void on_wait(TimePoint now, bool holding);

  // Initiator: a command's reply came `reply_time` after it was sent.
  void on_reply(Duration reply_time);
  // Initiator: whether a busy poll is worth it now.
  bool should_poll(size_t commands_in_flight);
  void on_poll(bool found, Duration spent);
  // Share of recent polls that found something, of 256.
  uint32_t poll_share() const { return poll_share_; }

  Duration reply_time() const { return reply_ewma_; }
  double rx_rate() const { return rx_rate_; }  // bytes per ns (0: not measured)
  const WakeConfig& config() const { return config_; }

 private:
  static constexpr TimePoint kNotWaiting = TimePoint::min();

  WakeConfig config_;
  double rx_rate_ = 0;                  // EWMA over waits while a PDU streamed in
  TimePoint wait_start_ = kNotWaiting;  // when the last wait began
  bool wait_held_ = false;              // it was a hold
  bool wait_streaming_ = false;         // an incoming PDU was streaming in then
  bool asked_ = false;                  // hold() was asked since the last turn
  size_t hold_window_ = 0;              // our receive window then, bytes
  Duration reply_ewma_{};
  bool have_reply_ = false;
  uint32_t poll_share_ = 256;   // EWMA of polls that found something, of 256
  uint32_t skipped_polls_ = 0;  // polls skipped for a low share since the last one
};

}  // namespace hyperscsi::io

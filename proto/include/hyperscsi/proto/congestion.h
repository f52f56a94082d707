// Congestion window in frames: slow start, additive increase, multiplicative
// decrease on loss (at most once per window of data), collapse on timeout.
// Thread-safety: none; owned by one Connection.
#pragma once

#include <cstdint>

namespace hyperscsi::proto {

class CongestionControl {
 public:
  // ssthresh starts at max_cwnd: slow start until the first loss.
  CongestionControl(uint32_t initial_cwnd, uint32_t max_cwnd);

  // `frames` newly acknowledged (cumulatively or by SACK); `cum_ack` is the
  // sender's cumulative ack point after this ack (ends a recovery episode).
  void on_ack(uint32_t frames, uint32_t cum_ack);

  // Loss detected by SACK or duplicate acks. `in_flight` frames were
  // outstanding; `snd_nxt` is the next new sequence number. Halves the window
  // unless a reduction already happened for data sent before the current
  // recovery point. Returns true if the window was reduced.
  bool on_loss(uint32_t in_flight, uint32_t snd_nxt);

  // Retransmission timeout: ssthresh = half the flight, cwnd = 1. The first
  // timeout of an episode remembers the state before it for undo_timeout();
  // further timeouts keep that snapshot until it is used or forgotten. A
  // timeout before everything sent at the previous one is acknowledged (the
  // timer backing off) leaves ssthresh as the first one set it.
  void on_timeout(uint32_t in_flight, uint32_t snd_nxt);

  // The episode's timeouts were spurious (the originals were delivered):
  // restores cwnd, ssthresh and the recovery state from before the first.
  // No effect when nothing is remembered.
  void undo_timeout();

  // The episode is over without an undo (a real loss, or too late to tell).
  void forget_undo() { have_undo_ = false; }
  bool can_undo() const { return have_undo_; }

  uint32_t cwnd() const { return cwnd_; }
  uint32_t ssthresh() const { return ssthresh_; }
  bool in_recovery() const { return in_recovery_; }

  // Frames the sender may have in flight: min(cwnd, peer window).
  static uint32_t send_window(uint32_t cwnd, uint32_t peer_window) {
    return cwnd < peer_window ? cwnd : peer_window;
  }

 private:
  uint32_t half_flight(uint32_t in_flight) const;

  uint32_t cwnd_;
  uint32_t ssthresh_;
  uint32_t max_cwnd_;
  uint32_t acked_in_ca_ = 0;  // acks counted toward the next +1 in congestion avoidance
  uint32_t recovery_point_ = 0;
  bool in_recovery_ = false;
  bool timeout_episode_ = false;  // collapsed by a timeout, its data not yet all acked

  struct Saved {
    uint32_t cwnd, ssthresh, acked_in_ca, recovery_point;
    bool in_recovery;
  };
  Saved before_timeout_{};
  bool have_undo_ = false;
};

}  // namespace hyperscsi::proto

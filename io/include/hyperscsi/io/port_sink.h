// PortSink: a proto::FrameSink that builds frames directly in a Port's packet
// buffers and sends them in bursts. Frames the port does not take stay queued
// and are retried on the next flush().
//
// Pacing (set_pacing, off by default): frames leave at most at a given rate,
// counted in frame bytes as a shaper counts them, in bursts of at most a
// given size; the others wait here until release_time(). A port on a shaped
// link is paced at the shaper's rate (Port::tx_rate), so the shaper never
// has to hold and time out frames one by one (docs/benchmarks.md, issue 20).
// A sender that sleeps until release_time() wakes late (the scheduler, the
// rest of its turn before it flushes); the sink measures by how much and
// names its releases that much earlier, so that late wake-ups still find the
// credit below one burst instead of losing what the shaper's bucket dropped.
//
// Ownership: the sink holds the packets it has not yet handed to the port,
// and with them the references to the payloads they send without a copy.
// Thread-safety: none; used by the thread that owns the port.
#pragma once

#include <cstddef>
#include <deque>
#include <span>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/connection.h"

namespace hyperscsi::io {

class PortSink final : public proto::FrameSink {
 public:
  // `max_pending`: frames queued before acquire() refuses (backpressure).
  explicit PortSink(Port& port, size_t max_pending = 256);

  // The clock pacing reads (proto::Clock::now by default); tests inject one.
  using NowFn = proto::TimePoint (*)();
  void set_clock(NowFn now) { now_ = now; }

  std::span<uint8_t> acquire(size_t size) override;
  void commit(size_t length) override;
  // On a port that gathers (Port::tx_gather), the packet keeps the payload by
  // reference until the port has sent it; elsewhere the payload is copied.
  void commit_gather(std::span<uint8_t> frame, size_t header_length,
                     std::span<const uint8_t> payload,
                     const std::shared_ptr<const void>& owner) override;

  // Sends queued frames in bursts (as pacing allows); returns how many the
  // port took.
  size_t flush();
  size_t pending() const { return queued_.size(); }

  // Paces frames at `bytes_per_second` (0: off) in bursts of `burst_bytes`.
  void set_pacing(uint64_t bytes_per_second, size_t burst_bytes);
  // Paces at the port's tx_rate(), if it has one, in bursts of three quarters
  // of the shaper's bucket (tx_bucket(); at most 2 ms of the rate, 400 us when
  // unknown, at least two frames of the MTU); and from then on follows them:
  // each flush() compares them with what it paces at, so a shaper installed,
  // changed or removed after the start takes effect (or stops) with the next
  // flush after the port reports it. A later set_pacing() ends the following.
  void pace_at_port_rate();
  // The rate it paces at, bytes per second (0: unpaced).
  uint64_t pacing_rate() const { return static_cast<uint64_t>(rate_ * 1e9 + 0.5); }
  // Frames wait for the pacing clock, not for the port.
  bool paced() const { return !queued_.empty() && held_by_pacing_; }
  // When a flush() may send them: once half a burst (or all that waits) may
  // go, less the lateness the releases showed (flushes after the announced
  // release time: a smoothed average, at most half of that wait's bytes), so
  // that the late flush finds about half a burst. The next flush() measures
  // its lateness against the time this last returned.
  proto::TimePoint release_time() const;
  // How late flushes came after the release time they were announced, smoothed.
  proto::Duration release_lateness() const {
    return proto::Duration(static_cast<int64_t>(late_ns_));
  }
  // Frames wait for the pacing clock and fill the next release on their own:
  // whatever else the owner would queue now goes behind them, so it may sleep
  // until release_time() without watching for new work (issue 20: a sender
  // woken per submission or completion between releases paid a wake-up each).
  bool release_covered() const;

 private:
  Port& port_;
  size_t max_pending_;
  Packet current_;
  std::vector<Packet> queued_;
  double rate_ = 0;  // bytes per ns; 0: unpaced
  double burst_ = 0;
  double credit_ = 0;  // bytes that may go now
  proto::TimePoint credit_at_{};
  bool held_by_pacing_ = false;
  NowFn now_ = &proto::Clock::now;
  mutable proto::TimePoint announced_ =
      proto::kNever;          // release_time() last returned since the last flush
  double late_ns_ = 0;        // flushes after announced_, smoothed (ns)
  bool follow_port_ = false;  // pace_at_port_rate(): re-applied when the port's rate changes
  uint64_t port_rate_ = 0;    // the port's tx_rate() and tx_bucket() last applied
  uint64_t port_bucket_ = 0;
  std::vector<size_t> sizes_;  // flush()'s scratch: sizes of the frames offered

  void apply_port_rate(uint64_t rate, uint64_t bucket);
};

}  // namespace hyperscsi::io

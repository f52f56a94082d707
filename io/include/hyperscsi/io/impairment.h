// ImpairedQueue: one direction of a simulated wire. Frames offered to it are
// dropped, duplicated, corrupted, reordered, delayed and rate-limited by
// seeded rules, then handed out when due. Used by MemLink (in-process link)
// and by the hyperscsi-relay tool (between two real ports), so both impair
// frames the same reproducible way: the same seed and the same sequence of
// calls give the same outcome.
//
// Delivery is FIFO except for frames the reorder impairment holds back
// (jitter delays frames but never reorders them). Frames longer than the
// configured maximum are dropped (MTU mismatch); frames whose EtherType is not
// 0x889A are filtered, as the kernel filter of a real backend would.
//
// Ownership: offered packets move into the queue and are moved out by take().
// Duplicates are allocated with the allocator given at construction.
// Thread-safety: none; the owner serialises all calls (MemLink holds a mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <random>
#include <span>
#include <vector>

#include "hyperscsi/io/packet.h"
#include "hyperscsi/proto/clock.h"

namespace hyperscsi::io {

// One direction of a link. Probabilities are per frame, in [0, 1].
struct Impairment {
  double loss = 0;           // drop the frame
  double duplicate = 0;      // deliver a second copy right after it
  double reorder = 0;        // hold the frame back ...
  uint32_t reorder_gap = 3;  // ... until this many later frames passed
  proto::Duration reorder_timeout = std::chrono::milliseconds(1);  // ... or this long
  proto::Duration delay{0};                                        // fixed one-way delay
  proto::Duration jitter{0};  // extra uniform delay in [0, jitter]
  double corrupt = 0;         // flip one random bit
  uint64_t rate_bps = 0;      // 0: unlimited; else serialization delay of size*8/rate
  size_t queue_limit = 8192;  // frames in flight in this direction; more are dropped
};

// What the impairment layer did to the frames of one direction.
struct ImpairmentStats {
  uint64_t offered = 0;    // frames given to the link
  uint64_t delivered = 0;  // frames handed out by take()
  uint64_t lost = 0;
  uint64_t duplicated = 0;
  uint64_t reordered = 0;
  uint64_t corrupted = 0;
  uint64_t queue_drops = 0;
  uint64_t mtu_drops = 0;  // longer than the receiver's mtu + 14
  uint64_t filtered = 0;   // not EtherType 0x889A
};

class ImpairedQueue {
 public:
  // `max_frame`: longest frame (with Ethernet header) the receiver accepts.
  // `alloc`: makes a packet for a duplicate (an empty one skips the duplicate).
  ImpairedQueue(const Impairment& imp, uint64_t seed, size_t max_frame,
                std::function<Packet()> alloc);

  void set_impairment(const Impairment& imp) { imp_ = imp; }

  // Moves held-back frames whose reorder timeout passed into the queue.
  // Call once per burst before offer(); take() calls it itself.
  void release_due(proto::TimePoint now);

  // Takes `pkt` (a frame of at least 14 bytes) and applies the rules.
  void offer(Packet pkt, proto::TimePoint now);

  // Moves frames due at `now` into `out`, in order; returns how many.
  size_t take(proto::TimePoint now, std::span<Packet> out);

  // When the next frame becomes due (or a held one times out);
  // TimePoint::max() when nothing is in flight.
  proto::TimePoint next_due() const;

  size_t in_flight() const { return queue_.size() + held_.size(); }
  const ImpairmentStats& stats() const { return stats_; }

  // Drops every frame in flight (e.g. before the packets' pools go away).
  void clear();

 private:
  struct Queued {
    Packet pkt;
    proto::TimePoint ready;
  };
  struct Held {
    Packet pkt;
    proto::TimePoint ready;
    uint32_t frames_left;       // released after this many later frames ...
    proto::TimePoint deadline;  // ... or at this time
  };

  bool chance(double p);
  void enqueue(Packet pkt, proto::TimePoint ready);
  void tick_held();  // another frame went onto the wire

  Impairment imp_;
  std::mt19937_64 rng_;
  size_t max_frame_;
  std::function<Packet()> alloc_;
  std::deque<Queued> queue_;
  std::vector<Held> held_;
  proto::TimePoint wire_free_at_{};  // rate limit: when the wire finishes the last frame
  proto::TimePoint last_ready_{};    // keeps delivery FIFO despite jitter
  ImpairmentStats stats_;
};

}  // namespace hyperscsi::io

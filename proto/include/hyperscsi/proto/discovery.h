// DiscoveryClient: the initiator's side of target discovery.
//
// start() broadcasts a 0x30 DiscoveryRequest with a fresh nonce and repeats it
// (retransmits) within the discovery window; every 0x10 DiscoveryReply with
// that nonce, or an unsolicited announcement (nonce 0), that passes the
// target-name filter is recorded, keyed by the target's MAC and name (a later
// answer replaces an earlier one). After the window, done() is true and
// results() is final. The target's side lives in TargetEndpoint.
//
// No I/O, no clock: the owner feeds decoded frames (on_frame) and the time,
// and collects frames to send with poll(). Malformed bodies are counted and
// dropped.
// Thread-safety: none; one owner thread.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"

namespace hyperscsi::proto {

struct DiscoveryConfig {
  MacAddress local_mac{};
  std::string initiator_name;
  std::string target_filter;             // empty: every target
  Duration window = milliseconds(1000);  // how long to collect answers
  uint32_t transmissions = 3;            // requests sent, spread over the first half of the window
  uint64_t seed = 1;                     // nonce source (deterministic in tests)
};

struct DiscoveredTarget {
  MacAddress mac{};
  std::string name;
  uint16_t mtu = 0;
  uint32_t features = 0;
  std::vector<LunInfo> luns;
  bool announced = false;  // learned from an unsolicited announcement (nonce 0)
};

struct DiscoveryStats {
  uint64_t requests_sent = 0;
  uint64_t replies_accepted = 0;
  uint64_t replies_ignored = 0;  // wrong nonce, filtered out, or outside the window
  uint64_t malformed = 0;
};

class DiscoveryClient {
 public:
  explicit DiscoveryClient(DiscoveryConfig config);

  // Starts (or restarts) a discovery round at `now`; clears earlier results.
  void start(TimePoint now);
  void on_frame(const FrameView& frame, TimePoint now);
  void poll(TimePoint now, FrameSink& sink);
  TimePoint next_deadline() const;

  bool active() const { return active_; }
  bool done(TimePoint now) const { return started_ && now >= end_; }
  const std::vector<DiscoveredTarget>& results() const { return results_; }
  uint32_t nonce() const { return nonce_; }
  const DiscoveryStats& stats() const { return stats_; }

 private:
  DiscoveryConfig config_;
  std::mt19937_64 rng_;
  std::vector<DiscoveredTarget> results_;
  uint32_t nonce_ = 0;
  bool started_ = false;
  bool active_ = false;
  TimePoint start_{};
  TimePoint end_{};
  TimePoint next_send_ = kNever;
  uint32_t sent_ = 0;
  DiscoveryStats stats_;
};

}  // namespace hyperscsi::proto

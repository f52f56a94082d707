// TargetPaths: the target's side of one multipath session's paths
// (docs/protocol.md 14.4-14.7). It owns the session's PathSet, starting with
// the login path (path 0, generation 0, active), and answers the initiator's
// Path Requests:
//
//  - kJoin, carried on the path it names: checks the proof (authenticated
//    sessions), the initiator MAC (access list), that the generation is newer
//    than any this path id had in this epoch (a replayed join is refused),
//    that no other path has the same MACs, and the MTU; then installs the
//    generation in standby (fresh Connection, its own frame keys) and
//    answers with the path's MTU and window. A repeated request (same nonce)
//    gets the same answer.
//  - kActivate: the initiator verified the path; replies may now use it.
//  - kLeave: the initiator stopped using the path (or found it failed):
//    undelivered replies move to the other paths at once.
//
// When the PathSet declares a path failed on its own (replies not
// acknowledged for T_fail), a kLeave for it goes to the initiator on the
// best remaining path, so the initiator moves its commands without waiting
// for its own detection. The target never joins paths; the initiator does.
//
// Ownership: owns the PathSet. No I/O, no clock; bodies that fail to decode
// are counted and dropped. Thread-safety: none; one owner thread.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <vector>

#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/multipath.h"
#include "hyperscsi/proto/path_set.h"

namespace hyperscsi::proto {

struct TargetPathsConfig {
  PathSetConfig transport;                    // role kTarget; session id, epoch, base transport
  std::vector<TargetPort> ports;              // the target's ports serving the session
  uint32_t max_transfer = (1u << 20) + 4096;  // negotiated for the session
  uint16_t window_cap = 256;                  // frames we accept per path, at most (window_for_mtu)
  bool checksum = true;                       // negotiated CHECKSUM
  size_t max_paths = kMaxPaths;
  // Authenticated sessions: the login's keys. Proofs are then required, and
  // with protection on each path generation seals with its own keys.
  std::optional<SessionKeys> keys;
  // The access list for the session's initiator by MAC; empty: any MAC.
  std::function<bool(const MacAddress& initiator_mac)> mac_allowed;
};

struct TargetPathsStats {
  uint64_t requests = 0;
  uint64_t joins_accepted = 0;
  uint64_t requests_refused = 0;  // any status but kOk
  uint64_t duplicate_requests = 0;
  uint64_t activations = 0;
  uint64_t leaves_received = 0;
  uint64_t leaves_sent = 0;  // our failure notices
  uint64_t auth_failures = 0;
  uint64_t malformed = 0;
};

class TargetPaths {
 public:
  // `login_path`: the MACs and negotiated MTU/windows of the login (id 0,
  // generation 0). Its frame keys are the session's.
  TargetPaths(TargetPathsConfig config, const PathSpec& login_path, TimePoint now);

  // A frame whose session id and epoch the owner matched.
  PathSet::FrameResult on_frame(const FrameView& frame, TimePoint now, FrameView& opened);
  void poll(TimePoint now, FrameSink& sink);
  TimePoint next_deadline() const { return paths_.next_deadline(); }

  PathSet& transport() { return paths_; }
  const PathSet& transport() const { return paths_; }
  // PathSet events after TargetPaths has seen them (for logs and counters).
  std::optional<PathEvent> pop_event();
  const TargetPathsStats& stats() const { return stats_; }

 private:
  void on_request(const FrameView& frame, TimePoint now);
  // nullopt: a repeated request, answered again already.
  std::optional<PathStatus> join(const FrameView& frame, const PathRequest& req, PathReply& reply,
                                 TimePoint now);
  void answer(const FrameView& frame, PathReply reply);
  void send_leave(uint8_t id, uint8_t gen, TimePoint now);
  void handle_events(TimePoint now);
  const TargetPort* port(const MacAddress& mac) const;

  TargetPathsConfig config_;
  PathSet paths_;
  PathControl control_;  // framing and proofs of our path requests and replies
  struct History {
    bool seen = false;
    uint8_t gen = 0;
    uint32_t nonce = 0;  // of the last accepted join
    std::vector<uint8_t> reply;
    FrameHeader reply_header;
  };
  std::array<History, kMaxPaths> history_{};
  std::deque<PathEvent> events_;
  uint32_t next_nonce_ = 1;
  TargetPathsStats stats_;
};

}  // namespace hyperscsi::proto

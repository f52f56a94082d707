// InitiatorPaths: the initiator's side of one multipath session's paths
// (docs/protocol.md 14.4-14.7). It owns the session's PathSet, starting with
// the login path (path 0, generation 0, active: the login verified it), and
// brings in and keeps up the other candidate paths (local port x target
// port):
//
//   joining --reply kOk--> verifying --full-MTU probe answered--> active
//      |  no answer after join_attempts: unreachable (retried slowly)
//      |  refused (access, duplicate, MTU...): refused (retried slowly)
//   verifying: small probes answered but never full ones: mtu-mismatch
//   active --PathSet failure (stuck, silent) or the target's kLeave--> failed
//   failed --probe_interval (doubling, up to probe_interval_max)--> joining
//            with the next generation
//
// A join is also the probe of a failed path: its answer proves both
// directions and installs a fresh generation on both sides (new sequence
// numbers, congestion state and frame keys; frames of the old generation are
// ignored from then on). A path that failed before is redeemed slowly: it
// must answer verify_rounds full-MTU probes, verify_interval apart, before it
// takes work again, unless it is the only path left. A path that fails again
// within flap_window of coming back waits twice as long before its next
// probe.
//
// When a path fails here, a kLeave for it goes to the target on the best
// remaining path, so the target moves its replies at once.
//
// Ownership: owns the PathSet. No I/O, no clock. Thread-safety: none; one
// owner thread.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/multipath.h"
#include "hyperscsi/proto/path_set.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::proto {

struct InitiatorPathsConfig {
  PathSetConfig transport;  // role kInitiator, probe_idle true; session id, epoch, base transport
  uint32_t max_transfer = (1u << 20) + 4096;  // negotiated for the session
  uint16_t window_cap = 256;                  // frames we accept per path, at most (window_for_mtu)
  bool checksum = true;                       // negotiated CHECKSUM
  std::optional<SessionKeys> keys;            // authenticated sessions: the login's keys
  // Protected sessions: the login session's sealer and opener, which path 0
  // generation 0 goes on with (InitiatorSession::login_path_protection()).
  // Empty: fresh ones, which must then never have sealed a frame before.
  SharedProtection login_protection;
  Duration join_timeout = milliseconds(250);    // per request attempt
  uint32_t join_attempts = 4;                   // unanswered requests before giving up for now
  Duration probe_interval = milliseconds(250);  // first rejoin of a failed path
  Duration probe_interval_max = seconds(4);     // doubling up to this
  Duration retry_unreachable = seconds(5);      // paths that never answered
  Duration retry_refused = seconds(30);         // refused or MTU mismatch
  Duration verify_interval = milliseconds(100);
  uint32_t verify_rounds = 3;    // full-MTU answers needed to redeem a failed path
  uint32_t verify_attempts = 6;  // rounds without an answer before giving up
  Duration flap_window = seconds(10);
  uint64_t seed = 1;  // request nonces
};

// A path the initiator would like: one of its ports and one target port.
struct PathCandidate {
  MacAddress local{};
  uint16_t local_mtu = 1500;
  MacAddress target{};
};

enum class CandidateState : uint8_t {
  kJoining,
  kVerifying,
  kActive,
  kFailed,       // was active; probed with rejoins
  kUnreachable,  // never answered (another segment, cable out...)
  kRefused,      // the target said no (status says why)
  kMtuMismatch,  // small frames pass, full-MTU frames do not
};
std::string_view to_string(CandidateState s);

struct CandidateInfo {
  uint8_t id = 0;
  PathCandidate candidate;
  CandidateState state = CandidateState::kJoining;
  uint8_t gen = 0;
  PathStatus refusal = PathStatus::kOk;  // kRefused: the target's status
  uint16_t mtu = 0;                      // negotiated at the last join
  uint64_t joins_sent = 0;
  uint64_t redemptions = 0;  // times it came back after failing
};

enum class PathError : uint8_t {
  kDuplicate,     // the same local port and target port twice
  kTooManyPaths,  // all 16 path ids are in use
  kUnknownPath,
};
std::string_view to_string(PathError e);

// One of the initiator's ports, and what discovery on it found (14.3).
struct LocalPort {
  MacAddress mac{};
  uint16_t mtu = 1500;  // its L3 MTU
  // The target ports (MACs) whose discovery replies for the session's target
  // arrived on this port; nullopt: not discovered on it, so every listed
  // target port is a candidate (a pair that never answers a join is then
  // reported unreachable).
  std::optional<std::vector<MacAddress>> answered;
};

enum class CandidateError : uint8_t {
  kDuplicatePort,  // the same local port (MAC) given twice
  kNoLoginPort,    // the login's local port is not among the ports
};
std::string_view to_string(CandidateError e);

// The paths a multipath session would like besides its login path (14.3):
// each pair (local port, port of the target's list) that discovery found
// reachable on that local port, or every pair for a port not discovered,
// with the local port's MTU; the login pair is not one. In the order of the
// local ports, then of the target's list; at most kMaxPaths - 1 (the ids
// beside path 0), the rest dropped.
Result<std::vector<PathCandidate>, CandidateError> candidate_paths(
    std::span<const LocalPort> locals, std::span<const TargetPort> target_ports,
    const MacAddress& login_local, const MacAddress& login_target);

struct InitiatorPathsStats {
  uint64_t requests_sent = 0;
  uint64_t replies = 0;
  uint64_t auth_failures = 0;  // replies or target requests whose proof did not verify
  uint64_t malformed = 0;
  uint64_t leaves_received = 0;
  uint64_t leaves_sent = 0;
  uint64_t redemptions = 0;
};

class InitiatorPaths {
 public:
  // `login_path`: the MACs and negotiated MTU/windows of the login; it
  // becomes path 0 generation 0, active. `login_candidate` describes it.
  InitiatorPaths(InitiatorPathsConfig config, const PathSpec& login_path, TimePoint now);
  ~InitiatorPaths();
  InitiatorPaths(const InitiatorPaths&) = delete;
  InitiatorPaths& operator=(const InitiatorPaths&) = delete;

  // Adds a path to bring in (joined at the next poll). Errors: the same pair
  // twice, or no path id left.
  Result<uint8_t, PathError> add_candidate(const PathCandidate& c, TimePoint now);
  // Orderly removal: the path stops taking work (what it holds moves), the
  // target is told, and the candidate is forgotten.
  Status<PathError> leave(uint8_t id, TimePoint now);

  // A frame whose session id and epoch the owner matched.
  PathSet::FrameResult on_frame(const FrameView& frame, TimePoint now, FrameView& opened);
  void poll(TimePoint now, FrameSink& sink);
  TimePoint next_deadline() const;

  PathSet& transport() { return paths_; }
  const PathSet& transport() const { return paths_; }
  std::vector<CandidateInfo> candidates() const;
  std::optional<PathEvent> pop_event();
  const InitiatorPathsStats& stats() const { return stats_; }

 private:
  struct Candidate;
  struct Pending;  // a request awaiting its reply

  Candidate* find(uint8_t id);
  void send_request(Candidate& c, PathAction action, uint8_t subject_gen, TimePoint now);
  void start_join(Candidate& c, TimePoint now);
  void on_reply(const FrameView& frame, TimePoint now);
  void on_target_request(const FrameView& frame, TimePoint now);
  void on_joined(Candidate& c, const PathReply& reply, TimePoint now);
  void on_probe_answer(const PathEvent& e, TimePoint now);
  void verify_round(Candidate& c, TimePoint now);
  void make_active(Candidate& c, TimePoint now);
  void on_failed(Candidate& c, PathFailure why, TimePoint now);
  void notify_leave(uint8_t id, uint8_t gen);
  void handle_events(TimePoint now);
  void run_timers(TimePoint now);

  InitiatorPathsConfig config_;
  PathSet paths_;
  PathControl control_;  // framing and proofs of our path requests and replies
  std::vector<Candidate> candidates_;
  std::array<uint8_t, kMaxPaths> last_gen_{};  // per path id, this epoch (0: the login's)
  std::deque<PathEvent> events_;
  std::mt19937_64 rng_;
  TimePoint last_now_{};
  InitiatorPathsStats stats_;
};

}  // namespace hyperscsi::proto

// TargetEndpoint: all protocol-level state of one target on one port.
//
// It answers discovery (unicast, filtered by target name, LUNs from a
// callback so access lists can hide some) and can announce itself; accepts
// logins through a policy callback, negotiates (negotiation.h), assigns
// random nonzero session ids, answers a repeated login request (same
// initiator nonce) with the same reply, and resumes a known session with the
// next epoch and a new Connection (its ReplyCache is kept). It answers
// keepalives with a frame of the same size, routes frames by session id
// (unknown session -> Disconnect kUnknownSession, old epoch -> kStaleEpoch,
// both rate-limited per source MAC), reclaims sessions silent for the dead
// time, answers orderly disconnects and bounds the number of sessions.
//
// Commands: every complete command PDU goes through the session's ReplyCache
// and is exposed by pop_command() with the decision. The owner executes
// kExecute and kReexecuteIdempotent commands (needs_execution()) and answers
// with send_reply(), which stores the reply in the cache and sends it. For
// kReplay the endpoint has already resent the stored reply; for kInProgress
// the pending reply will answer the duplicate: both are exposed for counting
// only. Stale and out-of-window cmd_sn are dropped and counted.
//
// Multipath (docs/protocol.md 14, TargetConfig::multipath_ports): a session
// that negotiated MULTIPATH runs its PDUs on a TargetPaths (path 0 is the
// login pair) instead of its Connection: frames from any initiator port are
// accepted for it (each path checks its own MACs), frames addressed to any of
// multipath_ports are taken (the owner hands over those that arrived on its
// other ports), commands reach the cache in cmd_sn order (CommandOrderer),
// and poll_session() emits each path's frames with that path's local MAC as
// source: the owner sends each on the port with that MAC.
//
// Ownership: the endpoint owns its sessions, their Connections and caches.
// Callbacks are called synchronously from on_frame() and must not call back
// into the endpoint. No I/O, no clock; the data path never throws; malformed
// bodies are counted and dropped.
// Thread-safety: none; one owner thread (the target engine's port thread).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/frame_protection.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/multipath.h"
#include "hyperscsi/proto/negotiation.h"
#include "hyperscsi/proto/path_set.h"
#include "hyperscsi/proto/reply_cache.h"
#include "hyperscsi/proto/shared_bytes.h"

namespace hyperscsi::proto {

namespace detail {
class Outbox;
}

struct TargetConfig {
  MacAddress local_mac{};
  std::string target_name;
  TargetLimits limits;
  size_t max_sessions = 256;
  TransportParams transport;  // RTO, congestion and queue settings; negotiated values override
  ReplyCacheLimits reply_cache;
  Duration reject_interval =
      milliseconds(100);  // at most one rejection per source MAC per interval
  uint64_t seed = 1;      // session ids (deterministic in tests)
  // The sessions share the target's receive capacity (issue 21): every
  // share_interval, the sessions that sent at least share_active_frames
  // sequenced frames count as active, and every session advertises an equal
  // share of receive_budget_windows x limits.window frames, within
  // [kMinSharedWindow, its negotiated window]. Up to receive_budget_windows
  // active senders keep their whole windows; beyond, no sender can hold more
  // than its share of the bottleneck in front of the target, and all of them
  // together hold about what a 20 ms switch queue at 1 Gbit/s takes (4 x 256
  // frames of 1500 bytes): with 8 windows the senders overflowed it, and the
  // drop-tail losses fell unevenly (32 writers: Jain 0.93 against 1.00 with
  // 4, tests/integration/fairness_test.cpp). 0: off.
  uint32_t receive_budget_windows = 4;
  Duration share_interval = milliseconds(20);
  uint32_t share_active_frames = 4;
  // Multipath (docs/protocol.md 14.1, 14.3): every port through which the
  // target serves this endpoint's sessions, this endpoint's own included.
  // Non-empty: MULTIPATH is offered (discovery and login replies) and the
  // login reply of a session that negotiates it ends with this list, and a
  // protected one seals even its login path with that path's own keys
  // (path_auth.h, path 0 generation 0). Empty: MULTIPATH is never offered.
  std::vector<TargetPort> multipath_ports;
};

// The least window a session is left when sharing (fast retransmit needs a
// few frames beyond a hole).
inline constexpr uint16_t kMinSharedWindow = 16;

// Decides a login: kOk admits it, anything else refuses with that status.
// Gets the whole request (initiator name, auth bytes) and the source MAC.
using LoginPolicy = std::function<LoginStatus(const LoginRequest&, const MacAddress&)>;
// The LUNs an initiator may see (for discovery replies). Empty name and the
// broadcast MAC for announcements.
using LunLister = std::function<std::vector<LunInfo>(std::string_view initiator_name,
                                                     const MacAddress& initiator_mac)>;

// Authentication and protection policy (auth.h). Without one (the default)
// a login carrying auth is refused with kAuthFailed and sessions are
// unprotected.
struct SecurityPolicy {
  // The secret shared with this initiator; nullopt when none is configured.
  std::function<std::optional<crypto::SecretBytes>(std::string_view initiator_name)> secret_for;
  // The weakest per-frame protection a session of this initiator needs,
  // knowing whether it authenticated (the strongest any LUN visible to it
  // requires); nullopt when nothing would be visible to it (refused with
  // kAuthFailed if unauthenticated, kAccessDenied otherwise). Unset: kOff.
  std::function<std::optional<Protection>(std::string_view initiator_name, const MacAddress& mac,
                                          bool authenticated)>
      required_protection;
  size_t max_pending = 64;                 // handshakes awaiting their proof (oldest evicted)
  Duration attempt_lifetime = seconds(5);  // a challenge older than this is void
};

enum class TargetEventKind : uint8_t { kSessionEstablished, kSessionResumed, kSessionClosed };
struct TargetEvent {
  TargetEventKind kind = TargetEventKind::kSessionEstablished;
  uint32_t session_id = 0;
  uint16_t epoch = 0;
  std::string initiator_name;
  MacAddress initiator_mac{};
  DisconnectReason reason = DisconnectReason::kNormal;  // kSessionClosed: why
  bool authenticated = false;
  Protection protection = Protection::kOff;
};

struct IncomingCommand {
  uint32_t session_id = 0;
  uint16_t tag = 0;
  CacheDecision decision = CacheDecision::kExecute;
  CommandHeader header;
  std::vector<uint8_t> pdu;  // the whole command PDU
  size_t data_out_offset = 0;
  bool needs_execution() const {
    return decision == CacheDecision::kExecute || decision == CacheDecision::kReexecuteIdempotent;
  }
  std::span<const uint8_t> data_out() const {
    return std::span<const uint8_t>(pdu).subspan(data_out_offset);
  }
};

struct SessionInfo {
  uint32_t session_id = 0;
  uint16_t epoch = 0;
  std::string initiator_name;
  MacAddress initiator_mac{};
  TimePoint established_at{};
  TimePoint last_heard{};
  uint64_t commands = 0;  // commands handed to the owner for execution
  uint64_t replies = 0;   // replies sent by the owner
  uint64_t malformed_pdus = 0;
  LoginReply negotiated;
  bool authenticated = false;
  Protection protection = Protection::kOff;
  ProtectionStats protection_drops;  // frames of this session dropped by verification
  ReplyCacheStats cache;
  TransportStats transport;  // bytes, retransmissions, srtt/rto, cwnd, peer window
  // A multipath session: each path's state and counters (transport is then
  // the sum of the paths' counters).
  std::vector<PathInfo> paths;
};

struct TargetStats {
  uint64_t discovery_requests = 0;
  uint64_t discovery_replies = 0;
  uint64_t announcements = 0;
  uint64_t logins_accepted = 0;
  uint64_t logins_refused = 0;
  uint64_t duplicate_logins = 0;
  uint64_t resumes = 0;
  uint64_t resumes_failed = 0;
  uint64_t keepalives_answered = 0;
  uint64_t unknown_session = 0;
  uint64_t stale_epoch = 0;
  uint64_t rejections_sent = 0;
  uint64_t rejections_suppressed = 0;    // by the per-source rate limit
  uint64_t disconnects = 0;              // orderly, by either side
  uint64_t sessions_reclaimed = 0;       // dead peers
  uint64_t command_protocol_errors = 0;  // stale / out-of-window cmd_sn
  uint64_t malformed = 0;
  uint64_t frames_ignored = 0;
  // Authentication (auth.h) and per-frame protection (frame_protection.h).
  uint64_t auth_challenges = 0;  // Hellos answered with a challenge
  uint64_t auth_successes = 0;
  uint64_t auth_failures = 0;       // wrong proof, no secret, malformed auth, auth required
  uint64_t auth_replays = 0;        // proofs for an unknown, used or expired challenge
  uint64_t auth_evicted = 0;        // pending challenges dropped for room
  uint64_t frames_unprotected = 0;  // a protected session's frame without protection
  uint64_t frames_bad_tag = 0;      // forged or modified
  uint64_t frames_replayed = 0;     // counter seen before or too old
};

class TargetEndpoint {
 public:
  explicit TargetEndpoint(TargetConfig config, LoginPolicy policy = {}, LunLister luns = {});
  ~TargetEndpoint();
  TargetEndpoint(const TargetEndpoint&) = delete;
  TargetEndpoint& operator=(const TargetEndpoint&) = delete;

  // Installs the authentication/protection policy (before the first frame).
  void set_security(SecurityPolicy policy) { security_ = std::move(policy); }

  // Queues an unsolicited broadcast DiscoveryReply (nonce 0).
  void announce(TimePoint now);

  void on_frame(const FrameView& frame, TimePoint now);
  // poll() is poll_control() and then poll_session() for every session, in
  // the endpoint's own order. An owner that shares the port among sessions
  // itself (the target engine's TxScheduler) calls the two parts instead:
  // poll_control() reclaims dead sessions and sends queued control frames;
  // poll_session() lets one session's Connection emit what is due (false when
  // there is no such session); session_ids() lists the sessions.
  void poll(TimePoint now, FrameSink& sink);
  void poll_control(TimePoint now, FrameSink& sink);
  bool poll_session(uint32_t session_id, TimePoint now, FrameSink& sink);
  void session_ids(std::vector<uint32_t>& out) const;
  TimePoint next_deadline() const;
  // The sessions' FlowHints, merged (for the owner's event loop).
  FlowHints flow_hints() const;

  std::optional<IncomingCommand> pop_command();
  // Stores the reply in the session's ReplyCache and sends it. `reexecutable`:
  // the command was READ-like, so its data-in may be dropped from the cache
  // under memory pressure and recomputed. False if the session is gone, the
  // reply is malformed or the Connection refuses it.
  bool send_reply(uint32_t session_id, uint16_t tag, uint32_t cmd_sn,
                  std::vector<uint8_t> reply_pdu, bool reexecutable);
  // The same for a PDU already shared (a READ's buffer: not copied).
  bool send_reply(uint32_t session_id, uint16_t tag, uint32_t cmd_sn, SharedBytes reply_pdu,
                  bool reexecutable);
  // The owner could not execute a command: a later duplicate runs afresh.
  void abandon(uint32_t session_id, uint32_t cmd_sn);
  // Ends a session from the target's side (sends 0x13 with `reason`, frees it).
  bool disconnect(uint32_t session_id, DisconnectReason reason, TimePoint now);

  std::optional<TargetEvent> pop_event();

  size_t session_count() const { return sessions_.size(); }
  std::optional<SessionInfo> session(uint32_t session_id) const;
  std::vector<SessionInfo> sessions() const;
  Connection* connection(uint32_t session_id);
  const TargetStats& stats() const { return stats_; }
  const TargetConfig& config() const { return config_; }

 private:
  struct Session;
  struct PendingAuth;
  class OutboxSealer;
  // The outcome of the authentication part of a login.
  struct AuthOutcome {
    bool proceed = false;  // false: answered (challenge or refusal) already
    bool authenticated = false;
    std::optional<SessionKeys> keys;
    std::vector<uint8_t> confirm;
  };
  AuthOutcome authenticate(const FrameView& frame, const LoginRequest& req, TimePoint now);
  bool serves_port(const MacAddress& mac) const;
  void on_discovery(const FrameView& frame);
  void on_login(const FrameView& frame, TimePoint now);
  void on_session_frame(const FrameView& frame, TimePoint now);
  void on_verified_frame(Session& s, const FrameView& frame, TimePoint now);
  void refuse_login(const FrameView& frame, const LoginRequest& req, LoginStatus status);
  void send_login_reply(const MacAddress& dst, const LoginReply& reply);
  void reject(const FrameView& frame, DisconnectReason reason, TimePoint now);
  void drain_pdus(Session& s, TimePoint now);
  std::optional<ReceivedPdu> next_pdu(Session& s, TimePoint now);
  bool queue_reply(Session& s, uint16_t tag, SharedBytes bytes);
  void poll_session(Session& s, TimePoint now, FrameSink& sink);
  void share_receive_window(TimePoint now);
  void start_connection(Session& s, TimePoint now);
  void close_session(uint32_t session_id, DisconnectReason reason);
  // Queues a session-level control frame of `s` (a Disconnect): on path
  // `path_id` of a multipath session (sealed with that path's keys, falling
  // back to its best path), else through the outbox (sealed by its sealer).
  void queue_session_control(Session& s, uint8_t path_id, Opcode opcode, uint8_t flags,
                             std::vector<uint8_t> body);
  const Session* find_for_sealing(uint32_t session_id, uint16_t epoch) const;
  void push_event(TargetEvent e);
  uint32_t new_session_id();
  SessionInfo info(const Session& s) const;

  TargetConfig config_;
  LoginPolicy policy_;
  LunLister luns_;
  std::mt19937_64 rng_;
  std::unique_ptr<detail::Outbox> outbox_;
  std::unique_ptr<detail::Outbox> rejections_;  // Disconnect reasons 1 and 5: never sealed
  std::unordered_map<uint32_t, std::unique_ptr<Session>> sessions_;
  // Sessions closed since the last poll_control(), kept until their last
  // frames (a Disconnect, or the answer to one) have left sealed with their
  // keys: a protected session's goodbye must not go out in clear.
  std::vector<std::unique_ptr<Session>> closing_;
  std::deque<IncomingCommand> commands_;
  std::deque<TargetEvent> events_;
  std::map<MacAddress, TimePoint> last_reject_;
  SecurityPolicy security_;
  std::vector<PendingAuth> pending_auth_;  // oldest first
  TimePoint next_share_{};
  TargetStats stats_;
};

}  // namespace hyperscsi::proto

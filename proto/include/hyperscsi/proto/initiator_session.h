// InitiatorSession: the initiator's side of one session with one target:
// login (with negotiation and retries), MTU verification, keepalive and
// dead-peer detection, orderly disconnect and resume.
//
//   kIdle --login()--> kLoggingIn --LoginReply kOk--> kVerifyingMtu
//     --full-MTU probe answered--> kEstablished --disconnect()--> kDisconnecting --> kClosed
//   Failures end in kFailed (no answer, login refused, MTU mismatch), kDead
//   (nothing heard for dead_time_ms) or kDisconnected (the target ended the
//   session); failure() says why. From any of them the owner can login()
//   afresh, or resume() to continue the same session id with a new epoch.
//
// Once past login, a Connection carries the command/reply PDUs; the owner
// sends commands with send_command() and takes replies with pop_reply().
// resume() replaces the Connection: PDUs not yet delivered on the old one are
// lost and the owner resends unanswered commands with the same cmd_sn (the
// target's ReplyCache makes that exactly-once).
//
// Ownership: the session owns its Connection; connection() is a borrowed
// pointer valid until the next login()/resume(). No I/O, no clock: the owner
// feeds decoded frames and the time and collects frames via poll(). The data
// path never throws; malformed bodies are counted and dropped.
// Thread-safety: none; one owner thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/frame_protection.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/multipath.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::proto {

namespace detail {
class Outbox;  // private: queued control frames
}

enum class InitiatorState : uint8_t {
  kIdle,
  kLoggingIn,
  kVerifyingMtu,
  kEstablished,
  kDisconnecting,
  kClosed,        // orderly disconnect finished
  kDisconnected,  // the target ended the session (failure().reason says why)
  kDead,          // nothing heard from the target for dead_time_ms
  kFailed,        // login or MTU verification failed (failure() says why)
};
std::string_view to_string(InitiatorState s);

enum class SessionError : uint8_t {
  kNone,
  kInvalidState,        // the call does not fit the current state
  kNoAnswer,            // the target did not answer (login retries or probes exhausted)
  kLoginRejected,       // the target refused: failure().login_status
  kMtuMismatch,         // small frames pass, full-MTU frames do not: failure().mtu
  kDeadPeer,            // silence for dead_time_ms
  kDisconnectedByPeer,  // a Disconnect from the target: failure().reason
};
std::string_view to_string(SessionError e);

struct SessionFailure {
  SessionError error = SessionError::kNone;
  LoginStatus login_status = LoginStatus::kOk;
  DisconnectReason reason = DisconnectReason::kNormal;
  uint16_t mtu = 0;  // for kMtuMismatch: the MTU whose full-size frames did not pass
  std::string describe() const;
};

struct InitiatorConfig {
  MacAddress local_mac{};
  std::string initiator_name;
  uint16_t mtu = 1500;                        // our port's L3 MTU
  uint16_t window = 256;                      // frames we can receive beyond our ack
  uint32_t max_transfer = (1u << 20) + 4096;  // largest PDU we accept
  // With kFeatureMultipath: offer MULTIPATH (docs/protocol.md 14.1), for an
  // owner that runs the session's other paths (initiator_paths.h).
  uint32_t features = kFeaturesV2;
  std::vector<uint8_t> auth;  // opaque auth bytes sent as they are (ignored when `secret` is set)
  // The secret shared with the target (auth.h); empty: log in unauthenticated.
  crypto::SecretBytes secret;
  // The weakest per-frame protection we accept (the target may choose stronger).
  Protection protection = Protection::kOff;
  Duration login_timeout = milliseconds(250);  // first retry; doubles each attempt
  Duration max_login_backoff = seconds(2);
  uint32_t login_attempts = 6;
  Duration probe_timeout = milliseconds(250);  // per MTU probe round
  uint32_t probe_attempts = 5;                 // rounds of one small and two full-size probes
  Duration disconnect_timeout = milliseconds(250);
  uint32_t disconnect_attempts = 3;
  TransportParams transport;  // RTO, congestion and queue settings; negotiated values override
  uint64_t seed = 1;          // nonce source (deterministic in tests)
};

struct InitiatorStats {
  uint64_t login_requests_sent = 0;
  uint64_t probes_sent = 0;  // MTU probes, small and full
  uint64_t keepalives_sent = 0;
  uint64_t keepalives_answered = 0;
  uint64_t disconnects_sent = 0;
  uint64_t frames_ignored = 0;  // wrong source, session or state
  uint64_t stale_frames = 0;    // our session id with another epoch
  uint64_t malformed = 0;
  uint64_t resumes = 0;
  uint64_t auth_failures = 0;       // the target's challenge or confirmation did not verify
  uint64_t frames_unprotected = 0;  // a protected session's frame without protection
  uint64_t frames_bad_tag = 0;      // forged or modified
  uint64_t frames_replayed = 0;     // counter seen before or too old
};

class InitiatorSession {
 public:
  explicit InitiatorSession(InitiatorConfig config);
  ~InitiatorSession();
  InitiatorSession(const InitiatorSession&) = delete;
  InitiatorSession& operator=(const InitiatorSession&) = delete;

  // Starts a fresh login. Allowed in every state but kLoggingIn/kVerifyingMtu
  // (finish or fail first); drops any current session state.
  Status<SessionError> login(const MacAddress& target_mac, std::string target_name, TimePoint now);
  // Resumes the last session (same id, new epoch) after a link outage. Needs
  // a session id from an earlier login and the negotiated kFeatureSessionResume.
  // If the target answers kResumeFailed the session fails with that status
  // and the owner logs in afresh.
  Status<SessionError> resume(TimePoint now);
  // Orderly end: sends 0x13 until answered (bounded), then kClosed.
  Status<SessionError> disconnect(TimePoint now);

  void on_frame(const FrameView& frame, TimePoint now);
  // A frame of this session that a multipath path (InitiatorPaths) already
  // verified and opened with its own keys: checked as on_frame checks a
  // session frame, but not opened again (the path's keys are not the login
  // session's, and the login path's opener is shared: a second open would
  // count it as a replay).
  void on_opened_frame(const FrameView& opened, TimePoint now);
  void poll(TimePoint now, FrameSink& sink);
  TimePoint next_deadline() const;

  InitiatorState state() const { return state_; }
  bool established() const { return state_ == InitiatorState::kEstablished; }
  const SessionFailure& failure() const { return failure_; }
  const LoginReply& negotiated() const { return negotiated_; }  // valid once past login
  uint32_t session_id() const { return negotiated_.session_id; }
  uint16_t epoch() const { return negotiated_.epoch; }
  const MacAddress& target_mac() const { return target_mac_; }
  // A multipath session (MULTIPATH negotiated, 14.1): the target's port list
  // from the login reply (14.3), and in an authenticated one the login's
  // keys, which the paths' proofs and frame keys derive from (path_auth.h).
  // Then the login path seals with path 0 generation 0's own keys (14.6).
  bool multipath() const { return (negotiated_.features & kFeatureMultipath) != 0; }
  const std::vector<TargetPort>& target_ports() const { return target_ports_; }
  const std::optional<SessionKeys>& multipath_keys() const { return multipath_keys_; }
  // A protected multipath session: the login path's sealer and opener (path
  // 0 generation 0's keys), for the PathSet's path 0 to go on with
  // (InitiatorPathsConfig::login_protection); empty otherwise.
  SharedProtection login_path_protection() const {
    if (!multipath() || !sealer_) return {};
    return {sealer_, opener_};
  }
  // Whether the current session authenticated, and its per-frame protection.
  bool authenticated() const { return authenticated_; }
  Protection protection() const { return protection_; }

  // Queues a command PDU; false if not established or the Connection refuses it.
  bool send_command(uint16_t tag, std::vector<uint8_t> pdu);
  // The same for a PDU the caller keeps too (to send again after a re-login
  // without building it anew): no copy of its bytes.
  bool send_command_shared(uint16_t tag, SharedBytes pdu);
  // The command PDU as its header `head` followed by `data` (shared, no
  // copy: Connection::send_pdu_parts).
  bool send_command_parts(uint16_t tag, std::span<const uint8_t> head, SharedBytes data);
  std::optional<ReceivedPdu> pop_reply();
  // Reply placement on the current Connection (Connection::place_reply):
  // the data-in of `tag`'s next reply lands straight in `data_in`, borrowed
  // until forgotten, the placed reply popped, or the Connection replaced
  // (login()/resume() drop every placement with it). No-ops without one.
  void place_reply(uint16_t tag, std::span<uint8_t> data_in);
  void forget_reply_placement(uint16_t tag);
  void forget_reply_placements();
  Connection* connection() { return connection_.get(); }
  const Connection* connection() const { return connection_.get(); }
  const InitiatorStats& stats() const { return stats_; }

 private:
  void begin_login(TimePoint now);
  void fail(InitiatorState state, SessionFailure failure);
  void queue_control(Opcode op, uint8_t flags, std::vector<uint8_t> body);
  void send_probe(uint32_t id, uint16_t pad_to);
  // poll()'s per-state steps: each sends what is due at `now` (or fails the session).
  void poll_login(TimePoint now);
  void poll_mtu_probe(TimePoint now);
  void poll_established(TimePoint now);
  void poll_disconnect(TimePoint now);
  // Queued control frames, then the connection's data, through `sink`.
  void flush(TimePoint now, FrameSink& sink);
  void on_login_reply(const FrameView& frame, TimePoint now);
  void on_session_frame(const FrameView& frame, TimePoint now);
  bool accepts_session_frame(const FrameView& frame);
  void on_keepalive(const FrameView& frame, TimePoint now);
  void on_verified_frame(const FrameView& frame, TimePoint now);
  bool on_auth_continue(const LoginReply& reply, TimePoint now);
  size_t trailer() const { return sealer_ ? kProtectionTrailerSize : 0; }
  TimePoint keepalive_due() const;

  InitiatorConfig config_;
  std::mt19937_64 rng_;
  std::unique_ptr<detail::Outbox> outbox_;
  std::unique_ptr<Connection> connection_;
  InitiatorState state_ = InitiatorState::kIdle;
  SessionFailure failure_;
  LoginReply negotiated_;
  std::vector<TargetPort> target_ports_;       // multipath sessions
  std::optional<SessionKeys> multipath_keys_;  // authenticated multipath sessions
  MacAddress target_mac_{};
  std::string target_name_;
  bool resuming_ = false;
  uint32_t login_nonce_ = 0;
  uint32_t attempts_ = 0;
  TimePoint next_tx_ = kNever;
  Duration backoff_{};
  // MTU verification: small probes have odd ids, full-size probes even ids.
  uint32_t next_probe_id_ = 1;
  bool small_probe_answered_ = false;
  // Liveness.
  TimePoint last_rx_{};
  TimePoint last_keepalive_sent_{};
  // Authentication of the current login attempt and the session's protection.
  std::optional<InitiatorHandshake> handshake_;
  std::vector<uint8_t> auth_proof_;  // sent once the challenge is answered
  bool authenticated_ = false;
  Protection protection_ = Protection::kOff;
  std::shared_ptr<FrameSealer> sealer_;  // shared with path 0 of a multipath session
  std::shared_ptr<FrameOpener> opener_;
  std::vector<uint8_t> scratch_;  // decrypted payload of the frame being handled
  InitiatorStats stats_;
};

}  // namespace hyperscsi::proto

#include "hyperscsi/proto/initiator_session.h"

#include <algorithm>
#include <string>
#include <utility>

#include "hyperscsi/proto/negotiation.h"
#include "hyperscsi/proto/path_auth.h"
#include "session_util.h"

namespace hyperscsi::proto {

std::string_view to_string(InitiatorState s) {
  switch (s) {
    case InitiatorState::kIdle:
      return "idle";
    case InitiatorState::kLoggingIn:
      return "logging-in";
    case InitiatorState::kVerifyingMtu:
      return "verifying-mtu";
    case InitiatorState::kEstablished:
      return "established";
    case InitiatorState::kDisconnecting:
      return "disconnecting";
    case InitiatorState::kClosed:
      return "closed";
    case InitiatorState::kDisconnected:
      return "disconnected";
    case InitiatorState::kDead:
      return "dead";
    case InitiatorState::kFailed:
      return "failed";
  }
  return "?";
}

std::string_view to_string(SessionError e) {
  switch (e) {
    case SessionError::kNone:
      return "none";
    case SessionError::kInvalidState:
      return "invalid state";
    case SessionError::kNoAnswer:
      return "no answer from the target";
    case SessionError::kLoginRejected:
      return "login rejected";
    case SessionError::kMtuMismatch:
      return "MTU mismatch";
    case SessionError::kDeadPeer:
      return "target dead";
    case SessionError::kDisconnectedByPeer:
      return "disconnected by the target";
  }
  return "?";
}

std::string SessionFailure::describe() const {
  std::string s(to_string(error));
  switch (error) {
    case SessionError::kLoginRejected:
      s += ": ";
      s += to_string(login_status);
      break;
    case SessionError::kMtuMismatch:
      s += ": frames of the negotiated MTU " + std::to_string(mtu) +
           " do not pass between the peers (small frames do); set the same MTU on both "
           "ends and every switch between them";
      break;
    case SessionError::kDisconnectedByPeer:
      s += ": ";
      s += to_string(reason);
      break;
    default:
      break;
  }
  return s;
}

InitiatorSession::InitiatorSession(InitiatorConfig config)
    : config_(std::move(config)), rng_(config_.seed), outbox_(std::make_unique<detail::Outbox>()) {
  if (config_.login_attempts == 0) config_.login_attempts = 1;
  if (config_.probe_attempts == 0) config_.probe_attempts = 1;
  if (config_.disconnect_attempts == 0) config_.disconnect_attempts = 1;
}

InitiatorSession::~InitiatorSession() = default;

Status<SessionError> InitiatorSession::login(const MacAddress& target_mac, std::string target_name,
                                             TimePoint now) {
  if (state_ == InitiatorState::kLoggingIn || state_ == InitiatorState::kVerifyingMtu)
    return Unexpected{SessionError::kInvalidState};
  target_mac_ = target_mac;
  target_name_ = std::move(target_name);
  resuming_ = false;
  negotiated_ = LoginReply{};
  begin_login(now);
  return {};
}

Status<SessionError> InitiatorSession::resume(TimePoint now) {
  const bool have_session =
      negotiated_.session_id != 0 && (negotiated_.features & kFeatureSessionResume) != 0;
  if (!have_session || state_ == InitiatorState::kIdle || state_ == InitiatorState::kLoggingIn ||
      state_ == InitiatorState::kVerifyingMtu)
    return Unexpected{SessionError::kInvalidState};
  resuming_ = true;
  ++stats_.resumes;
  begin_login(now);
  return {};
}

void InitiatorSession::begin_login(TimePoint now) {
  connection_.reset();
  target_ports_.clear();
  multipath_keys_.reset();
  sealer_.reset();
  opener_.reset();
  authenticated_ = false;
  protection_ = Protection::kOff;
  handshake_.reset();
  auth_proof_.clear();
  if (!config_.secret.empty()) {
    // Fresh nonce and ephemeral key for every attempt (auth.h).
    handshake_ = InitiatorHandshake::start(config_.secret, config_.protection);
    if (!handshake_) {
      ++stats_.auth_failures;
      fail(InitiatorState::kFailed,
           SessionFailure{SessionError::kLoginRejected, LoginStatus::kAuthFailed,
                          DisconnectReason::kNormal, 0});
      return;
    }
  }
  do {
    login_nonce_ = static_cast<uint32_t>(rng_());
  } while (login_nonce_ == 0);
  state_ = InitiatorState::kLoggingIn;
  failure_ = {};
  attempts_ = 0;
  backoff_ = config_.login_timeout;
  next_tx_ = now;
}

Status<SessionError> InitiatorSession::disconnect(TimePoint now) {
  if (!connection_ || (state_ != InitiatorState::kEstablished &&
                       state_ != InitiatorState::kVerifyingMtu && state_ != InitiatorState::kDead))
    return Unexpected{SessionError::kInvalidState};
  state_ = InitiatorState::kDisconnecting;
  attempts_ = 0;
  next_tx_ = now;
  return {};
}

void InitiatorSession::fail(InitiatorState state, SessionFailure failure) {
  state_ = state;
  failure_ = failure;
  next_tx_ = kNever;
  // No frame reaches the Connection from now on; its placements are
  // forgotten all the same, so that no caller's buffer outlives them here.
  if (connection_) connection_->forget_reply_placements();
}

void InitiatorSession::queue_control(Opcode op, uint8_t flags, std::vector<uint8_t> body) {
  FrameHeader h = connection_
                      ? connection_->control_header(op, flags)
                      : detail::raw_control_header(config_.local_mac, target_mac_, op, flags,
                                                   negotiated_.session_id, negotiated_.epoch);
  outbox_->push(h, std::move(body));
}

void InitiatorSession::send_probe(uint32_t id, uint16_t pad_to) {
  std::vector<uint8_t> body;
  encode(Keepalive{id, pad_to}, body);
  FrameHeader h = connection_->control_header(Opcode::kKeepalive);
  h.sacks.count = 0;  // pad_to counts the fixed header only
  outbox_->push(h, std::move(body));
}

void InitiatorSession::on_frame(const FrameView& frame, TimePoint now) {
  if (frame.header.src != target_mac_ || state_ == InitiatorState::kIdle) {
    ++stats_.frames_ignored;
    return;
  }
  if (frame.header.common.opcode == Opcode::kLoginReply) {
    on_login_reply(frame, now);
    return;
  }
  on_session_frame(frame, now);
}

void InitiatorSession::on_login_reply(const FrameView& frame, TimePoint now) {
  if (state_ != InitiatorState::kLoggingIn) {
    ++stats_.frames_ignored;  // a late duplicate of an answered request
    return;
  }
  // A multipath login reply ends with the target's port list (14.3).
  auto decoded = decode_multipath_login_reply(frame.payload);
  if (!decoded) {
    ++stats_.malformed;
    return;
  }
  const LoginReply& reply = decoded.value().reply;
  if (reply.nonce != login_nonce_) {
    ++stats_.frames_ignored;
    return;
  }
  if (reply.status == LoginStatus::kAuthContinue) {
    on_auth_continue(reply, now);
    return;
  }
  // A feature we did not offer (MULTIPATH above all: its frames and keys
  // differ) would make the two sides disagree about the session.
  const bool unoffered = (reply.features & ~config_.features) != 0;
  if (reply.status != LoginStatus::kOk || reply.session_id == 0 || unoffered) {
    SessionFailure f;
    f.error = SessionError::kLoginRejected;
    f.login_status =
        reply.status == LoginStatus::kOk ? LoginStatus::kParameterRejected : reply.status;
    fail(InitiatorState::kFailed, f);
    return;
  }
  // The target proves it knows the secret before we use the session.
  if (handshake_ && (auth_proof_.empty() || !handshake_->confirm(reply.auth))) {
    ++stats_.auth_failures;
    fail(InitiatorState::kFailed,
         SessionFailure{SessionError::kLoginRejected, LoginStatus::kAuthFailed,
                        DisconnectReason::kNormal, 0});
    return;
  }
  negotiated_ = reply;
  target_ports_ = std::move(decoded.value().ports);
  TransportParams params = transport_params_for(reply, config_.transport);
  if (handshake_) {
    const SessionKeys& keys = handshake_->keys();
    authenticated_ = true;
    protection_ = keys.protection;
    if (multipath()) multipath_keys_ = keys;  // the root of every path's keys and proofs
    if (protection_ != Protection::kOff) {
      // The trailer takes room from every frame; the tag supersedes the crc.
      params.mtu -= kProtectionTrailerSize;
      params.checksum = false;
      // A multipath session seals its login path with path 0 generation 0's
      // own keys (14.6): the login's keys are only the root.
      std::optional<SessionKeys> path_keys;
      if (multipath())
        path_keys = derive_path_frame_keys(keys, reply.session_id, reply.epoch, 0, 0);
      const SessionKeys& k = path_keys ? *path_keys : keys;
      sealer_ =
          std::make_shared<FrameSealer>(protection_, k.initiator_to_target.span(), k.salt_i2t);
      opener_ =
          std::make_shared<FrameOpener>(protection_, k.target_to_initiator.span(), k.salt_t2i);
    }
    handshake_.reset();  // keys now live in the sealer and opener (and multipath_keys_)
  }
  Endpoint ep;
  ep.local = config_.local_mac;
  ep.peer = target_mac_;
  ep.session_id = reply.session_id;
  ep.epoch = reply.epoch;
  ep.peer_window = reply.window;
  connection_ = std::make_unique<Connection>(params, ep);
  state_ = InitiatorState::kVerifyingMtu;
  attempts_ = 0;
  small_probe_answered_ = false;
  next_tx_ = now;
  last_rx_ = now;
}

bool InitiatorSession::on_auth_continue(const LoginReply& reply, TimePoint now) {
  if (!handshake_ || !auth_proof_.empty()) {
    ++stats_.frames_ignored;  // not asked for, or a duplicate challenge
    return false;
  }
  auto proof = handshake_->answer(reply.auth, config_.initiator_name, target_name_);
  if (!proof) {
    ++stats_.auth_failures;
    fail(InitiatorState::kFailed,
         SessionFailure{SessionError::kLoginRejected, LoginStatus::kAuthFailed,
                        DisconnectReason::kNormal, 0});
    return false;
  }
  auth_proof_ = std::move(*proof);
  // Send the proof at once, with a fresh retry budget.
  attempts_ = 0;
  backoff_ = config_.login_timeout;
  next_tx_ = now;
  return true;
}

void InitiatorSession::on_opened_frame(const FrameView& opened, TimePoint now) {
  if (opened.header.src != target_mac_ || state_ == InitiatorState::kIdle ||
      !accepts_session_frame(opened))
    return;
  on_verified_frame(opened, now);
}

// Whether `frame` belongs to the live session (counted when not).
bool InitiatorSession::accepts_session_frame(const FrameView& frame) {
  const bool live = connection_ && (state_ == InitiatorState::kVerifyingMtu ||
                                    state_ == InitiatorState::kEstablished ||
                                    state_ == InitiatorState::kDisconnecting);
  const ExtHeader& ext = frame.header.ext;
  if (!live || ext.session_id != negotiated_.session_id) {
    ++stats_.frames_ignored;
    return false;
  }
  if (ext.epoch != negotiated_.epoch) {
    ++stats_.stale_frames;
    return false;
  }
  return true;
}

void InitiatorSession::on_session_frame(const FrameView& frame, TimePoint now) {
  if (!accepts_session_frame(frame)) return;
  if (opener_) {
    FrameView opened;
    switch (opener_->open(frame, scratch_, opened)) {
      case OpenVerdict::kOk:
        on_verified_frame(opened, now);
        return;
      case OpenVerdict::kUnprotected:
        ++stats_.frames_unprotected;
        return;
      case OpenVerdict::kBadTag:
        ++stats_.frames_bad_tag;
        return;
      case OpenVerdict::kReplayed:
        ++stats_.frames_replayed;
        return;
    }
    return;
  }
  on_verified_frame(frame, now);
}

void InitiatorSession::on_verified_frame(const FrameView& frame, TimePoint now) {
  const ExtHeader& ext = frame.header.ext;
  last_rx_ = now;
  const Opcode op = frame.header.common.opcode;
  if (op == Opcode::kDisconnect) {
    auto d = decode_disconnect(frame.payload);
    if (!d) {
      ++stats_.malformed;
      return;
    }
    if ((ext.flags & kFlagResponse) != 0) {
      if (state_ == InitiatorState::kDisconnecting) fail(InitiatorState::kClosed, {});
      return;
    }
    // The target ends the session: confirm, then let the owner decide.
    std::vector<uint8_t> body;
    encode(Disconnect{d->reason}, body);
    queue_control(Opcode::kDisconnect, kFlagResponse, std::move(body));
    SessionFailure f;
    f.error = SessionError::kDisconnectedByPeer;
    f.reason = d->reason;
    fail(state_ == InitiatorState::kDisconnecting ? InitiatorState::kClosed
                                                  : InitiatorState::kDisconnected,
         f);
    return;
  }
  connection_->on_frame(frame, now);  // acks and windows ride on every frame
  // A probe is 0x20; its answer is 0x21 with RESPONSE (docs/protocol.md).
  const bool response = (frame.header.ext.flags & kFlagResponse) != 0;
  if ((op == Opcode::kKeepalive && !response) || (op == Opcode::kAck && response))
    on_keepalive(frame, now);
}

void InitiatorSession::on_keepalive(const FrameView& frame, TimePoint now) {
  auto k = decode_keepalive(frame.payload);
  if (!k) {
    ++stats_.malformed;
    return;
  }
  if ((frame.header.ext.flags & kFlagResponse) == 0) {
    // The target probes us: answer with a frame of the same size.
    std::vector<uint8_t> body;
    encode(Keepalive{k->probe_id, static_cast<uint16_t>(detail::l3_size(frame))}, body);
    FrameHeader h = connection_->control_header(Opcode::kAck, kFlagResponse);
    h.sacks.count = 0;
    outbox_->push(h, std::move(body));
    return;
  }
  ++stats_.keepalives_answered;
  if (state_ != InitiatorState::kVerifyingMtu) return;
  if (k->probe_id % 2 == 1) {
    small_probe_answered_ = true;
  } else if (detail::l3_size(frame) + trailer() >= negotiated_.mtu) {
    state_ = InitiatorState::kEstablished;
    next_tx_ = kNever;
    last_keepalive_sent_ = now;
  }
}

void InitiatorSession::poll(TimePoint now, FrameSink& sink) {
  switch (state_) {
    case InitiatorState::kLoggingIn:
      poll_login(now);
      break;
    case InitiatorState::kVerifyingMtu:
      poll_mtu_probe(now);
      break;
    case InitiatorState::kEstablished:
      poll_established(now);
      break;
    case InitiatorState::kDisconnecting:
      poll_disconnect(now);
      break;
    default:
      break;
  }
  flush(now, sink);
}

void InitiatorSession::poll_login(TimePoint now) {
  if (now < next_tx_) return;
  if (attempts_ >= config_.login_attempts) {
    fail(InitiatorState::kFailed,
         SessionFailure{SessionError::kNoAnswer, LoginStatus::kOk, DisconnectReason::kNormal, 0});
    return;
  }
  LoginRequest req;
  req.nonce = login_nonce_;
  req.mtu = config_.mtu;
  req.window = config_.window;
  req.max_transfer = config_.max_transfer;
  req.features = config_.features;
  req.initiator_name = config_.initiator_name;
  req.target_name = target_name_;
  req.auth = !handshake_ ? config_.auth : auth_proof_.empty() ? handshake_->hello() : auth_proof_;
  if (resuming_) {
    req.resume_session_id = negotiated_.session_id;
    req.resume_epoch = negotiated_.epoch;
  }
  std::vector<uint8_t> body;
  encode(req, body);
  outbox_->push(detail::raw_control_header(config_.local_mac, target_mac_, Opcode::kLoginRequest),
                std::move(body));
  ++attempts_;
  ++stats_.login_requests_sent;
  next_tx_ = now + backoff_;
  backoff_ = std::min<Duration>(backoff_ * 2, config_.max_login_backoff);
}

void InitiatorSession::poll_mtu_probe(TimePoint now) {
  if (now < next_tx_) return;
  if (attempts_ >= config_.probe_attempts) {
    SessionFailure f;
    f.error = small_probe_answered_ ? SessionError::kMtuMismatch : SessionError::kNoAnswer;
    f.mtu = negotiated_.mtu;
    fail(InitiatorState::kFailed, f);
    return;
  }
  // A small probe tells "no answer at all" apart from "full frames lost";
  // two full-size probes per round keep random loss from looking like an
  // MTU problem.
  send_probe(next_probe_id_ | 1u, 0);
  send_probe((next_probe_id_ + 1) & ~1u, static_cast<uint16_t>(negotiated_.mtu - trailer()));
  send_probe((next_probe_id_ + 3) & ~1u, static_cast<uint16_t>(negotiated_.mtu - trailer()));
  next_probe_id_ += 4;
  stats_.probes_sent += 3;
  ++attempts_;
  next_tx_ = now + config_.probe_timeout;
}

void InitiatorSession::poll_established(TimePoint now) {
  const Duration silence = now - last_rx_;
  if (silence >= milliseconds(negotiated_.dead_time_ms)) {
    fail(InitiatorState::kDead,
         SessionFailure{SessionError::kDeadPeer, LoginStatus::kOk, DisconnectReason::kDeadPeer, 0});
    return;
  }
  if (now >= keepalive_due()) {
    send_probe(next_probe_id_ | 1u, 0);
    next_probe_id_ += 2;
    ++stats_.keepalives_sent;
    last_keepalive_sent_ = now;
  }
}

void InitiatorSession::poll_disconnect(TimePoint now) {
  if (now < next_tx_) return;
  if (attempts_ >= config_.disconnect_attempts) {
    fail(InitiatorState::kClosed, {});  // the target reclaims it after its dead time
    return;
  }
  std::vector<uint8_t> body;
  encode(Disconnect{DisconnectReason::kNormal}, body);
  queue_control(Opcode::kDisconnect, 0, std::move(body));
  ++attempts_;
  ++stats_.disconnects_sent;
  next_tx_ = now + config_.disconnect_timeout;
}

void InitiatorSession::flush(TimePoint now, FrameSink& sink) {
  const bool connected = connection_ && (state_ == InitiatorState::kVerifyingMtu ||
                                         state_ == InitiatorState::kEstablished ||
                                         state_ == InitiatorState::kDisconnecting);
  if (sealer_) {
    SealingSink sealing(sink, *sealer_);
    outbox_->flush(sealing);
    if (connected) connection_->poll(now, sealing);
    return;
  }
  outbox_->flush(sink);
  if (connected) connection_->poll(now, sink);
}

TimePoint InitiatorSession::next_deadline() const {
  if (!outbox_->empty()) return TimePoint::min();
  TimePoint t = kNever;
  switch (state_) {
    case InitiatorState::kLoggingIn:
    case InitiatorState::kVerifyingMtu:
    case InitiatorState::kDisconnecting:
      t = next_tx_;
      break;
    case InitiatorState::kEstablished:
      t = detail::earliest(keepalive_due(), last_rx_ + milliseconds(negotiated_.dead_time_ms));
      break;
    default:
      break;
  }
  if (connection_ &&
      (state_ == InitiatorState::kVerifyingMtu || state_ == InitiatorState::kEstablished ||
       state_ == InitiatorState::kDisconnecting))
    t = detail::earliest(t, connection_->next_deadline());
  return t;
}

// A probe is due after keepalive_ms of silence, at most one per keepalive_ms.
TimePoint InitiatorSession::keepalive_due() const {
  const Duration interval = milliseconds(std::max<uint32_t>(negotiated_.keepalive_ms, 1));
  return std::max(last_rx_, last_keepalive_sent_) + interval;
}

bool InitiatorSession::send_command(uint16_t tag, std::vector<uint8_t> pdu) {
  if (state_ != InitiatorState::kEstablished || !connection_) return false;
  return connection_->send_pdu(Opcode::kCommandRequest, tag, std::move(pdu));
}

bool InitiatorSession::send_command_shared(uint16_t tag, SharedBytes pdu) {
  if (state_ != InitiatorState::kEstablished || !connection_) return false;
  return connection_->send_pdu_shared(Opcode::kCommandRequest, tag, std::move(pdu));
}

bool InitiatorSession::send_command_parts(uint16_t tag, std::span<const uint8_t> head,
                                          SharedBytes data) {
  if (state_ != InitiatorState::kEstablished || !connection_) return false;
  return connection_->send_pdu_parts(Opcode::kCommandRequest, tag, head, std::move(data));
}

std::optional<ReceivedPdu> InitiatorSession::pop_reply() {
  if (!connection_) return std::nullopt;
  return connection_->pop_pdu();
}

void InitiatorSession::place_reply(uint16_t tag, std::span<uint8_t> data_in) {
  if (connection_) connection_->place_reply(tag, data_in);
}

void InitiatorSession::forget_reply_placement(uint16_t tag) {
  if (connection_) connection_->forget_reply_placement(tag);
}

void InitiatorSession::forget_reply_placements() {
  if (connection_) connection_->forget_reply_placements();
}

}  // namespace hyperscsi::proto

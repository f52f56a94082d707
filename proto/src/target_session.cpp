#include "hyperscsi/proto/target_session.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/command_order.h"
#include "hyperscsi/proto/path_auth.h"
#include "hyperscsi/proto/target_paths.h"
#include "session_util.h"

namespace hyperscsi::proto {

namespace {
constexpr size_t kMaxEvents = 4096;
constexpr size_t kMaxRejectSources = 1024;
constexpr uint32_t kSessionIdTries = 64;
constexpr size_t kMaxClosing = 256;
}  // namespace

struct TargetEndpoint::Session {
  Session(uint32_t session_id, const ReplyCacheLimits& cache_limits)
      : id(session_id), cache(cache_limits) {}
  uint32_t id;
  uint16_t epoch = 0;
  MacAddress mac{};
  std::string initiator_name;
  uint32_t login_nonce = 0;
  LoginReply reply;  // the last accepted LoginReply, resent for duplicate requests
  std::unique_ptr<Connection> connection;
  // A multipath session (docs/protocol.md 14): its PDUs travel on these
  // paths (the login path is their path 0), and its commands reach the cache
  // in cmd_sn order. `connection` then only frames session-level control
  // (Disconnect) on the login path and is never fed.
  std::unique_ptr<TargetPaths> paths;
  std::unique_ptr<CommandOrderer> orderer;
  ReplyCache cache;
  TimePoint established_at{};
  TimePoint last_rx{};
  uint64_t commands = 0;
  uint64_t replies = 0;
  uint64_t malformed_pdus = 0;
  // Security: set at login; sealer/opener only when protection is not off.
  bool authenticated = false;
  Protection protection = Protection::kOff;
  std::optional<SessionKeys> keys;
  std::unique_ptr<FrameSealer> sealer;
  std::unique_ptr<FrameOpener> opener;
  ProtectionStats drops;
  std::vector<uint8_t> scratch;  // decrypted payload of the frame being handled
  uint64_t frames_at_share = 0;  // frames_received when the window was last shared
};

// One handshake waiting for the initiator's proof. Single use.
struct TargetEndpoint::PendingAuth {
  TargetHandshake handshake;
  MacAddress mac{};
  std::string initiator_name;
  TimePoint created{};
};

// Seals the outbox's frames of protected sessions (keepalive answers,
// disconnects); login, discovery and rejection frames pass as they are.
class TargetEndpoint::OutboxSealer : public FrameSink {
 public:
  OutboxSealer(TargetEndpoint& ep, FrameSink& inner) : ep_(ep), inner_(inner) {}
  std::span<uint8_t> acquire(size_t size) override {
    // Room for a trailer when the sink has it; a full-MTU frame of an
    // unprotected session may not leave any (and needs none).
    buffer_ = inner_.acquire(size + kProtectionTrailerSize);
    if (buffer_.empty()) buffer_ = inner_.acquire(size);
    return buffer_.empty() ? buffer_ : buffer_.first(size);
  }
  void commit(size_t length) override {
    const uint8_t* hs = buffer_.data() + kEthernetHeaderSize;
    const auto op = static_cast<Opcode>(hs[4]);
    FrameSealer* sealer = nullptr;
    if (op != Opcode::kLoginReply && op != Opcode::kDiscoveryReply) {
      const Session* s = ep_.find_for_sealing(bytes::load_be32(hs + 8), bytes::load_be16(hs + 12));
      if (s != nullptr) sealer = s->sealer.get();
    }
    if (sealer == nullptr) {
      inner_.commit(length);
      return;
    }
    const size_t sealed = sealer->seal(buffer_, length);
    if (sealed != 0) inner_.commit(sealed);
  }

 private:
  TargetEndpoint& ep_;
  FrameSink& inner_;
  std::span<uint8_t> buffer_;
};

TargetEndpoint::TargetEndpoint(TargetConfig config, LoginPolicy policy, LunLister luns)
    : config_(std::move(config)),
      policy_(std::move(policy)),
      luns_(std::move(luns)),
      rng_(config_.seed),
      outbox_(std::make_unique<detail::Outbox>(1024)),
      rejections_(std::make_unique<detail::Outbox>(1024)) {
  // MULTIPATH is offered exactly when there is a port list to send.
  if (config_.multipath_ports.size() > kMaxTargetPorts)
    config_.multipath_ports.resize(kMaxTargetPorts);
  if (config_.multipath_ports.empty())
    config_.limits.features &= ~kFeatureMultipath;
  else
    config_.limits.features |= kFeatureMultipath;
}

TargetEndpoint::~TargetEndpoint() = default;

void TargetEndpoint::announce(TimePoint /*now*/) {
  DiscoveryReply r;
  r.nonce = 0;
  r.mtu = config_.limits.mtu;
  r.features = config_.limits.features;
  r.target_name = config_.target_name;
  if (luns_) r.luns = luns_("", kBroadcastMac);
  if (r.luns.size() > kMaxLunsInDiscovery) r.luns.resize(kMaxLunsInDiscovery);
  std::vector<uint8_t> body;
  encode(r, body);
  outbox_->push(
      detail::raw_control_header(config_.local_mac, kBroadcastMac, Opcode::kDiscoveryReply),
      std::move(body));
  ++stats_.announcements;
}

// A multipath session's frames may arrive through another port of the
// target (its owner hands them over): they are addressed to that port.
bool TargetEndpoint::serves_port(const MacAddress& mac) const {
  for (const TargetPort& p : config_.multipath_ports)
    if (p.mac == mac) return true;
  return false;
}

void TargetEndpoint::on_frame(const FrameView& frame, TimePoint now) {
  const FrameHeader& h = frame.header;
  if (h.dst != config_.local_mac && h.dst != kBroadcastMac && !serves_port(h.dst)) {
    ++stats_.frames_ignored;
    return;
  }
  switch (h.common.opcode) {
    case Opcode::kDiscoveryRequest:
      on_discovery(frame);
      return;
    case Opcode::kLoginRequest:
      on_login(frame, now);
      return;
    case Opcode::kDiscoveryReply:
    case Opcode::kLoginReply:
      ++stats_.frames_ignored;  // answers to other initiators' or targets' requests
      return;
    default:
      on_session_frame(frame, now);
      return;
  }
}

void TargetEndpoint::on_discovery(const FrameView& frame) {
  ++stats_.discovery_requests;
  auto req = decode_discovery_request(frame.payload);
  if (!req) {
    ++stats_.malformed;
    return;
  }
  if (!req->target_filter.empty() && req->target_filter != config_.target_name) return;
  DiscoveryReply r;
  r.nonce = req->nonce;
  r.mtu = config_.limits.mtu;
  r.features = config_.limits.features;
  r.target_name = config_.target_name;
  if (luns_) r.luns = luns_(req->initiator_name, frame.header.src);
  if (r.luns.size() > kMaxLunsInDiscovery) r.luns.resize(kMaxLunsInDiscovery);
  std::vector<uint8_t> body;
  encode(r, body);
  outbox_->push(
      detail::raw_control_header(config_.local_mac, frame.header.src, Opcode::kDiscoveryReply),
      std::move(body));
  ++stats_.discovery_replies;
}

void TargetEndpoint::send_login_reply(const MacAddress& dst, const LoginReply& reply) {
  std::vector<uint8_t> body;
  if (reply.status == LoginStatus::kOk && (reply.features & kFeatureMultipath) != 0)
    encode(MultipathLoginReply{reply, config_.multipath_ports}, body);
  else
    encode(reply, body);
  outbox_->push(detail::raw_control_header(config_.local_mac, dst, Opcode::kLoginReply,
                                           kFlagResponse, reply.session_id, reply.epoch),
                std::move(body));
}

void TargetEndpoint::refuse_login(const FrameView& frame, const LoginRequest& req,
                                  LoginStatus status) {
  LoginReply r = negotiate(req, config_.limits);
  r.status = status;
  r.session_id = 0;
  r.epoch = 0;
  send_login_reply(frame.header.src, r);
  ++stats_.logins_refused;
  if (status == LoginStatus::kResumeFailed) ++stats_.resumes_failed;
}

void TargetEndpoint::on_login(const FrameView& frame, TimePoint now) {
  auto decoded = decode_login_request(frame.payload);
  if (!decoded) {
    ++stats_.malformed;
    return;
  }
  const LoginRequest& req = decoded.value();
  const MacAddress& src = frame.header.src;

  // A retransmitted request whose reply was lost: same answer, no new state.
  for (auto& [id, s] : sessions_) {
    if (s->mac == src && s->login_nonce == req.nonce && s->initiator_name == req.initiator_name) {
      ++stats_.duplicate_logins;
      s->last_rx = now;
      send_login_reply(src, s->reply);
      return;
    }
  }
  if (!req.target_name.empty() && req.target_name != config_.target_name) {
    refuse_login(frame, req, LoginStatus::kUnknownTarget);
    return;
  }
  const LoginStatus verdict = policy_ ? policy_(req, src) : LoginStatus::kOk;
  if (verdict != LoginStatus::kOk) {
    refuse_login(frame, req, verdict);
    return;
  }
  LoginReply reply = negotiate(req, config_.limits);
  if (reply.status != LoginStatus::kOk) {
    refuse_login(frame, req, reply.status);
    return;
  }
  AuthOutcome auth = authenticate(frame, req, now);
  if (!auth.proceed) return;
  reply.auth = auth.confirm;

  if (req.resume_session_id != 0) {
    auto it = sessions_.find(req.resume_session_id);
    const bool resumable = it != sessions_.end() && it->second->mac == src &&
                           it->second->initiator_name == req.initiator_name &&
                           (config_.limits.features & kFeatureSessionResume) != 0;
    if (!resumable) {
      refuse_login(frame, req, LoginStatus::kResumeFailed);
      return;
    }
    Session& s = *it->second;
    if (s.authenticated && !auth.authenticated) {
      ++stats_.auth_failures;  // an authenticated session resumes only with a new handshake
      refuse_login(frame, req, LoginStatus::kAuthFailed);
      return;
    }
    s.authenticated = auth.authenticated;
    s.keys = std::move(auth.keys);
    s.epoch = static_cast<uint16_t>(s.epoch + 1);
    s.login_nonce = req.nonce;
    reply.session_id = s.id;
    reply.epoch = s.epoch;
    s.reply = reply;
    start_connection(s, now);  // the old Connection and its in-flight frames are gone
    send_login_reply(src, reply);
    ++stats_.resumes;
    push_event({TargetEventKind::kSessionResumed, s.id, s.epoch, s.initiator_name, s.mac,
                DisconnectReason::kNormal, s.authenticated, s.protection});
    return;
  }

  if (sessions_.size() >= config_.max_sessions) {
    refuse_login(frame, req, LoginStatus::kTooManySessions);
    return;
  }
  const uint32_t id = new_session_id();
  if (id == 0) {
    refuse_login(frame, req, LoginStatus::kTooManySessions);
    return;
  }
  auto s = std::make_unique<Session>(id, config_.reply_cache);
  s->epoch = 1;
  s->mac = src;
  s->initiator_name = req.initiator_name;
  s->login_nonce = req.nonce;
  s->authenticated = auth.authenticated;
  s->keys = std::move(auth.keys);
  reply.session_id = id;
  reply.epoch = s->epoch;
  s->reply = reply;
  s->established_at = now;
  start_connection(*s, now);
  send_login_reply(src, reply);
  ++stats_.logins_accepted;
  push_event({TargetEventKind::kSessionEstablished, id, s->epoch, s->initiator_name, s->mac,
              DisconnectReason::kNormal, s->authenticated, s->protection});
  sessions_.emplace(id, std::move(s));
}

void TargetEndpoint::start_connection(Session& s, TimePoint now) {
  Endpoint ep;
  ep.local = config_.local_mac;
  ep.peer = s.mac;
  ep.session_id = s.id;
  ep.epoch = s.epoch;
  ep.peer_window = s.reply.window;
  TransportParams params = transport_params_for(s.reply, config_.transport);
  s.protection = s.keys ? s.keys->protection : Protection::kOff;
  s.sealer.reset();
  s.opener.reset();
  if (s.protection != Protection::kOff) {
    // The trailer takes room from every frame; the tag supersedes the crc.
    params.mtu -= kProtectionTrailerSize;
    params.checksum = false;
    // A multipath session seals its login path with path 0 generation 0's
    // own keys (docs/protocol.md 14.6): the login's keys are only the root.
    std::optional<SessionKeys> path_keys;
    if ((s.reply.features & kFeatureMultipath) != 0)
      path_keys = derive_path_frame_keys(*s.keys, s.id, s.epoch, 0, 0);
    const SessionKeys& k = path_keys ? *path_keys : *s.keys;
    s.sealer =
        std::make_unique<FrameSealer>(s.protection, k.target_to_initiator.span(), k.salt_t2i);
    s.opener =
        std::make_unique<FrameOpener>(s.protection, k.initiator_to_target.span(), k.salt_i2t);
  }
  s.connection = std::make_unique<Connection>(params, ep);
  s.paths.reset();
  s.orderer.reset();
  if ((s.reply.features & kFeatureMultipath) != 0) {
    // The paths seal with their own keys (path_auth.h): the login's opener
    // and sealer are not used for this session's frames.
    s.sealer.reset();
    s.opener.reset();
    TargetPathsConfig pc;
    pc.transport.role = PathRole::kTarget;
    pc.transport.session_id = s.id;
    pc.transport.epoch = s.epoch;
    pc.transport.transport = transport_params_for(s.reply, config_.transport);
    pc.ports = config_.multipath_ports;
    pc.max_transfer = s.reply.max_transfer;
    pc.window_cap = config_.limits.window;
    pc.checksum = (s.reply.features & kFeatureChecksum) != 0;
    pc.keys = s.keys;
    PathSpec login;
    login.local = config_.local_mac;
    login.peer = s.mac;
    login.mtu = s.reply.mtu;
    login.receive_window = s.reply.window;
    login.peer_window = s.reply.window;
    login.checksum = pc.checksum;
    s.paths = std::make_unique<TargetPaths>(std::move(pc), login, now);
    s.orderer = std::make_unique<CommandOrderer>();
  }
  s.last_rx = now;
}

TargetEndpoint::AuthOutcome TargetEndpoint::authenticate(const FrameView& frame,
                                                         const LoginRequest& req, TimePoint now) {
  AuthOutcome out;
  const MacAddress& src = frame.header.src;
  auto refuse = [&](LoginStatus status) {
    refuse_login(frame, req, status);
    return out;
  };
  if (req.auth.empty()) {
    std::optional<Protection> need = Protection::kOff;
    if (security_.required_protection)
      need = security_.required_protection(req.initiator_name, src, false);
    if (!need || *need != Protection::kOff) {
      ++stats_.auth_failures;  // what it may see needs authentication
      return refuse(LoginStatus::kAuthFailed);
    }
    out.proceed = true;
    return out;
  }
  auto step = auth_step(req.auth);
  if (step && *step == AuthStep::kHello) {
    std::optional<crypto::SecretBytes> secret;
    if (security_.secret_for) secret = security_.secret_for(req.initiator_name);
    if (!secret || secret->empty()) {
      ++stats_.auth_failures;
      return refuse(LoginStatus::kAuthFailed);
    }
    std::optional<Protection> need = Protection::kOff;
    if (security_.required_protection)
      need = security_.required_protection(req.initiator_name, src, true);
    if (!need) return refuse(LoginStatus::kAccessDenied);
    auto hs =
        TargetHandshake::start(req.auth, *secret, *need, req.initiator_name, config_.target_name);
    if (!hs) {
      ++stats_.auth_failures;
      return refuse(LoginStatus::kAuthFailed);
    }
    // Bounded in number and age: a flood of Hellos evicts old challenges.
    std::erase_if(pending_auth_, [&](const PendingAuth& p) {
      return now - p.created >= security_.attempt_lifetime;
    });
    if (pending_auth_.size() >= std::max<size_t>(security_.max_pending, 1)) {
      pending_auth_.erase(pending_auth_.begin());
      ++stats_.auth_evicted;
    }
    LoginReply reply = negotiate(req, config_.limits);
    reply.status = LoginStatus::kAuthContinue;
    reply.auth = hs->challenge();
    pending_auth_.push_back(PendingAuth{std::move(*hs), src, req.initiator_name, now});
    send_login_reply(src, reply);
    ++stats_.auth_challenges;
    return out;
  }
  auto proof = step && *step == AuthStep::kProof
                   ? decode_auth_proof(req.auth)
                   : Result<AuthProof, DecodeError>(Unexpected{DecodeError::kBadField});
  if (!proof) {
    ++stats_.auth_failures;
    return refuse(LoginStatus::kAuthFailed);
  }
  auto it = std::find_if(pending_auth_.begin(), pending_auth_.end(), [&](const PendingAuth& p) {
    return p.handshake.nonce() == proof->target_nonce;
  });
  if (it == pending_auth_.end() || it->mac != src || it->initiator_name != req.initiator_name ||
      now - it->created >= security_.attempt_lifetime) {
    if (it != pending_auth_.end()) pending_auth_.erase(it);
    ++stats_.auth_replays;  // no live challenge for it: replayed, stale or forged
    return refuse(LoginStatus::kAuthFailed);
  }
  PendingAuth pending = std::move(*it);
  pending_auth_.erase(it);  // single use, whatever the verdict
  if (!pending.handshake.verify(*proof)) {
    ++stats_.auth_failures;
    return refuse(LoginStatus::kAuthFailed);
  }
  ++stats_.auth_successes;
  out.proceed = true;
  out.authenticated = true;
  out.keys = pending.handshake.keys();
  out.confirm = pending.handshake.confirm_blob();
  return out;
}

uint32_t TargetEndpoint::new_session_id() {
  for (uint32_t i = 0; i < kSessionIdTries; ++i) {
    const auto id = static_cast<uint32_t>(rng_());
    if (id != 0 && !sessions_.contains(id)) return id;
  }
  return 0;
}

void TargetEndpoint::reject(const FrameView& frame, DisconnectReason reason, TimePoint now) {
  const MacAddress& src = frame.header.src;
  auto it = last_reject_.find(src);
  if (it != last_reject_.end() && now - it->second < config_.reject_interval) {
    ++stats_.rejections_suppressed;
    return;
  }
  if (it == last_reject_.end() && last_reject_.size() >= kMaxRejectSources) {
    // Bound the table: forget sources whose interval has passed, or all of them.
    std::erase_if(last_reject_,
                  [&](const auto& kv) { return now - kv.second >= config_.reject_interval; });
    if (last_reject_.size() >= kMaxRejectSources) last_reject_.clear();
  }
  last_reject_[src] = now;
  std::vector<uint8_t> body;
  encode(Disconnect{reason}, body);
  // Stamped with the rejected frame's session id and epoch so its sender
  // recognises which session ended.
  rejections_->push(detail::raw_control_header(config_.local_mac, src, Opcode::kDisconnect, 0,
                                               frame.header.ext.session_id, frame.header.ext.epoch),
                    std::move(body));
  ++stats_.rejections_sent;
}

void TargetEndpoint::on_session_frame(const FrameView& frame, TimePoint now) {
  const ExtHeader& ext = frame.header.ext;
  const Opcode op = frame.header.common.opcode;
  // Never answer a Disconnect with a rejection: two endpoints could ping-pong.
  const bool may_reject = op != Opcode::kDisconnect;
  if (ext.session_id == 0) {
    ++stats_.frames_ignored;
    return;
  }
  auto it = sessions_.find(ext.session_id);
  // A multipath session's frames come from any of the initiator's ports: its
  // PathSet checks each path's MACs.
  if (it == sessions_.end() || (it->second->mac != frame.header.src && !it->second->paths)) {
    ++stats_.unknown_session;
    if (may_reject) reject(frame, DisconnectReason::kUnknownSession, now);
    return;
  }
  Session& s = *it->second;
  if (ext.epoch != s.epoch) {
    ++stats_.stale_epoch;
    if (may_reject) reject(frame, DisconnectReason::kStaleEpoch, now);
    return;
  }
  if (s.paths) {
    FrameView opened;
    const PathSet::FrameResult r = s.paths->on_frame(frame, now, opened);
    if (r == PathSet::FrameResult::kDropped) return;
    s.last_rx = now;
    if (r == PathSet::FrameResult::kForOwner &&
        opened.header.common.opcode == Opcode::kDisconnect) {
      on_verified_frame(s, opened, now);
      return;
    }
    drain_pdus(s, now);
    return;
  }
  if (s.opener) {
    FrameView opened;
    const OpenVerdict v = s.opener->open(frame, s.scratch, opened);
    if (v != OpenVerdict::kOk) {
      // Dropped without an answer: a forger learns nothing, the session goes on.
      s.drops.count(v);
      stats_.frames_unprotected += v == OpenVerdict::kUnprotected;
      stats_.frames_bad_tag += v == OpenVerdict::kBadTag;
      stats_.frames_replayed += v == OpenVerdict::kReplayed;
      return;
    }
    on_verified_frame(s, opened, now);
    return;
  }
  on_verified_frame(s, frame, now);
}

void TargetEndpoint::on_verified_frame(Session& s, const FrameView& frame, TimePoint now) {
  const ExtHeader& ext = frame.header.ext;
  const Opcode op = frame.header.common.opcode;
  s.last_rx = now;
  if (op == Opcode::kDisconnect) {
    if ((ext.flags & kFlagResponse) != 0) return;  // we do not wait for confirmations
    auto d = decode_disconnect(frame.payload);
    if (!d) {
      ++stats_.malformed;
      return;
    }
    std::vector<uint8_t> body;
    encode(Disconnect{d->reason}, body);
    // The answer travels on the path the request came on (a multipath
    // session's path seals it with its own keys).
    queue_session_control(s, ext.path_id, Opcode::kDisconnect, kFlagResponse, std::move(body));
    ++stats_.disconnects;
    close_session(s.id, d->reason);
    return;
  }
  s.connection->on_frame(frame, now);
  if (op == Opcode::kKeepalive && (ext.flags & kFlagResponse) == 0) {
    auto k = decode_keepalive(frame.payload);
    if (!k) {
      ++stats_.malformed;
      return;
    }
    // Same size as the probe, so a full-MTU probe proves both directions.
    std::vector<uint8_t> body;
    encode(Keepalive{k->probe_id, static_cast<uint16_t>(detail::l3_size(frame))}, body);
    FrameHeader h = s.connection->control_header(Opcode::kAck, kFlagResponse);
    h.sacks.count = 0;  // pad_to counts the fixed header only
    outbox_->push(h, std::move(body));
    ++stats_.keepalives_answered;
    return;
  }
  drain_pdus(s, now);
}

std::optional<ReceivedPdu> TargetEndpoint::next_pdu(Session& s, TimePoint now) {
  if (!s.paths) return s.connection->pop_pdu();
  // Commands from several paths arrive out of order: in cmd_sn order to the
  // cache and the owner (docs/protocol.md 14.9).
  while (auto pdu = s.paths->transport().pop_pdu()) s.orderer->push(std::move(*pdu), now);
  return s.orderer->pop(now);
}

bool TargetEndpoint::queue_reply(Session& s, uint16_t tag, SharedBytes bytes) {
  if (!s.paths) return s.connection->send_pdu_shared(Opcode::kCommandReply, tag, std::move(bytes));
  // The PathSet takes owned PDUs (it may resend one whole on another path).
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  return s.paths->transport().send_pdu(Opcode::kCommandReply, tag, std::move(copy));
}

void TargetEndpoint::drain_pdus(Session& s, TimePoint now) {
  while (auto pdu = next_pdu(s, now)) {
    if (pdu->opcode != Opcode::kCommandRequest) {
      ++s.malformed_pdus;
      ++stats_.malformed;
      continue;
    }
    auto cmd = decode_command(pdu->bytes);
    if (!cmd) {
      ++s.malformed_pdus;
      ++stats_.malformed;
      continue;
    }
    const CommandHeader header = cmd->header;
    const size_t data_offset = static_cast<size_t>(cmd->data_out.data() - pdu->bytes.data());
    s.cache.release_below(header.reply_ack_sn);
    const CacheDecision decision = s.cache.begin(header.cmd_sn);
    switch (decision) {
      case CacheDecision::kStale:
      case CacheDecision::kOutOfWindow:
        ++stats_.command_protocol_errors;
        continue;
      case CacheDecision::kReplay: {
        SharedBytes stored = s.cache.stored_reply_bytes(header.cmd_sn);
        if (!stored) stored = share_bytes({});
        queue_reply(s, pdu->tag, std::move(stored));
        break;
      }
      case CacheDecision::kExecute:
      case CacheDecision::kReexecuteIdempotent:
        ++s.commands;
        break;
      case CacheDecision::kInProgress:
        break;
    }
    IncomingCommand c;
    c.session_id = s.id;
    c.tag = pdu->tag;
    c.decision = decision;
    c.header = header;
    c.data_out_offset = data_offset;
    c.pdu = std::move(pdu->bytes);
    commands_.push_back(std::move(c));
  }
}

std::optional<IncomingCommand> TargetEndpoint::pop_command() {
  if (commands_.empty()) return std::nullopt;
  IncomingCommand c = std::move(commands_.front());
  commands_.pop_front();
  return c;
}

bool TargetEndpoint::send_reply(uint32_t session_id, uint16_t tag, uint32_t cmd_sn,
                                std::vector<uint8_t> reply_pdu, bool reexecutable) {
  return send_reply(session_id, tag, cmd_sn, share_bytes(std::move(reply_pdu)), reexecutable);
}

bool TargetEndpoint::send_reply(uint32_t session_id, uint16_t tag, uint32_t cmd_sn,
                                SharedBytes shared, bool reexecutable) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end() || !shared) return false;
  Session& s = *it->second;
  auto decoded = decode_reply(shared.span());
  if (!decoded) return false;
  const size_t data_offset = static_cast<size_t>(decoded->data_in.data() - shared.data());
  // Built once, held by the cache and the connection alike.
  s.cache.complete_shared(cmd_sn, shared, data_offset, reexecutable);
  ++s.replies;
  return queue_reply(s, tag, std::move(shared));
}

void TargetEndpoint::abandon(uint32_t session_id, uint32_t cmd_sn) {
  auto it = sessions_.find(session_id);
  if (it != sessions_.end()) it->second->cache.abandon(cmd_sn);
}

bool TargetEndpoint::disconnect(uint32_t session_id, DisconnectReason reason, TimePoint /*now*/) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return false;
  std::vector<uint8_t> body;
  encode(Disconnect{reason}, body);
  // Path 0 (the login pair) when it is up: the initiator's login session
  // opens it with the keys it already holds.
  queue_session_control(*it->second, 0, Opcode::kDisconnect, 0, std::move(body));
  ++stats_.disconnects;
  close_session(session_id, reason);
  return true;
}

void TargetEndpoint::queue_session_control(Session& s, uint8_t path_id, Opcode opcode,
                                           uint8_t flags, std::vector<uint8_t> body) {
  if (s.paths) {
    PathSet& ps = s.paths->transport();
    if (ps.state(path_id).value_or(PathState::kFailed) == PathState::kFailed)
      path_id = ps.best_path().value_or(path_id);
    if (ps.queue_control(path_id, opcode, flags, body)) return;
    // No path with a Connection: a protected session's frame could not be
    // sealed, so it is not sent; the peer finds out by its dead time.
    if (s.keys && s.keys->protection != Protection::kOff) return;
  }
  outbox_->push(s.connection->control_header(opcode, flags), std::move(body));
}

const TargetEndpoint::Session* TargetEndpoint::find_for_sealing(uint32_t session_id,
                                                                uint16_t epoch) const {
  auto it = sessions_.find(session_id);
  if (it != sessions_.end() && it->second->epoch == epoch) return it->second.get();
  for (const auto& s : closing_)
    if (s->id == session_id && s->epoch == epoch) return s.get();
  return nullptr;
}

void TargetEndpoint::close_session(uint32_t session_id, DisconnectReason reason) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  const Session& s = *it->second;
  push_event({TargetEventKind::kSessionClosed, s.id, s.epoch, s.initiator_name, s.mac, reason,
              s.authenticated, s.protection});
  // Commands of this session still queued for the owner cannot be answered.
  std::erase_if(commands_, [&](const IncomingCommand& c) { return c.session_id == session_id; });
  // Kept until poll_control() sent its last frames (bounded: a burst of
  // closes between two polls loses the oldest goodbyes, not memory).
  if (closing_.size() >= kMaxClosing) closing_.erase(closing_.begin());
  closing_.push_back(std::move(it->second));
  sessions_.erase(it);
}

void TargetEndpoint::push_event(TargetEvent e) {
  if (events_.size() >= kMaxEvents) events_.pop_front();
  events_.push_back(std::move(e));
}

std::optional<TargetEvent> TargetEndpoint::pop_event() {
  if (events_.empty()) return std::nullopt;
  TargetEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

void TargetEndpoint::poll(TimePoint now, FrameSink& sink) {
  poll_control(now, sink);
  for (auto& [id, s] : sessions_) poll_session(*s, now, sink);
}

void TargetEndpoint::poll_session(Session& s, TimePoint now, FrameSink& sink) {
  if (s.paths) {
    s.paths->poll(now, sink);  // frames carry their path's local MAC: the owner picks the port
    while (s.paths->pop_event()) {
    }
  } else if (s.sealer) {
    SealingSink sealing(sink, *s.sealer);
    s.connection->poll(now, sealing);
  } else {
    s.connection->poll(now, sink);
  }
  drain_pdus(s, now);
}

bool TargetEndpoint::poll_session(uint32_t session_id, TimePoint now, FrameSink& sink) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return false;
  poll_session(*it->second, now, sink);
  return true;
}

void TargetEndpoint::session_ids(std::vector<uint32_t>& out) const {
  out.clear();
  out.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) out.push_back(id);
}

void TargetEndpoint::poll_control(TimePoint now, FrameSink& sink) {
  std::vector<uint32_t> dead;
  for (auto& [id, s] : sessions_) {
    const uint32_t dead_ms = s->reply.dead_time_ms;
    if (dead_ms != 0 && now - s->last_rx >= milliseconds(dead_ms)) dead.push_back(id);
  }
  for (uint32_t id : dead) {
    ++stats_.sessions_reclaimed;
    close_session(id, DisconnectReason::kDeadPeer);
  }
  OutboxSealer outbox_sink(*this, sink);
  outbox_->flush(outbox_sink);
  rejections_->flush(sink);  // never sealed (10.13), even for a session just closed
  for (const auto& s : closing_)
    if (s->paths) s->paths->transport().flush_control(sink);
  // What the outbox could not send yet may still need a closed session's sealer.
  if (outbox_->empty()) closing_.clear();
  share_receive_window(now);
}

void TargetEndpoint::share_receive_window(TimePoint now) {
  if (config_.receive_budget_windows == 0 || now < next_share_) return;
  next_share_ = now + config_.share_interval;
  size_t active = 0;
  for (auto& [id, s] : sessions_) {
    const uint64_t frames = s->connection->stats().frames_received;
    if (frames - s->frames_at_share >= config_.share_active_frames) ++active;
    s->frames_at_share = frames;
  }
  const uint64_t budget = uint64_t{config_.receive_budget_windows} * config_.limits.window;
  const uint64_t share = budget / std::max<size_t>(active, 1);
  const auto window = static_cast<uint16_t>(
      std::clamp<uint64_t>(share, kMinSharedWindow, std::numeric_limits<uint16_t>::max()));
  for (auto& [id, s] : sessions_) s->connection->set_advertised_window(window);
}

TimePoint TargetEndpoint::next_deadline() const {
  if (!outbox_->empty() || !rejections_->empty() || !closing_.empty()) return TimePoint::min();
  TimePoint t = kNever;
  for (const auto& [id, s] : sessions_) {
    if (s->paths) {
      t = detail::earliest(t, s->paths->next_deadline());
      t = detail::earliest(t, s->orderer->next_deadline());
    } else {
      t = detail::earliest(t, s->connection->next_deadline());
    }
    if (s->reply.dead_time_ms != 0)
      t = detail::earliest(t, s->last_rx + milliseconds(s->reply.dead_time_ms));
  }
  return t;
}

FlowHints TargetEndpoint::flow_hints() const {
  FlowHints h;
  for (const auto& [id, s] : sessions_) h.merge(s->connection->flow_hints());
  return h;
}

SessionInfo TargetEndpoint::info(const Session& s) const {
  SessionInfo i;
  i.session_id = s.id;
  i.epoch = s.epoch;
  i.initiator_name = s.initiator_name;
  i.initiator_mac = s.mac;
  i.established_at = s.established_at;
  i.last_heard = s.last_rx;
  i.commands = s.commands;
  i.replies = s.replies;
  i.malformed_pdus = s.malformed_pdus;
  i.negotiated = s.reply;
  i.authenticated = s.authenticated;
  i.protection = s.protection;
  i.protection_drops = s.drops;
  i.cache = s.cache.stats();
  i.transport = s.connection->stats();
  if (s.paths) {
    i.paths = s.paths->transport().paths();
    // The session's transport is the sum of its paths'.
    TransportStats sum;
    for (const PathInfo& p : i.paths) add_path_counters(sum, p.counters);
    i.transport = sum;
  }
  return i;
}

std::optional<SessionInfo> TargetEndpoint::session(uint32_t session_id) const {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return std::nullopt;
  return info(*it->second);
}

std::vector<SessionInfo> TargetEndpoint::sessions() const {
  std::vector<SessionInfo> out;
  out.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) out.push_back(info(*s));
  return out;
}

Connection* TargetEndpoint::connection(uint32_t session_id) {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? nullptr : it->second->connection.get();
}

}  // namespace hyperscsi::proto

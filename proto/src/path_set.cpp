// PathSet: paths as Connections, the session queue, scheduling, failure
// detection and failover. See path_set.h.
#include "hyperscsi/proto/path_set.h"

#include <algorithm>

#include "session_util.h"

namespace hyperscsi::proto {

namespace {
constexpr size_t kMaxEvents = 1024;
constexpr size_t kPathOutboxLimit = 64;
}  // namespace

std::string_view to_string(PathState s) {
  switch (s) {
    case PathState::kStandby:
      return "standby";
    case PathState::kActive:
      return "active";
    case PathState::kFailed:
      return "failed";
  }
  return "?";
}

std::string_view to_string(PathFailure f) {
  switch (f) {
    case PathFailure::kNone:
      return "none";
    case PathFailure::kStuck:
      return "no acknowledgement";
    case PathFailure::kSilent:
      return "silent";
    case PathFailure::kPeerLeft:
      return "left by the peer";
    case PathFailure::kReplaced:
      return "replaced by a new generation";
    case PathFailure::kLeft:
      return "left";
  }
  return "?";
}

struct PathSet::Path {
  Path(const PathSpec& s, const PathSetConfig& c, TimePoint now)
      : spec(s), health(c.health, now), rate(c.initial_rate), outbox(kPathOutboxLimit) {}
  PathSpec spec;  // id, gen, MACs, mtu of the current generation
  PathState state = PathState::kFailed;
  PathFailure last_failure = PathFailure::kNone;
  TimePoint state_since{};
  std::unique_ptr<Connection> conn;
  std::shared_ptr<FrameSealer> sealer;  // shared with the login session on path 0 (initiator)
  std::shared_ptr<FrameOpener> opener;
  PathHealth health;
  DeliveryRate rate;
  uint64_t pushed_bytes = 0;  // PDU bytes handed to this generation's Connection
  uint64_t acked_seen = 0;    // frames_acked at the last look
  // When this generation was last given a PDU (none yet: nullopt). An idle
  // path given nothing for kRetryIdlePath is ranked hopefully, so it is
  // re-measured (path_scheduler.h).
  std::optional<TimePoint> last_given;
  detail::Outbox outbox;  // control frames for this path (sealed on the way out)
  PathCounters counters;  // of retired generations; live ones are added in info()
};

PathSet::PathSet(PathSetConfig config)
    : config_(std::move(config)), unsealed_(std::make_unique<detail::Outbox>(256)) {}

PathSet::~PathSet() = default;

PathSet::Path* PathSet::find(uint8_t id) {
  return id < kMaxPaths ? paths_[id].get() : nullptr;
}
const PathSet::Path* PathSet::find(uint8_t id) const {
  return id < kMaxPaths ? paths_[id].get() : nullptr;
}

void PathSet::push_event(PathEvent e) {
  if (events_.size() >= kMaxEvents) events_.pop_front();
  events_.push_back(e);
}

std::optional<PathEvent> PathSet::pop_event() {
  if (events_.empty()) return std::nullopt;
  PathEvent e = events_.front();
  events_.pop_front();
  return e;
}

// Adds a generation's transport counters to the path's totals.
static void add_transport(PathCounters& c, const TransportStats& t) {
  c.bytes_sent += t.bytes_sent;
  c.bytes_received += t.bytes_received;
  c.frames_sent += t.frames_sent;
  c.frames_retransmitted += t.frames_retransmitted;
  c.frames_received += t.frames_received;
  c.timeouts += t.timeouts;
  c.pdus_received += t.pdus_received;
}

// Drops the path's Connection; what it had not delivered goes to the front
// of the queue (oldest first), to be sent whole on another path.
void PathSet::retire_connection(Path& p, PathFailure why, TimePoint now) {
  if (!p.conn) return;
  drain(p);  // complete PDUs it received are still good
  std::vector<Connection::UnackedPdu> undelivered = p.conn->release_unacked();
  add_transport(p.counters, p.conn->stats());
  p.conn.reset();
  p.sealer.reset();
  p.opener.reset();
  for (auto it = undelivered.rbegin(); it != undelivered.rend(); ++it) {
    queue_bytes_ += it->bytes.size();
    queue_.push_front(Queued{it->opcode, it->tag, std::move(it->bytes)});
  }
  const auto moved = static_cast<uint32_t>(undelivered.size());
  p.counters.pdus_moved_off += moved;
  stats_.pdus_moved += moved;
  p.last_failure = why;
  p.state = PathState::kFailed;
  p.state_since = now;
  dispatch_pending_ = true;
  push_event({PathEventKind::kFailed, p.spec.id, p.spec.gen, why, moved, 0, 0});
}

bool PathSet::install(const PathSpec& spec, TimePoint now, const SessionKeys* frame_keys,
                      const SharedProtection& continue_with) {
  if (spec.id >= kMaxPaths || spec.mtu <= kHeaderSize) return false;
  if (frame_keys && frame_keys->protection != Protection::kOff &&
      (frame_keys->initiator_to_target.size() != crypto::kAeadKeySize ||
       frame_keys->target_to_initiator.size() != crypto::kAeadKeySize ||
       spec.mtu <= kHeaderSize + kProtectionTrailerSize))
    return false;
  auto& slot = paths_[spec.id];
  if (slot && slot->conn) {
    ++slot->counters.failures;
    ++stats_.failures;
    retire_connection(*slot, PathFailure::kReplaced, now);
  }
  if (!slot) slot = std::make_unique<Path>(spec, config_, now);
  Path& p = *slot;
  p.spec = spec;
  TransportParams params = config_.transport;
  params.mtu = spec.mtu;
  params.checksum = spec.checksum;
  if (spec.receive_window != 0) params.receive_window = spec.receive_window;
  if (frame_keys && frame_keys->protection != Protection::kOff) {
    // The trailer takes room from every frame; the tag supersedes the crc.
    params.mtu -= kProtectionTrailerSize;
    params.checksum = false;
    const bool initiator = config_.role == PathRole::kInitiator;
    const SessionKeys& k = *frame_keys;
    if (continue_with.sealer && continue_with.opener) {
      p.sealer = continue_with.sealer;
      p.opener = continue_with.opener;
    } else {
      p.sealer = std::make_shared<FrameSealer>(
          k.protection, initiator ? k.initiator_to_target.span() : k.target_to_initiator.span(),
          initiator ? k.salt_i2t : k.salt_t2i);
      p.opener = std::make_shared<FrameOpener>(
          k.protection, initiator ? k.target_to_initiator.span() : k.initiator_to_target.span(),
          initiator ? k.salt_t2i : k.salt_i2t);
    }
  } else {
    p.sealer.reset();
    p.opener.reset();
  }
  Endpoint ep;
  ep.local = spec.local;
  ep.peer = spec.peer;
  ep.session_id = config_.session_id;
  ep.epoch = config_.epoch;
  ep.peer_window = spec.peer_window;
  ep.path_id = spec.id;
  ep.path_gen = spec.gen;
  p.conn = std::make_unique<Connection>(params, ep);
  p.health = PathHealth(config_.health, now);
  p.rate = DeliveryRate(config_.initial_rate);  // a new generation is measured afresh
  p.rate.restart(now, 0);
  p.pushed_bytes = 0;
  p.acked_seen = 0;
  p.last_given.reset();
  p.state = spec.state == PathState::kFailed ? PathState::kStandby : spec.state;
  p.state_since = now;
  ++p.counters.generations;
  last_heard_ = std::max(last_heard_, now);
  if (p.state == PathState::kActive) dispatch_pending_ = true;
  push_event({PathEventKind::kInstalled, spec.id, spec.gen, PathFailure::kNone, 0, 0, 0});
  return true;
}

bool PathSet::activate(uint8_t id, TimePoint now) {
  Path* p = find(id);
  if (!p || !p->conn) return false;
  if (p->state != PathState::kActive) {
    p->state = PathState::kActive;
    p->state_since = now;
    dispatch_pending_ = true;
    push_event({PathEventKind::kActivated, id, p->spec.gen, PathFailure::kNone, 0, 0, 0});
  }
  return true;
}

bool PathSet::fail(uint8_t id, PathFailure why, TimePoint now) {
  Path* p = find(id);
  if (!p || !p->conn) return false;
  ++p->counters.failures;
  ++stats_.failures;
  retire_connection(*p, why, now);
  return true;
}

bool PathSet::remove(uint8_t id, PathFailure why, TimePoint now) {
  Path* p = find(id);
  if (!p) return false;
  if (p->conn) retire_connection(*p, why, now);
  const uint8_t gen = p->spec.gen;
  paths_[id].reset();
  push_event({PathEventKind::kRemoved, id, gen, why, 0, 0, 0});
  return true;
}

bool PathSet::send_pdu(Opcode opcode, uint16_t tag, std::vector<uint8_t> pdu) {
  if (!is_sequenced(opcode) || tag > kMaxTag) return false;
  if (pdu.size() > config_.transport.max_pdu) return false;
  if (queue_bytes_ + pdu.size() > config_.queue_limit) {
    ++stats_.queue_refusals;
    return false;
  }
  queue_bytes_ += pdu.size();
  queue_.push_back(Queued{opcode, tag, std::move(pdu)});
  ++stats_.pdus_queued;
  dispatch_pending_ = true;
  dispatch();
  return true;
}

// Hands queued PDUs to the active paths, each to the one with the shortest
// expected service time that can take it now (a path refuses while a PDU
// with the same opcode and tag is unacknowledged on it). PDUs no path can
// take stay queued, in order. An idle path given nothing for
// kRetryIdlePath is ranked hopefully and gets one PDU (path_scheduler.h).
void PathSet::dispatch() {
  dispatch_pending_ = false;
  if (queue_.empty()) return;
  loads_.clear();
  std::array<Path*, kMaxPaths> by_load{};
  for (auto& slot : paths_) {
    if (!slot || !slot->conn || slot->state != PathState::kActive) continue;
    Path& p = *slot;
    const TransportStats& t = p.conn->stats();
    PathLoad l;
    l.id = p.spec.id;
    l.usable = true;
    l.backlog_bytes = p.conn->send_queue_bytes();
    l.rate = p.rate.bytes_per_second();
    l.one_way = t.min_rtt / 2;
    l.retry_due = !p.last_given || last_now_ - *p.last_given >= kRetryIdlePath;
    by_load[loads_.size()] = &p;
    loads_.push_back(l);
  }
  if (loads_.empty()) return;
  for (auto it = queue_.begin(); it != queue_.end();) {
    rank_paths(loads_, it->bytes.size(), ranked_);
    bool placed = false;
    for (size_t i : ranked_) {
      Path& p = *by_load[i];
      if (!p.conn->can_send(it->opcode, it->tag, it->bytes.size())) continue;
      const size_t size = it->bytes.size();
      p.conn->send_pdu(it->opcode, it->tag, std::move(it->bytes));
      p.pushed_bytes += size;
      ++p.counters.pdus_sent;
      p.last_given = last_now_;
      loads_[i].backlog_bytes += size;
      loads_[i].retry_due = false;
      queue_bytes_ -= size;
      placed = true;
      break;
    }
    it = placed ? queue_.erase(it) : std::next(it);
  }
}

std::optional<ReceivedPdu> PathSet::pop_pdu() {
  if (ready_.empty()) return std::nullopt;
  ReceivedPdu p = std::move(ready_.front());
  ready_.pop_front();
  return p;
}

void PathSet::drain(Path& p) {
  while (auto pdu = p.conn->pop_pdu()) {
    ++stats_.pdus_received;
    ready_.push_back(std::move(*pdu));
  }
}

PathSet::FrameResult PathSet::on_frame(const FrameView& frame, TimePoint now, FrameView& opened) {
  if (now > last_now_) last_now_ = now;
  const FrameHeader& h = frame.header;
  const Opcode op = h.common.opcode;
  opened = frame;
  if (op == Opcode::kPathRequest || op == Opcode::kPathReply) return FrameResult::kForOwner;
  Path* p = find(h.ext.path_id);
  if (!p) {
    ++stats_.frames_bad_path;
    return FrameResult::kDropped;
  }
  if (!p->conn || h.ext.path_gen != p->spec.gen) {
    ++p->counters.frames_stale;
    return FrameResult::kDropped;
  }
  if (h.src != p->spec.peer || h.dst != p->spec.local) {
    ++p->counters.frames_misrouted;
    return FrameResult::kDropped;
  }
  if (p->opener) {
    const OpenVerdict v = p->opener->open(frame, scratch_, opened);
    if (v != OpenVerdict::kOk) {
      p->counters.protection_drops.count(v);
      return FrameResult::kDropped;
    }
  }
  const FrameView& f = opened;
  p->health.on_heard(now);
  last_heard_ = std::max(last_heard_, now);
  if (!is_sequenced(op) && op != Opcode::kAck && op != Opcode::kKeepalive)
    return FrameResult::kForOwner;  // Disconnect and the like: the session's business

  p->conn->on_frame(f, now);
  const bool response = (f.header.ext.flags & kFlagResponse) != 0;
  if (op == Opcode::kKeepalive && !response) {
    // Answer on the same path with a frame of the same size (MTU probes).
    if (auto k = decode_keepalive(f.payload)) {
      std::vector<uint8_t> body;
      encode(Keepalive{k->probe_id, static_cast<uint16_t>(detail::l3_size(f))}, body);
      FrameHeader ah = p->conn->control_header(Opcode::kAck, kFlagResponse);
      ah.sacks.count = 0;  // pad_to counts the fixed header only
      p->outbox.push(ah, std::move(body));
    }
  } else if (op == Opcode::kAck && response) {
    if (auto k = decode_keepalive(f.payload)) {
      ++p->counters.keepalives_answered;
      push_event({PathEventKind::kProbeAnswered, p->spec.id, p->spec.gen, PathFailure::kNone, 0,
                  k->probe_id, detail::l3_size(f)});
    }
  }
  drain(*p);
  const TransportStats& t = p->conn->stats();
  if (t.frames_acked != p->acked_seen) {
    p->acked_seen = t.frames_acked;
    dispatch_pending_ = true;  // acks free tags and window
  }
  p->health.on_ack_state(now, t.frames_acked, p->conn->in_flight());
  return FrameResult::kHandled;
}

bool PathSet::queue_control(uint8_t id, Opcode opcode, uint8_t flags, std::vector<uint8_t> body) {
  Path* p = find(id);
  if (!p || !p->conn) return false;
  p->outbox.push(p->conn->control_header(opcode, flags), std::move(body));
  return true;
}

uint32_t PathSet::send_probe(uint8_t id, uint16_t pad_to) {
  Path* p = find(id);
  if (!p || !p->conn) return 0;
  const uint32_t probe_id = next_probe_id_++;
  if (next_probe_id_ == 0) next_probe_id_ = 1;
  std::vector<uint8_t> body;
  encode(Keepalive{probe_id, pad_to}, body);
  FrameHeader h = p->conn->control_header(Opcode::kKeepalive);
  h.sacks.count = 0;  // pad_to counts the fixed header only
  p->outbox.push(h, std::move(body));
  ++p->counters.keepalives_sent;
  return probe_id;
}

void PathSet::queue_unsealed(const FrameHeader& header, std::vector<uint8_t> body) {
  unsealed_->push(header, std::move(body));
}

void PathSet::flush_control(FrameSink& sink) {
  unsealed_->flush(sink);
  for (auto& slot : paths_) {
    if (!slot || !slot->conn) continue;
    if (slot->sealer) {
      SealingSink sealing(sink, *slot->sealer);
      slot->outbox.flush(sealing);
    } else {
      slot->outbox.flush(sink);
    }
  }
}

void PathSet::check_health(Path& p, TimePoint now) {
  const TransportStats& t = p.conn->stats();
  p.health.set_rto(t.base_rto);
  p.health.on_ack_state(now, t.frames_acked, p.conn->in_flight());
  if (t.frames_acked != p.acked_seen) {
    p.acked_seen = t.frames_acked;
    dispatch_pending_ = true;
  }
  switch (p.health.check(now, config_.probe_idle)) {
    case PathVerdict::kHealthy:
      break;
    case PathVerdict::kStuck:
      fail(p.spec.id, PathFailure::kStuck, now);
      return;
    case PathVerdict::kSilent:
      fail(p.spec.id, PathFailure::kSilent, now);
      return;
  }
  if (config_.probe_idle && p.health.keepalive_due(now)) {
    send_probe(p.spec.id, 0);
    p.health.keepalive_sent(now);
  }
}

void PathSet::poll(TimePoint now, FrameSink& sink) {
  if (now > last_now_) last_now_ = now;
  for (auto& slot : paths_)
    if (slot && slot->conn) check_health(*slot, now);
  if (dispatch_pending_) dispatch();
  unsealed_->flush(sink);
  for (auto& slot : paths_) {
    if (!slot || !slot->conn) continue;
    Path& p = *slot;
    if (p.sealer) {
      SealingSink sealing(sink, *p.sealer);
      p.outbox.flush(sealing);
      p.conn->poll(now, sealing);
    } else {
      p.outbox.flush(sink);
      p.conn->poll(now, sink);
    }
    drain(p);
    const TransportStats& t = p.conn->stats();
    // Window-limited with real data waiting (not a few small replies): the
    // acked bytes then measure the path's capacity, not the offered load.
    const bool backlogged = p.pushed_bytes > t.bytes_sent + 4u * p.spec.mtu;
    p.rate.on_poll(now, t.bytes_acked, backlogged, t.srtt);
  }
}

TimePoint PathSet::next_deadline() const {
  if (!unsealed_->empty()) return last_now_;
  TimePoint t = kNever;
  bool any_active = false;
  for (const auto& slot : paths_) {
    if (!slot || !slot->conn) continue;
    const Path& p = *slot;
    if (!p.outbox.empty()) return last_now_;
    any_active = any_active || p.state == PathState::kActive;
    t = std::min(t, p.conn->next_deadline());
    t = std::min(t, p.health.next_deadline(config_.probe_idle));
  }
  if (dispatch_pending_ && !queue_.empty() && any_active) return last_now_;
  return t;
}

bool PathSet::has(uint8_t id) const {
  return find(id) != nullptr;
}

std::optional<PathState> PathSet::state(uint8_t id) const {
  const Path* p = find(id);
  if (!p) return std::nullopt;
  return p->state;
}

std::optional<uint8_t> PathSet::generation(uint8_t id) const {
  const Path* p = find(id);
  if (!p) return std::nullopt;
  return p->spec.gen;
}

PathInfo PathSet::info(const Path& p) const {
  PathInfo i;
  i.id = p.spec.id;
  i.gen = p.spec.gen;
  i.state = p.state;
  i.last_failure = p.last_failure;
  i.local = p.spec.local;
  i.peer = p.spec.peer;
  i.mtu = p.spec.mtu;
  i.state_since = p.state_since;
  i.fail_timeout = p.health.timeout();
  i.rate = p.rate.bytes_per_second();
  i.rate_measured = p.rate.measured();
  i.counters = p.counters;
  if (p.conn) {
    i.transport = p.conn->stats();
    i.backlog_bytes = p.conn->send_queue_bytes();
    add_transport(i.counters, i.transport);
  }
  return i;
}

std::optional<PathInfo> PathSet::path(uint8_t id) const {
  const Path* p = find(id);
  if (!p) return std::nullopt;
  return info(*p);
}

std::vector<PathInfo> PathSet::paths() const {
  std::vector<PathInfo> out;
  for (const auto& slot : paths_)
    if (slot) out.push_back(info(*slot));
  return out;
}

size_t PathSet::active_count() const {
  size_t n = 0;
  for (const auto& slot : paths_)
    if (slot && slot->conn && slot->state == PathState::kActive) ++n;
  return n;
}

std::optional<uint8_t> PathSet::best_path() const {
  std::optional<uint8_t> best;
  bool best_active = false;
  Duration best_rtt{};
  for (const auto& slot : paths_) {
    if (!slot || !slot->conn) continue;
    const bool active = slot->state == PathState::kActive;
    const Duration rtt = slot->conn->stats().srtt;
    if (!best || (active && !best_active) || (active == best_active && rtt < best_rtt)) {
      best = slot->spec.id;
      best_active = active;
      best_rtt = rtt;
    }
  }
  return best;
}

bool PathSet::idle() const {
  if (!queue_.empty() || !unsealed_->empty()) return false;
  for (const auto& slot : paths_)
    if (slot && slot->conn && (!slot->conn->idle() || !slot->outbox.empty())) return false;
  return true;
}

// --------------------------------------------------------- PathControl --

PathControl::PathControl(PathRole self, uint32_t session_id, uint16_t epoch,
                         const std::optional<SessionKeys>& keys)
    : self_(self), session_id_(session_id), epoch_(epoch) {
  if (keys) proof_key_ = derive_path_proof_key(*keys, session_id);
}

PathBinding PathControl::binding(const FrameHeader& h) const {
  return PathBinding{session_id_, epoch_, h.ext.path_id, h.ext.path_gen, h.src, h.dst};
}

PathControlFrame PathControl::request(const MacAddress& src, const MacAddress& dst, uint8_t path_id,
                                      uint8_t path_gen, PathRequest req) const {
  PathControlFrame f;
  f.header = detail::raw_control_header(src, dst, Opcode::kPathRequest, 0, session_id_, epoch_);
  f.header.ext.path_id = path_id;
  f.header.ext.path_gen = path_gen;
  req.proof.clear();
  if (proof_key_) {
    if (auto proof = path_request_proof(proof_key_->span(), self_, binding(f.header), req))
      req.proof.assign(proof->begin(), proof->end());
  }
  encode(req, f.body);
  return f;
}

PathControlFrame PathControl::reply(const FrameHeader& request_header, PathReply reply) const {
  PathControlFrame f;
  f.header = detail::raw_control_header(request_header.dst, request_header.src, Opcode::kPathReply,
                                        kFlagResponse, session_id_, epoch_);
  f.header.ext.path_id = request_header.ext.path_id;
  f.header.ext.path_gen = request_header.ext.path_gen;
  reply.proof.clear();
  if (proof_key_) {
    if (auto proof = path_reply_proof(proof_key_->span(), self_, binding(f.header), reply))
      reply.proof.assign(proof->begin(), proof->end());
  }
  encode(reply, f.body);
  return f;
}

bool PathControl::send_leave(PathSet& set, uint8_t id, uint8_t gen, uint32_t nonce) const {
  const std::optional<uint8_t> via = set.best_path();
  if (!via || *via == id) return false;
  const std::optional<PathInfo> carrier = set.path(*via);
  if (!carrier) return false;
  PathRequest req;
  req.nonce = nonce;
  req.action = PathAction::kLeave;
  req.path_id = id;
  req.path_gen = gen;
  PathControlFrame f = request(carrier->local, carrier->peer, carrier->id, carrier->gen, req);
  set.queue_unsealed(f.header, std::move(f.body));
  return true;
}

bool PathControl::verify(const FrameHeader& h, const PathRequest& m) const {
  return !proof_key_ || verify_path_request(proof_key_->span(), peer(), binding(h), m);
}

bool PathControl::verify(const FrameHeader& h, const PathReply& m) const {
  return !proof_key_ || verify_path_reply(proof_key_->span(), peer(), binding(h), m);
}

void add_path_counters(TransportStats& sum, const PathCounters& path) {
  sum.pdus_sent += path.pdus_sent;
  sum.pdus_received += path.pdus_received;
  sum.frames_sent += path.frames_sent;
  sum.frames_retransmitted += path.frames_retransmitted;
  sum.frames_received += path.frames_received;
  sum.bytes_sent += path.bytes_sent;
  sum.bytes_received += path.bytes_received;
  sum.timeouts += path.timeouts;
}

}  // namespace hyperscsi::proto

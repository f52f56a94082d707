// InitiatorPaths: joins, verifies, activates and redeems the paths of a
// multipath session. See initiator_paths.h.
#include "hyperscsi/proto/initiator_paths.h"

#include <algorithm>

#include "hyperscsi/proto/negotiation.h"
#include "hyperscsi/proto/path_auth.h"
#include "session_util.h"

namespace hyperscsi::proto {

namespace {
constexpr size_t kMaxEvents = 1024;
constexpr uint32_t kMaxStaleRefusals = 3;

bool protected_session(const std::optional<SessionKeys>& keys) {
  return keys && keys->protection != Protection::kOff;
}
}  // namespace

std::string_view to_string(CandidateState s) {
  switch (s) {
    case CandidateState::kJoining:
      return "joining";
    case CandidateState::kVerifying:
      return "verifying";
    case CandidateState::kActive:
      return "active";
    case CandidateState::kFailed:
      return "failed";
    case CandidateState::kUnreachable:
      return "unreachable";
    case CandidateState::kRefused:
      return "refused";
    case CandidateState::kMtuMismatch:
      return "mtu-mismatch";
  }
  return "?";
}

std::string_view to_string(PathError e) {
  switch (e) {
    case PathError::kDuplicate:
      return "the same local port and target port are already a path";
    case PathError::kTooManyPaths:
      return "all 16 path ids are in use";
    case PathError::kUnknownPath:
      return "no such path";
  }
  return "?";
}

struct InitiatorPaths::Candidate {
  uint8_t id = 0;
  PathCandidate c;
  CandidateState state = CandidateState::kJoining;
  uint8_t gen = 0;  // installed (or last installed) generation; last_gen_ has the last sent
  bool ever_active = false;
  bool failed_before = false;
  PathStatus refusal = PathStatus::kOk;
  uint16_t mtu = 0;
  uint64_t joins_sent = 0;
  uint64_t redemptions = 0;
  uint32_t stale_refusals = 0;
  // The request awaiting a reply (join or activate), resent unchanged.
  bool pending = false;
  PathAction pending_action = PathAction::kJoin;
  uint8_t pending_gen = 0;
  uint32_t nonce = 0;
  uint32_t attempts = 0;
  TimePoint next_tx = kNever;
  std::vector<uint8_t> request_body;
  FrameHeader request_header;
  // Verification.
  TimePoint verify_at = kNever;
  uint32_t rounds_ok = 0;
  uint32_t rounds_unanswered = 0;
  bool round_open = false;
  bool small_answered = false;
  uint32_t probe_small = 0;
  uint32_t probe_full = 0;
  // Failed, unreachable, refused: when to try again.
  TimePoint retry_at = kNever;
  Duration backoff{};
  TimePoint activated_at{};
};

InitiatorPaths::InitiatorPaths(InitiatorPathsConfig config, const PathSpec& login_path,
                               TimePoint now)
    : config_(std::move(config)),
      paths_(config_.transport),
      control_(PathRole::kInitiator, config_.transport.session_id, config_.transport.epoch,
               config_.keys),
      rng_(config_.seed) {
  PathSpec p0 = login_path;
  p0.id = 0;
  p0.gen = 0;
  p0.state = PathState::kActive;
  std::optional<SessionKeys> keys;
  if (protected_session(config_.keys))
    keys = derive_path_frame_keys(*config_.keys, config_.transport.session_id,
                                  config_.transport.epoch, 0, 0);
  paths_.install(p0, now, keys ? &*keys : nullptr, config_.login_protection);
  Candidate c;
  c.id = 0;
  c.c = PathCandidate{p0.local, p0.mtu, p0.peer};
  c.state = CandidateState::kActive;
  c.gen = 0;
  c.ever_active = true;
  c.mtu = p0.mtu;
  c.activated_at = now;
  c.backoff = config_.probe_interval;
  candidates_.push_back(std::move(c));
  last_now_ = now;
}

InitiatorPaths::~InitiatorPaths() = default;

InitiatorPaths::Candidate* InitiatorPaths::find(uint8_t id) {
  for (Candidate& c : candidates_)
    if (c.id == id) return &c;
  return nullptr;
}

std::string_view to_string(CandidateError e) {
  switch (e) {
    case CandidateError::kDuplicatePort:
      return "the same port given twice";
    case CandidateError::kNoLoginPort:
      return "the login's port is not among the ports";
  }
  return "?";
}

Result<std::vector<PathCandidate>, CandidateError> candidate_paths(
    std::span<const LocalPort> locals, std::span<const TargetPort> target_ports,
    const MacAddress& login_local, const MacAddress& login_target) {
  bool login_port_seen = false;
  for (size_t i = 0; i < locals.size(); ++i) {
    for (size_t j = 0; j < i; ++j)
      if (locals[j].mac == locals[i].mac) return Unexpected{CandidateError::kDuplicatePort};
    login_port_seen |= locals[i].mac == login_local;
  }
  if (!login_port_seen) return Unexpected{CandidateError::kNoLoginPort};
  std::vector<PathCandidate> out;
  for (const LocalPort& l : locals) {
    for (const TargetPort& t : target_ports) {
      if (out.size() >= kMaxPaths - 1) return out;
      if (l.mac == login_local && t.mac == login_target) continue;
      if (l.answered &&
          std::find(l.answered->begin(), l.answered->end(), t.mac) == l.answered->end())
        continue;  // discovery on this port did not reach that target port
      const bool listed_twice = std::any_of(out.begin(), out.end(), [&](const PathCandidate& c) {
        return c.local == l.mac && c.target == t.mac;
      });
      if (!listed_twice) out.push_back(PathCandidate{l.mac, l.mtu, t.mac});
    }
  }
  return out;
}

Result<uint8_t, PathError> InitiatorPaths::add_candidate(const PathCandidate& pc, TimePoint now) {
  for (const Candidate& c : candidates_)
    if (c.c.local == pc.local && c.c.target == pc.target) return Unexpected{PathError::kDuplicate};
  uint8_t id = 0;
  for (; id < kMaxPaths; ++id)
    if (!find(id)) break;
  if (id >= kMaxPaths) return Unexpected{PathError::kTooManyPaths};
  Candidate c;
  c.id = id;
  c.c = pc;
  c.state = CandidateState::kJoining;
  c.backoff = config_.probe_interval;
  c.retry_at = now;  // joined at the next poll
  candidates_.push_back(std::move(c));
  return id;
}

void InitiatorPaths::send_request(Candidate& c, PathAction action, uint8_t subject_gen,
                                  TimePoint now) {
  PathRequest req;
  do {
    req.nonce = static_cast<uint32_t>(rng_());
  } while (req.nonce == 0);
  req.action = action;
  req.path_id = c.id;
  req.path_gen = subject_gen;
  if (action == PathAction::kJoin) {
    req.mtu = c.c.local_mtu;
    req.window = window_for_mtu(c.c.local_mtu, config_.window_cap);
  }
  // Both join and activate travel on the path they name.
  PathControlFrame f = control_.request(c.c.local, c.c.target, c.id, subject_gen, req);
  c.request_body = std::move(f.body);
  c.request_header = f.header;
  c.pending = true;
  c.pending_action = action;
  c.pending_gen = subject_gen;
  if (action == PathAction::kJoin) last_gen_[c.id] = subject_gen;
  c.nonce = req.nonce;
  c.attempts = 1;
  c.next_tx = now + config_.join_timeout;
  paths_.queue_unsealed(c.request_header, c.request_body);
  ++stats_.requests_sent;
  if (action == PathAction::kJoin) ++c.joins_sent;
}

void InitiatorPaths::start_join(Candidate& c, TimePoint now) {
  // The last generation this id had in the epoch, whichever candidate used
  // it: the target remembers them all.
  const uint8_t last = last_gen_[c.id];
  uint8_t gen = static_cast<uint8_t>(last + 1);
  if (protected_session(config_.keys) && last == 0xFF) {
    // Generations never wrap in a protected session (each has its keys):
    // this path id is spent until the session is resumed.
    c.state = CandidateState::kRefused;
    c.refusal = PathStatus::kStaleGeneration;
    c.retry_at = kNever;
    return;
  }
  if (gen == 0) gen = 1;  // generation 0 only ever names the login path
  c.state = CandidateState::kJoining;
  c.retry_at = kNever;
  send_request(c, PathAction::kJoin, gen, now);
}

void InitiatorPaths::notify_leave(uint8_t id, uint8_t gen) {
  const std::optional<uint8_t> via = paths_.best_path();
  if (!via || *via == id) return;  // no other path: the target finds out itself
  uint32_t nonce = 0;
  while (nonce == 0) nonce = static_cast<uint32_t>(rng_());
  if (!control_.send_leave(paths_, id, gen, nonce)) return;
  ++stats_.requests_sent;
  ++stats_.leaves_sent;
}

Status<PathError> InitiatorPaths::leave(uint8_t id, TimePoint now) {
  auto it = std::find_if(candidates_.begin(), candidates_.end(),
                         [&](const Candidate& c) { return c.id == id; });
  if (it == candidates_.end()) return Unexpected{PathError::kUnknownPath};
  const uint8_t gen = it->gen;
  const bool live = paths_.has(id);
  candidates_.erase(it);  // before fail(): its event must not make it a failed candidate
  if (live) {
    paths_.fail(id, PathFailure::kLeft, now);
    notify_leave(id, gen);
    paths_.remove(id, PathFailure::kLeft, now);
  }
  return {};
}

void InitiatorPaths::on_reply(const FrameView& frame, TimePoint now) {
  auto decoded = decode_path_reply(frame.payload);
  if (!decoded) {
    ++stats_.malformed;
    return;
  }
  const PathReply& r = decoded.value();
  Candidate* c = find(r.path_id);
  if (!c || !c->pending || c->nonce != r.nonce || c->pending_gen != r.path_gen ||
      c->pending_action != r.action)
    return;  // late, or an answer to a leave notice: nothing waits for it
  if (!control_.verify(frame.header, r)) {
    ++stats_.auth_failures;
    return;
  }
  ++stats_.replies;
  c->pending = false;
  c->next_tx = kNever;
  switch (r.action) {
    case PathAction::kJoin:
      if (r.status == PathStatus::kOk) {
        c->stale_refusals = 0;
        on_joined(*c, r, now);
      } else if (r.status == PathStatus::kStaleGeneration &&
                 ++c->stale_refusals <= kMaxStaleRefusals) {
        c->state = CandidateState::kFailed;
        c->retry_at = now;
      } else {
        c->state = CandidateState::kRefused;
        c->refusal = r.status;
        c->retry_at = now + config_.retry_refused;
      }
      break;
    case PathAction::kActivate:
      // The target no longer has this generation: it is as good as failed.
      if (r.status == PathStatus::kUnknownPath && c->gen == r.path_gen)
        paths_.fail(c->id, PathFailure::kPeerLeft, now);
      break;
    case PathAction::kLeave:
      break;
  }
}

void InitiatorPaths::on_joined(Candidate& c, const PathReply& r, TimePoint now) {
  PathSpec spec;
  spec.id = c.id;
  spec.gen = r.path_gen;
  spec.local = c.c.local;
  spec.peer = c.c.target;
  spec.mtu = r.mtu;
  spec.receive_window = r.window;
  spec.peer_window = r.window;
  spec.checksum = config_.checksum;
  spec.state = PathState::kStandby;
  std::optional<SessionKeys> keys;
  if (protected_session(config_.keys)) {
    keys = derive_path_frame_keys(*config_.keys, config_.transport.session_id,
                                  config_.transport.epoch, spec.id, spec.gen);
    if (!keys) return;
  }
  c.gen = r.path_gen;  // before install(): the old generation's failure event is stale
  if (!paths_.install(spec, now, keys ? &*keys : nullptr)) {
    c.state = CandidateState::kRefused;
    c.refusal = PathStatus::kMtuRejected;
    c.retry_at = now + config_.retry_refused;
    return;
  }
  c.mtu = r.mtu;
  c.state = CandidateState::kVerifying;
  c.rounds_ok = 0;
  c.rounds_unanswered = 0;
  c.round_open = false;
  c.small_answered = false;
  c.verify_at = now;
}

void InitiatorPaths::verify_round(Candidate& c, TimePoint now) {
  if (c.round_open && ++c.rounds_unanswered >= config_.verify_attempts) {
    c.verify_at = kNever;
    if (c.small_answered) {
      // Small frames pass, full ones do not: named, retried rarely.
      c.state = CandidateState::kMtuMismatch;
      paths_.fail(c.id, PathFailure::kLeft, now);
      notify_leave(c.id, c.gen);
      c.retry_at = now + config_.retry_refused;
    } else {
      paths_.fail(c.id, PathFailure::kSilent, now);  // on_failed() takes it from here
    }
    return;
  }
  const uint16_t trailer = protected_session(config_.keys) ? kProtectionTrailerSize : 0;
  c.probe_small = paths_.send_probe(c.id, 0);
  c.probe_full = paths_.send_probe(c.id, static_cast<uint16_t>(c.mtu - trailer));
  c.round_open = true;
  c.verify_at = now + config_.verify_interval;
}

void InitiatorPaths::on_probe_answer(const PathEvent& e, TimePoint now) {
  Candidate* c = find(e.id);
  if (!c || c->state != CandidateState::kVerifying || c->gen != e.gen) return;
  const size_t trailer = protected_session(config_.keys) ? kProtectionTrailerSize : 0;
  if (e.probe_id == c->probe_small) c->small_answered = true;
  if (e.probe_id != c->probe_full || e.l3_size + trailer < c->mtu) return;
  c->round_open = false;
  c->rounds_unanswered = 0;
  ++c->rounds_ok;
  // Slow redemption of a path that failed before, unless nothing else works.
  const uint32_t needed = c->failed_before && paths_.active_count() > 0
                              ? std::max<uint32_t>(config_.verify_rounds, 1)
                              : 1;
  if (c->rounds_ok >= needed) make_active(*c, now);
}

void InitiatorPaths::make_active(Candidate& c, TimePoint now) {
  paths_.activate(c.id, now);
  c.state = CandidateState::kActive;
  c.verify_at = kNever;
  c.activated_at = now;
  if (c.failed_before) {
    ++c.redemptions;
    ++stats_.redemptions;
  }
  c.ever_active = true;
  send_request(c, PathAction::kActivate, c.gen, now);
}

void InitiatorPaths::on_failed(Candidate& c, PathFailure why, TimePoint now) {
  if (c.state == CandidateState::kMtuMismatch) return;  // failed on purpose; retried rarely
  const bool was_active = c.state == CandidateState::kActive;
  // A path that fails again soon after coming back waits longer next time.
  if (was_active && c.failed_before && now - c.activated_at < config_.flap_window)
    c.backoff = std::min(c.backoff * 2, config_.probe_interval_max);
  else if (was_active)
    c.backoff = config_.probe_interval;
  c.state = CandidateState::kFailed;
  c.failed_before = true;
  c.pending = false;
  c.next_tx = kNever;
  c.verify_at = kNever;
  c.retry_at = now + (paths_.active_count() == 0 ? config_.probe_interval : c.backoff);
  if (why == PathFailure::kStuck || why == PathFailure::kSilent) notify_leave(c.id, c.gen);
}

void InitiatorPaths::on_target_request(const FrameView& frame, TimePoint now) {
  auto decoded = decode_path_request(frame.payload);
  if (!decoded) {
    ++stats_.malformed;
    return;
  }
  const PathRequest& q = decoded.value();
  if (!control_.verify(frame.header, q)) {
    ++stats_.auth_failures;
    return;
  }
  PathReply r;
  r.nonce = q.nonce;
  r.action = q.action;
  r.path_id = q.path_id;
  r.path_gen = q.path_gen;
  r.status = PathStatus::kUnknownPath;
  if (q.action == PathAction::kLeave) {
    ++stats_.leaves_received;
    Candidate* c = find(q.path_id);
    if (c && c->gen == q.path_gen) {
      r.status = PathStatus::kOk;
      if (paths_.state(c->id) != PathState::kFailed)
        paths_.fail(c->id, PathFailure::kPeerLeft, now);
    }
  }
  PathControlFrame f = control_.reply(frame.header, r);
  paths_.queue_unsealed(f.header, std::move(f.body));
}

void InitiatorPaths::handle_events(TimePoint now) {
  while (auto e = paths_.pop_event()) {
    if (e->kind == PathEventKind::kProbeAnswered) {
      on_probe_answer(*e, now);
      continue;
    }
    if (e->kind == PathEventKind::kFailed) {
      Candidate* c = find(e->id);
      if (c && c->gen == e->gen) on_failed(*c, e->failure, now);
    }
    if (events_.size() >= kMaxEvents) events_.pop_front();
    events_.push_back(*e);
  }
}

void InitiatorPaths::run_timers(TimePoint now) {
  for (Candidate& c : candidates_) {
    if (c.pending && now >= c.next_tx) {
      if (c.attempts >= config_.join_attempts) {
        c.pending = false;
        c.next_tx = kNever;
        if (c.pending_action == PathAction::kJoin) {
          if (c.ever_active) {
            c.state = CandidateState::kFailed;
            c.retry_at = now + c.backoff;
            c.backoff = std::min(c.backoff * 2, config_.probe_interval_max);
            if (paths_.active_count() == 0) c.retry_at = now + config_.probe_interval;
          } else {
            c.state = CandidateState::kUnreachable;
            c.retry_at = now + config_.retry_unreachable;
          }
        }
        // An activation never confirmed: the path still carries our commands;
        // if it is broken, its failure detection says so.
      } else {
        paths_.queue_unsealed(c.request_header, c.request_body);
        ++c.attempts;
        ++stats_.requests_sent;
        c.next_tx = now + config_.join_timeout;
      }
    }
    if (!c.pending && now >= c.retry_at &&
        (c.state == CandidateState::kJoining || c.state == CandidateState::kFailed ||
         c.state == CandidateState::kUnreachable || c.state == CandidateState::kRefused ||
         c.state == CandidateState::kMtuMismatch))
      start_join(c, now);
    if (c.state == CandidateState::kVerifying && now >= c.verify_at) verify_round(c, now);
  }
}

PathSet::FrameResult InitiatorPaths::on_frame(const FrameView& frame, TimePoint now,
                                              FrameView& opened) {
  if (now > last_now_) last_now_ = now;
  const Opcode op = frame.header.common.opcode;
  if (op == Opcode::kPathReply || op == Opcode::kPathRequest) {
    opened = frame;
    if (op == Opcode::kPathReply)
      on_reply(frame, now);
    else
      on_target_request(frame, now);
    handle_events(now);
    return PathSet::FrameResult::kHandled;
  }
  const PathSet::FrameResult r = paths_.on_frame(frame, now, opened);
  handle_events(now);
  return r;
}

void InitiatorPaths::poll(TimePoint now, FrameSink& sink) {
  if (now > last_now_) last_now_ = now;
  handle_events(now);
  run_timers(now);
  handle_events(now);  // failures the timers declared
  paths_.poll(now, sink);
  handle_events(now);  // failures found by this poll: notices go with the next
}

TimePoint InitiatorPaths::next_deadline() const {
  TimePoint t = paths_.next_deadline();
  for (const Candidate& c : candidates_) {
    if (c.pending) t = std::min(t, c.next_tx);
    if (!c.pending && c.state != CandidateState::kActive && c.state != CandidateState::kVerifying)
      t = std::min(t, c.retry_at);
    if (c.state == CandidateState::kVerifying) t = std::min(t, c.verify_at);
  }
  return t;
}

std::vector<CandidateInfo> InitiatorPaths::candidates() const {
  std::vector<CandidateInfo> out;
  for (const Candidate& c : candidates_) {
    CandidateInfo i;
    i.id = c.id;
    i.candidate = c.c;
    i.state = c.state;
    i.gen = c.gen;
    i.refusal = c.refusal;
    i.mtu = c.mtu;
    i.joins_sent = c.joins_sent;
    i.redemptions = c.redemptions;
    out.push_back(i);
  }
  std::sort(out.begin(), out.end(),
            [](const CandidateInfo& a, const CandidateInfo& b) { return a.id < b.id; });
  return out;
}

std::optional<PathEvent> InitiatorPaths::pop_event() {
  if (events_.empty()) return std::nullopt;
  PathEvent e = events_.front();
  events_.pop_front();
  return e;
}

}  // namespace hyperscsi::proto

// TargetPaths: answers path requests and tells the initiator about paths the
// target found failed. See target_paths.h.
#include "hyperscsi/proto/target_paths.h"

#include <algorithm>

#include "hyperscsi/proto/negotiation.h"
#include "hyperscsi/proto/path_auth.h"
#include "session_util.h"

namespace hyperscsi::proto {

namespace {
constexpr size_t kMaxEvents = 1024;

bool protected_session(const std::optional<SessionKeys>& keys) {
  return keys && keys->protection != Protection::kOff;
}

// The largest PDU of the session must fit the fragment limit at the path's MTU.
bool mtu_carries(uint16_t mtu, uint32_t max_transfer, bool trailer) {
  if (mtu < kMinNegotiatedMtu) return false;
  const size_t usable = mtu - (trailer ? kProtectionTrailerSize : 0);
  return uint64_t{max_transfer} <= uint64_t{kMaxFragmentsPerPdu} * max_payload(usable);
}
}  // namespace

TargetPaths::TargetPaths(TargetPathsConfig config, const PathSpec& login_path, TimePoint now)
    : config_(std::move(config)),
      paths_(config_.transport),
      control_(PathRole::kTarget, config_.transport.session_id, config_.transport.epoch,
               config_.keys) {
  PathSpec p0 = login_path;
  p0.id = 0;
  p0.gen = 0;
  p0.state = PathState::kActive;
  std::optional<SessionKeys> keys;
  if (protected_session(config_.keys))
    keys = derive_path_frame_keys(*config_.keys, config_.transport.session_id,
                                  config_.transport.epoch, 0, 0);
  paths_.install(p0, now, keys ? &*keys : nullptr);
  history_[0].seen = true;
  history_[0].gen = 0;
}

const TargetPort* TargetPaths::port(const MacAddress& mac) const {
  for (const TargetPort& p : config_.ports)
    if (p.mac == mac) return &p;
  return nullptr;
}

PathSet::FrameResult TargetPaths::on_frame(const FrameView& frame, TimePoint now,
                                           FrameView& opened) {
  const Opcode op = frame.header.common.opcode;
  if (op == Opcode::kPathRequest) {
    opened = frame;
    on_request(frame, now);
    handle_events(now);
    return PathSet::FrameResult::kHandled;
  }
  if (op == Opcode::kPathReply) {
    opened = frame;
    // Answers to our failure notices: nothing more to do.
    return PathSet::FrameResult::kHandled;
  }
  const PathSet::FrameResult r = paths_.on_frame(frame, now, opened);
  handle_events(now);
  return r;
}

void TargetPaths::answer(const FrameView& frame, PathReply reply) {
  if (reply.status != PathStatus::kOk) ++stats_.requests_refused;
  PathControlFrame f = control_.reply(frame.header, reply);
  if (reply.action == PathAction::kJoin && reply.status == PathStatus::kOk) {
    History& hist = history_[reply.path_id];
    hist.reply = f.body;
    hist.reply_header = f.header;
  }
  paths_.queue_unsealed(f.header, std::move(f.body));
}

void TargetPaths::on_request(const FrameView& frame, TimePoint now) {
  auto decoded = decode_path_request(frame.payload);
  if (!decoded) {
    ++stats_.malformed;
    return;
  }
  ++stats_.requests;
  const PathRequest& req = decoded.value();
  PathReply reply;
  reply.nonce = req.nonce;
  reply.action = req.action;
  reply.path_id = req.path_id;
  reply.path_gen = req.path_gen;
  if (!control_.verify(frame.header, req)) {
    ++stats_.auth_failures;
    reply.status = PathStatus::kAuthFailed;
    answer(frame, std::move(reply));
    return;
  }
  switch (req.action) {
    case PathAction::kJoin: {
      const std::optional<PathStatus> status = join(frame, req, reply, now);
      if (!status) return;  // a repeat: answered already
      reply.status = *status;
      break;
    }
    case PathAction::kActivate: {
      const bool current = paths_.generation(req.path_id) == req.path_gen &&
                           paths_.state(req.path_id) != PathState::kFailed;
      reply.status = current ? PathStatus::kOk : PathStatus::kUnknownPath;
      if (current && paths_.state(req.path_id) != PathState::kActive) {
        paths_.activate(req.path_id, now);
        ++stats_.activations;
      }
      break;
    }
    case PathAction::kLeave: {
      ++stats_.leaves_received;
      const bool known = paths_.generation(req.path_id) == req.path_gen;
      reply.status = known ? PathStatus::kOk : PathStatus::kUnknownPath;
      if (known) paths_.fail(req.path_id, PathFailure::kPeerLeft, now);  // no-op if failed already
      break;
    }
  }
  answer(frame, std::move(reply));
}

std::optional<PathStatus> TargetPaths::join(const FrameView& frame, const PathRequest& req,
                                            PathReply& reply, TimePoint now) {
  const FrameHeader& h = frame.header;
  // A join travels on the path it names: its MACs become the path's.
  if (h.ext.path_id != req.path_id || h.ext.path_gen != req.path_gen) {
    ++stats_.malformed;
    return PathStatus::kUnknownPath;
  }
  History& hist = history_[req.path_id];
  if (hist.seen && hist.gen == req.path_gen && hist.nonce == req.nonce && !hist.reply.empty()) {
    // Our answer was lost: the same answer again, nothing reinstalled.
    ++stats_.duplicate_requests;
    paths_.queue_unsealed(hist.reply_header, hist.reply);
    return std::nullopt;
  }
  if (config_.mac_allowed && !config_.mac_allowed(h.src)) return PathStatus::kAccessDenied;
  const TargetPort* ours = port(h.dst);
  if (!ours) return PathStatus::kAccessDenied;
  const bool prot = protected_session(config_.keys);
  if (hist.seen) {
    // Protected sessions never reuse a generation (its frame keys): no wrap.
    const bool newer = prot ? req.path_gen > hist.gen : path_gen_newer(req.path_gen, hist.gen);
    if (!newer) return PathStatus::kStaleGeneration;
  }
  size_t live = 0;
  for (const PathInfo& p : paths_.paths()) {
    if (p.id == req.path_id) continue;
    if (p.state != PathState::kFailed && p.local == h.dst && p.peer == h.src)
      return PathStatus::kDuplicatePath;
    ++live;
  }
  if (live + 1 > config_.max_paths) return PathStatus::kTooManyPaths;
  const uint16_t mtu = std::min(req.mtu, ours->mtu);
  if (!mtu_carries(mtu, config_.max_transfer, prot)) return PathStatus::kMtuRejected;
  const uint16_t window = std::max<uint16_t>(1, std::min(req.window == 0 ? uint16_t{1} : req.window,
                                                         window_for_mtu(mtu, config_.window_cap)));

  PathSpec spec;
  spec.id = req.path_id;
  spec.gen = req.path_gen;
  spec.local = h.dst;
  spec.peer = h.src;
  spec.mtu = mtu;
  spec.receive_window = window;
  spec.peer_window = window;
  spec.checksum = config_.checksum;
  spec.state = PathState::kStandby;
  std::optional<SessionKeys> keys;
  if (prot) {
    keys = derive_path_frame_keys(*config_.keys, config_.transport.session_id,
                                  config_.transport.epoch, spec.id, spec.gen);
    if (!keys) return PathStatus::kAuthFailed;
  }
  if (!paths_.install(spec, now, keys ? &*keys : nullptr)) return PathStatus::kMtuRejected;
  hist.seen = true;
  hist.gen = req.path_gen;
  hist.nonce = req.nonce;
  hist.reply.clear();
  ++stats_.joins_accepted;
  reply.mtu = mtu;
  reply.window = window;
  return PathStatus::kOk;
}

void TargetPaths::send_leave(uint8_t id, uint8_t gen, TimePoint /*now*/) {
  if (control_.send_leave(paths_, id, gen, next_nonce_)) {
    ++next_nonce_;
    ++stats_.leaves_sent;
  }
}

void TargetPaths::handle_events(TimePoint now) {
  while (auto e = paths_.pop_event()) {
    // Our own detection (replies unacknowledged): tell the initiator now.
    if (e->kind == PathEventKind::kFailed &&
        (e->failure == PathFailure::kStuck || e->failure == PathFailure::kSilent))
      send_leave(e->id, e->gen, now);
    if (events_.size() >= kMaxEvents) events_.pop_front();
    events_.push_back(*e);
  }
}

void TargetPaths::poll(TimePoint now, FrameSink& sink) {
  handle_events(now);
  paths_.poll(now, sink);
  handle_events(now);  // failures found by this poll: notices go out with the next
}

std::optional<PathEvent> TargetPaths::pop_event() {
  if (events_.empty()) return std::nullopt;
  PathEvent e = events_.front();
  events_.pop_front();
  return e;
}

}  // namespace hyperscsi::proto

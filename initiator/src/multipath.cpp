// A multipath session on the initiator (docs/protocol.md 14): the
// InitiatorPaths that takes over the session's transport once it is
// established with MULTIPATH, the frames of its paths, their events for the
// operator, and RouteSink, which sends each frame on its path's local port.
//
// Thread-safety: loop thread only.
#include <algorithm>
#include <vector>

#include "initiator_impl.h"

namespace hyperscsi::initiator {

// How a multipath session's frames flow here: the InitiatorSession logs in
// on the first port (and verifies its MTU) as for one port; once it is
// established with MULTIPATH negotiated, an InitiatorPaths takes over the
// session's transport: path 0 is the login pair, the other (local port,
// target port) pairs join. From then on the session's frames from every
// port go to the paths (a Disconnect also to the InitiatorSession, which
// starts the usual recovery), commands go to the PathSet, which picks the
// path and moves a failed path's undelivered commands to the others, and
// the InitiatorSession is not polled (its Connection would otherwise send
// keepalives nobody answers to it); the paths' silence for the dead time
// counts as a dead target. Frames leave through route_sink_, which sends
// each on the port whose MAC is its source. All on the loop thread.

void Initiator::Impl::on_path_frame(const proto::FrameView& view, TimePoint now) {
  proto::FrameView opened;
  const auto r = paths_->on_frame(view, now, opened);
  const bool disconnect = view.header.common.opcode == proto::Opcode::kDisconnect;
  if (r == proto::PathSet::FrameResult::kForOwner) {
    // Opened by the path already: its keys, not the login session's.
    if (opened.header.common.opcode == proto::Opcode::kDisconnect)
      session_->on_opened_frame(opened, now);
  } else if (r == proto::PathSet::FrameResult::kDropped && disconnect) {
    // A target that restarted rejects the session from whichever port.
    session_->on_frame(view, now);
  }
}

void Initiator::Impl::sync_paths(TimePoint now) {
  if (extra_.empty()) return;
  const bool want = session_ && connected_ && session_->established() && session_->multipath();
  if (session_ && connected_ && session_->established() && !session_->multipath() &&
      !single_path_logged_) {
    single_path_logged_ = true;
    log(LogLevel::kWarning, who() + " does not offer multipath: the session uses " +
                                std::string(port_->spec()) + " only");
  }
  if (!want) {
    if (paths_) {
      paths_.reset();
      sync_rx_filter();
    }
    return;
  }
  if (paths_) {
    const uint32_t dead_ms = session_->negotiated().dead_time_ms;
    const TimePoint heard = std::max(paths_->transport().last_heard(), paths_since_);
    if (dead_ms != 0 && now - heard >= std::chrono::milliseconds(dead_ms)) {
      log(LogLevel::kWarning,
          who() + " lost: nothing heard on any path for " + std::to_string(dead_ms) + " ms; " +
              std::to_string(inflight_.size() + waiting_.size()) + " command(s) pending");
      paths_.reset();
      lost_session();
      last_attempt_resume_ = false;
      log(LogLevel::kInfo, "re-login started: logging in to " + who() + " afresh");
      (void)session_->login(target_.mac, target_.name, now);
      recover_seen_ = session_->state();
      sync_rx_filter();
    }
    return;
  }
  const proto::LoginReply& n = session_->negotiated();
  proto::InitiatorPathsConfig ic;
  ic.transport.role = proto::PathRole::kInitiator;
  ic.transport.session_id = n.session_id;
  ic.transport.epoch = n.epoch;
  ic.transport.transport = proto::transport_params_for(n, proto::TransportParams{});
  ic.transport.probe_idle = true;
  ic.max_transfer = n.max_transfer;
  ic.window_cap = proto::window_for_mtu(n.mtu, 256);
  ic.checksum = (n.features & proto::kFeatureChecksum) != 0;
  ic.keys = session_->multipath_keys();
  ic.login_protection = session_->login_path_protection();  // its counters go on
  ic.seed = options_.seed + (++rounds_);
  proto::PathSpec login;
  login.local = port_->mac();
  login.peer = session_->target_mac();
  login.mtu = n.mtu;
  login.receive_window = n.window;
  login.peer_window = n.window;
  login.checksum = ic.checksum;
  paths_ = std::make_unique<proto::InitiatorPaths>(std::move(ic), login, now);
  paths_since_ = now;
  std::vector<proto::LocalPort> locals;
  locals.push_back(proto::LocalPort{port_->mac(), clamp_mtu(port_->mtu()), std::nullopt});
  for (auto& e : extra_)
    locals.push_back(proto::LocalPort{e.port->mac(), clamp_mtu(e.port->mtu()), std::nullopt});
  auto cands = proto::candidate_paths(locals, session_->target_ports(), port_->mac(),
                                      session_->target_mac());
  if (!cands) {
    log(LogLevel::kWarning, "multipath: " + std::string(proto::to_string(cands.error())) +
                                "; the session stays on its login path");
  } else {
    for (const proto::PathCandidate& c : cands.value()) (void)paths_->add_candidate(c, now);
    log(LogLevel::kInfo, "multipath session " + hex32(n.session_id) + ": joining " +
                             std::to_string(cands.value().size()) + " more path(s) to " + who());
  }
  // Commands the login's Connection took but did not deliver go again on
  // the paths (the target's reply cache makes that exactly-once).
  for (auto& [seq, p] : inflight_) p->sent = false;
  sync_rx_filter();
}

// The operator hears of every path that fails or comes back; failovers
// are counted per path id across generations and sessions.
void Initiator::Impl::path_events() {
  while (auto e = paths_->pop_event()) {
    if (e->id >= path_failovers_.size()) continue;
    if (e->kind == proto::PathEventKind::kFailed) {
      ++path_failovers_[e->id];
      log(LogLevel::kWarning, "path " + std::to_string(e->id) + " to " + who() + " failed (" +
                                  std::string(proto::to_string(e->failure)) +
                                  "): " + std::to_string(e->pdus_moved) +
                                  " command(s) moved to the other paths");
    } else if (e->kind == proto::PathEventKind::kActivated && path_failovers_[e->id] > 0) {
      log(LogLevel::kInfo, "path " + std::to_string(e->id) + " to " + who() + " is back");
    }
  }
}

uint16_t Initiator::Impl::clamp_mtu(size_t mtu) {
  return static_cast<uint16_t>(std::min<size_t>(mtu, 65535));
}

// Sends each frame on the port whose MAC is its source (the path's local
// port); built in place in the first port's sink, copied for another port.
std::span<uint8_t> Initiator::Impl::RouteSink::acquire(size_t size) {
  buf_ = impl_.sink_.acquire(size);
  return buf_;
}
void Initiator::Impl::RouteSink::commit(size_t length) {
  io::MacAddress src{};
  if (length >= 12) std::copy_n(buf_.data() + 6, 6, src.begin());
  if (length < 12 || src == impl_.port_->mac()) {
    impl_.sink_.commit(length);
    return;
  }
  for (auto& e : impl_.extra_) {
    if (e.port->mac() != src) continue;
    std::span<uint8_t> room = e.sink->acquire(length);
    if (room.size() < length) return;  // lost like on the wire: the path retransmits
    std::copy_n(buf_.data(), length, room.data());
    e.sink->commit(length);
    return;
  }
}

}  // namespace hyperscsi::initiator

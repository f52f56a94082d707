// What the initiator's ports deliver: the receive filter that follows the
// session (io/rx_filter.h), applied again in user space (foreign()), and
// the idle pause of an established session's port (Options::rx_pause_after).
//
// Thread-safety: loop thread only.
#include <algorithm>
#include <vector>

#include "initiator_impl.h"

namespace hyperscsi::initiator {

// The port's receive filter follows the session (io/rx_filter.h): before
// login, discovery and login replies only; then also this session's frames.
// The kernel applies it where the backend can; foreign() applies it again
// here, to frames queued before a change or from a backend without one.
void Initiator::Impl::sync_rx_filter() {
  io::RxFilter want = session_
                          ? io::RxFilter::session(session_->target_mac(), session_->session_id())
                          : io::RxFilter::session(io::MacAddress{}, 0);
  if (session_ && session_->multipath() && !session_->target_ports().empty()) {
    // Every port of the target may send us this session's frames.
    std::vector<io::MacAddress> peers;
    for (const proto::TargetPort& t : session_->target_ports()) peers.push_back(t.mac);
    if (std::find(peers.begin(), peers.end(), session_->target_mac()) == peers.end())
      peers.push_back(session_->target_mac());
    want = io::RxFilter::session(peers, session_->session_id());
  }
  if (want == rx_filter_) return;
  rx_filter_ = want;
  kernel_filter_ = port_->set_rx_filter(want).ok();
  for (auto& e : extra_) kernel_filter_ = e.port->set_rx_filter(want).ok() && kernel_filter_;
}

// An established session without commands for Options::rx_pause_after
// stops receiving (io::Port::set_rx_paused): every socket on an interface
// costs the kernel a little for each frame of every session, a paused one
// nothing. Anything to send or to wait for (a command, a keepalive that is
// due, discovery, a login, a disconnect) resumes it first, in this
// iteration of the loop, before the frame goes out.
void Initiator::Impl::update_rx_pause(TimePoint now) {
  if (options_.rx_pause_after <= Duration::zero() || !rx_pause_supported_) return;
  if (rx_busy()) last_busy_ = now;
  const bool pause = rx_quiet_since(now) <= now && session_->next_deadline() > now;
  if (pause == rx_paused_) return;
  const auto st = port_->set_rx_paused(pause);
  if (!st) {
    // A port that cannot pause keeps receiving: never ask again (retrying
    // would spin this loop, whose next wake-up is the pause time). A failed
    // resume is tried again on the next iteration: it must not stay paused.
    if (pause) rx_pause_supported_ = false;
    return;
  }
  rx_paused_ = pause;
  if (pause) ++stats_.rx_pauses;
}

bool Initiator::Impl::rx_busy() const {
  return !session_ || !session_->established() || !inflight_.empty() || !waiting_.empty() ||
         discovery_ || connect_wait_ || disconnect_wait_;
}

// When the loop should wake to pause the port (kNever: not needed).
TimePoint Initiator::Impl::rx_pause_at(TimePoint now) {
  if (rx_paused_ || !rx_pause_supported_ || options_.rx_pause_after <= Duration::zero())
    return proto::kNever;
  return rx_quiet_since(now);
}

// From when on the port may stay paused if nothing changes (kNever: not
// while this lasts).
TimePoint Initiator::Impl::rx_quiet_since(TimePoint now) {
  if (rx_busy() || sink_.pending() > 0) return proto::kNever;
  const proto::Connection* c = session_->connection();
  if (c != nullptr && !c->idle()) return proto::kNever;  // its own timers wake the loop
  // A keepalive just sent: wait for its answer (or give it up after 1 s).
  const proto::InitiatorStats& ks = session_->stats();
  if (ks.keepalives_sent != probes_seen_) {
    probes_seen_ = ks.keepalives_sent;
    answers_seen_ = ks.keepalives_answered;
    probe_open_ = true;
    probe_sent_at_ = now;
  } else if (probe_open_ && (ks.keepalives_answered != answers_seen_ ||
                             now - probe_sent_at_ >= std::chrono::seconds(1))) {
    probe_open_ = false;
  }
  TimePoint at = last_busy_ + options_.rx_pause_after;
  if (probe_open_) at = std::max(at, probe_sent_at_ + std::chrono::seconds(1));
  return at;
}

// True (and counted) for a frame of another session on this host.
bool Initiator::Impl::foreign(std::span<const uint8_t> frame) {
  if (io::rx_filter_matches(rx_filter_, frame)) return false;
  ++stats_.foreign_frames;
  return true;
}

}  // namespace hyperscsi::initiator

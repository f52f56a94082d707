// The initiator's Stats: a snapshot of its counters, the session's and its
// transport's, and every path of a multipath session.
//
// Thread-safety: stats() is called from any thread (it asks the loop thread
// and waits); snapshot() and path_stats() run on the loop thread.
#include <sys/resource.h>

#include <algorithm>

#include "initiator_impl.h"

namespace hyperscsi::initiator {

Stats Initiator::Impl::stats() {
  return call<Stats>([this] { return snapshot(); });
}

Stats Initiator::Impl::snapshot() const {
  Stats s = stats_;
  if (session_) {
    s.state = std::string(proto::to_string(session_->state()));
    s.session_id = session_->session_id();
    s.epoch = session_->epoch();
    s.mtu = session_->negotiated().mtu;
    s.max_transfer = session_->negotiated().max_transfer;
    if (session_->connection()) s.transport = session_->connection()->stats();
    if (paths_) path_stats(s);
  } else {
    s.state = "not connected";
  }
  s.target_name = target_.name;
  s.target_mac = target_.mac;
  s.in_flight = static_cast<uint32_t>(inflight_.size());
  s.queued = static_cast<uint32_t>(waiting_.size());
  s.port = port_->counters();
  s.wake = wake_;
  s.reply_time = wake_policy_.reply_time();
  rusage ru{};
  if (::getrusage(RUSAGE_THREAD, &ru) == 0) {  // this is the loop thread
    s.wakeups = static_cast<uint64_t>(ru.ru_nvcsw);
    s.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                    static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  }
  s.rx_filter = io::to_string(rx_filter_) + (kernel_filter_ ? "" : " (in user space)") +
                (rx_paused_ ? " (paused)" : "");
  return s;
}

void Initiator::Impl::path_stats(Stats& s) const {
  const auto cands = paths_->candidates();
  proto::TransportStats sum;
  for (const proto::PathInfo& p : paths_->transport().paths()) {
    PathStats ps;
    ps.id = p.id;
    ps.state = std::string(proto::to_string(p.state));
    for (const proto::CandidateInfo& c : cands)
      if (c.id == p.id) {
        ps.state = std::string(proto::to_string(c.state));
        ps.redemptions = c.redemptions;
      }
    ps.local_mac = p.local;
    ps.target_mac = p.peer;
    ps.mtu = p.mtu;
    ps.frames_sent = p.counters.frames_sent;
    ps.frames_received = p.counters.frames_received;
    ps.frames_retransmitted = p.counters.frames_retransmitted;
    ps.pdus_sent = p.counters.pdus_sent;
    ps.pdus_received = p.counters.pdus_received;
    ps.failures = std::max<uint64_t>(p.counters.failures, path_failovers_[p.id % 16]);
    ps.pdus_moved_off = p.counters.pdus_moved_off;
    ps.srtt = p.transport.srtt;
    proto::add_path_counters(sum, p.counters);
    s.paths.push_back(std::move(ps));
  }
  // Candidates never installed (unreachable, refused) are reported too.
  for (const proto::CandidateInfo& c : cands) {
    bool listed = false;
    for (const PathStats& ps : s.paths) listed = listed || ps.id == c.id;
    if (listed) continue;
    PathStats ps;
    ps.id = c.id;
    ps.state = std::string(proto::to_string(c.state));
    ps.local_mac = c.candidate.local;
    ps.target_mac = c.candidate.target;
    s.paths.push_back(std::move(ps));
  }
  s.transport = sum;
}

}  // namespace hyperscsi::initiator

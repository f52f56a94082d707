// The initiator's reactor: the loop thread of Initiator::Impl, the tasks
// and submissions other threads post to it (its io::Reactor's wake-up wakes
// it), the fds it watches (ports, pollers) and how it waits between turns
// (holds, busy polling, sleeps: io::WakePolicy decides, io::Reactor waits).
//
// Thread-safety: start(), stop(), post(), add_poller() and remove_poller()
// are called from other threads (stop() and the pollers' calls wait for the
// loop); everything else runs on the loop thread.
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "initiator_impl.h"

namespace hyperscsi::initiator {

namespace {

// Longest sleep of the I/O thread. Every timer it serves (the session's
// keepalive and dead time, commands' dead time, logins, discovery) is a
// deadline the wait already honours and every request posts to its eventfd,
// so this is only a safety net: an idle session wakes for its keepalives
// (every 3 s by default), not ten times a second (issue 14).
constexpr auto kMaxSleep = std::chrono::seconds(10);

}  // namespace

Status<Error> Initiator::Impl::start() {
  if (auto r = reactor_.open(); !r)
    return Unexpected{Error{ErrorKind::kPort, "eventfd/epoll failed: " + r.error().message}};
  if (port_->fd() >= 0) (void)reactor_.add(port_->fd(), io::Reactor::Role::kPort);
  for (auto& e : extra_)
    if (e.port->fd() >= 0) (void)reactor_.add(e.port->fd(), io::Reactor::Role::kPort);
  sync_rx_filter();  // discovery and login replies only, until a session exists
  thread_ = std::thread([this] { run(); });
  return {};
}

void Initiator::Impl::stop() {
  if (thread_.joinable()) {
    post([this] { stop_ = true; });
    thread_.join();
  }
  // The loop is gone: fail what is left on this thread.
  fail_all(CompletionError::kShutdown, "the initiator was destroyed");
}

// Runs `task` on the loop thread.
void Initiator::Impl::post(std::function<void()> task) {
  {
    std::lock_guard lock(task_mutex_);
    tasks_.push_back(std::move(task));
  }
  reactor_.wake();
}

void Initiator::Impl::add_poller(int fd, std::function<void()> poll) {
  call<bool>([this, fd, poll = std::move(poll)]() mutable {
    (void)reactor_.add(fd, io::Reactor::Role::kQuiet);  // a poller's fd ends a hold
    pollers_.emplace_back(fd, std::move(poll));
    pollers_due_ = true;
    return true;
  });
}

void Initiator::Impl::remove_poller(int fd) {
  call<bool>([this, fd] {
    reactor_.remove(fd);
    std::erase_if(pollers_, [fd](const auto& p) { return p.first == fd; });
    return true;
  });
}

io::WakeConfig Initiator::Impl::wake_config(const Options& o) {
  io::WakeConfig c;
  c.busy_poll = o.busy_poll;
  return c;
}

void Initiator::Impl::run() {
  loop_id_ = std::this_thread::get_id();
  std::vector<io::Packet> rx(64);
  while (!stop_) {
    if (pollers_due_) {
      polling_ = true;  // their submissions go out in this turn
      for (auto& [fd, poll] : pollers_) poll();
      polling_ = false;
    }
    pollers_due_ = true;  // unless this turn's wait looks and finds them idle
    run_tasks();
    if (stop_) break;
    TimePoint now = SteadyClock::now();
    rx_bytes_ = 0;
    update_rx_pause(now);
    receive(rx, now);
    wake_policy_.on_turn(now, rx_bytes_);
    ++wake_.turns;
    drain_replies();
    recover(now);
    sync_paths(now);
    admit(now);
    send_unsent();
    expire(now);
    if (paths_) {
      paths_->poll(now, route_sink_);  // the login session waits while its paths carry it
      path_events();
      drain_replies();
    } else if (session_) {
      session_->poll(now, sink_);
    }
    if (discovery_) discovery_->poll(now, sink_);
    tx_progress_ = sink_.flush() > 0;
    for (auto& e : extra_) tx_progress_ = (e.sink->flush() > 0) || tx_progress_;
    finish_waits(now);
    flush_failure_log(now);
    wait(now);
  }
}

void Initiator::Impl::run_tasks() {
  std::deque<std::function<void()>> tasks;
  reactor_.waker()->clear();  // before taking the queues: a later post() wakes again
  {
    std::lock_guard lock(task_mutex_);
    tasks.swap(tasks_);
    while (!submissions_.empty()) {
      waiting_.push_back(std::move(submissions_.front()));
      submissions_.pop_front();
      ++stats_.submitted;
    }
  }
  for (auto& t : tasks) t();
}

void Initiator::Impl::receive(std::vector<io::Packet>& rx, TimePoint now) {
  receive_on(*port_, rx, now);
  for (auto& e : extra_) receive_on(*e.port, rx, now);
}

void Initiator::Impl::receive_on(io::Port& port, std::vector<io::Packet>& rx, TimePoint now) {
  for (int burst = 0; burst < 16; ++burst) {
    const size_t n = port.rx_burst(std::span<io::Packet>(rx));
    for (size_t i = 0; i < n; ++i) {
      if (foreign(rx[i].bytes())) {
        rx[i].reset();
        continue;
      }
      rx_bytes_ += rx[i].size();
      auto frame = proto::decode_frame(rx[i].bytes());
      if (frame) {
        const proto::FrameView& view = frame.value();
        const auto op = view.header.common.opcode;
        if (op == proto::Opcode::kDiscoveryReply || op == proto::Opcode::kDiscoveryRequest) {
          if (discovery_) discovery_->on_frame(view, now);
        } else if (paths_ && view.header.ext.session_id == session_->session_id() &&
                   view.header.ext.epoch == session_->epoch()) {
          on_path_frame(view, now);
        } else if (session_) {
          session_->on_frame(view, now);
          // A login reply may name a new session: narrow to it before we answer.
          if (op == proto::Opcode::kLoginReply) sync_rx_filter();
        }
      } else {
        ++malformed_frames_;
      }
      rx[i].reset();
    }
    if (n < rx.size()) break;
  }
}

// Sleeps until the next turn is due. Frames the port did not take wait
// for the send buffer to drain (EPOLLOUT) or a pause (the device queue
// refused them). While a reply streams in at the link's pace, or the
// pipeline of commands is long, it holds: sleeps on the eventfd alone and
// takes what piled up in one turn. Otherwise it busy-polls while that pays (io::WakePolicy), then
// sleeps on the port.
void Initiator::Impl::wait(TimePoint now) {
  TimePoint until = now + kMaxSleep;
  if (paths_)
    until = std::min(until, paths_->next_deadline());
  else if (session_)
    until = std::min(until, session_->next_deadline());
  for (auto& e : extra_)
    if (e.sink->pending() > 0) until = std::min(until, now + std::chrono::microseconds(100));
  if (discovery_) until = std::min(until, discovery_->next_deadline());
  if (!inflight_.empty()) until = std::min(until, inflight_.begin()->second->deadline);
  if (!waiting_.empty()) {
    until = std::min(until, waiting_.front()->deadline);
    if (waiting_.front()->not_before > now) until = std::min(until, waiting_.front()->not_before);
  }
  if (next_login_ != proto::kNever) until = std::min(until, next_login_);
  until = std::min(until, rx_pause_at(now));
  // Failures held back for the once-a-second summary (flush_failure_log):
  // the loop no longer wakes every 100 ms on its own.
  if (fail_log_.count > 0) until = std::min(until, fail_log_.logged + std::chrono::seconds(1));
  // A session that failed or died in this iteration's poll(): recover() acts on it next time
  // round (it has no deadline of its own to wake the loop).
  if (recovery_due()) until = now;
  const bool paced = sink_.paced();
  if (paced) until = std::min(until, sink_.release_time());
  const bool tx_full = sink_.pending() > 0 && !paced;
  if (tx_full) {
    ++wake_.tx_full_waits;
    const bool socket_full = port_->tx_blocked() == io::TxBlock::kSocketFull;
    watch_writable(socket_full);
    tx_backoff_ = tx_progress_ || tx_backoff_ == proto::Duration::zero()
                      ? std::chrono::microseconds(50)
                      : std::min<proto::Duration>(2 * tx_backoff_, std::chrono::milliseconds(1));
    if (!socket_full) until = std::min(until, now + tx_backoff_);
  } else {
    watch_writable(false);
    tx_backoff_ = proto::Duration::zero();
  }
  // The pacing release is a time on the clock, and this turn has run since
  // `now` (encoding, the shaper's and the veth's work inside sendmmsg): hold
  // until the release from the clock, not from the turn's start (issue 20:
  // the writer's holds ended a turn late and the link idled).
  if (paced) now = SteadyClock::now();
  if (port_->poll_mode() || until <= now) return;  // poll-mode ports are polled every turn
  proto::FlowHints hints;
  if (session_ && session_->connection()) hints = session_->connection()->flow_hints();
  // Frames waiting for the pacing clock: acks could only open a window
  // they may not use yet, so hold until it.
  const proto::Duration hold = paced     ? until - now
                               : tx_full ? proto::Duration::zero()
                                         : wake_policy_.hold(now, until, hints, inflight_.size());
  wake_policy_.on_wait(now, hold > proto::Duration::zero());
  if (hold > proto::Duration::zero()) {
    ++wake_.sleeps;
    ++wake_.holds;
    // Paced frames that fill the next release already wait: a submission
    // taken now would only queue behind them, so sleep through to the
    // release rather than wake for each (issue 20: a writer woke twice per
    // 128 KiB write). Otherwise a poller's fd (the FUSE export's /dev/fuse)
    // ends a hold as a submission does: its requests must not wait for the
    // replies' batch.
    const bool covered = paced && sink_.release_covered();
    if (covered) ++wake_.paced_sleeps;
    pollers_due_ = reactor_
                       .wait(now, now + hold,
                             covered ? io::Reactor::Watch::kNothing : io::Reactor::Watch::kQuiet)
                       .quiet_ready;
    return;
  }
  // Busy-poll while that pays, and for a moment after a poller's command
  // completed (the next request of a QD1 client is due soon); then sleep.
  TimePoint spin_until{};
  if (wake_policy_.should_poll(inflight_.size()) ||
      (now < poll_spin_until_ && options_.busy_poll.count() > 0))
    spin_until = SteadyClock::now() + options_.busy_poll;
  const io::Reactor::WaitResult r = reactor_.wait(now, until, io::Reactor::Watch::kAll, spin_until);
  pollers_due_ = r.quiet_ready;
  if (r.polled) {
    ++wake_.polls;
    wake_.poll_ns += static_cast<uint64_t>(r.poll_time.count());
    wake_policy_.on_poll(r.poll_found, r.poll_time);
    if (r.poll_found) ++wake_.poll_hits;
  }
  if (r.blocked) ++wake_.sleeps;
}

void Initiator::Impl::watch_writable(bool on) {
  if (on == want_writable_ || port_->fd() < 0) return;
  if (reactor_.set_writable(port_->fd(), on)) want_writable_ = on;
}

}  // namespace hyperscsi::initiator

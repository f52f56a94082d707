#include "hyperscsi/io/reactor.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace hyperscsi::io {

using proto::Duration;
using proto::TimePoint;
using Clock = std::chrono::steady_clock;

namespace {

timespec to_timespec(Duration d) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(std::chrono::duration_cast<std::chrono::seconds>(d).count());
  ts.tv_nsec = static_cast<long>((d - std::chrono::seconds(ts.tv_sec)).count());
  return ts;
}

ReactorError error(const char* what) {
  return {std::string(what) + ": " + std::strerror(errno)};
}

}  // namespace

Waker::Waker() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

Waker::~Waker() {
  if (fd_ >= 0) ::close(fd_);
}

void Waker::wake() {
  // The flag is set until the loop takes the wake-up (clear/drain): later
  // wakes of the same batch find it set and skip the system call.
  if (pending_.exchange(true)) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof one);
}

// The loop reads the eventfd before it clears the flag, never the other
// way round: a wake() between a clear and the read would set the flag and
// write, the read would take that write, and the flag would stay set with
// the eventfd empty, so every later wake() skipped its write and the loop
// slept to its deadline with work pending (issue 16: a target port loop that
// no longer woke for the frames another loop handed it). Read first, a
// wake() in between finds the flag still set and skips its write, which is
// harmless: the loop looks at its queues after the clear. (A wake() whose
// write lands after the read leaves the eventfd readable with the flag
// clear: one spare turn.)
void Waker::clear() {
  if (!pending_.load()) return;
  uint64_t v;
  [[maybe_unused]] ssize_t n = ::read(fd_, &v, sizeof v);
  pending_.store(false);
}

void Waker::drain() {
  uint64_t v;
  [[maybe_unused]] ssize_t n = ::read(fd_, &v, sizeof v);
  pending_.store(false);
}

Reactor::~Reactor() {
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

Status<ReactorError> Reactor::open() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return Unexpected(error("epoll_create1"));
  waker_ = std::make_shared<Waker>();
  if (waker_->fd() < 0) return Unexpected(error("eventfd"));
  return add(waker_->fd(), Role::kQuiet);
}

Status<ReactorError> Reactor::add(int fd, Role role) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    if (errno == EEXIST) return {};
    return Unexpected(error("epoll_ctl"));
  }
  if (role == Role::kQuiet) quiet_.push_back(pollfd{fd, POLLIN, 0});
  return {};
}

void Reactor::remove(int fd) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  std::erase_if(quiet_, [fd](const pollfd& p) { return p.fd == fd; });
}

bool Reactor::set_writable(int fd, bool on) {
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.fd = fd;
  return ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) == 0;
}

int Reactor::check(WaitResult& r, int n, const epoll_event* events) {
  // A failed wait, or a full batch that may have left one out: assume ready.
  r.quiet_ready = n < 0 || n >= kMaxEvents;
  for (int i = 0; i < n; ++i) {
    const int fd = events[i].data.fd;
    if (fd == waker_->fd()) {
      waker_->drain();
      r.woken = true;
    } else if (!r.quiet_ready && is_quiet(fd)) {
      r.quiet_ready = true;
    }
  }
  return n;
}

bool Reactor::is_quiet(int fd) const {
  for (const pollfd& p : quiet_)
    if (p.fd == fd) return true;
  return false;
}

Reactor::WaitResult Reactor::wait(TimePoint now, TimePoint until, Watch watch,
                                  TimePoint spin_until) {
  WaitResult r;
  epoll_event events[kMaxEvents];
  if (spin_until > now) {
    // Zero-timeout checks of the whole set: one cheap system call each,
    // where sleeping and being woken by the other CPU costs the latency.
    const TimePoint start = Clock::now();
    const TimePoint end = std::min(until, spin_until);
    int n = 0;
    do {
      n = ::epoll_wait(epoll_fd_, events, kMaxEvents, 0);
    } while (n <= 0 && Clock::now() < end);
    now = Clock::now();
    r.polled = true;
    r.poll_time = now - start;
    if (n > 0) {
      r.poll_found = true;
      r.ready = check(r, n, events);
      return r;
    }
    r.quiet_ready = n < 0;  // every fd was looked at: none ready
    if (until <= now) return r;
  }
  if (until <= now) {
    if (watch == Watch::kAll)
      r.ready = check(r, epoll_wait_for(events, kMaxEvents, Duration::zero()), events);
    return r;
  }
  r.blocked = true;
  if (watch == Watch::kAll) {
    r.ready = check(r, epoll_wait_for(events, kMaxEvents, until - now), events);
    return r;
  }
  // Holds and sleeps: ppoll has nanosecond timeouts on every kernel.
  const timespec ts = to_timespec(until - now);
  if (watch == Watch::kNothing) {
    r.ready = ::ppoll(nullptr, 0, &ts, nullptr);
    r.quiet_ready = true;  // not looked at meanwhile
    return r;
  }
  for (pollfd& p : quiet_) p.revents = 0;
  r.ready = ::ppoll(quiet_.data(), quiet_.size(), &ts, nullptr);
  r.quiet_ready = r.ready < 0;
  for (size_t i = 1; i < quiet_.size() && !r.quiet_ready; ++i)
    r.quiet_ready = quiet_[i].revents != 0;
  if (r.ready > 0 && (quiet_.front().revents & POLLIN) != 0) {
    waker_->drain();
    r.woken = true;
  }
  return r;
}

int Reactor::epoll_wait_for(epoll_event* events, int max, Duration t) {
  // Sub-millisecond timers (delayed acks, short RTOs, pacing) need
  // epoll_pwait2's nanosecond timeout; epoll_wait's milliseconds would round
  // them up.
  if (!no_pwait2_) {
    const timespec ts = to_timespec(t);
    const int n = ::epoll_pwait2(epoll_fd_, events, max, &ts, nullptr);
    if (n >= 0 || errno != ENOSYS) return n;
    no_pwait2_ = true;
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t + std::chrono::microseconds(999));
  return ::epoll_wait(epoll_fd_, events, max, static_cast<int>(ms.count()));
}

}  // namespace hyperscsi::io

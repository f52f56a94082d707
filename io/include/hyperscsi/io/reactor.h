// Reactor: the mechanics of an event loop that owns ports (issue 16): the
// epoll set of its fds, a cross-thread wake-up, and one way to wait between
// turns. The target's port loops and the initiator's I/O thread each own
// one; what a loop does per turn, and how long and on what it waits (its
// io::WakePolicy), stays with the loop.
//
// A wait ends when a watched fd is ready, at a deadline (nanoseconds, with
// epoll_pwait2; kernels without it round up to milliseconds), or on a
// wake-up. What it watches:
//  - kAll: every fd (ports, the wake-up, quiet fds);
//  - kQuiet: a hold, the wake-up and the quiet fds only (LUN completions,
//    pollers), not the ports: their frames pile up and are taken in one
//    turn;
//  - kNothing: a plain timed sleep (paced frames already fill the next
//    release: no submission or completion could go out sooner).
// A wait may first busy poll the whole set (zero-timeout checks) until
// `spin_until`, when the loop's policy says that pays.
//
// Ownership: the Reactor owns its epoll set; the Waker (its eventfd) is
// shared, so whoever may wake the loop after it is gone (a LUN's completion
// on another thread) keeps it alive. The fds added are borrowed: remove()
// them or destroy the Reactor before closing them.
//
// Thread-safety: wake() and Waker::wake() from any thread. Everything else
// (open, add, remove, set_writable, wait, Waker::clear/drain) only on the
// loop's thread, or before it starts.
#pragma once

#include <poll.h>
#include <sys/epoll.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "hyperscsi/base/result.h"
#include "hyperscsi/proto/clock.h"

namespace hyperscsi::io {

struct ReactorError {
  std::string message;
};

// A coalesced cross-thread wake-up: an eventfd written once per batch (the
// first wake() after the loop took the last one), so a burst of submissions
// or completions costs one write and one read.
class Waker {
 public:
  Waker();   // creates the eventfd (fd() < 0 if that failed)
  ~Waker();  // closes it
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;

  // Any thread. Ends the loop's current or next wait (unless that wait
  // watches nothing: it ends at its deadline and the next one returns at once).
  void wake();
  // Loop thread: the wake-ups so far are taken (the loop will look at its
  // queues next). Reads the eventfd only when a wake-up is pending.
  void clear();
  // Loop thread: the eventfd was reported readable; reads it.
  void drain();
  int fd() const { return fd_; }

 private:
  std::atomic<bool> pending_{false};
  int fd_ = -1;
};

class Reactor {
 public:
  // Which waits an fd ends (see the top of this file).
  enum class Role { kPort, kQuiet };
  enum class Watch { kAll, kQuiet, kNothing };

  struct WaitResult {
    int ready = 0;            // fds ready; < 0: the wait failed (errno says why; EINTR is benign)
    bool woken = false;       // the wake-up was among them (and is drained)
    bool blocked = false;     // the thread slept (not only checked or busy polled)
    bool polled = false;      // it busy polled first
    bool poll_found = false;  // and that found something
    proto::Duration poll_time{};
    // Whether a quiet fd other than the wake-up (a poller) may be readable:
    // false only when this wait looked at the quiet fds and none was, so
    // the loop can skip reading them (a system call each) until one is.
    bool quiet_ready = true;
  };

  Reactor() = default;
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // Creates the epoll set and the wake-up, and watches the wake-up.
  Status<ReactorError> open();
  // Watches `fd` for input, in every wait (kQuiet) or in kAll waits only
  // (kPort). Adding a watched fd again is a no-op.
  Status<ReactorError> add(int fd, Role role);
  void remove(int fd);
  // Also wakes kAll waits when `fd` (a port) is writable. False if that failed.
  bool set_writable(int fd, bool on);

  // Waits from `now` (the caller's clock reading) until `until`, a watched
  // fd or a wake-up. `until <= now`: only checks what is ready. Busy polls
  // first until min(spin_until, until) when spin_until > now.
  WaitResult wait(proto::TimePoint now, proto::TimePoint until, Watch watch = Watch::kAll,
                  proto::TimePoint spin_until = {});

  // Null before open().
  const std::shared_ptr<Waker>& waker() const { return waker_; }
  // Any thread (after open(); a no-op before).
  void wake() {
    if (waker_) waker_->wake();
  }

  // The fallback for kernels without epoll_pwait2 (millisecond timeouts,
  // rounded up); tests force it.
  void use_ms_timeouts() { no_pwait2_ = true; }

 private:
  int epoll_wait_for(epoll_event* events, int max, proto::Duration t);
  int check(WaitResult& r, int n, const epoll_event* events);
  bool is_quiet(int fd) const;

  static constexpr int kMaxEvents = 16;

  int epoll_fd_ = -1;
  std::shared_ptr<Waker> waker_;
  std::vector<pollfd> quiet_;  // what a kQuiet wait watches: the wake-up first
  bool no_pwait2_ = false;
};

}  // namespace hyperscsi::io

// Internal: the token bucket (tbf) installed as an interface's root qdisc,
// read over rtnetlink (libmnl) in the caller's network namespace. That is how
// a GbE segment is emulated on a veth (bench/lab.sh --shape), and how an
// operator caps what a host sends; a port paces at it (Port::tx_rate).
#pragma once

#include <cstdint>
#include <ctime>

struct mnl_socket;

namespace hyperscsi::io::detail {

struct TokenBucket {
  uint64_t rate = 0;    // frame bytes per second tbf lets through; 0: no root tbf
  uint64_t bucket = 0;  // bytes it lets pass at once after an idle spell (its burst)
  bool operator==(const TokenBucket&) const = default;
};

// The root tbf of interface `ifindex`, or {0, 0} when it has none or it
// cannot be read (no error: an unshaped port simply does not pace).
TokenBucket root_tbf(int ifindex);

// An interface's root tbf, kept current: a shaper installed, changed or
// removed after the port opened is noticed within about kShaperCheck (the
// port paced at the old rate, or not at all, until then: issue 20).
// It listens to rtnetlink's TC group (a notification per qdisc change) and
// re-reads the root qdisc when one came; where it cannot subscribe it
// re-reads every kShaperRecheck. Both sockets live in the network namespace
// of the thread that constructs it, whichever thread polls it later.
// Ownership: owns its two netlink sockets. Thread-safety: none (the port's
// thread).
class ShaperWatch {
 public:
  static constexpr int64_t kShaperCheckNs = 100'000'000;      // notifications looked at
  static constexpr int64_t kShaperRecheckNs = 2'000'000'000;  // re-read without them

  explicit ShaperWatch(int ifindex);
  ~ShaperWatch();
  ShaperWatch(const ShaperWatch&) = delete;
  ShaperWatch& operator=(const ShaperWatch&) = delete;

  const TokenBucket& current() const { return current_; }
  // Cheap when nothing is due (one coarse clock read): at most every
  // kShaperCheckNs it drains the notifications (one non-blocking recv) and
  // re-reads the root qdisc if any came. True when current() changed.
  bool poll();
  // How many times it re-read the root qdisc after opening (for tests).
  uint64_t rereads() const { return rereads_; }

 private:
  TokenBucket read();
  bool drain_notifications();  // true when one came (or some were lost)

  int ifindex_;
  mnl_socket* query_ = nullptr;   // RTM_GETQDISC dumps
  mnl_socket* events_ = nullptr;  // RTNLGRP_TC; null when it could not subscribe
  unsigned seq_ = 0;
  TokenBucket current_;
  int64_t next_check_ns_ = 0;
  int64_t next_reread_ns_ = 0;
  uint64_t rereads_ = 0;
};

}  // namespace hyperscsi::io::detail

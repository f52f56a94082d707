// Internal: the token bucket (tbf) installed as an interface's root qdisc,
// read over rtnetlink (libmnl) in the caller's network namespace. That is how
// a GbE segment is emulated on a veth (bench/lab.sh --shape), and how an
// operator caps what a host sends; a port paces at it (Port::tx_rate).
#pragma once

#include <cstdint>

namespace hyperscsi::io::detail {

struct TokenBucket {
  uint64_t rate = 0;    // frame bytes per second tbf lets through; 0: no root tbf
  uint64_t bucket = 0;  // bytes it lets pass at once after an idle spell (its burst)
};

// The root tbf of interface `ifindex`, or {0, 0} when it has none or it
// cannot be read (no error: an unshaped port simply does not pace).
TokenBucket root_tbf(int ifindex);

}  // namespace hyperscsi::io::detail

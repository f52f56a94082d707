// Internal: the rate of a token-bucket shaper (tbf) installed as an
// interface's root qdisc, read over rtnetlink in the caller's network
// namespace. That is how a GbE segment is emulated on a veth (bench/lab.sh
// --shape), and how an operator caps what a host sends; a port paces at it
// (Port::tx_rate).
#pragma once

#include <cstdint>

namespace hyperscsi::io::detail {

// Bytes per second of the root tbf qdisc of interface `ifindex` (the rate tbf
// counts frame bytes at), or 0 when it has none or it cannot be read.
uint64_t root_tbf_rate(int ifindex);

}  // namespace hyperscsi::io::detail

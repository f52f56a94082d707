// AF_PACKET backend ("afpacket:IFACE").
//
// Receive: a TPACKET_V3 mmap ring (PortOptions::ring_bytes, blocks sized for
// jumbo frames). Frames are copied from the ring into pool buffers, so ring
// blocks go back to the kernel at once and Packets may be held as long as the
// caller likes. A V3 block reaches user space when it is full or after the
// block retire timeout (1 ms, rounded up to a jiffy): that bounds the added
// latency at low rates.
// Transmit: sendmmsg(), one syscall per burst. Chosen over a TX ring because
// frames arrive in our own pool buffers and would be copied into a TX ring
// anyway; sendmmsg reports how many messages went out, which maps directly
// onto tx_burst's partial-send rule, and needs no second jumbo-sized mapping.
// Kernel filter: a classic BPF program (SO_ATTACH_FILTER) passes only
// EtherType 0x889A: untagged frames when vlan_id is 0, frames tagged with
// vlan_id otherwise (the kernel strips the tag into tpacket metadata before
// the filter runs, so the program reads the SKF_AD_VLAN_TAG* ancillary
// fields; an in-band tag is matched too). Frames the host sends
// (PACKET_OUTGOING), including this port's own, are never delivered.
// Options: vlan_id/vlan_priority, pool_size, ring_bytes, qdisc_bypass,
// fanout_group (PACKET_FANOUT_HASH). Socket buffers are sized for jumbo bursts.
// Errors: kNoSuchInterface, kInterfaceDown, kPermission (needs CAP_NET_RAW),
// kBadArgument (ring or fanout options), kBackendFailure.
// Thread-safety: as Port.
#pragma once

#include <memory>
#include <string_view>

#include "hyperscsi/io/port.h"

namespace hyperscsi::io {

Result<std::unique_ptr<Port>, PortError> open_afpacket_port(std::string_view iface,
                                                            const PortOptions& options);

}  // namespace hyperscsi::io

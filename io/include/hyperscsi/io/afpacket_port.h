// AF_PACKET backend ("afpacket:IFACE").
//
// Receive: a TPACKET_V2 mmap ring of PortOptions::ring_bytes, one fixed slot
// per frame (slot = header + sockaddr_ll + mtu + 14 + 4 VLAN + alignment;
// blocks are a power of two >= 64 KiB holding whole slots). The kernel hands
// each frame over, and wakes poll()/epoll on fd(), as soon as it is written,
// so a lone frame adds no delay. (TPACKET_V3, used before, handed over whole
// blocks only when full or after a >= 1 ms retire timer: ~1 ms per frame at
// low rates.) Frames are copied from the ring into pool buffers, so slots go
// back to the kernel at once and Packets may be held as long as the caller
// likes. A full ring drops frames in the kernel; counters().rx_dropped
// includes them (PACKET_STATISTICS).
// Transmit: sendmmsg(), one syscall per burst. Chosen over a TX ring because
// frames arrive in our own pool buffers and would be copied into a TX ring
// anyway; sendmmsg reports how many messages went out, which maps directly
// onto tx_burst's partial-send rule, and needs no second jumbo-sized mapping.
// Shaping: tx_rate()/tx_bucket() are the interface's root tbf, read when the
// port opens and kept current: the port listens to rtnetlink's TC group and
// re-reads the root qdisc after a change, checked from tx_burst at most every
// 100 ms, so a shaper installed, changed or removed later is followed within
// about that long once frames flow (a PortSink pacing at the port's rate
// follows it in turn).
// Kernel filter: a classic BPF program (SO_ATTACH_FILTER) passes only
// EtherType 0x889A: untagged frames when vlan_id is 0, frames tagged with
// vlan_id otherwise (the kernel strips the tag into tpacket metadata before
// the filter runs, so the program reads the SKF_AD_VLAN_TAG* ancillary
// fields; received tags arrive in tp_vlan_tci with TP_STATUS_VLAN_VALID; an
// in-band tag is matched too). Frames the host sends
// (PACKET_OUTGOING), including this port's own, are never delivered.
// set_rx_filter() replaces the program with one that also checks the session
// (rx_filter.h): an initiator's socket then wakes only for its own session's
// frames and for discovery and login replies. set_rx_paused() rebinds the
// socket from ETH_P_ALL to EtherType 0x88B5 (IEEE local experimental, which
// the filter rejects) and back: the kernel then does no work for it per frame.
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

// Opens an AF_PACKET port on the up interface `iface` with a TPACKET_V2
// receive ring of options.ring_bytes (at least two 64 KiB blocks at MTU
// <= 9000, else kBadArgument naming ring_bytes). The caller owns the port.
Result<std::unique_ptr<Port>, PortError> open_afpacket_port(std::string_view iface,
                                                            const PortOptions& options);

}  // namespace hyperscsi::io

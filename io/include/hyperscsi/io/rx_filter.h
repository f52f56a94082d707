// RxFilter: which HyperSCSI frames one initiator's port needs, so that the
// kernel drops the rest before they wake the process. Several sessions on one
// host (one hyperscsi-attach or nbdkit export per LUN) each open their own
// socket on the same interface; without this every socket gets every frame.
//
// What an initiator needs, and hence what passes (docs/protocol.md 3, 10.6-10.11):
//  - discovery replies and announcements (opcode 0x10) and login replies
//    (0x12), from any source and with any session id: before login the
//    session is unknown, a fresh login's reply carries the new session id in
//    its header, and these frames come once per discovery or login, so
//    passing them always costs nothing and keeps discovery, login, re-login
//    and resume working with no filter change in between;
//  - with a session: every frame whose source MAC is one of the target's
//    ports serving the session (the login's; in a multipath session every
//    port of its paths, docs/protocol.md 14.2) and whose session_id
//    (HyperSCSI header byte 8) is the session's, any epoch (a resume raises
//    the epoch; a stale epoch is the session layer's to count).
//    A PROTECTED frame's header is in the clear (10.13), so protection changes
//    nothing here.
// The EtherType (0x889A) and VLAN rules of the port apply first, as before.
//
// The kernel programs (rx_filter_program) and rx_filter_matches implement the
// same predicate; tests check one against the other.
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "hyperscsi/io/port.h"

namespace hyperscsi::io {

struct RxFilter {
  // More target ports than a port list holds (docs/protocol.md 14.3): the
  // filter then checks the session id alone (the session layer still checks
  // each frame's MACs).
  static constexpr size_t kMaxPeers = 16;

  bool everything = true;         // every HyperSCSI frame: a target's port, or before any narrowing
  std::vector<MacAddress> peers;  // the target's MACs (with session_id != 0)
  uint32_t session_id = 0;        // 0: discovery and login replies only

  // Every HyperSCSI frame (what a port delivers when opened).
  static RxFilter all() { return {}; }
  // Discovery and login replies, and the frames of session `id` from `peer`
  // (id 0: discovery and login replies only).
  static RxFilter session(const MacAddress& peer, uint32_t id) {
    return RxFilter{false, {peer}, id};
  }
  // The same from any of `peers` (a multipath session: one MAC per target
  // port; duplicates are harmless).
  static RxFilter session(std::span<const MacAddress> peers, uint32_t id) {
    return RxFilter{false, {peers.begin(), peers.end()}, id};
  }

  friend bool operator==(const RxFilter&, const RxFilter&) = default;
};

// Whether `frame` (untagged, from the destination MAC, as rx_burst delivers
// it) passes the session part of `filter`. Frames shorter than the HyperSCSI
// header pass only with `everything` (the port's EtherType rule decides).
bool rx_filter_matches(const RxFilter& filter, std::span<const uint8_t> frame);

// "all", "control only" or "session 0x5e551001 from 02:00:00:00:00:02"
// (several MACs separated by ", ").
std::string to_string(const RxFilter& filter);

// One classic BPF instruction (the layout of Linux's sock_filter and
// libpcap's bpf_insn).
struct BpfInstruction {
  uint16_t code = 0;
  uint8_t jt = 0;
  uint8_t jf = 0;
  uint32_t k = 0;
};

enum class BpfFlavor : uint8_t {
  // SO_ATTACH_FILTER on our own AF_PACKET socket: also drops frames the host
  // sends (SKF_AD_PKTTYPE == PACKET_OUTGOING).
  kAfPacket,
  // pcap_setfilter: only what libpcap's user-space interpreter also runs
  // (it filters frames already in its ring when the filter changes): no
  // packet-type load (PCAP_D_IN does that), VLAN metadata loaded as bytes.
  kPcap,
};

// The classic BPF program the AF_PACKET and libpcap ports attach: the
// EtherType/VLAN rule for `vlan_id` (0: untagged frames only; else frames
// tagged with it, the tag in the kernel's metadata or in-band), then the
// session part of `filter`. Accepting returns a snap length larger than any
// frame; rejecting returns 0.
std::vector<BpfInstruction> rx_filter_program(const RxFilter& filter, uint16_t vlan_id,
                                              BpfFlavor flavor);

}  // namespace hyperscsi::io

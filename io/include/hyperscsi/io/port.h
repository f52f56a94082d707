// Port: the one interface through which the target and initiator engines reach
// the wire. Backends: AF_PACKET, libpcap, DPDK (dpdk/), in-memory (tests).
//
// Frames seen through a Port are whole Ethernet frames without FCS, starting
// at the destination MAC and always untagged: when a VLAN is configured the
// port inserts the 802.1Q tag on send and strips it on receive. Only
// EtherType 0x889A frames are delivered (the kernel-side filter does this where
// the backend has one).
//
// An initiator narrows that further to its own session with set_rx_filter()
// (rx_filter.h), so that several sessions on one host wake only for their
// own frames.
//
// Thread-safety: a Port is used by one thread at a time (its data path is not
// locked). Packets may be released from any thread.
// Errors: opening a port returns a typed PortError; rx_burst/tx_burst never
// throw and report failures through counters.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "hyperscsi/io/packet.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::io {

using MacAddress = std::array<uint8_t, 6>;
struct RxFilter;  // rx_filter.h

struct PortCounters {
  uint64_t rx_frames = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_frames = 0;
  uint64_t tx_bytes = 0;
  uint64_t rx_dropped = 0;  // lost before we saw them (ring full, kernel drops, no buffer)
  uint64_t tx_dropped = 0;  // could not be sent (no space); the caller kept them
  uint64_t rx_errors = 0;
  uint64_t tx_errors = 0;
  // tx_burst calls cut short, by reason (see TxBlock); together they are tx_dropped.
  uint64_t tx_blocked_socket = 0;
  uint64_t tx_blocked_queue = 0;
};

// Why the last tx_burst() left frames with the caller.
enum class TxBlock : uint8_t {
  kNone,        // it took every frame it was offered
  kSocketFull,  // the send buffer is full: fd() polls writable (EPOLLOUT) once it drains
  kQueueFull,   // the device or its queue refused them (ENOBUFS, a full ring): no event
                // tells when there is room again, so retry after a pause
};

struct PortOptions {
  uint16_t vlan_id = 0;          // 0: untagged; 1..4094: 802.1Q tag
  uint8_t vlan_priority = 0;     // PCP bits of the tag
  size_t pool_size = 4096;       // packet buffers owned by the port
  std::string record_pcap;       // non-empty: write every frame sent/received to this file
  bool qdisc_bypass = false;     // AF_PACKET: PACKET_QDISC_BYPASS
  int fanout_group = -1;         // AF_PACKET: join this PACKET_FANOUT group (hash)
  size_t ring_bytes = 4u << 20;  // AF_PACKET: receive ring size
};

enum class PortErrorKind : uint8_t {
  kBadSpec,          // spec string unparsable or unknown kind
  kNoSuchInterface,  // interface does not exist
  kInterfaceDown,
  kPermission,      // needs root / CAP_NET_RAW
  kBadArgument,     // an option is out of range or unsupported by the backend
  kBackendFailure,  // the backend library or the kernel refused (message says why)
  kUnavailable,     // backend not built in
};

struct PortError {
  PortErrorKind kind = PortErrorKind::kBackendFailure;
  std::string message;  // names what was wrong, e.g. "no interface 'eth7'"
};

class Port {
 public:
  virtual ~Port() = default;

  virtual std::string_view spec() const = 0;  // as the user typed it
  virtual MacAddress mac() const = 0;
  virtual size_t mtu() const = 0;  // L3 MTU: largest frame is mtu + 14 bytes
  virtual PortCounters counters() const = 0;

  // A pollable fd that becomes readable when rx_burst may return frames, or
  // -1 for poll-mode backends, which must be polled with rx_burst.
  virtual int fd() const = 0;
  bool poll_mode() const { return fd() < 0; }

  // An empty packet able to hold mtu + 14 bytes plus headroom for a VLAN tag;
  // an empty handle when the pool is exhausted.
  virtual Packet alloc() = 0;

  // Moves up to out.size() received frames into out[0..n) and returns n.
  // Never blocks.
  virtual size_t rx_burst(std::span<Packet> out) = 0;

  // Sends pkts[0..n) and returns n: the port takes ownership of those n
  // (their handles become empty); pkts[n..] stay with the caller, who may
  // retry them later. Never blocks for long, never throws.
  virtual size_t tx_burst(std::span<Packet> pkts) = 0;
  // Whether tx_burst sends a packet's tail (Packet::set_tail) after its bytes
  // without copying it. Only such a port may be given packets with tails.
  virtual bool tx_gather() const { return false; }

  // Why the last tx_burst that returned fewer frames than it was offered
  // stopped. A loop holding frames sleeps on it instead of retrying at once:
  // kSocketFull until fd() polls writable, kQueueFull for a pause. Backends
  // that cannot tell report kQueueFull.
  virtual TxBlock tx_blocked() const { return TxBlock::kQueueFull; }

  // The rate, in frame bytes per second, at which the port's link takes
  // frames when a shaper on the interface says so (a root tbf qdisc), or 0
  // when nothing does. Senders pace at it (PortSink::set_pacing).
  virtual uint64_t tx_rate() const { return 0; }
  // How many frame bytes that shaper lets pass at once (its bucket), or 0
  // when unknown. A sender's bursts stay below it, so the shaper never holds
  // a queue (holding one costs the kernel a timer per frame: issue 20).
  virtual uint64_t tx_bucket() const { return 0; }

  // Waits until rx_burst may return something or `timeout` passes. Backends
  // with an fd poll it; poll-mode backends return at once.
  virtual bool wait_rx(std::chrono::microseconds timeout);

  // Narrows (or widens again) what the kernel delivers to this port to
  // `filter`, replacing the previous one at once; frames already queued may
  // still come, so a caller that narrows also checks rx_filter_matches().
  // AF_PACKET and libpcap attach a classic BPF program. The default (mem,
  // DPDK) keeps delivering every HyperSCSI frame: it accepts
  // RxFilter::all() and returns kUnavailable for anything narrower.
  virtual Status<PortError> set_rx_filter(const RxFilter& filter);

  // Stops (true) or restarts (false) delivery to this port without closing
  // it. A socket with a receive filter still costs a little kernel work for
  // every frame on its interface (the filter runs once per socket); a paused
  // one costs none, so an idle session slows the others down by nothing.
  // Frames arriving while paused are not delivered; queued ones stay.
  // AF_PACKET rebinds the socket to an EtherType nobody uses and back, each
  // switch waiting for an RCU grace period in the kernel (a few ms). The
  // default (libpcap, mem, DPDK), and AF_PACKET in a fanout group, return
  // kUnavailable and keep receiving. Same thread rules as set_rx_filter().
  virtual Status<PortError> set_rx_paused(bool paused);
};

// Ports are opened from spec strings by ports::open_port (ports/, the factory
// above every backend) or by a backend's own open function.

std::string to_string(const MacAddress& mac);
std::string_view to_string(PortErrorKind k);

}  // namespace hyperscsi::io

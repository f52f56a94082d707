// DPDK poll-mode Port backend. This header does not include DPDK headers, so
// code above dpdk/ never sees them.
//
// Spec: what follows "dpdk:" in a port spec, e.g.
//   --no-huge,--no-pci,--vdev=net_af_packet0,iface=veth0,--lcores=0@0
// Elements are separated by ','. An element that does not start with '-'
// continues the previous argument (joined back with ','), so a vdev's own
// "key=value" list survives: "--vdev=net_af_packet0,iface=veth0" is one EAL
// argument. Exception: after a bare option that still needs its value ("-a",
// "--vdev", "-l" without '='), the next element is that value, as its own
// argument. One extra option is ours and is not passed to the EAL:
//   --hs-mtu=N   L3 MTU to set on the device. Default: the kernel
//                interface's MTU for net_af_packet vdevs, else the device's.
//
// EAL lifetime (rte_eal_init succeeds only once per process): the first
// successful open initialises the EAL with its arguments; later opens must use
// exactly the same arguments (a different configuration is refused with
// kBadArgument). The EAL stays up while the process lives (DPDK cannot
// initialise it again after rte_eal_cleanup); rte_eal_cleanup runs at process
// exit, or later when the last port or packet still alive then is released.
//
// Port selection: the first device named by --vdev / -a / --allow that is not
// already open in this process; without names, the first probed port not
// already open. Opening the same spec twice with two vdevs gives both ports.
//
// Data path: received frames are handed over in their mbufs without copying
// (Packet::cookie() is the rte_mbuf*); alloc() returns mbuf-backed Packets
// that tx_burst passes to rte_eth_tx_burst without copying. Packets from other
// pools are copied into an mbuf. A software filter delivers only EtherType
// 0x889A, untagged or tagged with the configured VLAN; everything else is
// freed and counted in rx_filtered(). VLAN tags are inserted and stripped in
// software. fd() is -1 (poll mode); wait_rx returns at once.
// PortOptions: vlan_id, vlan_priority and pool_size are used; record_pcap and
// the AF_PACKET-only options are ignored here (open_port adds recording).
//
// Ownership: the mempool lives until the port is closed AND every Packet it
// handed out is released, so Packets may outlive their port.
// Thread-safety: as io::Port (one thread at a time on the data path); Packets
// may be released from any thread. Opening and closing ports is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::dpdk {

// The Port returned by open_dpdk_port, for callers that want DPDK specifics.
class DpdkPort : public io::Port {
 public:
  // Frames dropped by the software filter (other EtherTypes, other VLANs).
  virtual uint64_t rx_filtered() const = 0;
  // Link state as the PMD reports it (memif is down until its peer connects).
  virtual bool link_up() const = 0;
  // The ethdev name, e.g. "net_af_packet0".
  virtual std::string_view device_name() const = 0;
};

// Splits a spec into EAL arguments by the rule above (without argv[0]).
std::vector<std::string> split_eal_args(std::string_view eal_args);

// Opens a DPDK port. Errors: kPermission (not root), kNoSuchInterface (the
// interface of an af_packet vdev is absent, or no port was probed),
// kBadArgument (EAL rejected the arguments, a different EAL configuration is
// already active, MTU refused by the PMD, pool too small), kBackendFailure
// (hugepages missing, device set-up failed; the message says what to do).
Result<std::unique_ptr<io::Port>, io::PortError> open_dpdk_port(std::string_view eal_args,
                                                                const io::PortOptions& options);

}  // namespace hyperscsi::dpdk

// libpcap backend ("pcap:IFACE"): live capture in immediate mode, non-blocking,
// snaplen mtu + 18, direction PCAP_D_IN (frames the host sends are not
// delivered), pcap_inject to send, pcap_get_selectable_fd() as fd().
// Kernel filter (compiled by libpcap): "ether proto 0x889a" and untagged when
// vlan_id is 0, "vlan VID and ether proto 0x889a" otherwise; rx_burst checks
// again in user space (libpcap puts a kernel-stripped tag back into the data)
// and strips the tag. VLAN tags are inserted on send. set_rx_filter() installs
// rx_filter_program(BpfFlavor::kPcap) with pcap_setfilter (libpcap hands it to
// the kernel and runs it itself over frames already in its ring).
// Errors come from pcap's error buffer, typed: kNoSuchInterface,
// kInterfaceDown, kPermission, kBackendFailure.
// Thread-safety: as Port.
#pragma once

#include <memory>
#include <string_view>

#include "hyperscsi/io/port.h"

namespace hyperscsi::io {

Result<std::unique_ptr<Port>, PortError> open_pcap_port(std::string_view iface,
                                                        const PortOptions& options);

// Wraps `inner` so that every frame it sends and receives is also written to
// the pcap file `path` (DLT_EN10MB, as the Port user sees frames: untagged).
// The file is flushed and closed when the returned port is destroyed.
// Errors: kBadArgument when the file cannot be created (message names it).
Result<std::unique_ptr<Port>, PortError> make_recording_port(std::unique_ptr<Port> inner,
                                                             const std::string& path);

}  // namespace hyperscsi::io

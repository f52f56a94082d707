// The port factory: opens an io::Port from a spec string the user typed.
// It sits above io/ (AF_PACKET, libpcap, in-memory, pcap recording) and dpdk/
// (loaded at run time as a module, only when a "dpdk:" spec is opened), so
// programs choose a backend by name without linking DPDK.
//
// Thread-safety: open_port may be called from any thread.
#pragma once

#include <memory>
#include <string_view>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::ports {

// Opens a port from a spec: "afpacket:IFACE", "pcap:IFACE",
// "dpdk:EAL,ARGS,SEPARATED,BY,COMMAS", "mem:NAME[?k=v,...]". With
// options.record_pcap set, every frame is also written to that file.
//
// "dpdk:" loads the DPDK module (hyperscsi-dpdk-port.so, or the file that the
// environment variable HYPERSCSI_DPDK_MODULE names) on first use, after
// checking that the CPU has what the DPDK libraries are compiled for.
// kUnavailable when the CPU lacks it, the module is not installed, or it comes
// from another build; the message says which and what to do.
Result<std::unique_ptr<io::Port>, io::PortError> open_port(std::string_view spec,
                                                           const io::PortOptions& options = {});

}  // namespace hyperscsi::ports

// EalConfig: what open_dpdk_port needs to know about a spec before and after
// handing it to the EAL. Pure parsing, no DPDK.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::dpdk {

struct VdevInterface {
  std::string device;        // e.g. "net_af_packet0"
  std::string interface;     // its iface=... value
  size_t frame_size = 2048;  // its framesz=... (the PMD's default otherwise)
};

struct EalConfig {
  std::vector<std::string> eal_args;     // for rte_eal_init, without argv[0]
  std::vector<std::string> devices;      // device names from --vdev / -a / --allow, in order
  std::vector<VdevInterface> af_packet;  // af_packet vdevs and their kernel interfaces
  std::optional<size_t> mtu;             // --hs-mtu
  bool no_huge = false;
  bool in_memory = false;
  bool uses_memif = false;
};

// Parses a spec (see dpdk_port.h); kBadSpec when empty or --hs-mtu is malformed.
Result<EalConfig, io::PortError> parse_eal_config(std::string_view eal_args);

}  // namespace hyperscsi::dpdk

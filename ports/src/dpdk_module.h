// The "dpdk:" backend of open_port: loads the DPDK module on first use
// (dpdk/include/hyperscsi/dpdk/port_module.h) and opens the port through it.
// Thread-safety: may be called from any thread; loading happens once.
#pragma once

#include <memory>
#include <string_view>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::ports {

// `eal_args` is what follows "dpdk:". kUnavailable (the message says why and
// what to do) when the CPU cannot run DPDK, the module is absent or from
// another build; otherwise whatever the DPDK backend answers.
Result<std::unique_ptr<io::Port>, io::PortError> open_dpdk_module_port(
    std::string_view eal_args, const io::PortOptions& options);

}  // namespace hyperscsi::ports

// The module's one exported symbol (see port_module.h). Everything else in the
// module is hidden by the linker (a version script and --exclude-libs).
#include "hyperscsi/dpdk/port_module.h"

#include "hyperscsi/dpdk/dpdk_port.h"

namespace {

constexpr hyperscsi::dpdk::PortModuleV1 kModule{
    .size = sizeof(hyperscsi::dpdk::PortModuleV1),
    .build_id = HYPERSCSI_PORT_MODULE_BUILD_ID,
    .open = &hyperscsi::dpdk::open_dpdk_port,
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const hyperscsi::dpdk::PortModuleV1*
hyperscsi_port_module_v1() {
  return &kModule;
}

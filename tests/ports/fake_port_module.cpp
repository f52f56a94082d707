// Stand-ins for a wrong DPDK module, to check that the loader refuses them:
// built with FAKE_BUILD_ID, it is a port module from another build; without,
// a shared object that is no port module at all.
#include "hyperscsi/dpdk/port_module.h"

#ifdef FAKE_BUILD_ID
namespace {

using hyperscsi::io::PortError;

hyperscsi::Result<std::unique_ptr<hyperscsi::io::Port>, PortError> refuse(
    std::string_view, const hyperscsi::io::PortOptions&) {
  return hyperscsi::Unexpected(PortError{hyperscsi::io::PortErrorKind::kBackendFailure,
                                         "the fake module's open() was called"});
}

constexpr hyperscsi::dpdk::PortModuleV1 kModule{
    .size = sizeof(hyperscsi::dpdk::PortModuleV1), .build_id = FAKE_BUILD_ID, .open = &refuse};

}  // namespace

extern "C" __attribute__((visibility("default"))) const hyperscsi::dpdk::PortModuleV1*
hyperscsi_port_module_v1() {
  return &kModule;
}
#else
extern "C" __attribute__((visibility("default"))) int hyperscsi_not_a_port_module() {
  return 0;
}
#endif

// Internal: what the kernel says about a network interface (index, MAC, MTU,
// up), with typed errors that name the interface.
#pragma once

#include <string>
#include <string_view>

#include "hyperscsi/io/port.h"

namespace hyperscsi::io::detail {

struct InterfaceInfo {
  std::string name;
  int index = 0;
  MacAddress mac{};
  size_t mtu = 0;
  bool up = false;
};

// kBadSpec (name empty or too long), kNoSuchInterface, kBackendFailure.
Result<InterfaceInfo, PortError> query_interface(std::string_view name);

// query_interface + kInterfaceDown when the interface is not up.
Result<InterfaceInfo, PortError> require_up_interface(std::string_view backend,
                                                      std::string_view name);

// "backend: what: strerror(err)" with the kind errno implies (EPERM/EACCES ->
// kPermission, ENODEV/ENXIO -> kNoSuchInterface, ENETDOWN -> kInterfaceDown).
PortError errno_error(std::string_view what, int err);

}  // namespace hyperscsi::io::detail

// Port helpers shared by every backend: the default wait_rx and to_string.
#include <poll.h>

#include <cerrno>

#include "hyperscsi/base/mac.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/io/rx_filter.h"

namespace hyperscsi::io {

bool Port::wait_rx(std::chrono::microseconds timeout) {
  const int fd_ = fd();
  if (fd_ < 0) return true;  // poll-mode: the caller polls rx_burst
  pollfd p{fd_, POLLIN, 0};
  // Round up so that a sub-millisecond wait still sleeps instead of spinning.
  const auto ms = (timeout.count() + 999) / 1000;
  const int rc = ::poll(&p, 1, static_cast<int>(ms > 0x7fffffff ? 0x7fffffff : ms));
  return rc > 0 && (p.revents & POLLIN) != 0;
}

Status<PortError> Port::set_rx_filter(const RxFilter& filter) {
  if (filter.everything) return {};  // what every port delivers anyway
  return Unexpected(PortError{PortErrorKind::kUnavailable,
                              std::string(spec()) + ": no kernel receive filter in this backend"});
}

Status<PortError> Port::set_rx_paused(bool paused) {
  if (!paused) return {};
  return Unexpected(PortError{PortErrorKind::kUnavailable,
                              std::string(spec()) + ": this backend cannot pause receiving"});
}

std::string to_string(const MacAddress& mac) {
  return base::format_mac(mac);
}

std::string_view to_string(PortErrorKind k) {
  switch (k) {
    case PortErrorKind::kBadSpec:
      return "bad spec";
    case PortErrorKind::kNoSuchInterface:
      return "no such interface";
    case PortErrorKind::kInterfaceDown:
      return "interface down";
    case PortErrorKind::kPermission:
      return "permission denied";
    case PortErrorKind::kBadArgument:
      return "bad argument";
    case PortErrorKind::kBackendFailure:
      return "backend failure";
    case PortErrorKind::kUnavailable:
      return "backend unavailable";
  }
  return "unknown";
}

}  // namespace hyperscsi::io

#include "netif.h"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hyperscsi::io::detail {
namespace {

// Closes an fd on scope exit.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

PortError errno_error(std::string_view what, int err) {
  PortErrorKind kind = PortErrorKind::kBackendFailure;
  if (err == EPERM || err == EACCES) kind = PortErrorKind::kPermission;
  if (err == ENODEV || err == ENXIO) kind = PortErrorKind::kNoSuchInterface;
  if (err == ENETDOWN) kind = PortErrorKind::kInterfaceDown;
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  if (kind == PortErrorKind::kPermission) msg += " (needs root or CAP_NET_RAW)";
  return {kind, std::move(msg)};
}

Result<InterfaceInfo, PortError> query_interface(std::string_view name) {
  if (name.empty())
    return Unexpected(PortError{PortErrorKind::kBadSpec, "no interface name given"});
  if (name.size() >= IFNAMSIZ || name.find('/') != std::string_view::npos)
    return Unexpected(
        PortError{PortErrorKind::kBadSpec, "bad interface name '" + std::string(name) + "'"});
  InterfaceInfo info;
  info.name = std::string(name);
  info.index = static_cast<int>(::if_nametoindex(info.name.c_str()));
  if (info.index == 0)
    return Unexpected(
        PortError{PortErrorKind::kNoSuchInterface, "no interface '" + info.name + "'"});
  // Interface ioctls work on any socket and need no privilege.
  FdGuard s{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  if (s.fd < 0) return Unexpected(errno_error("socket", errno));
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, info.name.data(), info.name.size());
  if (::ioctl(s.fd, SIOCGIFHWADDR, &ifr) < 0)
    return Unexpected(errno_error("SIOCGIFHWADDR " + info.name, errno));
  std::memcpy(info.mac.data(), ifr.ifr_hwaddr.sa_data, 6);
  if (::ioctl(s.fd, SIOCGIFMTU, &ifr) < 0)
    return Unexpected(errno_error("SIOCGIFMTU " + info.name, errno));
  info.mtu = static_cast<size_t>(ifr.ifr_mtu);
  if (::ioctl(s.fd, SIOCGIFFLAGS, &ifr) < 0)
    return Unexpected(errno_error("SIOCGIFFLAGS " + info.name, errno));
  info.up = (ifr.ifr_flags & IFF_UP) != 0;
  return info;
}

Result<InterfaceInfo, PortError> require_up_interface(std::string_view backend,
                                                      std::string_view name) {
  auto info = query_interface(name);
  if (!info) {
    PortError e = info.error();
    e.message = std::string(backend) + ": " + e.message;
    return Unexpected(std::move(e));
  }
  if (!info->up)
    return Unexpected(PortError{PortErrorKind::kInterfaceDown,
                                std::string(backend) + ": interface '" + info->name + "' is down"});
  return info;
}

}  // namespace hyperscsi::io::detail

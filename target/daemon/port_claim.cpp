#include "port_claim.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hyperscsi::daemon {
namespace {

constexpr const char* kEtherType = "889a";

std::string cmdline_of(long pid) {
  std::string raw;
  const int fd =
      ::open(("/proc/" + std::to_string(pid) + "/cmdline").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) raw.assign(buf, static_cast<size_t>(n));
    ::close(fd);
  }
  for (char& c : raw)
    if (c == '\0') c = ' ';
  while (!raw.empty() && raw.back() == ' ') raw.pop_back();
  if (raw.size() > 160) raw = raw.substr(0, 157) + "...";
  return raw;
}

sockaddr_un abstract_address(const std::string& name, socklen_t& len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const size_t n = std::min(name.size(), sizeof a.sun_path - 1);
  std::memcpy(a.sun_path + 1, name.data(), n);  // sun_path[0] = 0: abstract
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return a;
}

// Who listens on the abstract name: "pid N (cmdline)", or empty.
std::string holder_of(const std::string& name) {
  socklen_t len = 0;
  const sockaddr_un a = abstract_address(name, len);
  // Non-blocking: a full backlog must not hang the refused daemon.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return {};
  std::string who;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), len) == 0) {
    ucred cred{};
    socklen_t cl = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0 && cred.pid > 0) {
      who = "pid " + std::to_string(cred.pid);
      if (const std::string cmd = cmdline_of(static_cast<long>(cred.pid)); !cmd.empty())
        who += " (" + cmd + ")";
    }
  }
  ::close(fd);
  return who;
}

}  // namespace

std::optional<std::string> interface_of(std::string_view spec) {
  const size_t colon = spec.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string_view kind = spec.substr(0, colon), rest = spec.substr(colon + 1);
  if (kind == "afpacket" || kind == "pcap") {
    if (rest.empty()) return std::nullopt;
    return std::string(rest.substr(0, rest.find(',')));
  }
  if (kind == "dpdk") {
    // An AF_PACKET or AF_XDP vdev names its interface: "...,iface=eth1,...".
    const size_t at = rest.find("iface=");
    if (at == std::string_view::npos) return std::nullopt;
    const std::string_view v = rest.substr(at + 6);
    return std::string(v.substr(0, v.find_first_of(",: ")));
  }
  return std::nullopt;
}

PortClaim& PortClaim::operator=(PortClaim&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    name_ = std::move(o.name_);
    o.fd_ = -1;
  }
  return *this;
}

PortClaim::~PortClaim() {
  if (fd_ >= 0) ::close(fd_);
}

Result<PortClaim, ConfigError> PortClaim::claim(std::string_view spec) {
  PortClaim c;
  const auto iface = interface_of(spec);
  if (!iface) return c;
  c.name_ = "hyperscsi-target/" + *iface + "/" + kEtherType;
  socklen_t len = 0;
  const sockaddr_un a = abstract_address(c.name_, len);
  c.fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c.fd_ < 0)
    return Unexpected(
        ConfigError{"port '" + std::string(spec) + "': socket: " + std::strerror(errno)});
  if (::bind(c.fd_, reinterpret_cast<const sockaddr*>(&a), len) != 0) {
    const int e = errno;
    if (e != EADDRINUSE)
      return Unexpected(ConfigError{"port '" + std::string(spec) + "': claim of " + *iface + ": " +
                                    std::strerror(e)});
    const std::string who = holder_of(c.name_);
    return Unexpected(ConfigError{
        "port '" + std::string(spec) + "': interface " + *iface +
        " is already served by another hyperscsi-target" + (who.empty() ? "" : ", " + who) +
        "; one target per interface and EtherType 0x889A (a second one would break the first "
        "one's sessions): stop it, or serve more LUNs from it"});
  }
  ::listen(c.fd_, 64);
  return c;
}

}  // namespace hyperscsi::daemon

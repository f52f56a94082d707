// One target per interface and EtherType on a host. A second hyperscsi-target
// on an interface would answer the first one's sessions with "unknown
// session" and break them; instead it is refused at start with the holder's
// pid and command line.
//
// The claim is an abstract Unix socket named after the interface and the
// EtherType (0x889A). Abstract socket names live in the network namespace,
// as interface names do, and vanish with their process: a crashed target
// leaves nothing to clean up. The holder listens on it, so a refused daemon
// learns who holds it from SO_PEERCRED.
// Ownership: a PortClaim owns its socket; the claim ends with the object.
// Thread-safety: none needed (built and destroyed on the main thread).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "config.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::daemon {

class PortClaim {
 public:
  PortClaim() = default;
  PortClaim(PortClaim&& o) noexcept : fd_(o.fd_), name_(std::move(o.name_)) { o.fd_ = -1; }
  PortClaim& operator=(PortClaim&& o) noexcept;
  PortClaim(const PortClaim&) = delete;
  PortClaim& operator=(const PortClaim&) = delete;
  ~PortClaim();

  // Claims the interface a port spec names (afpacket:IFACE, pcap:IFACE,
  // dpdk:...,iface=IFACE); specs without an interface (mem:) claim nothing.
  static Result<PortClaim, ConfigError> claim(std::string_view port_spec);

  const std::string& name() const { return name_; }  // the abstract name, "" if none

 private:
  int fd_ = -1;
  std::string name_;
};

// The interface a port spec uses, or nullopt.
std::optional<std::string> interface_of(std::string_view port_spec);

}  // namespace hyperscsi::daemon

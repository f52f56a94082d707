// open_port(): the one place that knows every backend. Parses "KIND:REST",
// dispatches, and wraps the port in a pcap recorder when asked.
#include <string>

#include "hyperscsi/io/afpacket_port.h"
#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/io/pcap_port.h"
#include "hyperscsi/io/port.h"
#ifdef HYPERSCSI_WITH_DPDK
#include "hyperscsi/dpdk/dpdk_port.h"
#endif

namespace hyperscsi::io {
namespace {

constexpr std::string_view kValidKinds = "afpacket, pcap, mem, dpdk";

PortError bad_spec(std::string msg) {
  return {PortErrorKind::kBadSpec, std::move(msg)};
}

Result<std::unique_ptr<Port>, PortError> open_backend(std::string_view kind, std::string_view rest,
                                                      const PortOptions& options) {
  if (kind == "mem") return open_mem_port(rest, options);
  if (kind == "dpdk") {
#ifdef HYPERSCSI_WITH_DPDK
    return dpdk::open_dpdk_port(rest, options);
#else
    return Unexpected(PortError{PortErrorKind::kUnavailable,
                                "dpdk: this build has no DPDK backend (HYPERSCSI_WITH_DPDK=OFF)"});
#endif
  }
  if (kind == "afpacket") return open_afpacket_port(rest, options);
  if (kind == "pcap") return open_pcap_port(rest, options);
  return Unexpected(bad_spec("unknown port kind '" + std::string(kind) +
                             "' (valid: " + std::string(kValidKinds) + ")"));
}

}  // namespace

Result<std::unique_ptr<Port>, PortError> open_port(std::string_view spec,
                                                   const PortOptions& options) {
  const size_t colon = spec.find(':');
  if (colon == std::string_view::npos)
    return Unexpected(
        bad_spec("port spec '" + std::string(spec) +
                 "' has no kind (expected KIND:ARGS, kinds: " + std::string(kValidKinds) + ")"));
  const std::string_view kind = spec.substr(0, colon);
  const std::string_view rest = spec.substr(colon + 1);
  if (rest.empty() && (kind == "afpacket" || kind == "pcap"))
    return Unexpected(bad_spec("port spec '" + std::string(spec) + "' names no interface"));
  auto port = open_backend(kind, rest, options);
  if (!port || options.record_pcap.empty()) return port;
  return make_recording_port(std::move(port).value(), options.record_pcap);
}

}  // namespace hyperscsi::io

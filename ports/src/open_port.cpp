// open_port(): the one place that knows every backend. Parses "KIND:REST",
// dispatches, and wraps the port in a pcap recorder when asked.
#include "hyperscsi/ports/open_port.h"

#include <string>

#include "dpdk_module.h"
#include "hyperscsi/io/afpacket_port.h"
#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/io/pcap_port.h"

namespace hyperscsi::ports {
namespace {

using io::PortError;
using io::PortErrorKind;

constexpr std::string_view kValidKinds = "afpacket, pcap, mem, dpdk";

PortError bad_spec(std::string msg) {
  return {PortErrorKind::kBadSpec, std::move(msg)};
}

Result<std::unique_ptr<io::Port>, PortError> open_backend(std::string_view kind,
                                                          std::string_view rest,
                                                          const io::PortOptions& options) {
  if (kind == "mem") return io::open_mem_port(rest, options);
  if (kind == "dpdk") return open_dpdk_module_port(rest, options);
  if (kind == "afpacket") return io::open_afpacket_port(rest, options);
  if (kind == "pcap") return io::open_pcap_port(rest, options);
  return Unexpected(bad_spec("unknown port kind '" + std::string(kind) +
                             "' (valid: " + std::string(kValidKinds) + ")"));
}

}  // namespace

Result<std::unique_ptr<io::Port>, PortError> open_port(std::string_view spec,
                                                       const io::PortOptions& options) {
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
  return io::make_recording_port(std::move(port).value(), options.record_pcap);
}

}  // namespace hyperscsi::ports

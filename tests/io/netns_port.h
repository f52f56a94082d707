// Opening a real port inside one of a NetnsPair's namespaces, for the tests
// over veth pairs (the socket stays in that namespace whichever thread uses
// it later). A failure is a test failure naming the port, and null.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/netns.h"

namespace hyperscsi::io::test {

// `kind` ("afpacket", "pcap") on veth link `link`'s end in A (side_a) or B.
inline std::unique_ptr<Port> open_in(const test_support::NetnsPair& net, bool side_a,
                                     const std::string& kind, const PortOptions& opt = {},
                                     size_t link = 0) {
  const std::string spec = kind + ":" + (side_a ? net.iface_a(link) : net.iface_b(link));
  auto fn = [&]() -> std::unique_ptr<Port> {
    auto r = ports::open_port(spec, opt);
    if (!r.ok()) {
      ADD_FAILURE() << spec << ": " << r.error().message;
      return nullptr;
    }
    return std::move(r).value();
  };
  auto out = side_a ? net.run_in_a(fn) : net.run_in_b(fn);
  return out ? std::move(*out) : nullptr;
}

}  // namespace hyperscsi::io::test

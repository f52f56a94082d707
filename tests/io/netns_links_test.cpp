// The fixture of the multipath tests (test_support/netns.h): several veth
// pairs between the same two namespaces, each with its own MTU, that can be
// taken down and brought back or black-holed one at a time, the
// others carrying on. Real AF_PACKET ports on each end count what arrives.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/test_support/netns.h"
#include "netns_port.h"

namespace hyperscsi::io {
namespace {

using namespace std::chrono_literals;
using test_support::NetnsConfig;
using test_support::NetnsPair;
using PortPtr = std::unique_ptr<Port>;

PortPtr open_on(const NetnsPair& net, size_t link, bool side_a) {
  return test::open_in(net, side_a, "afpacket", PortOptions{}, link);
}

// Sends `n` HyperSCSI-typed frames of `size` bytes from `tx` to `rx` and
// returns how many `rx` received (waiting up to 150 ms after the last).
size_t carried(Port& tx, Port& rx, size_t n, size_t size) {
  std::vector<Packet> in(32);
  while (rx.rx_burst(in) > 0) {  // what an earlier round left
    for (Packet& p : in) p.reset();
  }
  const MacAddress dst = rx.mac();
  const MacAddress src = tx.mac();
  for (size_t i = 0; i < n; ++i) {
    Packet p = tx.alloc();
    if (!p || !p.resize(size)) return 0;
    std::fill(p.data(), p.data() + size, uint8_t{0});
    std::copy(dst.begin(), dst.end(), p.data());
    std::copy(src.begin(), src.end(), p.data() + 6);
    p.data()[12] = 0x88;
    p.data()[13] = 0x9A;
    const auto until = std::chrono::steady_clock::now() + 50ms;  // a link down refuses
    while (tx.tx_burst(std::span<Packet>(&p, 1)) == 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(1ms);
  }
  size_t got = 0;
  for (;;) {
    const size_t k = rx.rx_burst(in);
    for (size_t i = 0; i < k; ++i) {
      got += in[i].size() == size ? 1 : 0;
      in[i].reset();
    }
    if (k == 0 && !rx.wait_rx(150ms)) return got;
  }
}

TEST(NetnsLinks, TwoLinksEachWithItsMtuDownUpAndBlackholedOneAtATime) {
  if (!test_support::running_as_root()) GTEST_SKIP() << "needs root (network namespaces)";
  if (!NetnsPair::shell("command -v tc >/dev/null 2>&1")) GTEST_SKIP() << "no tc (iproute2)";
  NetnsPair net(NetnsConfig{.mtu = 1500, .extra_links = {9000}});
  ASSERT_TRUE(net.ok()) << net.error();
  ASSERT_EQ(net.links(), 2u);
  EXPECT_EQ(net.iface_a(0), net.iface_a());
  EXPECT_NE(net.iface_a(1), net.iface_a(0));
  EXPECT_LE(net.iface_a(1).size(), 15u);
  PortPtr a0 = open_on(net, 0, true), b0 = open_on(net, 0, false);
  PortPtr a1 = open_on(net, 1, true), b1 = open_on(net, 1, false);
  ASSERT_TRUE(a0 && b0 && a1 && b1);
  EXPECT_EQ(a0->mtu(), 1500u);
  EXPECT_EQ(b1->mtu(), 9000u);

  // Each link carries its own frames (a 9000-byte L3 frame on link 1 only).
  EXPECT_EQ(carried(*a0, *b0, 20, 1514), 20u);
  EXPECT_EQ(carried(*a1, *b1, 20, 9014), 20u);
  EXPECT_EQ(carried(*a1, *b0, 5, 100), 0u) << "the links are separate segments";

  // Link 1 down: it carries nothing, link 0 carries on; back up: it carries again.
  ASSERT_TRUE(net.set_link_up(1, false));
  EXPECT_EQ(carried(*a1, *b1, 3, 100), 0u);
  EXPECT_EQ(carried(*a0, *b0, 10, 100), 10u);
  ASSERT_TRUE(net.set_link_up(1, true));
  size_t back = 0;
  for (int i = 0; i < 20 && back == 0; ++i) back = carried(*a1, *b1, 1, 100);  // carrier delay
  EXPECT_EQ(back, 1u);
  EXPECT_EQ(carried(*a1, *b1, 10, 100), 10u);

  // A's end of link 1 black-holed (carrier up): A to B lost, B to A and
  // link 0 intact; lifted: carried again.
  ASSERT_TRUE(net.set_blackhole(1, true, true));
  EXPECT_EQ(carried(*a1, *b1, 10, 100), 0u);
  EXPECT_EQ(carried(*b1, *a1, 10, 100), 10u);
  EXPECT_EQ(carried(*a0, *b0, 10, 100), 10u);
  ASSERT_TRUE(net.set_blackhole(1, true, false));
  EXPECT_EQ(carried(*a1, *b1, 10, 100), 10u);
  EXPECT_FALSE(net.set_blackhole(2, true, true)) << "no link 2";
}

}  // namespace
}  // namespace hyperscsi::io

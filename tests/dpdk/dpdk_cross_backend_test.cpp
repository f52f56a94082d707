// Cross-backend interop: the DPDK port (net_af_packet vdev, in a dpdk_peer
// process) exchanges frames with the io AF_PACKET and libpcap ports over a
// veth pair; every port is opened through ports::open_port (the DPDK one
// through the run-time module hyperscsi-dpdk-port.so).
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/netns.h"
#include "lab.h"
#include "test_frames.h"

namespace hyperscsi::dpdk {
namespace {

using testing::Peer;
using testing::words;

struct Case {
  const char* kind;  // io backend on the other end
  size_t mtu;
  uint16_t vlan;
};

std::string mac_hex(const io::MacAddress& m) {
  char buf[13];
  std::snprintf(buf, sizeof buf, "%02x%02x%02x%02x%02x%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return buf;
}

class CrossBackend : public ::testing::TestWithParam<Case> {};

TEST_P(CrossBackend, FramesFlowBothWays) {
  if (!test_support::running_as_root())
    GTEST_SKIP() << "needs root (namespaces, raw sockets, DPDK EAL)";
  const Case c = GetParam();
  test_support::NetnsPair net({.mtu = c.mtu});
  ASSERT_TRUE(net.ok()) << net.error();

  io::PortOptions opts;
  opts.vlan_id = c.vlan;
  auto opened = net.run_in_b(
      [&] { return ports::open_port(std::string(c.kind) + ":" + net.iface_b(), opts); });
  ASSERT_TRUE(opened.has_value());
  ASSERT_TRUE(opened->ok()) << opened->error().message;
  std::unique_ptr<io::Port> other = std::move(opened->value());

  const std::string spec =
      "dpdk:--no-huge,--no-shconf,-m256,--no-pci,--no-telemetry,--lcores=0@0,"
      "--log-level=*:error,--file-prefix=" +
      testing::unique_name(std::string("x") + c.kind[0]) +
      ",--vdev=net_af_packet0,iface=" + net.iface_a() + ",framesz=12288,blocksz=12288";
  Peer peer(net.ns_a(), {spec, std::to_string(c.vlan), "2048"});
  const auto ready = words(peer.reply(30000));
  ASSERT_EQ(ready.size(), 4u);
  ASSERT_EQ(ready[0], "READY");
  const size_t big = c.mtu + 14;

  // DPDK -> io port: 50 small + 50 full-size, unicast to the io port.
  EXPECT_EQ(peer.command("send 50 60 32 " + mac_hex(other->mac()) + " 0 mbuf 889a"), "SENT 50");
  EXPECT_EQ(peer.command("send 50 " + std::to_string(big) + " 8 " + mac_hex(other->mac()) +
                         " 50 mbuf 889a"),
            "SENT 50");
  std::set<uint32_t> seqs;
  size_t bad = 0;
  std::vector<io::Packet> rx(32);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (seqs.size() < 100 && std::chrono::steady_clock::now() < deadline) {
    other->wait_rx(std::chrono::milliseconds(50));
    const size_t n = other->rx_burst(rx);
    for (size_t i = 0; i < n; ++i) {
      const int64_t seq = testing::check_frame(rx[i].bytes());
      if (seq < 0)
        ++bad;
      else
        seqs.insert(static_cast<uint32_t>(seq));
      rx[i].reset();
    }
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(seqs.size(), 100u);

  // io port -> DPDK: 100 frames of alternating sizes in bursts of 8.
  peer.send_line("recv 100 20000");
  usleep(200000);
  const uint8_t dst[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  uint64_t seqsum = 0;
  size_t sent = 0;
  const auto tx_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (sent < 100 && std::chrono::steady_clock::now() < tx_deadline) {
    std::vector<io::Packet> batch;
    for (size_t i = sent; i < sent + 8 && i < 100; ++i) {
      io::Packet p = other->alloc();
      ASSERT_TRUE(p);
      const size_t len = i % 2 == 0 ? 60 : big;
      ASSERT_TRUE(p.resize(len));
      testing::build_frame(p.data(), len, dst, other->mac().data(), 0x889A,
                           static_cast<uint32_t>(i));
      batch.push_back(std::move(p));
    }
    size_t done = 0;
    for (int tries = 0; done < batch.size() && tries < 1000; ++tries) {
      done += other->tx_burst(std::span(batch).subspan(done));
      if (done < batch.size()) usleep(100);
    }
    for (size_t i = sent; i < sent + done; ++i) seqsum += i;
    sent += done;
    usleep(500);  // a kernel backlog of 1000 frames is plenty at this pace
  }
  EXPECT_EQ(sent, 100u);
  const auto w = words(peer.reply(30000));
  ASSERT_EQ(w.size(), 6u);
  EXPECT_EQ(w[1], "100");
  EXPECT_EQ(w[2], "0");
  EXPECT_EQ(w[3], std::to_string(seqsum));
  EXPECT_EQ(w[5], std::to_string(big));
}

INSTANTIATE_TEST_SUITE_P(DpdkAgainst, CrossBackend,
                         ::testing::Values(Case{"afpacket", 1500, 0}, Case{"afpacket", 9000, 100},
                                           Case{"pcap", 1500, 100}, Case{"pcap", 9000, 0}),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return std::string(p.param.kind) + "_mtu" + std::to_string(p.param.mtu) +
                                  (p.param.vlan ? "_vlan" : "_untagged");
                         });

}  // namespace
}  // namespace hyperscsi::dpdk

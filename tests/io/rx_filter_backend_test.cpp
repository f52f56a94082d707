// The session receive filter on real sockets: several AF_PACKET or libpcap
// ports on one interface of a veth pair (as several sessions on one host),
// each narrowed to its own session, get exactly their session's frames plus
// discovery and login replies; a spy port left open gets everything, which
// shows the other frames were on the wire. Untagged and 802.1Q (software
// tags, moved into metadata by the receiving kernel). libpcap also re-runs
// the program itself over frames already in its ring when the filter
// changes: checked with frames queued before narrowing. An AF_PACKET port
// paused gets nothing until resumed (unless it is in a fanout group, which
// cannot pause).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/io/rx_filter.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/netns.h"
#include "netns_port.h"

namespace hyperscsi::io {
namespace {

using namespace std::chrono_literals;
using test_support::NetnsPair;
using test_support::running_as_root;
using PortPtr = std::unique_ptr<Port>;

constexpr uint32_t kS1 = 0x11110001;
constexpr uint32_t kS2 = 0x22220002;
constexpr uint32_t kS3 = 0x33330003;

PortPtr open_in(const NetnsPair& net, bool side_a, const std::string& kind, uint16_t vid,
                int fanout_group = -1) {
  PortOptions opt;
  opt.vlan_id = vid;
  opt.fanout_group = fanout_group;
  return test::open_in(net, side_a, kind, opt);
}

struct Sent {
  MacAddress src;
  uint8_t opcode;
  uint32_t session;
  uint16_t epoch;
  uint8_t flags;
};

// A 60-byte frame to `dst` carrying `s` in the fields the filter reads, and
// a serial number in the payload (header byte 40) to tell frames apart.
Packet make(Port& tx, const MacAddress& dst, const Sent& s, uint8_t serial) {
  Packet p = tx.alloc();
  EXPECT_TRUE(p && p.resize(60));
  uint8_t* f = p.data();
  std::fill(f, f + 60, 0);
  std::copy(dst.begin(), dst.end(), f);
  std::copy(s.src.begin(), s.src.end(), f + 6);
  f[12] = 0x88;
  f[13] = 0x9A;
  f[14 + 3] = 0x02;
  f[14 + 4] = s.opcode;
  f[14 + 5] = 35;
  f[14 + 6] = s.flags;
  for (int i = 0; i < 4; ++i) f[14 + 8 + i] = static_cast<uint8_t>(s.session >> (24 - 8 * i));
  f[14 + 12] = static_cast<uint8_t>(s.epoch >> 8);
  f[14 + 13] = static_cast<uint8_t>(s.epoch);
  f[14 + 40] = serial;
  return p;
}

void send_all(Port& tx, std::vector<Packet>& pkts) {
  size_t done = 0;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (done < pkts.size() && std::chrono::steady_clock::now() < until)
    done += tx.tx_burst(std::span<Packet>(pkts).subspan(done));
  ASSERT_EQ(done, pkts.size());
}

// Serial numbers of what `rx` delivers within `quiet` of the last frame.
std::vector<uint8_t> drain(Port& rx, std::chrono::milliseconds quiet = 200ms) {
  std::vector<uint8_t> got;
  std::vector<Packet> in(32);
  for (;;) {
    const size_t n = rx.rx_burst(in);
    for (size_t i = 0; i < n; ++i) {
      got.push_back(in[i].size() > 54 ? in[i].data()[54] : 0xff);
      in[i].reset();
    }
    if (n == 0 && !rx.wait_rx(quiet)) return got;
  }
}

struct Case {
  std::string kind;
  uint16_t vid;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.kind << " vlan " << c.vid;
}

// Two namespaces joined by a veth; the target's side sends through an
// AF_PACKET port, the receivers under test are of the case's kind and VLAN.
class RxFilterBackend : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!running_as_root()) GTEST_SKIP() << "needs root (network namespaces, raw sockets)";
    net = std::make_unique<NetnsPair>();
    ASSERT_TRUE(net->ok()) << net->error();
    tx = open_in(*net, true, "afpacket", c.vid);
    ASSERT_TRUE(tx);
  }
  PortPtr receiver() { return open_in(*net, false, c.kind, c.vid); }

  const Case c = GetParam();
  std::unique_ptr<NetnsPair> net;  // made after the root check; outlives the ports
  PortPtr tx;
};

TEST_P(RxFilterBackend, EachPortGetsOnlyItsSessionAndControlFrames) {
  PortPtr p1 = receiver();
  PortPtr p2 = receiver();
  PortPtr spy = receiver();
  ASSERT_TRUE(p1 && p2 && spy);
  const MacAddress peer = tx->mac();
  MacAddress other = peer;
  other[5] ^= 0x40;
  ASSERT_TRUE(p1->set_rx_filter(RxFilter::session(peer, kS1)).ok());
  ASSERT_TRUE(p2->set_rx_filter(RxFilter::session(peer, kS2)).ok());

  // serial -> which ports must see it
  const std::vector<std::pair<Sent, std::string>> plan = {
      {{peer, 0x01, kS1, 1, 0x01}, "1s"},   // S1 reply data
      {{peer, 0x21, kS1, 1, 0x01}, "1s"},   // S1 ack
      {{peer, 0x01, kS1, 2, 0x21}, "1s"},   // S1, new epoch, protected
      {{peer, 0x13, kS1, 1, 0x00}, "1s"},   // S1 disconnect
      {{peer, 0x01, kS2, 1, 0x01}, "2s"},   // S2
      {{peer, 0x21, kS2, 5, 0x21}, "2s"},   // S2
      {{other, 0x01, kS1, 1, 0x01}, "s"},   // S1's id from another target
      {{peer, 0x01, kS3, 1, 0x01}, "s"},    // a third session on this host
      {{peer, 0x10, 0, 0, 0x00}, "12s"},    // discovery reply
      {{other, 0x10, 0, 0, 0x00}, "12s"},   // announcement of another target
      {{peer, 0x12, kS3, 1, 0x10}, "12s"},  // someone's login reply
      {{peer, 0x12, 0, 0, 0x10}, "12s"},    // a refused login
      {{peer, 0x30, 0, 0, 0x00}, "s"},      // a discovery request
  };
  std::vector<Packet> pkts;
  for (int round = 0; round < 3; ++round)
    for (size_t i = 0; i < plan.size(); ++i)
      pkts.push_back(make(*tx, p1->mac(), plan[i].first,
                          static_cast<uint8_t>(round * 16 + static_cast<int>(i))));
  send_all(*tx, pkts);
  const auto want = [&](char who) {
    std::vector<uint8_t> out;
    for (int round = 0; round < 3; ++round)
      for (size_t i = 0; i < plan.size(); ++i)
        if (plan[i].second.find(who) != std::string::npos)
          out.push_back(static_cast<uint8_t>(round * 16 + static_cast<int>(i)));
    return out;
  };
  EXPECT_EQ(drain(*p1), want('1'));
  EXPECT_EQ(drain(*p2), want('2'));
  EXPECT_EQ(drain(*spy), want('s'));

  // Back to everything: p1 sees S2's frames again.
  ASSERT_TRUE(p1->set_rx_filter(RxFilter::all()).ok());
  std::vector<Packet> again;
  again.push_back(make(*tx, p1->mac(), plan[4].first, 99));
  send_all(*tx, again);
  EXPECT_EQ(drain(*p1), std::vector<uint8_t>{99});
}

// A multipath session's socket (docs/protocol.md 14.2): the frames of its
// session from every target port of its paths pass, from any other MAC not.
TEST_P(RxFilterBackend, MultipathSessionGetsItsFramesFromEveryTargetPort) {
  PortPtr rx = receiver();
  ASSERT_TRUE(rx);
  const MacAddress port1 = tx->mac();
  MacAddress port2 = port1;
  port2[4] ^= 0x01;
  MacAddress stranger = port1;
  stranger[5] ^= 0x40;
  const std::array<MacAddress, 2> ports{port1, port2};
  ASSERT_TRUE(rx->set_rx_filter(RxFilter::session(ports, kS1)).ok());
  const std::vector<Sent> plan = {
      {port1, 0x01, kS1, 1, 0x01},     // 0: path 0
      {port2, 0x01, kS1, 1, 0x01},     // 1: path 1 (another target port)
      {port2, 0x21, kS1, 2, 0x21},     // 2: its acks, protected, a new epoch
      {stranger, 0x01, kS1, 1, 0x01},  // 3: the session's id from a MAC not of its target
      {port2, 0x01, kS2, 1, 0x01},     // 4: another session from port 2
      {stranger, 0x12, kS3, 1, 0x10},  // 5: a login reply (always passes)
  };
  std::vector<Packet> pkts;
  for (size_t i = 0; i < plan.size(); ++i)
    pkts.push_back(make(*tx, rx->mac(), plan[i], static_cast<uint8_t>(i)));
  send_all(*tx, pkts);
  EXPECT_EQ(drain(*rx), (std::vector<uint8_t>{0, 1, 2, 5}));
}

// libpcap filters the frames already in its ring with the new program itself
// (kPcap flavor: its interpreter must agree with the kernel's): narrowing with
// frames queued keeps the session's and drops the others'.
TEST_P(RxFilterBackend, NarrowingWithFramesQueued) {
  PortPtr rx = receiver();
  ASSERT_TRUE(rx);
  const MacAddress peer = tx->mac();
  std::vector<Packet> pkts;
  for (uint8_t i = 0; i < 8; ++i)
    pkts.push_back(make(*tx, rx->mac(), {peer, 0x01, i % 2 ? kS2 : kS1, 1, 0x01}, i));
  send_all(*tx, pkts);
  std::this_thread::sleep_for(100ms);  // all queued before the filter changes
  ASSERT_TRUE(rx->set_rx_filter(RxFilter::session(peer, kS2)).ok());
  const std::vector<uint8_t> got = drain(*rx);
  if (c.kind == "pcap") {
    EXPECT_EQ(got, (std::vector<uint8_t>{1, 3, 5, 7})) << "libpcap re-filters its ring";
  } else {
    // AF_PACKET leaves queued frames as they are (the initiator checks them
    // again with rx_filter_matches): all of S2's must be there.
    std::vector<uint8_t> s2;
    for (uint8_t s : got)
      if (s % 2 == 1) s2.push_back(s);
    EXPECT_EQ(s2, (std::vector<uint8_t>{1, 3, 5, 7}));
  }
}

// A paused port gets nothing (frames sent meanwhile are gone, not queued)
// and receives again once resumed; libpcap cannot pause and says so.
TEST_P(RxFilterBackend, PausedPortReceivesNothingUntilResumed) {
  PortPtr rx = receiver();
  ASSERT_TRUE(rx);
  const MacAddress peer = tx->mac();
  ASSERT_TRUE(rx->set_rx_filter(RxFilter::session(peer, kS1)).ok());
  const auto burst = [&](uint8_t first) {
    std::vector<Packet> pkts;
    for (uint8_t i = 0; i < 4; ++i)
      pkts.push_back(make(*tx, rx->mac(), {peer, 0x01, kS1, 1, 0x01}, first + i));
    send_all(*tx, pkts);
  };
  const auto t0 = std::chrono::steady_clock::now();
  const auto paused = rx->set_rx_paused(true);
  const auto t1 = std::chrono::steady_clock::now();
  if (c.kind == "pcap") {
    ASSERT_FALSE(paused.ok());
    EXPECT_EQ(paused.error().kind, PortErrorKind::kUnavailable);
    burst(10);
    EXPECT_EQ(drain(*rx), (std::vector<uint8_t>{10, 11, 12, 13}));
    return;
  }
  ASSERT_TRUE(paused.ok()) << paused.error().message;
  burst(10);
  EXPECT_EQ(drain(*rx, 100ms), std::vector<uint8_t>{}) << "a paused port received frames";
  const auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(rx->set_rx_paused(false).ok());
  const auto t3 = std::chrono::steady_clock::now();
  burst(20);
  EXPECT_EQ(drain(*rx), (std::vector<uint8_t>{20, 21, 22, 23}));
  using us = std::chrono::microseconds;
  std::printf("figures: pause took %lld us, resume %lld us\n",
              static_cast<long long>(std::chrono::duration_cast<us>(t1 - t0).count()),
              static_cast<long long>(std::chrono::duration_cast<us>(t3 - t2).count()));
}

// The kernel cannot rebind a socket in a PACKET_FANOUT group: such a port
// says it cannot pause (so the initiator stops asking) and keeps receiving.
TEST(RxFilterBackendFanout, PortInAFanoutGroupCannotPauseAndKeepsReceiving) {
  if (!running_as_root()) GTEST_SKIP() << "needs root (network namespaces, raw sockets)";
  NetnsPair net;
  ASSERT_TRUE(net.ok()) << net.error();
  PortPtr tx = open_in(net, true, "afpacket", 0);
  PortPtr rx = open_in(net, false, "afpacket", 0, 4242);
  ASSERT_TRUE(tx && rx);
  const MacAddress peer = tx->mac();
  ASSERT_TRUE(rx->set_rx_filter(RxFilter::session(peer, kS1)).ok());
  const auto paused = rx->set_rx_paused(true);
  ASSERT_FALSE(paused.ok());
  EXPECT_EQ(paused.error().kind, PortErrorKind::kUnavailable);
  std::vector<Packet> pkts;
  for (uint8_t i = 0; i < 4; ++i)
    pkts.push_back(make(*tx, rx->mac(), {peer, 0x01, kS1, 1, 0x01}, 30 + i));
  send_all(*tx, pkts);
  EXPECT_EQ(drain(*rx), (std::vector<uint8_t>{30, 31, 32, 33}));
}

INSTANTIATE_TEST_SUITE_P(Kinds, RxFilterBackend,
                         ::testing::Values(Case{"afpacket", 0}, Case{"afpacket", 7},
                                           Case{"pcap", 0}, Case{"pcap", 7}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return i.param.kind + (i.param.vid ? "_vlan" : "_untagged");
                         });

}  // namespace
}  // namespace hyperscsi::io

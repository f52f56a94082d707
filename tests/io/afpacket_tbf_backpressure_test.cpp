// The AF_PACKET port's back-pressure behind tbf, over a veth pair between two
// namespaces the test creates (issue 20): a qdisc that refuses frames
// (ENOBUFS) leaves them with the caller, and the sender's retries deliver
// every frame once and intact. (Written for a TX ring experiment that was
// not adopted, branch txring-experiment; kept for the sendmmsg path.)
#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/netns.h"
#include "netns_port.h"
#include "test_frames.h"

namespace hyperscsi::io {
namespace {

using namespace std::chrono_literals;
using test::open_in;
using test_support::NetnsConfig;
using test_support::NetnsPair;
using test_support::running_as_root;
using testing::fill_frame;
using testing::frame_intact;
using testing::frame_seq;

#define SKIP_UNLESS_ROOT() \
  if (!running_as_root()) GTEST_SKIP() << "needs root (network namespaces, raw sockets)"

using PortPtr = std::unique_ptr<Port>;

bool tc(const NetnsPair& net, const std::string& args) {
  return NetnsPair::shell("ip netns exec " + net.ns_a() + " tc qdisc " + args + " >/dev/null");
}

// What a sender saw while pushing `count` frames through tx_burst.
struct SendLog {
  std::vector<uint32_t> got;  // sequence numbers received, in order
  size_t bad = 0;             // frames received corrupted or of the wrong size
  size_t socket_full = 0;     // bursts cut short with kSocketFull
  size_t queue_full = 0;      // ... with kQueueFull
  size_t writable_waits = 0;  // kSocketFull waits that ended with POLLOUT
};

// Sends frames 0..count-1 of `size` bytes from `tx` to `rx` in bursts of 32,
// the first `tail_bytes` of each frame's payload as a tail (gather), and
// waits as a real sender would when tx_burst stops short: for POLLOUT on
// kSocketFull, a pause on kQueueFull. Bounded by a deadline.
SendLog send_all(Port& tx, Port& rx, uint32_t count, size_t size, size_t tail_bytes,
                 std::chrono::seconds limit) {
  SendLog log;
  std::vector<Packet> in(64), pending;
  uint32_t next = 0;
  auto receive = [&] {
    const size_t n = rx.rx_burst(in);
    for (size_t i = 0; i < n; ++i) {
      if (!frame_intact(in[i]) || in[i].size() != size) ++log.bad;
      log.got.push_back(frame_seq(in[i]));
      in[i].reset();
    }
    return n;
  };
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline &&
         (next < count || !pending.empty() || log.got.size() < count)) {
    while (pending.size() < 32 && next < count) {
      Packet p = tx.alloc();
      if (!p) break;
      EXPECT_TRUE(fill_frame(p, rx.mac(), tx.mac(), next++, size));
      if (tail_bytes > 0) {
        // The frame's last tail_bytes go by reference, as a Connection's payload does.
        auto tail =
            std::make_shared<std::vector<uint8_t>>(p.data() + size - tail_bytes, p.data() + size);
        p.resize(size - tail_bytes);
        p.set_tail(*tail, tail);
      }
      pending.push_back(std::move(p));
    }
    const size_t offered = pending.size();
    const size_t n = offered > 0 ? tx.tx_burst(pending) : 0;
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(n));
    if (n < offered) {
      if (tx.tx_blocked() == TxBlock::kSocketFull) {
        ++log.socket_full;
        pollfd pfd{tx.fd(), POLLOUT, 0};
        if (::poll(&pfd, 1, 200) == 1 && (pfd.revents & POLLOUT) != 0) ++log.writable_waits;
      } else {
        ++log.queue_full;
        rx.wait_rx(1ms);
      }
    }
    if (receive() == 0 && next >= count && pending.empty()) rx.wait_rx(20ms);
  }
  rx.wait_rx(50ms);  // a duplicate would show up now
  receive();
  return log;
}

// Every frame 0..count-1 arrived exactly once and intact. Not in order:
// behind tbf that is not the port's to keep (tbf's watchdog may dequeue on
// the other CPU, whose backlog the veth peer drains apart from the sender's).
void expect_each_once(const SendLog& log, uint32_t count) {
  EXPECT_EQ(log.bad, 0u);
  std::vector<uint32_t> sorted = log.got;
  std::sort(sorted.begin(), sorted.end());
  std::vector<uint32_t> want(count);
  for (uint32_t i = 0; i < count; ++i) want[i] = i;
  EXPECT_TRUE(sorted == want) << "lost or duplicated frames: " << log.got.size() << " of " << count
                              << " received";
}

// A tbf with a tiny queue drops what it cannot hold (the kernel answers
// ENOBUFS): the port hands those frames back (kQueueFull), and the
// sender's retries deliver every frame once and intact.
TEST(AfPacketTxRefused, RefusedFramesStayWithTheCaller) {
  SKIP_UNLESS_ROOT();
  if (!NetnsPair::shell("command -v tc >/dev/null 2>&1")) GTEST_SKIP() << "no tc (iproute2)";
  NetnsPair net{NetnsConfig{}};
  ASSERT_TRUE(net.ok()) << net.error();
  ASSERT_TRUE(tc(net, "add dev " + net.iface_a() + " root tbf rate 20mbit burst 8kb limit 6000"));
  PortPtr a = open_in(net, true, "afpacket");
  PortPtr b = open_in(net, false, "afpacket");
  ASSERT_TRUE(a && b);
  constexpr uint32_t kFrames = 1000;  // 1 MB: about 0.4 s at 20 Mbit/s
  const SendLog log = send_all(*a, *b, kFrames, 1000, 300, 20s);
  expect_each_once(log, kFrames);
  EXPECT_GT(log.queue_full, 0u) << "tbf's 6000-byte queue never refused a frame";
  EXPECT_EQ(a->counters().tx_frames, kFrames);
  EXPECT_EQ(a->counters().tx_errors, 0u);
}

}  // namespace
}  // namespace hyperscsi::io

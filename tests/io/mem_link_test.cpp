#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "hyperscsi/io/mem_link.h"
#include "test_frames.h"

namespace hyperscsi::io {
namespace {

using namespace std::chrono_literals;
using testing::fill_frame;
using testing::frame_intact;
using testing::frame_seq;

// A virtual clock the test advances by hand.
struct VirtualClock {
  std::shared_ptr<std::atomic<int64_t>> ns = std::make_shared<std::atomic<int64_t>>(1'000'000);
  std::function<proto::TimePoint()> fn() const {
    auto p = ns;
    return [p] { return proto::TimePoint(std::chrono::nanoseconds(p->load())); };
  }
  void advance(std::chrono::nanoseconds d) { ns->fetch_add(d.count()); }
};

MemLink make(MemLinkConfig cfg = {}) {
  auto link = make_mem_link(cfg);
  EXPECT_TRUE(link.ok()) << (link.ok() ? "" : link.error().message);
  return std::move(link).value();
}

// Sends frames [first, first+count) of `size` bytes from `from` to `to`.
size_t send(Port& from, const Port& to, uint32_t first, uint32_t count, size_t size = 100) {
  size_t sent = 0;
  std::vector<Packet> batch;
  for (uint32_t i = 0; i < count; ++i) {
    Packet p = from.alloc();
    if (!p || !fill_frame(p, to.mac(), from.mac(), first + i, size)) break;
    batch.push_back(std::move(p));
  }
  sent = from.tx_burst(batch);
  return sent;
}

std::vector<Packet> drain(Port& port, size_t max = 1u << 20) {
  std::vector<Packet> got;
  std::vector<Packet> buf(32);
  while (got.size() < max) {
    const size_t n = port.rx_burst(buf);
    if (n == 0) break;
    for (size_t i = 0; i < n; ++i) got.push_back(std::move(buf[i]));
  }
  return got;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

TEST(MemLink, DeliversBothWaysWithDistinctLocalMacs) {
  MemLink link = make();
  EXPECT_NE(link.a->mac(), link.b->mac());
  EXPECT_EQ(link.a->mac()[0] & 0x03, 0x02);  // locally administered, unicast
  EXPECT_EQ(link.a->mtu(), 1500u);
  EXPECT_FALSE(link.a->poll_mode());
  EXPECT_FALSE(readable(link.b->fd()));
  EXPECT_EQ(send(*link.a, *link.b, 0, 10), 10u);
  EXPECT_TRUE(readable(link.b->fd()));
  EXPECT_TRUE(link.b->wait_rx(0us));
  auto got = drain(*link.b);
  ASSERT_EQ(got.size(), 10u);
  for (uint32_t i = 0; i < 10; ++i) {
    EXPECT_EQ(frame_seq(got[i]), i);
    EXPECT_TRUE(frame_intact(got[i]));
  }
  EXPECT_FALSE(readable(link.b->fd()));
  EXPECT_EQ(send(*link.b, *link.a, 100, 3), 3u);
  EXPECT_EQ(drain(*link.a).size(), 3u);
  const PortCounters ca = link.a->counters();
  EXPECT_EQ(ca.tx_frames, 10u);
  EXPECT_EQ(ca.tx_bytes, 1000u);
  EXPECT_EQ(ca.rx_frames, 3u);
  EXPECT_EQ(link.b->counters().rx_bytes, 1000u);
}

TEST(MemLink, FullSizeJumboFramesPassAndOversizeFramesAreDroppedAndCounted) {
  MemLinkConfig cfg;
  cfg.mtu_a = 9000;
  cfg.mtu_b = 1500;
  MemLink link = make(cfg);
  EXPECT_EQ(send(*link.a, *link.b, 0, 1, 1514), 1u);  // fits B
  EXPECT_EQ(send(*link.a, *link.b, 1, 1, 9014), 1u);  // MTU mismatch: dropped
  EXPECT_EQ(send(*link.b, *link.a, 2, 1, 1514), 1u);
  auto got = drain(*link.b);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].size(), 1514u);
  EXPECT_EQ(link.a->tx_link_stats().mtu_drops, 1u);
  cfg.mtu_b = 9000;
  MemLink jumbo = make(cfg);
  EXPECT_EQ(send(*jumbo.a, *jumbo.b, 0, 4, 9014), 4u);
  got = drain(*jumbo.b);
  ASSERT_EQ(got.size(), 4u);
  for (auto& p : got) EXPECT_TRUE(frame_intact(p));
}

TEST(MemLink, FiltersOtherEtherTypes) {
  MemLink link = make();
  Packet p = link.a->alloc();
  ASSERT_TRUE(fill_frame(p, link.b->mac(), link.a->mac(), 1, 100, 0x0800));
  std::vector<Packet> v;
  v.push_back(std::move(p));
  EXPECT_EQ(link.a->tx_burst(v), 1u);
  EXPECT_TRUE(drain(*link.b).empty());
  EXPECT_EQ(link.a->tx_link_stats().filtered, 1u);
}

TEST(MemLink, LossIsSeededAndWithinBounds) {
  MemLinkConfig cfg;
  cfg.a_to_b.loss = 0.2;
  cfg.seed = 7;
  auto run = [&] {
    MemLink link = make(cfg);
    std::vector<uint32_t> seqs;
    for (uint32_t i = 0; i < 10000; i += 100) {
      send(*link.a, *link.b, i, 100);
      for (auto& p : drain(*link.b)) seqs.push_back(frame_seq(p));
    }
    EXPECT_EQ(link.a->tx_link_stats().lost + seqs.size(), 10000u);
    return seqs;
  };
  auto first = run();
  EXPECT_GT(first.size(), 7500u);
  EXPECT_LT(first.size(), 8500u);
  EXPECT_TRUE(std::is_sorted(first.begin(), first.end()));
  EXPECT_EQ(first, run());  // same seed, same losses
  cfg.seed = 8;
  EXPECT_NE(first, run());
}

TEST(MemLink, DuplicationDeliversExtraCopies) {
  MemLinkConfig cfg;
  cfg.a_to_b.duplicate = 0.1;
  MemLink link = make(cfg);
  size_t got = 0, dups = 0;
  uint32_t last = UINT32_MAX;
  for (uint32_t i = 0; i < 5000; i += 50) {
    send(*link.a, *link.b, i, 50);
    for (auto& p : drain(*link.b)) {
      ++got;
      EXPECT_TRUE(frame_intact(p));
      if (frame_seq(p) == last) ++dups;
      last = frame_seq(p);
    }
  }
  const auto st = link.a->tx_link_stats();
  EXPECT_EQ(got, 5000u + st.duplicated);
  EXPECT_EQ(dups, st.duplicated);
  EXPECT_GT(st.duplicated, 300u);
  EXPECT_LT(st.duplicated, 700u);
}

TEST(MemLink, ReorderHoldsFramesBackButLosesNone) {
  MemLinkConfig cfg;
  cfg.a_to_b.reorder = 0.1;
  cfg.a_to_b.reorder_gap = 3;
  cfg.a_to_b.reorder_timeout = 1h;  // only the gap releases frames here
  MemLink link = make(cfg);
  std::vector<uint32_t> seqs;
  for (uint32_t i = 0; i < 5000; i += 50) {
    send(*link.a, *link.b, i, 50);
    for (auto& p : drain(*link.b)) seqs.push_back(frame_seq(p));
  }
  // Flush whatever is still held: a few more frames push it out.
  send(*link.a, *link.b, 100000, 10);
  for (auto& p : drain(*link.b)) seqs.push_back(frame_seq(p));
  size_t inversions = 0;
  for (size_t i = 1; i < seqs.size(); ++i) inversions += seqs[i] < seqs[i - 1];
  const auto st = link.a->tx_link_stats();
  EXPECT_GT(st.reordered, 300u);
  EXPECT_LT(st.reordered, 700u);
  EXPECT_GT(inversions, 200u);
  std::set<uint32_t> unique(seqs.begin(), seqs.end());
  for (uint32_t i = 0; i < 5000; ++i) EXPECT_TRUE(unique.count(i)) << i;
}

TEST(MemLink, ReorderTimeoutReleasesAHeldFrame) {
  VirtualClock clk;
  MemLinkConfig cfg;
  cfg.clock = clk.fn();
  cfg.a_to_b.reorder = 1.0;
  cfg.a_to_b.reorder_gap = 100;
  cfg.a_to_b.reorder_timeout = 5ms;
  MemLink link = make(cfg);
  send(*link.a, *link.b, 1, 1);
  EXPECT_TRUE(drain(*link.b).empty());
  EXPECT_TRUE(readable(link.b->fd()));  // something is in flight
  clk.advance(4ms);
  EXPECT_TRUE(drain(*link.b).empty());
  clk.advance(2ms);
  EXPECT_EQ(drain(*link.b).size(), 1u);
}

TEST(MemLink, DelayAndJitterFollowTheVirtualClock) {
  VirtualClock clk;
  MemLinkConfig cfg;
  cfg.clock = clk.fn();
  cfg.a_to_b.delay = 100us;
  cfg.a_to_b.jitter = 50us;
  MemLink link = make(cfg);
  send(*link.a, *link.b, 0, 20);
  EXPECT_TRUE(drain(*link.b).empty());
  clk.advance(99us);
  EXPECT_TRUE(drain(*link.b).empty());
  clk.advance(52us);  // past delay + max jitter
  auto got = drain(*link.b);
  ASSERT_EQ(got.size(), 20u);
  for (uint32_t i = 0; i < 20; ++i) EXPECT_EQ(frame_seq(got[i]), i);  // jitter keeps FIFO
}

TEST(MemLink, WaitRxSleepsUntilADelayedFrameIsDueOnTheRealClock) {
  MemLinkConfig cfg;
  cfg.a_to_b.delay = 3ms;
  MemLink link = make(cfg);
  EXPECT_FALSE(link.b->wait_rx(1ms));  // nothing in flight: times out
  send(*link.a, *link.b, 7, 1);
  std::vector<Packet> got;
  for (int i = 0; i < 1000 && got.empty(); ++i) {
    link.b->wait_rx(100ms);
    got = drain(*link.b);
  }
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(frame_seq(got[0]), 7u);
}

TEST(MemLink, WaitRxDoesNotSleepOnAVirtualClock) {
  VirtualClock clk;
  MemLinkConfig cfg;
  cfg.clock = clk.fn();
  cfg.a_to_b.delay = 1h;
  MemLink link = make(cfg);
  send(*link.a, *link.b, 1, 1);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(link.b->wait_rx(10s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  clk.advance(1h);
  EXPECT_TRUE(link.b->wait_rx(0us));
  EXPECT_EQ(drain(*link.b).size(), 1u);
}

TEST(MemLink, RateLimitSerializesFrames) {
  VirtualClock clk;
  MemLinkConfig cfg;
  cfg.clock = clk.fn();
  cfg.a_to_b.rate_bps = 1'000'000'000;  // 1 Gbit/s: 1000 bytes take 8 us
  MemLink link = make(cfg);
  send(*link.a, *link.b, 0, 10, 1000);
  clk.advance(8us);
  EXPECT_EQ(drain(*link.b).size(), 1u);
  clk.advance(40us);
  EXPECT_EQ(drain(*link.b).size(), 5u);
  clk.advance(1ms);
  EXPECT_EQ(drain(*link.b).size(), 4u);
}

TEST(MemLink, CorruptionFlipsExactlyOneBit) {
  MemLinkConfig cfg;
  cfg.a_to_b.corrupt = 0.5;
  MemLink link = make(cfg);
  send(*link.a, *link.b, 0, 400, 200);
  size_t damaged = 0;
  auto got = drain(*link.b);
  ASSERT_EQ(got.size(), 400u);
  for (auto& p : got) damaged += frame_intact(p) ? 0 : 1;
  const auto st = link.a->tx_link_stats();
  EXPECT_GT(st.corrupted, 140u);
  EXPECT_LT(st.corrupted, 260u);
  // A flipped bit lands in the checked region (bytes 12..13 and 23..199)
  // most of the time, never more often than it happened.
  EXPECT_LE(damaged, st.corrupted);
  EXPECT_GT(damaged, st.corrupted / 2);
  // Exactly one bit: compare each frame with its pristine copy.
  for (uint32_t i = 0; i < got.size(); ++i) {
    Packet ref = link.a->alloc();
    ASSERT_TRUE(fill_frame(ref, link.b->mac(), link.a->mac(), i, 200));
    int bits = 0;
    for (size_t j = 0; j < 200; ++j) bits += __builtin_popcount(ref.data()[j] ^ got[i].data()[j]);
    EXPECT_LE(bits, 1) << "frame " << i;
  }
}

TEST(MemLink, QueueLimitDropsAndCounts) {
  MemLinkConfig cfg;
  cfg.a_to_b.queue_limit = 16;
  MemLink link = make(cfg);
  EXPECT_EQ(send(*link.a, *link.b, 0, 40), 40u);
  EXPECT_EQ(link.a->tx_link_stats().queue_drops, 24u);
  EXPECT_EQ(drain(*link.b).size(), 16u);
}

TEST(MemLink, TwoThreadsExchange100kFrames) {
  MemLink link = make();
  constexpr uint32_t kFrames = 100000;
  auto worker = [&](Port& me, const Port& peer, std::atomic<uint32_t>& received_out) {
    uint32_t next_tx = 0, expected_rx = 0;
    bool in_order = true;
    std::vector<Packet> buf(32);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while ((next_tx < kFrames || expected_rx < kFrames) &&
           std::chrono::steady_clock::now() < deadline) {
      if (next_tx < kFrames) {
        std::vector<Packet> batch;
        for (uint32_t i = 0; i < 32 && next_tx + i < kFrames; ++i) {
          Packet p = me.alloc();
          if (!p) break;
          fill_frame(p, peer.mac(), me.mac(), next_tx + i, 64);
          batch.push_back(std::move(p));
        }
        next_tx += static_cast<uint32_t>(me.tx_burst(batch));
      }
      const size_t n = me.rx_burst(buf);
      for (size_t i = 0; i < n; ++i) {
        in_order &= frame_seq(buf[i]) == expected_rx;
        ++expected_rx;
        buf[i].reset();
      }
      if (n == 0 && next_tx >= kFrames) me.wait_rx(1ms);
    }
    received_out = in_order ? expected_rx : 0;
  };
  std::atomic<uint32_t> got_a{0}, got_b{0};
  std::thread ta([&] { worker(*link.a, *link.b, got_a); });
  std::thread tb([&] { worker(*link.b, *link.a, got_b); });
  ta.join();
  tb.join();
  EXPECT_EQ(got_a.load(), kFrames);
  EXPECT_EQ(got_b.load(), kFrames);
}

TEST(MemLink, RegistryPairsTwoOpensAndForgetsTheNameAfterwards) {
  const size_t before = mem_registry_size();
  auto a = open_mem_port("reg1?loss=0,seed=3,mtu=9000", {});
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto b = open_mem_port("reg1", {});
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ((*a)->mtu(), 9000u);
  EXPECT_EQ((*b)->mtu(), 9000u);
  EXPECT_EQ((*a)->spec(), "mem:reg1?loss=0,seed=3,mtu=9000");
  auto c = open_mem_port("reg1", {});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().kind, PortErrorKind::kBadArgument);
  EXPECT_NE(c.error().message.find("reg1"), std::string::npos);
  EXPECT_EQ(send(**a, **b, 0, 5, 9014), 5u);
  EXPECT_EQ(drain(**b).size(), 5u);
  EXPECT_EQ(mem_registry_size(), before + 1);
  a->reset();
  b->reset();
  EXPECT_EQ(mem_registry_size(), before);
  auto again = open_mem_port("reg1", {});
  EXPECT_TRUE(again.ok());
}

TEST(MemLink, BadQueryOptionsAreNamed) {
  const size_t before = mem_registry_size();
  auto r = open_mem_port("q?loss=2", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, PortErrorKind::kBadArgument);
  EXPECT_NE(r.error().message.find("loss"), std::string::npos);
  r = open_mem_port("q?bogus=1", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("bogus"), std::string::npos);
  r = open_mem_port("q?mtu=10", {});
  ASSERT_FALSE(r.ok());
  r = open_mem_port("?mtu=1500", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, PortErrorKind::kBadSpec);
  EXPECT_EQ(mem_registry_size(), before);
}

}  // namespace
}  // namespace hyperscsi::io

// PortSink's pacing against the in-memory link: what flush() hands to the
// port is bounded by the pacing credit, and the credit is spent by what the
// port took (issue 20: it was debited by the sizes of the handles after the
// port had emptied them, i.e. by nothing, so every flush sent a full burst and
// a shaped link's tbf queued the excess at a timer per frame).
// The rates are small enough that the microseconds between calls earn no
// measurable credit, so the counts are exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/io/port_sink.h"

namespace hyperscsi::io {
namespace {

constexpr size_t kFrame = 1000;

MemLink make() {
  auto link = make_mem_link({});
  EXPECT_TRUE(link.ok()) << (link.ok() ? "" : link.error().message);
  return std::move(link).value();
}

// Queues `count` frames of kFrame bytes in `sink`.
void queue_frames(PortSink& sink, const Port& to, const Port& from, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    std::span<uint8_t> room = sink.acquire(kFrame);
    ASSERT_EQ(room.size(), kFrame);
    std::memset(room.data(), 0, room.size());
    std::memcpy(room.data(), to.mac().data(), 6);
    std::memcpy(room.data() + 6, from.mac().data(), 6);
    room[12] = 0x88;
    room[13] = 0x9a;
    sink.commit(kFrame);
  }
}

size_t received(Port& port) {
  size_t got = 0;
  std::vector<Packet> buf(64);
  for (size_t n; (n = port.rx_burst(buf)) > 0;) got += n;
  return got;
}

TEST(PortSinkPacing, AFlushSendsAtMostTheBurstAndSpendsTheCredit) {
  MemLink link = make();
  PortSink sink(*link.a, 256);
  sink.set_pacing(/*bytes_per_second=*/1000, /*burst_bytes=*/5 * kFrame);
  queue_frames(sink, *link.b, *link.a, 12);
  EXPECT_EQ(sink.flush(), 5u) << "the first flush sends one burst";
  EXPECT_EQ(sink.pending(), 7u);
  EXPECT_TRUE(sink.paced()) << "the rest waits for the pacing clock";
  // The burst's credit is spent: a flush right after sends nothing more.
  EXPECT_EQ(sink.flush(), 0u);
  EXPECT_EQ(sink.flush(), 0u);
  EXPECT_EQ(sink.pending(), 7u);
  EXPECT_EQ(received(*link.b), 5u);
  // Half a burst (2.5 frames at 1000 B/s) is due in about 2.5 s.
  const auto wait = sink.release_time() - proto::Clock::now();
  EXPECT_GT(wait, std::chrono::milliseconds(2000));
  EXPECT_LE(wait, std::chrono::milliseconds(2600));
}

// release_covered(): the frames waiting for the pacing clock fill the next
// release on their own, so a sender may sleep until release_time() without
// watching for submissions or completions (issue 20).
TEST(PortSinkPacing, ReleaseIsCoveredOnlyWhileTheWaitingFramesFillIt) {
  MemLink link = make();
  PortSink sink(*link.a, 256);
  sink.set_pacing(/*bytes_per_second=*/1000, /*burst_bytes=*/5 * kFrame);
  queue_frames(sink, *link.b, *link.a, 6);
  EXPECT_EQ(sink.flush(), 5u);
  ASSERT_TRUE(sink.paced());
  EXPECT_FALSE(sink.release_covered()) << "one frame waits, the release is half a burst (2.5)";
  queue_frames(sink, *link.b, *link.a, 1);
  EXPECT_FALSE(sink.release_covered()) << "two frames: still short of 2.5";
  queue_frames(sink, *link.b, *link.a, 1);
  EXPECT_TRUE(sink.release_covered()) << "three frames fill the release";
  EXPECT_EQ(received(*link.b), 5u);
}

TEST(PortSinkPacing, UnpacedSinkSendsEverything) {
  MemLink link = make();
  PortSink sink(*link.a, 256);
  queue_frames(sink, *link.b, *link.a, 12);
  EXPECT_EQ(sink.flush(), 12u);
  EXPECT_FALSE(sink.paced());
  EXPECT_EQ(sink.release_time(), proto::kNever);
  EXPECT_FALSE(sink.release_covered());
  EXPECT_EQ(received(*link.b), 12u);
}

// A port whose shaper the test sets, as AfPacketPort reports a tbf installed,
// changed or removed after it opened.
class RatePort final : public Port {
 public:
  explicit RatePort(Port& inner) : inner_(inner) {}
  std::string_view spec() const override { return inner_.spec(); }
  MacAddress mac() const override { return inner_.mac(); }
  size_t mtu() const override { return inner_.mtu(); }
  PortCounters counters() const override { return inner_.counters(); }
  int fd() const override { return inner_.fd(); }
  Packet alloc() override { return inner_.alloc(); }
  size_t rx_burst(std::span<Packet> out) override { return inner_.rx_burst(out); }
  size_t tx_burst(std::span<Packet> pkts) override { return inner_.tx_burst(pkts); }
  uint64_t tx_rate() const override { return rate; }
  uint64_t tx_bucket() const override { return bucket; }
  uint64_t rate = 0;
  uint64_t bucket = 0;

 private:
  Port& inner_;
};

// pace_at_port_rate() follows the port: a shaper that appears after the
// start paces the next flush, one removed unpaces it (issue 20: a daemon
// started before tbf never paced).
TEST(PortSinkPacing, FollowsThePortsRateWhenItChangesAfterTheStart) {
  MemLink link = make();
  RatePort port(*link.a);
  PortSink sink(port, 256);
  sink.pace_at_port_rate();  // no shaper yet
  queue_frames(sink, *link.b, *link.a, 12);
  EXPECT_EQ(sink.flush(), 12u);
  EXPECT_FALSE(sink.paced());

  // Bytes per second; the burst is then two frames of the MTU (1500 + 14):
  // three of these.
  port.rate = 1000;
  port.bucket = 8 * kFrame;
  queue_frames(sink, *link.b, *link.a, 12);
  EXPECT_EQ(sink.flush(), 3u) << "a shaper installed later paces the next flush";
  EXPECT_TRUE(sink.paced());

  port.rate = 0;  // removed
  port.bucket = 0;
  EXPECT_EQ(sink.flush(), 9u) << "a shaper removed stops the pacing";
  EXPECT_FALSE(sink.paced());

  sink.set_pacing(1000, 2 * kFrame);  // explicit pacing: no longer follows the port
  queue_frames(sink, *link.b, *link.a, 4);
  EXPECT_EQ(sink.flush(), 2u);
  EXPECT_TRUE(sink.paced());
  EXPECT_EQ(received(*link.b), 26u);
}

// ---------------------------------------------------------------------------
// Gather (issue 20): a frame given as headers plus a payload by reference.

// A port that gathers, over the in-memory link: it joins header and tail as
// a kernel would when it copies the two iovecs, and may refuse to send.
class GatherPort final : public Port {
 public:
  explicit GatherPort(Port& inner) : inner_(inner) {}
  std::string_view spec() const override { return inner_.spec(); }
  MacAddress mac() const override { return inner_.mac(); }
  size_t mtu() const override { return inner_.mtu(); }
  PortCounters counters() const override { return inner_.counters(); }
  int fd() const override { return inner_.fd(); }
  Packet alloc() override { return inner_.alloc(); }
  size_t rx_burst(std::span<Packet> out) override { return inner_.rx_burst(out); }
  bool tx_gather() const override { return true; }
  size_t tx_burst(std::span<Packet> pkts) override {
    if (refuse) return 0;
    for (Packet& p : pkts) {
      if (!p.tail().empty()) ++tails_seen;
      const size_t head = p.size();
      const std::span<const uint8_t> tail = p.tail();
      if (!p.resize(head + tail.size())) return 0;
      std::memcpy(p.data() + head, tail.data(), tail.size());
      p.set_tail({}, nullptr);
    }
    return inner_.tx_burst(pkts);
  }
  bool refuse = false;
  size_t tails_seen = 0;

 private:
  Port& inner_;
};

constexpr size_t kHead = 30;

// Writes a frame's `kHead` header bytes into the sink and gives it `payload`.
void gather_frame(proto::FrameSink& sink, const Port& to, const Port& from,
                  const proto::SharedBytes& payload) {
  std::span<uint8_t> room = sink.acquire(kHead + payload.size());
  ASSERT_GE(room.size(), kHead + payload.size());
  std::memset(room.data(), 0xA5, kHead);
  std::memcpy(room.data(), to.mac().data(), 6);
  std::memcpy(room.data() + 6, from.mac().data(), 6);
  room[12] = 0x88;
  room[13] = 0x9a;
  sink.commit_gather(room, kHead, payload.span(), payload.owner());
}

std::vector<std::vector<uint8_t>> received_frames(Port& port) {
  std::vector<std::vector<uint8_t>> got;
  std::vector<Packet> buf(64);
  for (size_t n; (n = port.rx_burst(buf)) > 0;)
    for (size_t i = 0; i < n; ++i) got.emplace_back(buf[i].bytes().begin(), buf[i].bytes().end());
  return got;
}

std::vector<uint8_t> pattern_bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

// The sink holds the payload (not a copy) until the port has taken the
// frame; the one who shared it may let it go before.
TEST(PortSinkGather, TheSinkKeepsThePayloadUntilThePortTakesIt) {
  MemLink link = make();
  GatherPort port(*link.a);
  PortSink sink(port, 256);
  const std::vector<uint8_t> expected = pattern_bytes(2800, 9);
  proto::SharedBytes whole = proto::share_bytes(std::vector<uint8_t>(expected));
  const std::weak_ptr<const void> watch = whole.owner();
  port.refuse = true;
  gather_frame(sink, *link.b, *link.a, whole.slice(0, 1400));
  gather_frame(sink, *link.b, *link.a, whole.slice(1400, 1400));
  EXPECT_EQ(sink.flush(), 0u);
  EXPECT_EQ(sink.pending(), 2u);
  EXPECT_EQ(watch.use_count(), 3) << "the holder and one reference per queued frame";
  whole.reset();  // the PDU is acked, the Connection gone: the sink's references remain
  EXPECT_FALSE(watch.expired());
  port.refuse = false;
  EXPECT_EQ(sink.flush(), 2u);
  EXPECT_TRUE(watch.expired()) << "sent: the references are dropped";
  EXPECT_EQ(port.tails_seen, 2u);
  const auto frames = received_frames(*link.b);
  ASSERT_EQ(frames.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(frames[i].size(), kHead + 1400);
    EXPECT_TRUE(std::equal(frames[i].begin() + kHead, frames[i].end(),
                           expected.begin() + static_cast<long>(i * 1400)));
    EXPECT_EQ(frames[i][kHead - 1], 0xA5);
  }
}

// A port that does not gather (the in-memory link here; pcap and DPDK too)
// gets the payload copied into the packet: no reference is kept.
TEST(PortSinkGather, APortThatDoesNotGatherGetsACopy) {
  MemLink link = make();
  PortSink sink(*link.a, 256);
  const std::vector<uint8_t> expected = pattern_bytes(1200, 3);
  proto::SharedBytes whole = proto::share_bytes(std::vector<uint8_t>(expected));
  gather_frame(sink, *link.b, *link.a, whole);
  EXPECT_EQ(whole.owner().use_count(), 1) << "copied, not referenced";
  EXPECT_EQ(sink.flush(), 1u);
  const auto frames = received_frames(*link.b);
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_EQ(frames[0].size(), kHead + 1200);
  EXPECT_TRUE(std::equal(frames[0].begin() + kHead, frames[0].end(), expected.begin()));
}

// Pacing counts a gathered frame by its whole length, headers and payload.
TEST(PortSinkGather, PacingCountsTheWholeFrame) {
  MemLink link = make();
  GatherPort port(*link.a);
  PortSink sink(port, 256);
  sink.set_pacing(/*bytes_per_second=*/1000, /*burst_bytes=*/3 * (kHead + 1000));
  proto::SharedBytes whole = proto::share_bytes(pattern_bytes(1000, 1));
  for (int i = 0; i < 5; ++i) gather_frame(sink, *link.b, *link.a, whole);
  EXPECT_EQ(sink.flush(), 3u);
  EXPECT_EQ(sink.pending(), 2u);
}

}  // namespace
}  // namespace hyperscsi::io

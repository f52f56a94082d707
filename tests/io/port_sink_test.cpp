// PortSink's pacing against the in-memory link: what flush() hands to the
// port is bounded by the pacing credit, and the credit is spent by what the
// port took (issue 20: it was debited by the sizes of the handles after the
// port had emptied them, i.e. by nothing, so every flush sent a full burst and
// a shaped link's tbf queued the excess at a timer per frame).
// The rates are small enough that the microseconds between calls earn no
// measurable credit, so the counts are exact.
#include <gtest/gtest.h>

#include <cstring>
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

}  // namespace
}  // namespace hyperscsi::io

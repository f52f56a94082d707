// The port's transmit scheduler on its own: fake sessions that emit frames
// of a given size while the sink takes them, a fake port that takes a fixed
// number of frames per pass (then refuses, as a full qdisc does).
#include "tx_scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <vector>

namespace hyperscsi::engine {
namespace {

class FakePort final : public proto::FrameSink {
 public:
  explicit FakePort(size_t frames_per_pass) : capacity_(frames_per_pass) {}
  std::span<uint8_t> acquire(size_t size) override {
    if (taken_ >= capacity_) return {};
    buf_.resize(size);
    return buf_;
  }
  void commit(size_t length) override {
    ++taken_;
    bytes_ += length;
  }
  void next_pass() { taken_ = 0; }
  size_t taken() const { return taken_; }

 private:
  size_t capacity_;
  size_t taken_ = 0;
  uint64_t bytes_ = 0;
  std::vector<uint8_t> buf_;
};

struct FakeSession {
  size_t frame = 1514;
  uint64_t backlog = UINT64_MAX;  // frames it would still send
  uint64_t frames = 0, bytes = 0;
  uint64_t polls = 0;
  void poll(proto::FrameSink& sink) {
    ++polls;
    while (backlog > 0) {
      if (sink.acquire(frame).size() < frame) return;
      sink.commit(frame);
      --backlog;
      ++frames;
      bytes += frame;
    }
  }
};

struct Bench {
  std::map<uint32_t, FakeSession> sessions;
  TxScheduler scheduler;
  explicit Bench(size_t quantum = 4 * 1514) : scheduler(quantum) {}
  void pass(FakePort& port) {
    std::vector<uint32_t> ids;
    for (auto& [id, s] : sessions) ids.push_back(id);
    scheduler.run(ids, port, [&](uint32_t id, proto::FrameSink& sink) { sessions[id].poll(sink); });
    port.next_pass();
  }
};

TEST(TxScheduler, GreedySessionsGetEqualSharesOfAFullPort) {
  Bench b;
  for (uint32_t id : {7u, 3u, 900u, 12u, 5u, 1u, 44u, 8u}) b.sessions[id];
  FakePort port(100);
  for (int i = 0; i < 1000; ++i) b.pass(port);
  uint64_t lo = UINT64_MAX, hi = 0;
  for (auto& [id, s] : b.sessions) {
    lo = std::min(lo, s.frames);
    hi = std::max(hi, s.frames);
  }
  // 100,000 frames among 8: 12,500 each, within one quantum (4 frames).
  EXPECT_GE(lo, 12500u - 4);
  EXPECT_LE(hi - lo, 4u);
  EXPECT_GT(b.scheduler.stats().port_full, 0u);
}

// A port that takes fewer frames per pass than there are sessions: without
// resuming where the last pass was cut off, the sessions late in the order
// would never send.
TEST(TxScheduler, NoSessionIsAlwaysLastWhenThePortIsTight) {
  Bench b;
  for (uint32_t id = 1; id <= 10; ++id) b.sessions[id];
  FakePort port(3);
  for (int i = 0; i < 1000; ++i) b.pass(port);
  for (auto& [id, s] : b.sessions) EXPECT_NEAR(double(s.frames), 300.0, 5.0) << "session " << id;
}

TEST(TxScheduler, SharesAreInBytesNotFrames) {
  Bench b;
  b.sessions[1].frame = 9014;  // a jumbo-frame session
  b.sessions[2].frame = 1514;
  b.sessions[3].frame = 1514;
  FakePort port(40);
  for (int i = 0; i < 2000; ++i) b.pass(port);
  const double jumbo = double(b.sessions[1].bytes);
  const double small = double(b.sessions[2].bytes);
  EXPECT_NEAR(jumbo / small, 1.0, 0.02);
  EXPECT_NEAR(double(b.sessions[2].bytes) / double(b.sessions[3].bytes), 1.0, 0.01);
}

TEST(TxScheduler, ALightSessionGetsAllItHasAndTheRestIsShared) {
  Bench b;
  b.sessions[1];
  b.sessions[2];
  b.sessions[3];
  FakePort port(100);
  uint64_t light_frames = 0;
  for (int i = 0; i < 500; ++i) {
    b.sessions[9].backlog = 5;  // 5 frames due per pass, less than its share
    b.pass(port);
    light_frames += 5 - b.sessions[9].backlog;
    EXPECT_EQ(b.sessions[9].backlog, 0u) << "pass " << i;
    EXPECT_EQ(b.scheduler.deficit(9), 0u);  // ran dry: nothing owed (DRR)
  }
  EXPECT_EQ(light_frames, 2500u);
  for (uint32_t id : {1u, 2u, 3u}) EXPECT_NEAR(double(b.sessions[id].frames), 95.0 * 500 / 3, 5);
}

TEST(TxScheduler, SessionsHeldBackByTheirBudgetGetMoreRoundsWhileThePortTakesFrames) {
  Bench b(2 * 1514);
  b.sessions[1].backlog = 50;
  b.sessions[2].backlog = 10;
  FakePort port(1000);
  b.pass(port);
  EXPECT_EQ(b.sessions[1].frames, 50u);  // one pass empties both: the port had room
  EXPECT_EQ(b.sessions[2].frames, 10u);
  EXPECT_GE(b.scheduler.stats().rounds, 25u);
  EXPECT_EQ(b.scheduler.stats().port_full, 0u);
}

TEST(TxScheduler, AQuantumBelowOneFrameGrowsToTheFrame) {
  Bench b(100);
  b.sessions[1].backlog = 3;
  FakePort port(1000);
  b.pass(port);
  EXPECT_EQ(b.sessions[1].frames, 3u);
}

TEST(TxScheduler, GoneSessionsAreForgotten) {
  Bench b;
  b.sessions[1];
  b.sessions[2];
  FakePort port(5);
  b.pass(port);  // the port fills: someone is owed bytes
  EXPECT_GT(b.scheduler.deficit(1) + b.scheduler.deficit(2), 0u);
  b.sessions.erase(1);
  b.sessions.erase(2);
  b.pass(port);
  EXPECT_EQ(b.scheduler.deficit(1), 0u);
  EXPECT_EQ(b.scheduler.deficit(2), 0u);
}

}  // namespace
}  // namespace hyperscsi::engine

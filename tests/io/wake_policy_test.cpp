// io::WakePolicy with a virtual clock: when an event loop holds (sleeps
// without watching its port), for how long, and when busy polling is worth
// it.
#include "hyperscsi/io/wake_policy.h"

#include <gtest/gtest.h>

namespace hyperscsi::io {
namespace {

using namespace std::chrono_literals;

constexpr size_t kWindow = 256 * 1514;  // the MTU 1500 receive window, bytes

proto::FlowHints streaming(size_t missing) {
  proto::FlowHints h;
  h.rx_missing = missing;
  h.rx_window_bytes = kWindow;
  return h;
}

// Drives the policy as a loop receiving a stream at `bytes_per_us` would:
// each wait is a hold if the policy says so, else a sleep woken by the next
// 1514-byte frame. Returns the holds taken in `turns` turns.
struct Loop {
  WakePolicy policy;
  TimePoint now{};
  double bytes_per_us;
  size_t holds = 0;
  Duration last_hold{};

  Loop(double rate, WakeConfig c = {}) : policy(c), bytes_per_us(rate) {}

  void turns(int n, size_t missing) {
    for (int i = 0; i < n; ++i) {
      const Duration hold = policy.hold(now, now + 10ms, streaming(missing));
      policy.on_wait(now, hold > Duration::zero());
      const Duration waited =
          hold > Duration::zero()
              ? hold
              : Duration(static_cast<int64_t>(1514 / bytes_per_us * 1000));  // one frame
      if (hold > Duration::zero()) {
        ++holds;
        last_hold = hold;
      }
      now += waited;
      const auto bytes = static_cast<size_t>(
          bytes_per_us * std::chrono::duration<double, std::micro>(waited).count());
      policy.on_turn(now, bytes);
      now += 5us;  // the turn's own work
    }
  }
};

TEST(WakePolicy, HoldsWhileALargePduStreamsInAtLinkPace) {
  Loop l(125.0);  // 1 Gbit/s
  l.turns(50, 100 * 1024);
  // After the first measurements nearly every wait is a hold, and a hold
  // collects about a quarter of the window (~97 KB at 125 B/us: ~775 us).
  EXPECT_GE(l.holds, 45u);
  EXPECT_GT(l.last_hold, 500us);
  EXPECT_LE(l.last_hold, 1ms);
  EXPECT_NEAR(l.policy.rx_rate() * 1000, 125.0, 15.0);  // bytes per us
}

TEST(WakePolicy, HoldEndsWhenThePduShouldBeIn) {
  Loop l(125.0);
  l.turns(20, 100 * 1024);
  // 40 KB to go at 125 B/us: about 320 us, not the quarter window.
  const Duration h = l.policy.hold(l.now, l.now + 10ms, streaming(40 * 1024));
  EXPECT_GT(h, 250us);
  EXPECT_LT(h, 400us);
}

TEST(WakePolicy, NeverHoldsForSmallRepliesOrPastTheDeadline) {
  Loop l(125.0);
  l.turns(20, 100 * 1024);
  // A 4 KiB reply is never waited for: its frames come together.
  EXPECT_EQ(l.policy.hold(l.now, l.now + 10ms, streaming(3000)), Duration::zero());
  // Nor beyond the loop's own next timer.
  EXPECT_LE(l.policy.hold(l.now, l.now + 120us, streaming(100 * 1024)), 120us);
  EXPECT_EQ(l.policy.hold(l.now, l.now + 20us, streaming(100 * 1024)), Duration::zero());
  EXPECT_EQ(l.policy.hold(l.now, l.now, streaming(100 * 1024)), Duration::zero());
}

TEST(WakePolicy, SenderWithFramesWaitingForTheWindowNeverHolds) {
  Loop l(125.0);
  l.turns(20, 100 * 1024);
  proto::FlowHints h = streaming(100 * 1024);
  h.tx_waiting = true;
  EXPECT_EQ(l.policy.hold(l.now, l.now + 10ms, h), Duration::zero());
}

TEST(WakePolicy, FastLinkGetsShortHoldsAndAHoldThatFoundHalfAWindowHalvesTheNext) {
  Loop fast(1250.0);  // 10 Gbit/s
  fast.turns(50, 1 << 20);
  // A quarter window at 1250 B/us is ~78 us; never the 1 ms cap.
  EXPECT_LT(fast.last_hold, 100us);

  // Measured slow, then the link turns fast: the next hold finds more than
  // half the window waiting and the estimate jumps.
  WakePolicy p;
  TimePoint now{};
  for (int i = 0; i < 10; ++i) {  // 10 B/us
    const Duration hold = p.hold(now, now + 10ms, streaming(1 << 20));
    p.on_wait(now, hold > Duration::zero());
    now += hold > Duration::zero() ? hold : 150us;
    p.on_turn(now, static_cast<size_t>(10 * std::chrono::duration<double, std::micro>(
                                                hold > Duration::zero() ? hold : 150us)
                                                .count()));
  }
  const double slow = p.rx_rate();
  const Duration h = p.hold(now, now + 10ms, streaming(1 << 20));
  ASSERT_GT(h, Duration::zero());
  p.on_wait(now, true);
  p.on_turn(now + h, kWindow);  // the whole window was waiting
  EXPECT_GE(p.rx_rate(), 2 * slow);
  EXPECT_LT(p.hold(now + h, now + h + 10ms, streaming(1 << 20)), h);
}

TEST(WakePolicy, LongPipelineHoldsForAnEighthOfTheReplyTime) {
  WakeConfig c;
  c.busy_poll = 50us;
  WakePolicy p(c);
  TimePoint now{};
  for (int i = 0; i < 50; ++i) p.on_reply(1100us);  // QD32 of 4 KiB on a busy GbE link
  EXPECT_EQ(p.hold(now, now + 10ms, {}, 32), Duration(1100us) / 8);
  EXPECT_EQ(p.hold(now, now + 10ms, {}, 2), Duration::zero());  // QD2: latency matters
  for (int i = 0; i < 50; ++i) p.on_reply(30us);                // QD1 on a free link
  EXPECT_EQ(p.hold(now, now + 10ms, {}, 32), Duration::zero());
}

TEST(WakePolicy, BusyPollsOnlyWhileRepliesComeSoonAndPollsFindSomething) {
  WakeConfig c;
  c.busy_poll = 50us;
  WakePolicy p(c);
  EXPECT_FALSE(p.should_poll(0));  // nothing in flight: never
  EXPECT_TRUE(p.should_poll(1));   // no measurement yet: poll
  for (int i = 0; i < 50; ++i) p.on_reply(30us);
  EXPECT_TRUE(p.should_poll(1));
  for (int i = 0; i < 80; ++i) p.on_reply(35ms);  // a link-bound pipeline
  EXPECT_FALSE(p.should_poll(32));
  for (int i = 0; i < 80; ++i) p.on_reply(60us);
  ASSERT_TRUE(p.should_poll(1));
  // Polls that come back empty: stop, but try again now and then.
  for (int i = 0; i < 40; ++i) p.on_poll(false, 50us);
  int polled = 0;
  for (int i = 0; i < 64; ++i) polled += p.should_poll(1) ? 1 : 0;
  EXPECT_GE(polled, 1);
  EXPECT_LE(polled, 3);
  for (int i = 0; i < 40; ++i) p.on_poll(true, 10us);
  EXPECT_TRUE(p.should_poll(1));

  WakePolicy off;  // busy_poll 0
  EXPECT_FALSE(off.should_poll(1));
}

}  // namespace
}  // namespace hyperscsi::io

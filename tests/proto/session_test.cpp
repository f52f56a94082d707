// Negotiation and the target's exactly-once reply cache: pure logic, no links.
#include <gtest/gtest.h>
#include <malloc.h>

#include "hyperscsi/proto/negotiation.h"
#include "hyperscsi/proto/reply_cache.h"

namespace hyperscsi::proto {
namespace {

LoginRequest request(uint16_t mtu, uint16_t window, uint32_t max_transfer, uint32_t features) {
  LoginRequest r;
  r.nonce = 77;
  r.mtu = mtu;
  r.window = window;
  r.max_transfer = max_transfer;
  r.features = features;
  r.initiator_name = "iqn.test:init";
  return r;
}

TEST(Negotiation, TakesMinimaAndFeatureIntersection) {
  TargetLimits limits;
  limits.mtu = 9000;
  limits.window = 256;
  limits.max_transfer = 1u << 20;
  limits.features = kFeatureSack | kFeatureChecksum | kFeatureSessionResume;
  limits.keepalive_ms = 700;
  limits.dead_time_ms = 7000;
  const LoginReply r =
      negotiate(request(1500, 512, 4u << 20, kFeatureSack | kFeatureDelayedAck), limits);
  EXPECT_EQ(r.status, LoginStatus::kOk);
  EXPECT_EQ(r.nonce, 77u);
  EXPECT_EQ(r.mtu, 1500);
  EXPECT_EQ(r.window, 256);
  EXPECT_EQ(r.max_transfer, 1u << 20);
  EXPECT_EQ(r.features, kFeatureSack);
  EXPECT_EQ(r.keepalive_ms, 700u);
  EXPECT_EQ(r.dead_time_ms, 7000u);

  const LoginReply r2 = negotiate(request(9000, 64, 1u << 19, kFeaturesV2), limits);
  EXPECT_EQ(r2.mtu, 9000);
  EXPECT_EQ(r2.window, 64);
  EXPECT_EQ(r2.max_transfer, 1u << 19);
  EXPECT_EQ(r2.features, limits.features);
}

TEST(Negotiation, RejectsTooSmallMtuTransferOrWindow) {
  TargetLimits limits;
  EXPECT_EQ(negotiate(request(575, 64, 1u << 20, 0), limits).status,
            LoginStatus::kParameterRejected);
  EXPECT_EQ(negotiate(request(576, 64, 1u << 20, 0), limits).status, LoginStatus::kOk);
  EXPECT_EQ(negotiate(request(1500, 64, 64 * 1024 - 1, 0), limits).status,
            LoginStatus::kParameterRejected);
  EXPECT_EQ(negotiate(request(1500, 64, 64 * 1024, 0), limits).status, LoginStatus::kOk);
  EXPECT_EQ(negotiate(request(1500, 0, 1u << 20, 0), limits).status,
            LoginStatus::kParameterRejected);
  // The target's own limits can be the reason too.
  limits.mtu = 500;
  const LoginReply r = negotiate(request(9000, 64, 1u << 20, 0), limits);
  EXPECT_EQ(r.status, LoginStatus::kParameterRejected);
  EXPECT_EQ(r.mtu, 500);  // a refusal names the target's offer
}

// About 400 KiB of frames (MTU + 14-byte Ethernet header each), within
// [16, cap]: 270 frames fit at 1500 (capped to 256), 45 at 9000.
TEST(Negotiation, WindowForMtuIsAboutFourHundredKibOfFrames) {
  EXPECT_EQ(window_for_mtu(1500, 256), 256);
  EXPECT_EQ(window_for_mtu(1500, 512), 270);
  EXPECT_EQ(window_for_mtu(9000, 256), 45);
  EXPECT_EQ(window_for_mtu(9000, 32), 32);    // never above the cap
  EXPECT_EQ(window_for_mtu(65535, 256), 16);  // never below 16
  EXPECT_EQ(window_for_mtu(576, 256), 256);
}

TEST(Negotiation, TransportParamsFollowTheReply) {
  LoginReply r;
  r.mtu = 9000;
  r.window = 128;
  r.max_transfer = 1u << 20;
  r.features = kFeatureSack;
  TransportParams base;
  base.initial_cwnd = 7;
  const TransportParams p = transport_params_for(r, base);
  EXPECT_EQ(p.mtu, 9000u);
  EXPECT_EQ(p.receive_window, 128);
  EXPECT_EQ(p.max_pdu, 1u << 20);
  EXPECT_TRUE(p.sack);
  EXPECT_FALSE(p.checksum);
  EXPECT_EQ(p.delayed_ack, Duration::zero());
  EXPECT_EQ(p.initial_cwnd, 7u);
}

std::vector<uint8_t> reply_bytes(size_t header, size_t data, uint8_t fill) {
  std::vector<uint8_t> v(header + data, fill);
  for (size_t i = 0; i < header; ++i) v[i] = static_cast<uint8_t>(0xA0 + i);
  return v;
}

TEST(ReplyCache, ExecutesOnceThenReplays) {
  ReplyCache cache;
  EXPECT_EQ(cache.begin(10), CacheDecision::kExecute);
  EXPECT_EQ(cache.begin(10), CacheDecision::kInProgress);  // still executing
  EXPECT_TRUE(cache.stored_reply(10).empty());
  const auto reply = reply_bytes(16, 100, 0x5A);
  EXPECT_TRUE(cache.complete(10, reply, 16, false));
  EXPECT_FALSE(cache.complete(10, reply, 16, false));  // not in progress any more
  EXPECT_EQ(cache.begin(10), CacheDecision::kReplay);
  auto stored = cache.stored_reply(10);
  EXPECT_EQ(std::vector<uint8_t>(stored.begin(), stored.end()), reply);
  EXPECT_EQ(cache.begin(11), CacheDecision::kExecute);
  EXPECT_EQ(cache.stats().executed, 2u);
  EXPECT_EQ(cache.stats().replays, 1u);
  EXPECT_EQ(cache.stats().in_progress_duplicates, 1u);
}

// A reply is built once: the cache keeps a reference to the very bytes the
// connection sends (no copy per reply), hands the same buffer back for a
// replay, and lets it go on release while the connection may still hold it.
TEST(ReplyCache, SharesTheReplyItIsGivenWithoutCopying) {
  ReplyCache cache;
  ASSERT_EQ(cache.begin(7), CacheDecision::kExecute);
  SharedBytes reply = share_bytes(reply_bytes(16, 4096, 0x3C));
  const uint8_t* data = reply.data();
  ASSERT_TRUE(cache.complete_shared(7, reply, 16, true));
  EXPECT_EQ(reply.owner().use_count(), 2);  // this test and the cache: one buffer
  ASSERT_EQ(cache.begin(7), CacheDecision::kReplay);
  SharedBytes again = cache.stored_reply_bytes(7);
  ASSERT_TRUE(again);
  EXPECT_EQ(again.data(), data);
  EXPECT_EQ(cache.stored_reply(7).data(), data);
  EXPECT_EQ(cache.stats().cached_bytes, 16u + 4096u);
  again.reset();
  cache.release_below(8);
  EXPECT_EQ(reply.owner().use_count(), 1);  // released by the cache; the holder keeps it whole
  EXPECT_EQ(reply.size(), 16u + 4096u);
  EXPECT_EQ(cache.stats().cached_bytes, 0u);
  EXPECT_FALSE(cache.stored_reply_bytes(7));
}

TEST(ReplyCache, ReleaseFreesAndLaterDuplicatesAreStale) {
  ReplyCache cache;
  cache.release_below(100);
  for (uint32_t sn = 100; sn < 110; ++sn) {
    ASSERT_EQ(cache.begin(sn), CacheDecision::kExecute);
    ASSERT_TRUE(cache.complete(sn, reply_bytes(16, 10, 1), 16, false));
  }
  EXPECT_EQ(cache.stats().cached_entries, 10u);
  cache.release_below(105);
  EXPECT_EQ(cache.stats().cached_entries, 5u);
  EXPECT_EQ(cache.stats().cached_bytes, 5u * 26u);
  EXPECT_TRUE(cache.stored_reply(104).empty());
  EXPECT_EQ(cache.begin(104), CacheDecision::kStale);  // never executed again
  EXPECT_EQ(cache.begin(105), CacheDecision::kReplay);
  cache.release_below(103);  // backwards: ignored
  EXPECT_EQ(cache.low(), 105u);
  EXPECT_EQ(cache.begin(104), CacheDecision::kStale);
}

// Released replies must give their buffers back: a slot that kept its
// vector's capacity held one reply-sized buffer per slot of the 4096-entry
// window, so a 128 KiB read stream grew the target by ~70 MB/s up to 512 MiB
// per session (found by bench/lab.sh's 16-session memory step). Heap in use
// (glibc mallinfo2, arena + mmapped) must stay near what the cache holds.
TEST(ReplyCache, ReleasedRepliesGiveTheirMemoryBack) {
  auto heap_in_use = [] {
    const struct mallinfo2 m = ::mallinfo2();
    return m.uordblks + m.hblkhd;
  };
  const size_t before = heap_in_use();
  {
    ReplyCache cache;
    cache.release_below(0);
    for (uint32_t sn = 0; sn < 2000; ++sn) {
      if (sn >= 4) cache.release_below(sn - 4);  // four replies outstanding, as at QD4
      ASSERT_EQ(cache.begin(sn), CacheDecision::kExecute);
      ASSERT_TRUE(cache.complete(sn, std::vector<uint8_t>(16 + (128u << 10)), 16, true));
    }
    EXPECT_LE(cache.stats().cached_entries, 5u);
    const size_t held = heap_in_use() - std::min(before, heap_in_use());
    // Five 128 KiB replies plus the slot table; 2000 retained buffers would be 250 MiB.
    EXPECT_LT(held, size_t(8) << 20) << "bytes still allocated: " << held;
  }
}

TEST(ReplyCache, AbandonedCommandRunsAgain) {
  ReplyCache cache;
  EXPECT_EQ(cache.begin(1), CacheDecision::kExecute);
  cache.abandon(1);
  EXPECT_EQ(cache.begin(1), CacheDecision::kExecute);
}

TEST(ReplyCache, MemoryBudgetDropsReadDataButKeepsHeaders) {
  ReplyCacheLimits limits;
  limits.data_budget_bytes = 2500;
  ReplyCache cache(limits);
  cache.release_below(0);
  // A write's reply (not re-executable) is never trimmed.
  ASSERT_EQ(cache.begin(0), CacheDecision::kExecute);
  ASSERT_TRUE(cache.complete(0, reply_bytes(16, 4000, 9), 16, false));
  for (uint32_t sn = 1; sn <= 4; ++sn) {
    ASSERT_EQ(cache.begin(sn), CacheDecision::kExecute);
    ASSERT_TRUE(cache.complete(sn, reply_bytes(16, 1000, static_cast<uint8_t>(sn)), 16, true));
    EXPECT_LE(cache.stats().cached_data_bytes, limits.data_budget_bytes);
  }
  // Four reads of 1000 bytes against a 2500-byte budget: the two oldest lost their data.
  EXPECT_EQ(cache.stats().data_dropped_bytes, 2000u);
  EXPECT_EQ(cache.begin(0), CacheDecision::kReplay);
  EXPECT_EQ(cache.stored_reply(0).size(), 4016u);
  EXPECT_EQ(cache.begin(1), CacheDecision::kReexecuteIdempotent);
  EXPECT_EQ(cache.begin(1), CacheDecision::kInProgress);  // re-execution is in progress
  EXPECT_EQ(cache.begin(3), CacheDecision::kReplay);
  EXPECT_EQ(cache.stored_reply(3).size(), 1016u);
  // The re-executed read completes and is replayable again.
  ASSERT_TRUE(cache.complete(1, reply_bytes(16, 1000, 1), 16, true));
  EXPECT_EQ(cache.stats().reexecutions, 1u);
  EXPECT_LE(cache.stats().cached_data_bytes, limits.data_budget_bytes);
  EXPECT_EQ(cache.begin(1), CacheDecision::kReplay);
}

TEST(ReplyCache, RejectsCmdSnFarOutsideTheWindow) {
  ReplyCache cache;
  cache.release_below(1000);
  EXPECT_EQ(cache.begin(1000 + 4096), CacheDecision::kOutOfWindow);
  EXPECT_EQ(cache.begin(1000 + (1u << 31)), CacheDecision::kOutOfWindow);
  EXPECT_EQ(cache.begin(1000 - 100000), CacheDecision::kOutOfWindow);
  EXPECT_EQ(cache.begin(1000 + 4095), CacheDecision::kExecute);
  EXPECT_EQ(cache.stats().out_of_window, 3u);
  cache.release_below(1000 + 5000);  // a jump beyond the window is a protocol error
  EXPECT_EQ(cache.low(), 1000u);
}

TEST(ReplyCache, WindowWrapsAroundSerialNumbers) {
  ReplyCache cache;
  cache.release_below(0xFFFFFFF0u);
  for (uint32_t i = 0; i < 32; ++i) {
    const uint32_t sn = 0xFFFFFFF0u + i;  // wraps through 0
    ASSERT_EQ(cache.begin(sn), CacheDecision::kExecute) << sn;
    ASSERT_TRUE(cache.complete(sn, reply_bytes(16, 4, 1), 16, false));
  }
  cache.release_below(8);
  EXPECT_EQ(cache.stats().cached_entries, 8u);
  EXPECT_EQ(cache.begin(0xFFFFFFFFu), CacheDecision::kStale);
  EXPECT_EQ(cache.begin(9), CacheDecision::kReplay);
}

}  // namespace
}  // namespace hyperscsi::proto

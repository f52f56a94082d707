// Unit tests of the reliable-transport building blocks: sequence arithmetic,
// RTT estimation, congestion control and reassembly.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <random>
#include <vector>

#include "hyperscsi/proto/congestion.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/reassembly.h"
#include "hyperscsi/proto/rtt.h"
#include "hyperscsi/proto/seq.h"

namespace hyperscsi::proto {
namespace {

using std::chrono::duration_cast;

TEST(Seq, OrdersAcrossWraparound) {
  EXPECT_TRUE(seq_lt(1, 2));
  EXPECT_FALSE(seq_lt(2, 2));
  EXPECT_TRUE(seq_leq(2, 2));
  EXPECT_TRUE(seq_lt(0xFFFFFFFFu, 0));
  EXPECT_TRUE(seq_lt(0xFFFFFFF0u, 5));
  EXPECT_TRUE(seq_gt(5, 0xFFFFFFF0u));
  EXPECT_EQ(seq_diff(5, 0xFFFFFFF0u), 21);
  EXPECT_EQ(seq_diff(0xFFFFFFF0u, 5), -21);
  EXPECT_EQ(seq_diff(0, 0xFFFFFFFFu), 1);
  EXPECT_EQ(seq_max(0xFFFFFFFEu, 3), 3u);
  EXPECT_TRUE(seq_geq(0x80000000u + 5, 6));
  // Walk a window of sequence numbers across the wrap point.
  uint32_t s = 0xFFFFFF00u;
  for (int i = 0; i < 512; ++i, ++s) {
    EXPECT_TRUE(seq_lt(s, s + 1));
    EXPECT_TRUE(seq_lt(s, s + 511));
    EXPECT_EQ(seq_diff(s + 100, s), 100);
  }
}

RtoParams rto_params() {
  RtoParams p;
  p.initial = milliseconds(50);
  p.min = milliseconds(2);
  p.max = seconds(2);
  return p;
}

TEST(Rtt, InitialRtoIsConfigured) {
  RttEstimator e(rto_params());
  EXPECT_EQ(e.rto(), milliseconds(50));
  EXPECT_FALSE(e.has_sample());
}

TEST(Rtt, JacobsonKarelsMatchesHandComputation) {
  RttEstimator e(rto_params());
  ASSERT_TRUE(e.on_sample(milliseconds(10)));
  // First sample: srtt = r, rttvar = r/2, rto = srtt + 4 rttvar.
  EXPECT_EQ(e.srtt(), milliseconds(10));
  EXPECT_EQ(e.rttvar(), milliseconds(5));
  EXPECT_EQ(e.rto(), milliseconds(30));
  ASSERT_TRUE(e.on_sample(milliseconds(18)));
  // err = 8 ms: rttvar = 5 + (8 - 5)/4 = 5.75 ms; srtt = 10 + 8/8 = 11 ms.
  EXPECT_EQ(e.rttvar(), microseconds(5750));
  EXPECT_EQ(e.srtt(), milliseconds(11));
  EXPECT_EQ(e.rto(), milliseconds(34));
  ASSERT_TRUE(e.on_sample(milliseconds(3)));
  // err = -8 ms, a falling RTT: its rise counts 1/8 (Linux, Eifel):
  // rttvar = 5.75 + ((8 - 5.75)/8)/4 = 5.8203125 ms; srtt = 11 - 1 = 10 ms.
  EXPECT_EQ(e.rttvar(), std::chrono::nanoseconds(5820312));
  EXPECT_EQ(e.srtt(), milliseconds(10));
  EXPECT_EQ(e.rto(), milliseconds(10) + 4 * std::chrono::nanoseconds(5820312));
}

TEST(Rtt, RtoIsAtLeastSrttPlusMin) {
  RttEstimator e(rto_params());
  for (int i = 0; i < 200; ++i) e.on_sample(milliseconds(30));
  EXPECT_EQ(e.srtt(), milliseconds(30));
  EXPECT_EQ(e.rto(), milliseconds(32));  // the variance is ~0: srtt + min
}

// Many samples per round trip: a delay spike early in a round keeps the RTO
// up for the rest of it (per-sample RFC gains would forget it within a few
// samples), then the held variance decays by a quarter per round.
TEST(Rtt, VarianceHeldForTheRoundThenDecaysPerRound) {
  RttEstimator e(rto_params());
  for (int i = 0; i < 50; ++i) e.on_sample(milliseconds(1));
  e.on_sample(milliseconds(7), false, /*ends_round=*/true);  // a spike opens a round
  e.on_sample(milliseconds(7), false, false);
  const Duration peak = e.rto_variance();
  EXPECT_GT(peak, milliseconds(1));
  for (int i = 0; i < 100; ++i) e.on_sample(milliseconds(1), false, false);
  EXPECT_LT(e.rttvar(), peak / 4);    // RFC 6298 alone forgot the spike
  EXPECT_EQ(e.rto_variance(), peak);  // still within the round
  EXPECT_GE(e.rto(), milliseconds(1) + 4 * peak - microseconds(300));
  e.on_sample(milliseconds(1), false, true);  // round ends: the held peak is the spike's
  const Duration held = e.rto_variance();
  EXPECT_EQ(held, peak);
  e.on_sample(milliseconds(1), false, true);  // a quiet round: decays by a quarter
  EXPECT_EQ(e.rto_variance(), held - (held - e.rttvar()) / 4);
  for (int i = 0; i < 60; ++i) e.on_sample(milliseconds(1), false, true);
  EXPECT_LT(e.rto_variance(), microseconds(100));
}

TEST(Rtt, FallingRttBarelyRaisesTheVariance) {
  RttEstimator e(rto_params());
  for (int i = 0; i < 200; ++i) e.on_sample(milliseconds(20));
  const Duration before = e.rttvar();
  e.on_sample(milliseconds(1));  // err = -19 ms
  EXPECT_LT(e.rttvar() - before, microseconds(19000) / 32 + microseconds(1));
  RttEstimator rising(rto_params());
  for (int i = 0; i < 200; ++i) rising.on_sample(milliseconds(1));
  rising.on_sample(milliseconds(20));  // err = +19 ms counts in full
  EXPECT_GT(rising.rttvar(), milliseconds(4));
}

TEST(Rtt, ClampedToMinAndMax) {
  RttEstimator e(rto_params());
  for (int i = 0; i < 200; ++i) e.on_sample(microseconds(10));
  EXPECT_EQ(e.rto(), e.srtt() + milliseconds(2));  // at least srtt + min
  RttEstimator big(rto_params());
  big.on_sample(seconds(5));
  EXPECT_EQ(big.rto(), seconds(2));
}

TEST(Rtt, FollowsChangedRtt) {
  RttEstimator e(rto_params());
  auto feed = [&](Duration r) {
    for (int i = 0; i < 100; ++i) e.on_sample(r);
  };
  feed(milliseconds(1));
  EXPECT_NEAR(duration_cast<microseconds>(e.srtt()).count(), 1000, 20);
  EXPECT_EQ(e.rto(), e.srtt() + milliseconds(2));  // srtt + min: the variance is ~0
  feed(milliseconds(20));
  EXPECT_NEAR(duration_cast<microseconds>(e.srtt()).count(), 20000, 200);
  EXPECT_GE(e.rto(), microseconds(21900));
  EXPECT_LE(e.rto(), milliseconds(23));
  feed(milliseconds(1));
  EXPECT_NEAR(duration_cast<microseconds>(e.srtt()).count(), 1000, 100);
  EXPECT_EQ(e.rto(), e.srtt() + milliseconds(2));
}

TEST(Rtt, KarnRuleIgnoresRetransmittedSamples) {
  RttEstimator e(rto_params());
  e.on_sample(milliseconds(10));
  const Duration srtt = e.srtt();
  const Duration rto = e.rto();
  EXPECT_FALSE(e.on_sample(milliseconds(500), /*retransmitted=*/true));
  EXPECT_EQ(e.srtt(), srtt);
  EXPECT_EQ(e.rto(), rto);
  // Backoff survives an ignored sample and is cleared by a valid one.
  e.on_timeout();
  EXPECT_EQ(e.rto(), 2 * rto);
  EXPECT_FALSE(e.on_sample(milliseconds(10), true));
  EXPECT_EQ(e.rto(), 2 * rto);
  EXPECT_TRUE(e.on_sample(milliseconds(10), false));
  EXPECT_EQ(e.backoff_shift(), 0u);
}

TEST(Rtt, BackoffDoublesAndIsCapped) {
  RttEstimator e(rto_params());
  EXPECT_EQ(e.rto(), milliseconds(50));
  e.on_timeout();
  EXPECT_EQ(e.rto(), milliseconds(100));
  e.on_timeout();
  EXPECT_EQ(e.rto(), milliseconds(200));
  for (int i = 0; i < 100; ++i) e.on_timeout();
  EXPECT_EQ(e.rto(), seconds(2));
}

// Eifel's response: the original frame of a spurious timeout was acked late;
// the estimate grows to cover that delay, and the backoff is gone.
TEST(Rtt, SpuriousTimeoutRaisesTheEstimateToTheOriginalsDelay) {
  RttEstimator e(rto_params());
  for (int i = 0; i < 10; ++i) e.on_sample(microseconds(100));
  e.on_timeout();
  e.on_timeout();
  e.on_spurious_timeout(milliseconds(40));
  e.cancel_backoff();
  EXPECT_EQ(e.srtt(), milliseconds(40));
  EXPECT_GE(e.rttvar(), milliseconds(20));
  EXPECT_EQ(e.rto(), milliseconds(40) + 4 * milliseconds(20));
  EXPECT_EQ(e.backoff_shift(), 0u);
  // A shorter delay changes nothing; later samples bring it down as usual.
  e.on_spurious_timeout(milliseconds(10));
  EXPECT_EQ(e.srtt(), milliseconds(40));
  for (int i = 0; i < 200; ++i) e.on_sample(milliseconds(1));
  EXPECT_LT(e.rto(), milliseconds(5));
}

TEST(Congestion, SlowStartThenAdditiveIncrease) {
  CongestionControl cc(16, 4096);
  EXPECT_EQ(cc.cwnd(), 16u);
  EXPECT_EQ(cc.ssthresh(), 4096u);
  uint32_t una = 0;
  cc.on_ack(16, una += 16);  // one window acked: doubles
  EXPECT_EQ(cc.cwnd(), 32u);
  cc.on_ack(32, una += 32);
  EXPECT_EQ(cc.cwnd(), 64u);
  // Loss: halve, enter congestion avoidance.
  EXPECT_TRUE(cc.on_loss(64, una + 64));
  EXPECT_EQ(cc.cwnd(), 32u);
  EXPECT_EQ(cc.ssthresh(), 32u);
  // Additive increase: +1 per full window of acks.
  cc.on_ack(31, una += 31);
  EXPECT_EQ(cc.cwnd(), 32u);
  cc.on_ack(1, una += 1);
  EXPECT_EQ(cc.cwnd(), 33u);
  cc.on_ack(33 + 34 + 35, una += 102);
  EXPECT_EQ(cc.cwnd(), 36u);
}

TEST(Congestion, OneDecreasePerWindow) {
  CongestionControl cc(64, 4096);
  EXPECT_TRUE(cc.on_loss(64, 1000));
  EXPECT_EQ(cc.cwnd(), 32u);
  // More losses from the same window: no further reduction.
  EXPECT_FALSE(cc.on_loss(60, 1000));
  cc.on_ack(1, 900);
  EXPECT_FALSE(cc.on_loss(60, 1010));
  EXPECT_EQ(cc.cwnd(), 32u);
  // Once data sent after the first loss is acked, a new loss counts again.
  cc.on_ack(1, 1000);
  EXPECT_FALSE(cc.in_recovery());
  EXPECT_TRUE(cc.on_loss(32, 1100));
  EXPECT_EQ(cc.cwnd(), 16u);
}

TEST(Congestion, TimeoutCollapsesToOne) {
  CongestionControl cc(16, 4096);
  cc.on_ack(100, 100);
  EXPECT_EQ(cc.cwnd(), 116u);
  cc.on_timeout(100, 300);
  EXPECT_EQ(cc.cwnd(), 1u);
  EXPECT_EQ(cc.ssthresh(), 50u);
  // Slow start back to ssthresh, then linear.
  cc.on_ack(49, 349);
  EXPECT_EQ(cc.cwnd(), 50u);
  cc.on_ack(10, 359);
  EXPECT_EQ(cc.cwnd(), 50u);
  EXPECT_EQ(CongestionControl::send_window(50, 20), 20u);
  EXPECT_EQ(CongestionControl::send_window(50, 200), 50u);
}

// A timeout while the previous one's data is still unacknowledged (the
// timer backing off) keeps the first one's ssthresh: halving the collapsed
// window again would set the floor of 2, and the session would then grow
// back at one frame per round trip (issue 21).
TEST(Congestion, RepeatedTimeoutKeepsTheFirstSsthresh) {
  CongestionControl cc(16, 4096);
  cc.on_ack(100, 100);
  cc.on_timeout(100, 300);
  EXPECT_EQ(cc.ssthresh(), 50u);
  cc.on_timeout(1, 300);  // backed-off timer: same episode
  cc.on_timeout(1, 301);
  EXPECT_EQ(cc.cwnd(), 1u);
  EXPECT_EQ(cc.ssthresh(), 50u);
  // Once everything sent by the last timeout is acked, a new timeout is a new
  // episode and halves what is in flight then.
  cc.on_ack(60, 301);
  EXPECT_EQ(cc.cwnd(), 50u);
  cc.on_timeout(40, 400);
  EXPECT_EQ(cc.ssthresh(), 20u);
  // An undone episode ends it too.
  cc.undo_timeout();
  cc.on_timeout(40, 500);
  EXPECT_EQ(cc.ssthresh(), 20u);
}

TEST(Congestion, NeverExceedsMax) {
  CongestionControl cc(16, 40);
  cc.on_ack(1000, 1000);
  EXPECT_EQ(cc.cwnd(), 40u);
  cc.on_timeout(2, 1);
  EXPECT_EQ(cc.ssthresh(), 2u);  // floor of two frames
}

// ---- Reassembly -----------------------------------------------------------

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Splits a PDU the way the sender does: byte-granular, chunk bytes each.
std::vector<Fragment> split(const std::vector<uint8_t>& pdu, size_t chunk, uint16_t tag,
                            Opcode op = Opcode::kCommandRequest) {
  std::vector<Fragment> out;
  size_t off = 0;
  uint16_t n = 0;
  do {
    const size_t len = std::min(chunk, pdu.size() - off);
    Fragment f;
    f.opcode = op;
    f.tag = tag;
    f.fragment = n++;
    f.pdu_length = static_cast<uint32_t>(pdu.size());
    f.pdu_offset = static_cast<uint32_t>(off);
    f.payload = std::span<const uint8_t>(pdu.data() + off, len);
    off += len;
    f.last = off == pdu.size();
    out.push_back(f);
  } while (off < pdu.size());
  return out;
}

constexpr uint32_t kMaxPdu = (1u << 20) + 4096;

TEST(Reassembly, InOrder) {
  Reassembler r(kMaxPdu, 64u << 20);
  const auto pdu = pattern(10000, 1);
  auto frags = split(pdu, 1460, 7);
  for (size_t i = 0; i + 1 < frags.size(); ++i)
    EXPECT_EQ(r.add(frags[i]), FragmentResult::kAccepted);
  EXPECT_EQ(r.bytes_held(), 10000u);
  EXPECT_FALSE(r.pop());
  EXPECT_EQ(r.add(frags.back()), FragmentResult::kCompleted);
  auto got = r.pop();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->tag, 7);
  EXPECT_EQ(got->opcode, Opcode::kCommandRequest);
  EXPECT_EQ(got->bytes, pdu);
  EXPECT_EQ(r.bytes_held(), 0u);
  EXPECT_EQ(r.partial_count(), 0u);
}

// What an event loop is told is still to come (FlowHints::rx_missing).
TEST(Reassembly, BytesMissingFollowThePartialPdus) {
  Reassembler r(kMaxPdu, 64u << 20);
  EXPECT_EQ(r.bytes_missing(), 0u);
  const auto a = pattern(131072, 5);
  const auto b = pattern(10000, 6);
  auto fa = split(a, 1460, 1);
  auto fb = split(b, 1460, 2);
  ASSERT_EQ(r.add(fa[0]), FragmentResult::kAccepted);
  EXPECT_EQ(r.bytes_missing(), 131072u - 1460u);
  ASSERT_EQ(r.add(fb[1]), FragmentResult::kAccepted);  // out of order, another tag
  EXPECT_EQ(r.bytes_missing(), 131072u - 1460u + 10000u - 1460u);
  EXPECT_EQ(r.add(fb[1]), FragmentResult::kDuplicate);  // counts once
  EXPECT_EQ(r.bytes_missing(), 131072u - 1460u + 10000u - 1460u);
  for (size_t i = 0; i < fb.size(); ++i)
    if (i != 1) r.add(fb[i]);
  EXPECT_EQ(r.bytes_missing(), 131072u - 1460u);  // b complete
  for (size_t i = 1; i + 1 < fa.size(); ++i) r.add(fa[i]);
  EXPECT_EQ(r.bytes_missing(), a.size() - (fa.size() - 1) * 1460u);
  EXPECT_EQ(r.add(fa.back()), FragmentResult::kCompleted);
  EXPECT_EQ(r.bytes_missing(), 0u);
  ASSERT_EQ(r.add(fa[3]), FragmentResult::kAccepted);  // a new PDU under the same tag
  r.clear_partial();
  EXPECT_EQ(r.bytes_missing(), 0u);
}

TEST(Reassembly, ReverseOrder) {
  Reassembler r(kMaxPdu, 64u << 20);
  const auto pdu = pattern(100000, 2);
  auto frags = split(pdu, 1460, 3, Opcode::kCommandReply);
  for (size_t i = frags.size(); i-- > 1;) EXPECT_EQ(r.add(frags[i]), FragmentResult::kAccepted);
  EXPECT_EQ(r.add(frags[0]), FragmentResult::kCompleted);
  auto got = r.pop();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->opcode, Opcode::kCommandReply);
  EXPECT_EQ(got->bytes, pdu);
}

TEST(Reassembly, RandomOrderWithDuplicatesAndInterleavedTags) {
  Reassembler r(kMaxPdu, 64u << 20);
  std::mt19937 rng(42);
  std::vector<std::vector<uint8_t>> pdus;
  std::vector<Fragment> all;
  for (uint16_t tag = 0; tag < 20; ++tag) pdus.push_back(pattern(1 + rng() % 300000, tag));
  for (uint16_t tag = 0; tag < 20; ++tag) {
    const size_t chunk = std::max<size_t>(pdus[tag].size() / 1000 + 1, 1 + rng() % 9000);
    auto f = split(pdus[tag], chunk, tag);
    all.insert(all.end(), f.begin(), f.end());
  }
  const size_t unique = all.size();
  for (size_t i = 0; i < unique; i += 3) all.push_back(all[i]);  // duplicates
  std::shuffle(all.begin(), all.end(), rng);
  size_t completed = 0, dups = 0;
  for (const auto& f : all) {
    const auto res = r.add(f);
    if (res == FragmentResult::kCompleted) ++completed;
    if (res == FragmentResult::kDuplicate) ++dups;
    ASSERT_NE(res, FragmentResult::kInconsistent);
  }
  EXPECT_EQ(completed, 20u);
  // Duplicates arriving after their PDU completed start a new partial PDU
  // (the connection's sequence numbers filter those before reassembly).
  EXPECT_GE(r.stats().fragments_accepted, unique);
  EXPECT_GT(dups, 0u);
  EXPECT_EQ(dups + r.stats().fragments_accepted, all.size());
  std::vector<bool> seen(20);
  for (int i = 0; i < 20; ++i) {
    auto got = r.pop();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->bytes, pdus[got->tag]);
    EXPECT_FALSE(seen[got->tag]);
    seen[got->tag] = true;
  }
}

TEST(Reassembly, NoHeadOfLineBlocking) {
  Reassembler r(kMaxPdu, 64u << 20);
  const auto a = pattern(5000, 1), b = pattern(3000, 2);
  auto fa = split(a, 1460, 1), fb = split(b, 1460, 2);
  for (size_t i = 1; i < fa.size(); ++i) r.add(fa[i]);  // tag 1 misses its first fragment
  for (const auto& f : fb) r.add(f);
  auto got = r.pop();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->tag, 2);
  EXPECT_FALSE(r.pop());
  EXPECT_EQ(r.add(fa[0]), FragmentResult::kCompleted);
  EXPECT_EQ(r.pop()->bytes, a);
}

TEST(Reassembly, EmptyPdu) {
  Reassembler r(kMaxPdu, 1024);
  Fragment f;
  f.tag = 9;
  f.last = true;
  EXPECT_EQ(r.add(f), FragmentResult::kCompleted);
  auto got = r.pop();
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->bytes.empty());
}

TEST(Reassembly, RejectsOverlapsAndInconsistentFragments) {
  Reassembler r(kMaxPdu, 64u << 20);
  const auto pdu = pattern(4000, 5);
  auto frags = split(pdu, 1000, 1);  // 4 fragments of 1000
  ASSERT_EQ(r.add(frags[1]), FragmentResult::kAccepted);
  // Same fragment number, other range.
  Fragment f = frags[1];
  f.pdu_offset = 900;
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  // Other fragment number overlapping fragment 1's bytes.
  f = frags[0];
  f.payload = std::span<const uint8_t>(pdu.data(), 1001);
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  f = frags[2];
  f.pdu_offset = 1999;
  f.payload = std::span<const uint8_t>(pdu.data() + 1999, 1000);
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  // Different pdu_length for the same tag.
  f = frags[2];
  f.pdu_length = 5000;
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  // Payload running past pdu_length.
  f = frags[3];
  f.pdu_offset = 3500;
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  // Last flag on a fragment that does not end the PDU.
  f = frags[2];
  f.last = true;
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  // A fragment number out of order with its offset.
  f = frags[0];
  f.fragment = 5;
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  // Exact duplicate: ignored.
  EXPECT_EQ(r.add(frags[1]), FragmentResult::kDuplicate);
  EXPECT_EQ(r.stats().inconsistent, 7u);
  EXPECT_EQ(r.stats().duplicates, 1u);
  // The held data is untouched: the genuine fragments complete it bit-exact.
  EXPECT_EQ(r.add(frags[0]), FragmentResult::kAccepted);
  EXPECT_EQ(r.add(frags[3]), FragmentResult::kAccepted);
  EXPECT_EQ(r.add(frags[2]), FragmentResult::kCompleted);
  EXPECT_EQ(r.pop()->bytes, pdu);
}

TEST(Reassembly, RejectsBadOpcodeAndTooLarge) {
  Reassembler r(1000, 64u << 20);
  std::vector<uint8_t> payload(10);
  Fragment f;
  f.payload = payload;
  f.pdu_length = 2000;
  f.last = false;
  EXPECT_EQ(r.add(f), FragmentResult::kTooLarge);
  f.pdu_length = 100;
  f.opcode = Opcode::kKeepalive;
  EXPECT_EQ(r.add(f), FragmentResult::kBadOpcode);
  f.opcode = Opcode::kCommandRequest;
  f.tag = 600;
  EXPECT_EQ(r.add(f), FragmentResult::kBadOpcode);
  EXPECT_EQ(r.bytes_held(), 0u);
}

TEST(Reassembly, MemoryBoundEnforcedAndReclaimed) {
  Reassembler r(kMaxPdu, 250000);
  std::vector<std::vector<uint8_t>> pdus;
  std::vector<std::vector<Fragment>> frags;
  for (uint16_t t = 0; t < 3; ++t) {
    pdus.push_back(pattern(100000, t));
    frags.push_back(split(pdus[t], 1460, t));
  }
  EXPECT_EQ(r.add(frags[0][0]), FragmentResult::kAccepted);
  EXPECT_EQ(r.add(frags[1][0]), FragmentResult::kAccepted);
  EXPECT_EQ(r.bytes_held(), 200000u);
  // A third partial PDU would exceed the limit: rejected, nothing kept.
  EXPECT_EQ(r.add(frags[2][0]), FragmentResult::kNoMemory);
  EXPECT_EQ(r.partial_count(), 2u);
  EXPECT_EQ(r.stats().no_memory, 1u);
  // Fragments of PDUs already held are still accepted.
  for (size_t i = 1; i < frags[0].size(); ++i) r.add(frags[0][i]);
  EXPECT_EQ(r.bytes_held(), 100000u);
  // Completion released the memory: now the third PDU fits.
  for (const auto& f : frags[2]) EXPECT_NE(r.add(f), FragmentResult::kNoMemory);
  EXPECT_EQ(r.bytes_held(), 100000u);
  EXPECT_EQ(r.pop()->bytes, pdus[0]);
  EXPECT_EQ(r.pop()->bytes, pdus[2]);
  r.clear_partial();
  EXPECT_EQ(r.bytes_held(), 0u);
  EXPECT_EQ(r.partial_count(), 0u);
}

class ReassemblyMiB : public ::testing::TestWithParam<size_t> {};

TEST_P(ReassemblyMiB, OneMiBPdus) {
  const size_t chunk = max_payload(GetParam());
  Reassembler r(kMaxPdu, 64u << 20);
  std::mt19937 rng(7);
  for (uint16_t tag = 0; tag < 4; ++tag) {
    const auto pdu = pattern(1u << 20, tag);
    auto frags = split(pdu, chunk, tag);
    ASSERT_LE(frags.size(), kMaxFragmentsPerPdu);
    if (tag % 2) std::shuffle(frags.begin(), frags.end(), rng);
    size_t completed = 0;
    for (const auto& f : frags) completed += r.add(f) == FragmentResult::kCompleted;
    EXPECT_EQ(completed, 1u);
    auto got = r.pop();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->bytes, pdu);
  }
  EXPECT_EQ(r.bytes_held(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Mtu, ReassemblyMiB, ::testing::Values(size_t{1500}, size_t{9000}));

TEST(Reassembly, RandomGarbageNeverCrashes) {
  Reassembler r(kMaxPdu, 4u << 20);
  std::mt19937 rng(99);
  std::vector<uint8_t> buf(20000, 0xAB);
  for (int i = 0; i < 200000; ++i) {
    Fragment f;
    f.opcode = static_cast<Opcode>(rng() % 3);
    f.tag = static_cast<uint16_t>(rng() % 8);
    f.fragment = static_cast<uint16_t>(rng() % 1024);
    f.last = rng() % 2;
    f.pdu_length = rng() % 3 == 0 ? rng() : rng() % 50000;
    f.pdu_offset = rng() % 2 ? rng() : rng() % 50000;
    f.payload = std::span<const uint8_t>(buf.data(), rng() % buf.size());
    (void)r.add(f);
    ASSERT_LE(r.bytes_held(), 4u << 20);
    while (auto p = r.pop()) ASSERT_LE(p->bytes.size(), kMaxPdu);
  }
  const auto& s = r.stats();
  EXPECT_GT(s.inconsistent, 0u);
  EXPECT_GT(s.too_large, 0u);
  EXPECT_GT(s.bad_opcode, 0u);
}

// ---------------------------------------------------------------------------
// Reply placement: a registered reply's data-in lands in the caller's buffer.

// A reply PDU: the header (with `sense`), then `data`. data_in_length as given
// (default: the data's size).
std::vector<uint8_t> reply_pdu(uint32_t cmd_sn, const std::vector<uint8_t>& data,
                               std::vector<uint8_t> sense = {},
                               std::optional<uint32_t> data_in_length = std::nullopt) {
  ReplyHeader h;
  h.cmd_sn = cmd_sn;
  h.status = sense.empty() ? 0 : 2;
  h.sense = std::move(sense);
  h.data_in_length = data_in_length.value_or(static_cast<uint32_t>(data.size()));
  std::vector<uint8_t> pdu;
  encode(h, pdu);
  pdu.insert(pdu.end(), data.begin(), data.end());
  return pdu;
}

// Chunk sizes that put fragment boundaries inside the header (10), right at
// its end and in the data, like a small MTU.
std::vector<Fragment> split_uneven(const std::vector<uint8_t>& pdu, uint16_t tag) {
  std::vector<Fragment> out;
  const size_t sizes[] = {10, 3, 3, 1000, 1460, 7};
  size_t off = 0;
  uint16_t n = 0;
  for (size_t i = 0; off < pdu.size(); ++i) {
    const size_t len = std::min(sizes[i % std::size(sizes)], pdu.size() - off);
    Fragment f;
    f.opcode = Opcode::kCommandReply;
    f.tag = tag;
    f.fragment = n++;
    f.pdu_length = static_cast<uint32_t>(pdu.size());
    f.pdu_offset = static_cast<uint32_t>(off);
    f.payload = std::span<const uint8_t>(pdu.data() + off, len);
    off += len;
    f.last = off == pdu.size();
    out.push_back(f);
  }
  return out;
}

TEST(ReplyPlacement, FullGoodReplyLandsInTheCallersBuffer) {
  for (const size_t chunk : {size_t{1460}, size_t{8960}, size_t{133}}) {
    Reassembler r(kMaxPdu, 64u << 20);
    const auto data = pattern(131072, 11);
    const auto pdu = reply_pdu(77, data);
    std::vector<uint8_t> dst(data.size(), 0xEE);
    r.place_reply(4, dst);
    auto frags = split(pdu, chunk, 4, Opcode::kCommandReply);
    for (size_t i = 0; i + 1 < frags.size(); ++i) {
      ASSERT_EQ(r.add(frags[i]), FragmentResult::kAccepted);
      EXPECT_EQ(r.bytes_held(), 0u);  // a placed PDU is charged nothing
    }
    EXPECT_EQ(r.bytes_missing(), frags.back().payload.size());
    ASSERT_EQ(r.add(frags.back()), FragmentResult::kCompleted);
    auto got = r.pop();
    ASSERT_TRUE(got);
    EXPECT_TRUE(got->data_placed);
    EXPECT_EQ(got->tag, 4);
    EXPECT_EQ(got->placed_length, data.size());
    EXPECT_EQ(got->pdu_length(), pdu.size());
    EXPECT_EQ(got->bytes, std::vector<uint8_t>(pdu.begin(), pdu.begin() + kReplyHeaderFixedSize));
    EXPECT_EQ(dst, data) << "chunk " << chunk;
    EXPECT_EQ(r.stats().placed, 1u);
    EXPECT_EQ(r.partial_count(), 0u);
    EXPECT_EQ(r.bytes_missing(), 0u);
    // The decoder checks the header against what was placed.
    auto d = decode_placed_reply(got->bytes, dst);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->header.cmd_sn, 77u);
    EXPECT_EQ(d->data_in.data(), dst.data());
    EXPECT_EQ(d->data_in.size(), dst.size());
  }
}

TEST(ReplyPlacement, ReorderedDuplicatedAndStraddlingFragments) {
  std::mt19937 rng(5);
  for (int round = 0; round < 20; ++round) {
    Reassembler r(kMaxPdu, 64u << 20);
    const auto data = pattern(4096 * (1 + round % 8), round);
    const auto pdu = reply_pdu(round, data);
    std::vector<uint8_t> dst(data.size(), 0xEE);
    r.place_reply(9, dst);
    auto frags = split_uneven(pdu, 9);
    const size_t unique = frags.size();
    for (size_t i = 0; i < unique; i += 2) frags.push_back(frags[i]);  // duplicates
    // Up to completion (later duplicates the connection's sequence numbers filter).
    std::shuffle(frags.begin(), frags.end(), rng);
    size_t completed = 0;
    for (const auto& f : frags) {
      const auto res = r.add(f);
      ASSERT_NE(res, FragmentResult::kInconsistent);
      completed += res == FragmentResult::kCompleted;
      if (completed) break;
    }
    ASSERT_EQ(completed, 1u);
    EXPECT_EQ(dst, data);
    auto got = r.pop();
    ASSERT_TRUE(got);
    EXPECT_TRUE(got->data_placed);
    EXPECT_TRUE(decode_placed_reply(got->bytes, dst).ok());
  }
}

TEST(ReplyPlacement, OtherRepliesTakeTheCopyPathAndLeaveTheBufferAlone) {
  const auto data = pattern(65536, 3);
  std::vector<uint8_t> sense(18, 0x70);
  const std::vector<std::vector<uint8_t>> others = {
      reply_pdu(1, {}, sense),  // CHECK CONDITION, no data
      reply_pdu(2, std::vector<uint8_t>(data.begin(), data.begin() + 32768)),  // underflow
      reply_pdu(3, data, sense),                                               // sense and data
      reply_pdu(4, pattern(65536 + 512, 4)),                                   // longer
  };
  for (const auto& pdu : others) {
    Reassembler r(kMaxPdu, 64u << 20);
    std::vector<uint8_t> dst(data.size(), 0xEE);
    r.place_reply(2, dst);
    auto frags = split(pdu, 1460, 2, Opcode::kCommandReply);
    std::shuffle(frags.begin(), frags.end(), std::mt19937(1));
    size_t completed = 0;
    for (const auto& f : frags) completed += r.add(f) == FragmentResult::kCompleted;
    ASSERT_EQ(completed, 1u);
    auto got = r.pop();
    ASSERT_TRUE(got);
    EXPECT_FALSE(got->data_placed);
    EXPECT_EQ(got->bytes, pdu);
    EXPECT_EQ(dst, std::vector<uint8_t>(data.size(), 0xEE));
    EXPECT_EQ(r.stats().placed, 0u);
  }
  // Requests under the same tag are never placed either.
  Reassembler r(kMaxPdu, 64u << 20);
  std::vector<uint8_t> dst(data.size(), 0xEE);
  r.place_reply(2, dst);
  const auto req = reply_pdu(5, data);
  for (const auto& f : split(req, 1460, 2)) r.add(f);
  auto got = r.pop();
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->data_placed);
  EXPECT_EQ(dst, std::vector<uint8_t>(data.size(), 0xEE));
}

TEST(ReplyPlacement, UsedOnceThenTheNextReplyIsCopied) {
  Reassembler r(kMaxPdu, 64u << 20);
  const auto data = pattern(8192, 8);
  const auto pdu = reply_pdu(1, data);
  std::vector<uint8_t> dst(data.size(), 0xEE);
  r.place_reply(3, dst);
  for (const auto& f : split(pdu, 1460, 3, Opcode::kCommandReply)) r.add(f);
  ASSERT_TRUE(r.pop()->data_placed);
  ASSERT_EQ(dst, data);
  // The caller got its data and reuses the buffer; the same reply again (a
  // resend) must not write into it.
  std::fill(dst.begin(), dst.end(), 0x5A);
  const auto again = reply_pdu(1, pattern(8192, 9));
  for (const auto& f : split(again, 1460, 3, Opcode::kCommandReply)) r.add(f);
  auto got = r.pop();
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->data_placed);
  EXPECT_EQ(got->bytes, again);
  EXPECT_EQ(dst, std::vector<uint8_t>(data.size(), 0x5A));
}

// The command completed by another path (dead time, session failure) while
// its reply was under way: from forget_reply() on nothing lands in the
// buffer, the rest of that reply is still recognised and dropped, and the
// tag works for the next command.
TEST(ReplyPlacement, ForgottenMidwayNoLateFragmentWritesTheBuffer) {
  Reassembler r(kMaxPdu, 64u << 20);
  const auto data = pattern(131072, 21);
  const auto pdu = reply_pdu(1, data);
  std::vector<uint8_t> dst(data.size(), 0xEE);
  r.place_reply(6, dst);
  auto frags = split(pdu, 1460, 6, Opcode::kCommandReply);
  std::shuffle(frags.begin(), frags.end(), std::mt19937(2));
  const size_t half = frags.size() / 2;
  for (size_t i = 0; i < half; ++i) ASSERT_EQ(r.add(frags[i]), FragmentResult::kAccepted);
  EXPECT_NE(dst, std::vector<uint8_t>(data.size(), 0xEE));  // some data did land
  r.forget_reply(6);
  std::fill(dst.begin(), dst.end(), 0x5A);  // handed back: the caller reuses it
  size_t abandoned = 0;
  for (size_t i = half; i < frags.size(); ++i) {
    const auto res = r.add(frags[i]);
    ASSERT_NE(res, FragmentResult::kInconsistent);
    abandoned += res == FragmentResult::kAbandoned;
  }
  for (size_t i = 0; i < frags.size(); i += 3)  // late duplicates
    ASSERT_NE(r.add(frags[i]), FragmentResult::kInconsistent);
  EXPECT_EQ(abandoned, 1u);
  EXPECT_EQ(r.stats().abandoned, 1u);
  EXPECT_EQ(dst, std::vector<uint8_t>(data.size(), 0x5A));
  EXPECT_FALSE(r.pop());  // an abandoned reply is not delivered
  // The late duplicates began a new partial reply (copy path): the
  // connection's sequence numbers filter those before reassembly. Clear it
  // as a new Connection would, and check the tag serves the next command.
  r.clear_partial();
  std::vector<uint8_t> dst2(data.size(), 0);
  r.place_reply(6, dst2);
  const auto next = reply_pdu(2, pattern(131072, 22));
  for (const auto& f : split(next, 8960, 6, Opcode::kCommandReply)) r.add(f);
  auto got = r.pop();
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->data_placed);
  EXPECT_TRUE(std::equal(dst2.begin(), dst2.end(), next.begin() + kReplyHeaderFixedSize));
  EXPECT_EQ(dst, std::vector<uint8_t>(data.size(), 0x5A));
}

TEST(ReplyPlacement, ForgetAllAndReRegisterDropThePlacedPartials) {
  Reassembler r(kMaxPdu, 64u << 20);
  const auto data = pattern(16384, 31);
  std::vector<std::vector<uint8_t>> pdus, dsts;
  std::vector<std::vector<Fragment>> frags;
  for (uint16_t t = 0; t < 3; ++t) {
    pdus.push_back(reply_pdu(t, data));
    dsts.emplace_back(data.size(), 0xEE);
  }
  for (uint16_t t = 0; t < 3; ++t) {
    r.place_reply(t, dsts[t]);
    frags.push_back(split(pdus[t], 1460, t, Opcode::kCommandReply));
    r.add(frags[t][0]);
  }
  r.forget_replies();
  // Re-registering tag 2 (a command sent anew) drops its old partial too.
  std::vector<uint8_t> fresh(data.size(), 0x11);
  r.place_reply(2, fresh);
  for (uint16_t t = 0; t < 3; ++t) std::fill(dsts[t].begin(), dsts[t].end(), 0x5A);
  for (uint16_t t = 0; t < 3; ++t)
    for (size_t i = 1; i < frags[t].size(); ++i) r.add(frags[t][i]);
  EXPECT_EQ(r.stats().abandoned, 3u);
  EXPECT_FALSE(r.pop());
  for (uint16_t t = 0; t < 3; ++t) EXPECT_EQ(dsts[t], std::vector<uint8_t>(data.size(), 0x5A));
  EXPECT_EQ(fresh, std::vector<uint8_t>(data.size(), 0x11));
}

// The same rejection rules as the copy path; a rejected fragment writes
// nothing into the buffer.
TEST(ReplyPlacement, RejectsOverlapsAndInconsistentFragmentsWithoutWriting) {
  Reassembler r(kMaxPdu, 64u << 20);
  const auto data = pattern(3984, 5);
  const auto pdu = reply_pdu(1, data);  // 4000 bytes
  auto frags = split(pdu, 1000, 1, Opcode::kCommandReply);
  std::vector<uint8_t> dst(data.size(), 0xEE);
  r.place_reply(1, dst);
  ASSERT_EQ(r.add(frags[1]), FragmentResult::kAccepted);
  const auto after_one = dst;
  const auto junk = pattern(2000, 99);
  Fragment f = frags[1];
  f.pdu_offset = 900;
  f.payload = std::span<const uint8_t>(junk.data(), 1000);
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  f = frags[0];
  f.payload = std::span<const uint8_t>(junk.data(), 1001);
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  f = frags[2];
  f.pdu_offset = 1999;
  f.payload = std::span<const uint8_t>(junk.data(), 1000);
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  f = frags[2];
  f.pdu_length = 5000;
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  f = frags[3];
  f.pdu_offset = 3500;
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  f = frags[2];
  f.last = true;
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  f = frags[0];
  f.fragment = 5;
  f.payload = std::span<const uint8_t>(junk.data(), 1000);
  EXPECT_EQ(r.add(f), FragmentResult::kInconsistent);
  f = frags[1];
  f.payload = std::span<const uint8_t>(junk.data(), 1000);  // same range, other bytes
  EXPECT_EQ(r.add(f), FragmentResult::kDuplicate);
  EXPECT_EQ(r.stats().inconsistent, 7u);
  EXPECT_EQ(r.stats().duplicates, 1u);
  EXPECT_EQ(dst, after_one);
  EXPECT_EQ(r.add(frags[0]), FragmentResult::kAccepted);
  EXPECT_EQ(r.add(frags[3]), FragmentResult::kAccepted);
  EXPECT_EQ(r.add(frags[2]), FragmentResult::kCompleted);
  EXPECT_EQ(dst, data);
  EXPECT_TRUE(r.pop()->data_placed);
}

// A placed PDU holds no memory of ours: it fits where a copied one would not.
TEST(ReplyPlacement, PlacedPdusAreNotChargedAgainstTheMemoryLimit) {
  Reassembler r(kMaxPdu, 100000);
  const auto data = pattern(131072, 41);
  const auto pdu = reply_pdu(1, data);
  auto frags = split(pdu, 1460, 1, Opcode::kCommandReply);
  EXPECT_EQ(r.add(frags[0]), FragmentResult::kNoMemory);  // unplaced: too big
  std::vector<uint8_t> dst(data.size());
  r.place_reply(1, dst);
  for (size_t i = 0; i + 1 < frags.size(); ++i) {
    ASSERT_EQ(r.add(frags[i]), FragmentResult::kAccepted);
    ASSERT_EQ(r.bytes_held(), 0u);
  }
  EXPECT_EQ(r.add(frags.back()), FragmentResult::kCompleted);
  EXPECT_EQ(dst, data);
}

TEST(ReplyPlacement, DecoderRejectsALyingHeader) {
  const auto data = pattern(4096, 51);
  std::vector<uint8_t> placed = data;
  // data_in_length says 4000 while 4096 bytes followed the header.
  auto pdu = reply_pdu(1, data, {}, 4000);
  std::span<const uint8_t> header(pdu.data(), kReplyHeaderFixedSize);
  auto d = decode_placed_reply(header, placed);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error(), DecodeError::kBadLength);
  // A header of the wrong size.
  EXPECT_FALSE(decode_placed_reply(std::span<const uint8_t>(pdu.data(), 10), placed).ok());
  // Sense inside the placed bytes: data_in points behind it.
  std::vector<uint8_t> sense(18, 0x70);
  auto with_sense = reply_pdu(2, std::vector<uint8_t>(data.begin(), data.end() - 18), sense);
  std::span<const uint8_t> rest(with_sense.data() + kReplyHeaderFixedSize,
                                with_sense.size() - kReplyHeaderFixedSize);
  auto s =
      decode_placed_reply(std::span<const uint8_t>(with_sense.data(), kReplyHeaderFixedSize), rest);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->header.sense, sense);
  EXPECT_EQ(s->data_in.data(), rest.data() + 18);
  EXPECT_EQ(s->data_in.size(), data.size() - 18);
}

}  // namespace
}  // namespace hyperscsi::proto

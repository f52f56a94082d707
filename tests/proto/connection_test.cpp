// Connection tests: two real Connections joined by a simulated channel (loss,
// reordering, duplication, corruption, finite line rate) on a virtual clock,
// plus focused checks of fragmentation, acks, window probing and robustness.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <queue>
#include <random>
#include <vector>

#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/seq.h"

namespace hyperscsi::proto {
namespace {

constexpr MacAddress kMacA = {0x02, 0, 0, 0, 0, 0x0a};
constexpr MacAddress kMacB = {0x02, 0, 0, 0, 0, 0x0b};

// Collects frames written by a Connection.
class VectorSink : public FrameSink {
 public:
  std::span<uint8_t> acquire(size_t size) override {
    if (refuse) return {};
    buf_.resize(size);
    return buf_;
  }
  void commit(size_t length) override {
    buf_.resize(length);
    frames.push_back(std::move(buf_));
    buf_ = {};
  }
  std::vector<std::vector<uint8_t>> frames;
  bool refuse = false;

 private:
  std::vector<uint8_t> buf_;
};

FrameView decode_ok(const std::vector<uint8_t>& bytes) {
  auto r = decode_frame(bytes);
  EXPECT_TRUE(r.ok());
  return r.ok() ? r.value() : FrameView{};
}

// Deterministic PDU contents from (stream, index).
void fill_pdu(std::vector<uint8_t>& out, size_t size, uint64_t seed) {
  out.resize(size);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out.data() + i, &x, 8);
  }
  for (; i < size; ++i) out[i] = static_cast<uint8_t>(x >> (8 * (i % 8)));
}

// ---------------------------------------------------------------------------
// Simulated channel: one direction, finite rate, seeded impairments.
struct Impairments {
  double loss = 0;
  double reorder = 0;  // probability of an extra random delay
  double duplicate = 0;
  double corrupt = 0;  // a flipped byte; decode_frame's checksum drops it
  double rate_bps = 10e9;
  Duration propagation = microseconds(20);
};

class Channel {
 public:
  Channel(const Impairments& imp, uint64_t seed) : imp_(imp), rng_(seed) {}

  void send(std::vector<uint8_t> frame, TimePoint now) {
    ++sent;
    if (chance(imp_.loss)) {
      ++lost;
      return;
    }
    // Serialization at the line rate, then propagation.
    const auto ser = std::chrono::nanoseconds(
        static_cast<int64_t>(static_cast<double>(frame.size() + 24) * 8e9 / imp_.rate_bps));
    busy_until_ = std::max(busy_until_, now) + ser;
    wire_bytes += frame.size();
    const bool dup = chance(imp_.duplicate);
    if (dup) push(frame, busy_until_ + imp_.propagation + jitter());
    if (chance(imp_.corrupt)) {
      std::uniform_int_distribution<size_t> at(14, frame.size() - 1);
      frame[at(rng_)] ^= 0x5A;
    }
    push(std::move(frame), busy_until_ + imp_.propagation + jitter());
  }
  TimePoint next() const { return q_.empty() ? kNever : q_.top().at; }
  bool pop_due(TimePoint now, std::vector<uint8_t>& out) {
    if (q_.empty() || q_.top().at > now) return false;
    out = std::move(const_cast<Packet&>(q_.top()).bytes);
    q_.pop();
    return true;
  }
  bool empty() const { return q_.empty(); }
  void set_propagation(Duration d) { imp_.propagation = d; }

  uint64_t sent = 0, lost = 0, wire_bytes = 0;

 private:
  struct Packet {
    TimePoint at;
    uint64_t order;
    std::vector<uint8_t> bytes;
    bool operator>(const Packet& o) const { return at != o.at ? at > o.at : order > o.order; }
  };
  bool chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  Duration jitter() {
    if (!chance(imp_.reorder)) return Duration::zero();
    return std::chrono::nanoseconds(std::uniform_int_distribution<int64_t>(1000, 200000)(rng_));
  }
  void push(std::vector<uint8_t> b, TimePoint at) { q_.push(Packet{at, order_++, std::move(b)}); }

  Impairments imp_;
  std::mt19937_64 rng_;
  TimePoint busy_until_{};
  uint64_t order_ = 0;
  std::priority_queue<Packet, std::vector<Packet>, std::greater<>> q_;
};

// Sink that puts frames on a channel.
class ChannelSink : public FrameSink {
 public:
  explicit ChannelSink(Channel& ch) : ch_(ch) {}
  std::span<uint8_t> acquire(size_t size) override {
    buf_.resize(size);
    return buf_;
  }
  void commit(size_t length) override {
    buf_.resize(length);
    ch_.send(std::move(buf_), now);
    buf_ = {};
  }
  TimePoint now{};

 private:
  Channel& ch_;
  std::vector<uint8_t> buf_;
};

// One direction's workload: PDUs with log-uniform sizes and random tags, and
// the receiver-side check that each arrives exactly once and bit-exact.
class Stream {
 public:
  Stream(uint64_t seed, size_t count, size_t max_size) : rng_(seed), seed_(seed), count_(count) {
    std::uniform_real_distribution<double> u(0, std::log(static_cast<double>(max_size)));
    for (size_t i = 0; i < count; ++i)
      sizes_.push_back(std::clamp<size_t>(static_cast<size_t>(std::exp(u(rng_))), 1, max_size));
    received_.assign(count, false);
  }

  // Offers PDUs to `c` while it has queue room.
  void feed(Connection& c, size_t queue_target) {
    while (next_ < count_ && c.send_queue_bytes() < queue_target) {
      const Opcode op = rng_() % 2 ? Opcode::kCommandRequest : Opcode::kCommandReply;
      std::vector<uint8_t> pdu;
      fill_pdu(pdu, sizes_[next_], seed_ * 1000003 + next_);
      // Random tag; the Connection refuses one whose previous PDU is unacked.
      bool sent = false;
      for (int attempt = 0; attempt < 64 && !sent; ++attempt) {
        const auto tag = static_cast<uint16_t>(rng_() % (kMaxTag + 1));
        std::vector<uint8_t> copy = pdu;
        if (c.send_pdu(op, tag, std::move(copy))) {
          expected_[key(op, tag)].push_back(next_);
          sent = true;
        } else {
          ++refused_busy;
        }
      }
      if (!sent) return;  // all tried tags busy: later
      ++next_;
    }
  }

  void drain(Connection& c) {
    std::vector<uint8_t> want;
    while (auto p = c.pop_pdu()) {
      auto& fifo = expected_[key(p->opcode, p->tag)];
      ASSERT_FALSE(fifo.empty()) << "unexpected PDU tag " << p->tag;
      const size_t idx = fifo.front();
      fifo.pop_front();
      ASSERT_FALSE(received_[idx]) << "PDU delivered twice: " << idx;
      received_[idx] = true;
      fill_pdu(want, sizes_[idx], seed_ * 1000003 + idx);
      ASSERT_EQ(p->bytes.size(), want.size()) << "PDU " << idx;
      ASSERT_TRUE(std::memcmp(p->bytes.data(), want.data(), want.size()) == 0)
          << "PDU " << idx << " corrupted";
      ++delivered;
      bytes += want.size();
    }
  }

  bool done() const { return delivered == count_; }
  size_t delivered = 0;
  uint64_t bytes = 0;
  uint64_t refused_busy = 0;

 private:
  static int key(Opcode op, uint16_t tag) { return static_cast<int>(op) * 1024 + tag; }
  std::mt19937_64 rng_;
  uint64_t seed_;
  size_t count_;
  size_t next_ = 0;
  std::vector<size_t> sizes_;
  std::vector<bool> received_;
  std::map<int, std::deque<size_t>> expected_;
};

struct SimResult {
  bool completed = false;
  Duration virtual_time{};
  double wall_seconds = 0;
  uint64_t decode_failures = 0;
};

// Sanitizer builds run several times slower; scripts/test.sh sets this for them.
double timeout_factor() {
  const char* f = std::getenv("HYPERSCSI_TEST_TIMEOUT_FACTOR");
  const double v = f ? std::atof(f) : 1.0;
  return v >= 1.0 ? v : 1.0;
}

// Runs both directions until every PDU arrived or a bound is hit.
SimResult run_pair(Connection& a, Connection& b, Channel& ab, Channel& ba, Stream& sa, Stream& sb,
                   Duration virtual_limit = seconds(3600), double wall_limit_s = 250) {
  SimResult res;
  wall_limit_s *= timeout_factor();
  const auto wall0 = std::chrono::steady_clock::now();
  ChannelSink sink_a(ab), sink_b(ba);
  TimePoint now{};
  std::vector<uint8_t> frame;
  uint64_t stalls = 0;
  for (uint64_t iter = 0; iter < 200'000'000; ++iter) {
    sa.feed(a, 8u << 20);
    sb.feed(b, 8u << 20);
    sink_a.now = sink_b.now = now;
    a.poll(now, sink_a);
    b.poll(now, sink_b);
    if (sa.done() && sb.done() && a.idle() && b.idle() && ab.empty() && ba.empty()) {
      res.completed = true;
      break;
    }
    TimePoint t = std::min({ab.next(), ba.next(), a.next_deadline(), b.next_deadline()});
    if (t == kNever) break;  // nothing will ever happen again: stuck
    if (t <= now) {
      if (++stalls > 100000) break;  // a deadline that poll never clears
    } else {
      stalls = 0;
      now = t;
    }
    while (ab.pop_due(now, frame)) {
      auto v = decode_frame(frame);
      if (!v.ok()) {
        ++res.decode_failures;
        continue;
      }
      b.on_frame(v.value(), now);
    }
    while (ba.pop_due(now, frame)) {
      auto v = decode_frame(frame);
      if (!v.ok()) {
        ++res.decode_failures;
        continue;
      }
      a.on_frame(v.value(), now);
    }
    sa.drain(b);  // a's PDUs arrive at b
    sb.drain(a);
    if (::testing::Test::HasFatalFailure()) break;
    if (std::getenv("SIM_TRACE") && (iter % 2000) == 0) {
      const auto& st = a.stats();
      std::printf(
          "t=%.4f inflight=%u cwnd=%u rto=%lldus srtt=%lldus peerw=%u rtx=%llu to=%llu "
          "q=%zu next=%.4f idle=%d/%d\n",
          std::chrono::duration<double>(now - TimePoint{}).count(), a.in_flight(), st.cwnd,
          (long long)std::chrono::duration_cast<microseconds>(st.rto).count(),
          (long long)std::chrono::duration_cast<microseconds>(st.srtt).count(), st.peer_window,
          (unsigned long long)st.frames_retransmitted, (unsigned long long)st.timeouts,
          a.send_queue_bytes(),
          std::chrono::duration<double>(a.next_deadline() - TimePoint{}).count(), a.idle(),
          b.idle());
    }
    if (now - TimePoint{} > virtual_limit) break;
    if ((iter & 1023) == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count() >
            wall_limit_s)
      break;
  }
  res.virtual_time = now - TimePoint{};
  res.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return res;
}

Endpoint endpoint_a() {
  Endpoint e;
  e.local = kMacA;
  e.peer = kMacB;
  e.session_id = 7;
  e.peer_window = 512;
  return e;
}
Endpoint endpoint_b() {
  Endpoint e = endpoint_a();
  std::swap(e.local, e.peer);
  return e;
}

void print_stats(const char* who, const TransportStats& s) {
  std::printf(
      "  %s: pdus sent %llu recv %llu, frames sent %llu rtx %llu fast %llu timeouts %llu acks "
      "%llu dup %llu oow %llu, max_in_flight %u (window %u), cwnd %u ssthresh %u srtt %lld us\n",
      who, (unsigned long long)s.pdus_sent, (unsigned long long)s.pdus_received,
      (unsigned long long)s.frames_sent, (unsigned long long)s.frames_retransmitted,
      (unsigned long long)s.fast_retransmits, (unsigned long long)s.timeouts,
      (unsigned long long)s.acks_sent, (unsigned long long)s.duplicates_received,
      (unsigned long long)s.out_of_window, s.max_in_flight, s.max_allowed_window, s.cwnd,
      s.ssthresh, (long long)std::chrono::duration_cast<std::chrono::microseconds>(s.srtt).count());
}

struct SimCase {
  size_t pdus;
  size_t max_size;
  Impairments imp;
  uint64_t seed;
};

void run_case(const SimCase& sc, const TransportParams& params = {}) {
  Connection a(params, endpoint_a()), b(params, endpoint_b());
  Channel ab(sc.imp, sc.seed * 11 + 1), ba(sc.imp, sc.seed * 13 + 2);
  Stream sa(sc.seed * 17 + 3, sc.pdus, sc.max_size), sb(sc.seed * 19 + 4, sc.pdus, sc.max_size);
  const SimResult r = run_pair(a, b, ab, ba, sa, sb);
  std::printf(
      "  %zu PDUs each way, %.1f MB + %.1f MB, virtual %.3f s, wall %.2f s, "
      "decode failures %llu\n",
      sc.pdus, sa.bytes / 1e6, sb.bytes / 1e6,
      std::chrono::duration<double>(r.virtual_time).count(), r.wall_seconds,
      (unsigned long long)r.decode_failures);
  print_stats("A", a.stats());
  print_stats("B", b.stats());
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  EXPECT_TRUE(r.completed) << "delivered " << sa.delivered << " and " << sb.delivered << " of "
                           << sc.pdus;
  EXPECT_FALSE(a.stats().window_violated);
  EXPECT_FALSE(b.stats().window_violated);
  EXPECT_LE(a.stats().max_in_flight, a.stats().max_allowed_window);
  EXPECT_EQ(a.stats().pdus_received, sc.pdus);
  EXPECT_EQ(b.stats().pdus_received, sc.pdus);
  EXPECT_EQ(a.send_queue_bytes(), 0u);
  EXPECT_EQ(b.send_queue_bytes(), 0u);
  if (sc.imp.loss > 0) {
    EXPECT_GT(a.stats().frames_retransmitted, 0u);
    EXPECT_GT(b.stats().frames_retransmitted, 0u);
  }
  if (sc.imp.corrupt > 0) {
    EXPECT_GT(r.decode_failures, 0u);
  }
}

// The acceptance run: 10,000 PDUs each way, 1 B .. 1 MiB, 10% loss, 10%
// reordering, 5% duplication, 0.5% corruption, both directions at once.
TEST(ConnectionSim, LossyReorderingDuplicatingBothDirections) {
  Impairments imp;
  imp.loss = 0.10;
  imp.reorder = 0.10;
  imp.duplicate = 0.05;
  imp.corrupt = 0.005;
  run_case({10000, 1u << 20, imp, 1});
}

TEST(ConnectionSim, HeavyLossStillCompletes) {
  Impairments imp;
  imp.loss = 0.30;
  imp.reorder = 0.10;
  imp.duplicate = 0.05;
  run_case({300, 1u << 20, imp, 2});
}

TEST(ConnectionSim, NoSackStillRecovers) {
  Impairments imp;
  imp.loss = 0.05;
  imp.reorder = 0.05;
  TransportParams p;
  p.sack = false;
  run_case({300, 256u << 10, imp, 3}, p);
}

TEST(ConnectionSim, Mtu9000) {
  Impairments imp;
  imp.loss = 0.05;
  imp.reorder = 0.05;
  imp.duplicate = 0.05;
  TransportParams p;
  p.mtu = 9000;
  run_case({500, 1u << 20, imp, 4}, p);
}

// Without loss the window opens up and the link runs at its line rate.
TEST(ConnectionSim, NoLossReachesLineRate) {
  TransportParams params;
  Impairments imp;
  imp.rate_bps = 10e9;
  Connection a(params, endpoint_a()), b(params, endpoint_b());
  Channel ab(imp, 5), ba(imp, 6);
  Stream sa(7, 400, 1u << 20), sb(8, 0, 1);
  const SimResult r = run_pair(a, b, ab, ba, sa, sb);
  ASSERT_TRUE(r.completed);
  const double secs = std::chrono::duration<double>(r.virtual_time).count();
  const double goodput = static_cast<double>(sa.bytes) * 8 / secs;
  const double payload_share = 1460.0 / (1514 + 24);  // headers + preamble/IFG per frame
  std::printf("  goodput %.2f Gbit/s of %.2f possible; cwnd %u, max in flight %u\n", goodput / 1e9,
              imp.rate_bps * payload_share / 1e9, a.stats().cwnd, a.stats().max_in_flight);
  EXPECT_GT(a.stats().cwnd, params.initial_cwnd);
  EXPECT_GT(a.stats().max_in_flight, params.initial_cwnd);
  EXPECT_GT(goodput, 0.85 * imp.rate_bps * payload_share);
  EXPECT_EQ(a.stats().frames_retransmitted, 0u);
  EXPECT_EQ(a.stats().timeouts, 0u);
  EXPECT_FALSE(a.stats().window_violated);
}

// The RTO follows the path: 1 ms RTT, then 20 ms, then 1 ms again.
TEST(ConnectionSim, RtoFollowsChangedRtt) {
  TransportParams params;
  Impairments imp;
  Connection a(params, endpoint_a()), b(params, endpoint_b());
  Channel ab(imp, 21), ba(imp, 22);
  auto phase = [&](Duration one_way, uint64_t seed, size_t pdus) {
    ab.set_propagation(one_way);
    ba.set_propagation(one_way);
    Stream sa(seed, pdus, 64u << 10), sb(seed + 1, pdus, 64u << 10);
    const SimResult r = run_pair(a, b, ab, ba, sa, sb);
    EXPECT_TRUE(r.completed);
    const auto srtt = std::chrono::duration_cast<microseconds>(a.stats().srtt).count();
    const auto rto = std::chrono::duration_cast<microseconds>(a.stats().rto).count();
    std::printf("  one-way %lld us: srtt %lld us, rto %lld us, timeouts so far %llu\n",
                (long long)std::chrono::duration_cast<microseconds>(one_way).count(),
                (long long)srtt, (long long)rto, (unsigned long long)a.stats().timeouts);
    return std::pair{srtt, rto};
  };
  // Delayed acks (500 us) and serialization add to the propagation delay.
  auto [s1, r1] = phase(microseconds(500), 100, 400);
  EXPECT_GT(s1, 900);
  EXPECT_LT(s1, 3000);
  EXPECT_LT(r1, 10000);
  // The jump to 20 ms makes the 2 ms RTO fire spuriously; backoff (and
  // Karn's rule) carry the RTO up until fresh samples arrive.
  auto [s2, r2] = phase(milliseconds(10), 200, 400);
  EXPECT_GT(s2, 18000);
  EXPECT_LT(s2, 30000);
  EXPECT_GT(r2, 20000);
  // The RTO uses the largest variance of the last round trip, decaying by a
  // quarter per round: coming down from the 20 ms spike takes a few dozen
  // round trips (about 6 per 400 PDUs here).
  auto [s3, r3] = phase(microseconds(500), 300, 2400);
  EXPECT_LT(s3, 3000);
  EXPECT_LT(r3, 10000);
}

// ---------------------------------------------------------------------------
// Spurious-timeout detection (F-RTO).

// Shuttles frames between a and b without loss, 50 us each way, until both
// are idle (bounded).
void settle(Connection& a, Connection& b, TimePoint& now) {
  VectorSink sa, sb;
  for (int i = 0; i < 100000 && !(a.idle() && b.idle()); ++i) {
    a.poll(now, sa);
    b.poll(now, sb);
    now += microseconds(50);
    for (auto& f : sa.frames) b.on_frame(decode_ok(f), now);
    for (auto& f : sb.frames) a.on_frame(decode_ok(f), now);
    sa.frames.clear();
    sb.frames.clear();
  }
  EXPECT_TRUE(a.idle() && b.idle());
}

// A warmed-up pair (RTT ~100 us, RTO at its floor) with 32 more frames' worth
// of PDUs queued at a beyond one full window; a has sent that window.
struct FrtoSetup {
  TransportParams p;
  Connection a{p, endpoint_a()};
  Connection b{p, endpoint_b()};
  TimePoint now{};
  VectorSink window;  // the frames a sent
  uint32_t cwnd_before = 0;
  uint32_t ssthresh_before = 0;
  uint32_t first_seq = 0;

  void start() {
    ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 16, 1)));
    settle(a, b, now);
    ASSERT_TRUE(b.pop_pdu());
    ASSERT_EQ(a.stats().timeouts, 0u);
    for (uint16_t t = 2; t < 6; ++t)
      ASSERT_TRUE(
          a.send_pdu(Opcode::kCommandRequest, t, std::vector<uint8_t>(1460 * 32, uint8_t(t))));
    a.poll(now, window);
    cwnd_before = a.stats().cwnd;
    ssthresh_before = a.stats().ssthresh;
    ASSERT_GE(cwnd_before, 16u);
    ASSERT_EQ(window.frames.size(), cwnd_before);
    first_seq = decode_ok(window.frames[0]).header.ext.seq;
  }
};

// (a) A delay spike without loss: every frame arrives, but b's acks are held
// back past the RTO. The timeout resends only the head, the late acks prove
// the originals arrived, and the window collapse is undone.
TEST(ConnectionFrto, DelaySpikeIsDeclaredSpuriousAndUndone) {
  FrtoSetup s;
  s.start();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  VectorSink acks;
  const TimePoint arrive = s.now + microseconds(50);
  for (size_t i = 0; i < s.window.frames.size(); ++i) {
    s.b.on_frame(decode_ok(s.window.frames[i]), arrive);
    if (i % 4 == 3) s.b.poll(arrive, acks);  // an ack per 4 frames (ack_every)
  }
  ASSERT_GE(acks.frames.size(), 3u);

  const TimePoint rto_at = s.a.next_deadline();
  ASSERT_GE(rto_at - s.now, s.p.rto.min);
  VectorSink out;
  s.a.poll(rto_at, out);
  EXPECT_EQ(s.a.stats().timeouts, 1u);
  EXPECT_EQ(s.a.stats().cwnd, 1u);
  ASSERT_EQ(out.frames.size(), 1u);  // only the head, no go-back-N
  const FrameView head = decode_ok(out.frames[0]);
  EXPECT_EQ(head.header.ext.seq, s.first_seq);
  EXPECT_TRUE(head.header.ext.flags & kFlagRetransmit);

  // The held acks arrive. The first moves past the head: two new frames
  // may go out to draw another ack, nothing is resent.
  TimePoint now = rto_at + microseconds(100);
  s.a.on_frame(decode_ok(acks.frames[0]), now);
  EXPECT_EQ(s.a.stats().spurious_timeouts, 0u);
  s.a.poll(now, out);
  ASSERT_EQ(out.frames.size(), 3u);
  for (size_t i = 1; i < out.frames.size(); ++i) {
    const FrameView f = decode_ok(out.frames[i]);
    EXPECT_FALSE(f.header.ext.flags & kFlagRetransmit);
    EXPECT_EQ(f.header.ext.seq, s.first_seq + s.cwnd_before + uint32_t(i - 1));
  }
  // The second moves it again, over frames sent once: spurious.
  s.a.on_frame(decode_ok(acks.frames[1]), now);
  EXPECT_EQ(s.a.stats().spurious_timeouts, 1u);
  EXPECT_GE(s.a.stats().cwnd, s.cwnd_before);
  EXPECT_EQ(s.a.stats().ssthresh, s.ssthresh_before);
  // No backoff left, and the estimate covers the spike the original saw.
  EXPECT_GT(s.a.stats().rto, now - s.now);
  EXPECT_LT(s.a.stats().rto, 4 * (now - s.now));
  for (size_t i = 2; i < acks.frames.size(); ++i) s.a.on_frame(decode_ok(acks.frames[i]), now);

  // The rest completes without any further retransmission.
  now += microseconds(50);
  for (auto& f : out.frames) s.b.on_frame(decode_ok(f), now);
  settle(s.a, s.b, now);
  EXPECT_EQ(s.a.stats().frames_retransmitted, 1u);
  EXPECT_EQ(s.a.stats().timeouts, 1u);
  EXPECT_EQ(s.a.stats().spurious_timeouts, 1u);
  EXPECT_FALSE(s.a.stats().window_violated);
  int pdus = 0;
  while (auto p = s.b.pop_pdu()) {
    EXPECT_EQ(p->bytes, std::vector<uint8_t>(1460 * 32, uint8_t(p->tag)));
    ++pdus;
  }
  EXPECT_EQ(pdus, 4);
}

// One ack covering the whole window, as a starved receiver sends after a
// batch: ambiguous by the two-ack rule, but if it arrives sooner than half the
// smallest RTT after the head was resent, it cannot be for the resent copy.
void single_late_ack(Duration after_rto, bool expect_spurious) {
  FrtoSetup s;
  s.start();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  const TimePoint arrive = s.now + microseconds(50);
  for (auto& f : s.window.frames) s.b.on_frame(decode_ok(f), arrive);
  VectorSink ack;
  s.b.poll(arrive, ack);
  ASSERT_EQ(ack.frames.size(), 1u);
  ASSERT_EQ(decode_ok(ack.frames[0]).header.ext.ack, s.first_seq + s.cwnd_before);
  const TimePoint rto_at = s.a.next_deadline();
  VectorSink out;
  s.a.poll(rto_at, out);
  ASSERT_EQ(out.frames.size(), 1u);
  TimePoint now = rto_at + after_rto;
  s.a.on_frame(decode_ok(ack.frames[0]), now);
  EXPECT_EQ(s.a.stats().spurious_timeouts, expect_spurious ? 1u : 0u);
  if (expect_spurious) {
    EXPECT_GE(s.a.stats().cwnd, s.cwnd_before);
    EXPECT_EQ(s.a.stats().ssthresh, s.ssthresh_before);
  } else {
    EXPECT_LT(s.a.stats().cwnd, s.cwnd_before);
  }
  for (auto& f : out.frames) s.b.on_frame(decode_ok(f), now);
  settle(s.a, s.b, now);
  EXPECT_EQ(s.a.stats().frames_retransmitted, 1u);  // nothing was lost: only the head, either way
  // Either way the resent head reached b as a duplicate; b's D-SACK shows
  // the timeout spurious even where F-RTO could not tell.
  EXPECT_EQ(s.a.stats().spurious_timeouts, 1u);
  EXPECT_GE(s.a.stats().cwnd, s.cwnd_before);
  int pdus = 0;
  while (s.b.pop_pdu()) ++pdus;
  EXPECT_EQ(pdus, 4);
}

TEST(ConnectionFrto, OneAckForEverythingSoonAfterTheTimeoutIsSpurious) {
  single_late_ack(microseconds(1), true);
}

TEST(ConnectionFrto, OneAckForEverythingLaterIsTreatedAsARealTimeout) {
  single_late_ack(milliseconds(1), false);
}

// (b) Real loss: the whole window is lost. The timeout resends the head; the
// acks that follow show holes, so the sender goes back N exactly as a plain
// timeout does and the timeout is not declared spurious.
TEST(ConnectionFrto, RealLossRecoversAsBefore) {
  FrtoSetup s;
  s.start();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  const TimePoint rto_at = s.a.next_deadline();
  VectorSink out;
  s.a.poll(rto_at, out);
  EXPECT_EQ(s.a.stats().timeouts, 1u);
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_EQ(decode_ok(out.frames[0]).header.ext.seq, s.first_seq);

  // The link is back: from here every frame gets through.
  TimePoint now = rto_at + microseconds(50);
  for (auto& f : out.frames) s.b.on_frame(decode_ok(f), now);
  settle(s.a, s.b, now);
  EXPECT_EQ(s.a.stats().spurious_timeouts, 0u);
  EXPECT_EQ(s.a.stats().timeouts, 1u);
  EXPECT_GE(s.a.stats().frames_retransmitted, uint64_t{s.cwnd_before});  // the whole window
  EXPECT_LE(s.a.stats().ssthresh, s.cwnd_before);                        // the reduction stands
  int pdus = 0;
  while (auto p = s.b.pop_pdu()) {
    EXPECT_EQ(p->bytes, std::vector<uint8_t>(1460 * 32, uint8_t(p->tag)));
    ++pdus;
  }
  EXPECT_EQ(pdus, 4);
}

// ---------------------------------------------------------------------------
// D-SACK: the receiver reports duplicates; a timeout whose every
// retransmission comes back as a duplicate is undone.

// a sends one single-frame PDU; returns that frame.
std::vector<uint8_t> send_one(Connection& a, uint16_t tag, TimePoint now) {
  EXPECT_TRUE(a.send_pdu(Opcode::kCommandRequest, tag, std::vector<uint8_t>(100, uint8_t(tag))));
  VectorSink out;
  a.poll(now, out);
  EXPECT_EQ(out.frames.size(), 1u);
  return out.frames.empty() ? std::vector<uint8_t>{} : out.frames[0];
}

// b's standalone ack at `now` (it must owe one).
FrameView ack_from(Connection& b, TimePoint now, VectorSink& keep) {
  keep.frames.clear();
  b.poll(now, keep);
  EXPECT_EQ(keep.frames.size(), 1u);
  return keep.frames.empty() ? FrameView{} : decode_ok(keep.frames.back());
}

TEST(ConnectionDsack, DuplicatesAreReportedOnceAsTheFirstBlock) {
  TransportParams p;
  p.delayed_ack = Duration::zero();
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 4, 1)));
  VectorSink sa, keep;
  a.poll(TimePoint{}, sa);
  ASSERT_EQ(sa.frames.size(), 4u);
  TimePoint t = TimePoint{} + microseconds(50);
  for (auto& f : sa.frames) b.on_frame(decode_ok(f), t);
  EXPECT_EQ(ack_from(b, t, keep).header.sacks.count, 0);  // in order: no blocks
  // Frames 1 and 2 arrive again (below the cumulative ack): one D-SACK [1, 3).
  b.on_frame(decode_ok(sa.frames[1]), t);
  b.on_frame(decode_ok(sa.frames[2]), t);
  EXPECT_EQ(b.stats().duplicates_received, 2u);
  const FrameView ack = ack_from(b, t, keep);
  EXPECT_EQ(ack.header.ext.ack, 4u);
  ASSERT_EQ(ack.header.sacks.count, 1);
  EXPECT_EQ(ack.header.sacks.blocks[0], (SackBlock{1, 3}));
  // Reported once: nothing more is owed.
  VectorSink none;
  b.poll(t + milliseconds(5), none);
  EXPECT_TRUE(none.frames.empty());
}

// A SACK block from the wire is checked by its offsets into the flight, not by
// serial-number comparisons alone: those are not transitive across 2^31, so
// a block starting 2^31 - 1 above snd_una and ending 2 below it passed them
// and the sender indexed its flight 2^31 frames deep (the hostile-flood
// chaos test crashed the initiator with it under ASan).
TEST(ConnectionSack, ABlockSpanningHalfTheSequenceSpaceIsIgnored) {
  TransportParams p;
  p.delayed_ack = Duration::zero();
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 4, 1)));
  VectorSink sa, keep;
  a.poll(TimePoint{}, sa);
  ASSERT_EQ(sa.frames.size(), 4u);
  const uint32_t una = decode_ok(sa.frames[0]).header.ext.seq;
  const TimePoint t = TimePoint{} + microseconds(50);
  b.on_frame(decode_ok(sa.frames[0]), t);
  FrameView ack = ack_from(b, t, keep);
  ack.header.ext.ack = una;  // acknowledges nothing
  for (const auto& [start, end] : {std::pair{una + 0x7FFFFFFFu, una - 2u},
                                   std::pair{una + 5u, una + 4u}, std::pair{una + 1u, una + 9u}}) {
    ack.header.sacks.count = 1;
    ack.header.sacks.blocks[0] = SackBlock{start, end};
    a.on_frame(ack, t);
  }
  EXPECT_EQ(a.stats().frames_acked, 0u);
  EXPECT_EQ(a.in_flight(), 4u);
  // A block below snd_una's start that ends inside the flight still counts.
  ack.header.sacks.blocks[0] = SackBlock{una - 7u, una + 2u};
  a.on_frame(ack, t);
  EXPECT_EQ(a.stats().frames_acked, 2u);
}

// A receiver that was not scheduled for a while takes many frames at once:
// every duplicate among them is reported, each copy of a frame that came
// three times too, in one ack (blocks below the cumulative ack are D-SACKs).
TEST(ConnectionDsack, EveryDuplicateOfABatchIsReported) {
  TransportParams p;
  p.delayed_ack = Duration::zero();
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 8, 1)));
  VectorSink sa, keep;
  a.poll(TimePoint{}, sa);
  ASSERT_EQ(sa.frames.size(), 8u);
  const TimePoint t = TimePoint{} + microseconds(50);
  for (auto& f : sa.frames) b.on_frame(decode_ok(f), t);
  (void)ack_from(b, t, keep);
  for (int i : {1, 2, 5, 1, 1, 6}) b.on_frame(decode_ok(sa.frames[size_t(i)]), t);
  const FrameView ack = ack_from(b, t, keep);
  EXPECT_EQ(ack.header.ext.ack, 8u);
  ASSERT_EQ(ack.header.sacks.count, 4);
  EXPECT_EQ(ack.header.sacks.blocks[0], (SackBlock{1, 3}));
  EXPECT_EQ(ack.header.sacks.blocks[1], (SackBlock{5, 7}));
  EXPECT_EQ(ack.header.sacks.blocks[2], (SackBlock{1, 2}));
  EXPECT_EQ(ack.header.sacks.blocks[3], (SackBlock{1, 2}));
  VectorSink none;
  b.poll(t + milliseconds(5), none);
  EXPECT_TRUE(none.frames.empty());  // all reported
}

TEST(ConnectionDsack, NoReportsWithoutSack) {
  TransportParams p;
  p.sack = false;
  p.delayed_ack = Duration::zero();
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  const auto frame = send_one(a, 1, TimePoint{});
  const TimePoint t = TimePoint{} + microseconds(50);
  VectorSink keep;
  b.on_frame(decode_ok(frame), t);
  (void)ack_from(b, t, keep);
  b.on_frame(decode_ok(frame), t);
  EXPECT_EQ(ack_from(b, t, keep).header.sacks.count, 0);
}

// A lightly loaded direction (one command, nothing else to send): its ack
// is held up past the RTO (queued behind the other direction's data). F-RTO
// cannot help (no new data, and the late ack covers everything); the D-SACK
// of the resent copy shows the timeout spurious and the window comes back.
TEST(ConnectionDsack, LateAckTimeoutIsUndoneByTheDuplicateReport) {
  TransportParams p;
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  TimePoint now{};
  // Warm up: a few round trips of 100 us, so the RTO sits at srtt + min.
  for (uint16_t t = 1; t <= 20; ++t) {
    ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, t, std::vector<uint8_t>(1460 * 8, 1)));
    settle(a, b, now);
    while (b.pop_pdu()) {
    }
  }
  const uint32_t cwnd_before = a.stats().cwnd;
  const uint32_t ssthresh_before = a.stats().ssthresh;
  ASSERT_EQ(a.stats().timeouts, 0u);

  const auto original = send_one(a, 99, now);
  b.on_frame(decode_ok(original), now + microseconds(50));
  VectorSink held;
  const FrameView late_ack = ack_from(b, now + milliseconds(1), held);  // delayed ack

  const TimePoint rto_at = a.next_deadline();
  VectorSink out;
  a.poll(rto_at, out);
  ASSERT_EQ(a.stats().timeouts, 1u);
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_EQ(a.stats().cwnd, 1u);
  const Duration backed_off = a.stats().rto;
  // The held ack arrives; then the resent copy reaches b, a duplicate.
  TimePoint t = rto_at + microseconds(200);
  a.on_frame(late_ack, t);
  EXPECT_EQ(a.stats().spurious_timeouts, 0u);  // F-RTO: an ack for everything proves nothing
  EXPECT_LT(a.stats().cwnd, cwnd_before);
  b.on_frame(decode_ok(out.frames[0]), t);
  VectorSink keep;
  const FrameView report = ack_from(b, t, keep);
  ASSERT_GE(report.header.sacks.count, 1);
  EXPECT_EQ(report.header.sacks.blocks[0].start, decode_ok(original).header.ext.seq);
  a.on_frame(report, t + microseconds(50));
  EXPECT_EQ(a.stats().spurious_timeouts, 1u);
  EXPECT_EQ(a.stats().cwnd, cwnd_before);
  EXPECT_EQ(a.stats().ssthresh, ssthresh_before);
  // The backoff is gone, and the estimate now covers the delay the original
  // saw (Eifel's response): the same delay does not fire the timer again.
  EXPECT_GE(a.stats().srtt, t - now);
  EXPECT_GT(a.stats().rto, 2 * (t - now));
  EXPECT_LT(a.stats().rto, 2 * backed_off);
  EXPECT_EQ(b.pop_pdu()->tag, 99);
}

// At a session's start the estimate comes from an idle link (100 us) while
// the loaded path holds the acks back 60 ms (a full queue, a receiver not
// scheduled): the timer fires again and again, backing off, long before any
// ack. Every retransmission is delivered as a duplicate together with the
// originals; the episode waits for those reports (the wait starts when the
// originals are acknowledged), is undone, and the estimate then covers the
// delay (so the next window does not time out again).
TEST(ConnectionDsack, EpisodeLongerThanTheEstimateIsStillUndone) {
  TransportParams p;
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  TimePoint now{};
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 2, 1)));
  settle(a, b, now);
  ASSERT_TRUE(b.pop_pdu());
  const uint32_t cwnd_before = a.stats().cwnd;
  const uint32_t ssthresh_before = a.stats().ssthresh;
  ASSERT_LT(a.stats().rto, milliseconds(3));

  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 2, std::vector<uint8_t>(1460 * 4, 2)));
  VectorSink sent;
  const TimePoint t0 = now;
  a.poll(t0, sent);
  ASSERT_EQ(sent.frames.size(), 4u);
  // Nothing comes back for 60 ms: the timer fires, backing off.
  TimePoint t = t0;
  while (a.next_deadline() < t0 + milliseconds(60)) {
    t = a.next_deadline();
    a.poll(t, sent);
  }
  ASSERT_GE(a.stats().timeouts, 3u);
  EXPECT_EQ(a.stats().cwnd, 1u);
  // Then b takes everything at once: the originals and every resent copy.
  const TimePoint late = t0 + milliseconds(60);
  for (auto& f : sent.frames) b.on_frame(decode_ok(f), late);
  VectorSink acks;
  b.poll(late, acks);
  ASSERT_FALSE(acks.frames.empty());
  for (auto& f : acks.frames) a.on_frame(decode_ok(f), late + microseconds(50));
  EXPECT_EQ(a.stats().spurious_timeouts, a.stats().timeouts);
  EXPECT_GE(a.stats().cwnd, cwnd_before);  // restored, then grown by this ack
  EXPECT_EQ(a.stats().ssthresh, ssthresh_before);
  EXPECT_GE(a.stats().srtt, milliseconds(60));
  EXPECT_GT(a.stats().rto, milliseconds(120));
  EXPECT_EQ(b.pop_pdu()->tag, 2);
}

// A pair that has exchanged one PDU, then a single-frame PDU from a to b
// that the test decides the fate of.
struct OneFrameInFlight {
  TransportParams p;
  Connection a{p, endpoint_a()};
  Connection b{p, endpoint_b()};
  TimePoint now{};
  std::vector<uint8_t> frame;

  void start() {
    ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 8, 1)));
    settle(a, b, now);
    frame = send_one(a, 2, now);
  }
};

// A real loss: the original never arrives, so the resent copy is the first
// b sees and nothing is reported as a duplicate: the reduction stands.
TEST(ConnectionDsack, RealLossIsNotUndone) {
  OneFrameInFlight setup;
  setup.start();  // the frame is lost (never given to b)
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  auto& [p, a, b, now, frame] = setup;
  (void)frame;
  const TimePoint rto_at = a.next_deadline();
  VectorSink out;
  a.poll(rto_at, out);
  ASSERT_EQ(out.frames.size(), 1u);
  TimePoint t = rto_at;
  for (auto& f : out.frames) b.on_frame(decode_ok(f), t);
  settle(a, b, t);
  EXPECT_EQ(a.stats().timeouts, 1u);
  EXPECT_EQ(a.stats().spurious_timeouts, 0u);
  EXPECT_EQ(b.stats().duplicates_received, 0u);
  EXPECT_LT(a.stats().ssthresh, p.max_cwnd);  // the reduction stands
}

// The original is lost and the first resent copy's ack is late, so the
// timer fires again and a second copy goes out; only that second copy is a
// duplicate. One report strikes one of the two retransmissions: no undo.
TEST(ConnectionDsack, NeededRetransmissionKeepsTheReduction) {
  OneFrameInFlight setup;
  setup.start();  // the frame is lost (never given to b)
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  auto& [p, a, b, now, frame] = setup;
  (void)frame;
  VectorSink out1, out2, keep;
  const TimePoint rto1 = a.next_deadline();
  a.poll(rto1, out1);  // copy 1
  ASSERT_EQ(out1.frames.size(), 1u);
  b.on_frame(decode_ok(out1.frames[0]), rto1 + microseconds(50));
  const FrameView late_ack = ack_from(b, rto1 + milliseconds(1), keep);  // held up
  const TimePoint rto2 = a.next_deadline();  // a second timeout, or the lost-head repair
  a.poll(rto2, out2);                        // copy 2
  ASSERT_EQ(a.stats().frames_retransmitted, 2u);
  ASSERT_EQ(out2.frames.size(), 1u);
  a.on_frame(late_ack, rto2 + microseconds(10));
  b.on_frame(decode_ok(out2.frames[0]), rto2 + microseconds(50));
  VectorSink keep2;
  const FrameView report = ack_from(b, rto2 + microseconds(50), keep2);
  ASSERT_GE(report.header.sacks.count, 1);  // the D-SACK of copy 2
  a.on_frame(report, rto2 + microseconds(100));
  EXPECT_EQ(a.stats().spurious_timeouts, 0u);
  EXPECT_LT(a.stats().ssthresh, p.max_cwnd);
}

// A D-SACK block from the wire may span half the sequence space: handled in
// time bounded by the sender's own list, and only what it covers counts.
TEST(ConnectionDsack, HugeForgedBlockIsCheap) {
  OneFrameInFlight setup;
  setup.start();  // the frame is lost (never given to b)
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  auto& [p, a, b, now, frame] = setup;
  (void)frame;
  VectorSink out;
  const TimePoint rto_at = a.next_deadline();
  a.poll(rto_at, out);
  ASSERT_EQ(a.stats().timeouts, 1u);
  FrameHeader h = b.control_header(Opcode::kAck);          // b's ack point: the lost frame
  h.sacks.push({h.ext.ack - 0x7fff0000u, h.ext.ack - 1});  // below the ack, not covering it
  std::vector<uint8_t> buf(2048);
  const size_t n = encode_frame(buf, h, {});
  ASSERT_GT(n, 0u);
  buf.resize(n);
  const auto t0 = std::chrono::steady_clock::now();
  a.on_frame(decode_ok(buf), rto_at + microseconds(10));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
  EXPECT_EQ(a.stats().spurious_timeouts, 0u);
}

// ---------------------------------------------------------------------------
// Focused behaviour.

TEST(Connection, FragmentsFillTheMtu) {
  TransportParams p;
  Endpoint e = endpoint_a();
  e.peer_window = 1024;
  p.initial_cwnd = 1024;
  Connection c(p, e);
  std::vector<uint8_t> pdu;
  fill_pdu(pdu, 100000, 1);
  ASSERT_TRUE(c.send_pdu(Opcode::kCommandRequest, 300, pdu));
  VectorSink sink;
  c.poll(TimePoint{}, sink);
  const size_t chunk = max_payload(1500);
  ASSERT_EQ(sink.frames.size(), (pdu.size() + chunk - 1) / chunk);
  std::vector<uint8_t> joined;
  for (size_t i = 0; i < sink.frames.size(); ++i) {
    EXPECT_LE(sink.frames[i].size(), 1514u);
    const FrameView v = decode_ok(sink.frames[i]);
    EXPECT_EQ(v.header.common.opcode, Opcode::kCommandRequest);
    EXPECT_EQ(v.header.common.tag, 300);
    EXPECT_EQ(v.header.common.fragment, i);
    EXPECT_EQ(v.header.common.last_fragment, i + 1 == sink.frames.size());
    EXPECT_EQ(v.header.ext.seq, i);  // ISN 0
    EXPECT_EQ(v.header.ext.pdu_length, pdu.size());
    EXPECT_EQ(v.header.ext.pdu_offset, i * chunk);
    EXPECT_TRUE(v.header.ext.flags & kFlagChecksum);
    EXPECT_TRUE(v.header.ext.flags & kFlagAck);
    EXPECT_EQ(v.header.ext.session_id, 7u);
    EXPECT_EQ(v.header.dst, kMacB);
    if (i + 1 < sink.frames.size()) {
      EXPECT_EQ(v.payload.size(), chunk);
    }
    joined.insert(joined.end(), v.payload.begin(), v.payload.end());
  }
  EXPECT_EQ(joined, pdu);
  EXPECT_EQ(c.in_flight(), sink.frames.size());
  EXPECT_EQ(c.stats().bytes_sent, pdu.size());
}

// A PDU in two parts (send_pdu_parts: a copied header, then data shared
// from elsewhere) goes out as the same fragments as the PDU in one piece;
// every fragment after the first sends its data from the shared bytes by
// reference (gather), the first copies both pieces.
TEST(Connection, PartsPduIsFramedAsOnePieceWithTheDataByReference) {
  class GatherSink : public VectorSink {
   public:
    void commit_gather(std::span<uint8_t> frame, size_t header_length,
                       std::span<const uint8_t> payload,
                       const std::shared_ptr<const void>& owner) override {
      gathered.push_back(payload.data());
      VectorSink::commit_gather(frame, header_length, payload, owner);
    }
    std::vector<const uint8_t*> gathered;
  };
  TransportParams p;
  Endpoint e = endpoint_a();
  e.peer_window = 1024;
  p.initial_cwnd = 1024;
  Connection c(p, e);
  std::vector<uint8_t> whole;
  fill_pdu(whole, 100060, 3);
  const std::vector<uint8_t> head(whole.begin(), whole.begin() + 60);
  auto body = std::make_shared<std::vector<uint8_t>>(whole.begin() + 60, whole.end());
  std::weak_ptr<std::vector<uint8_t>> watch = body;
  ASSERT_TRUE(c.send_pdu_parts(Opcode::kCommandRequest, 301, head,
                               SharedBytes(body, std::span<const uint8_t>(*body))));
  const uint8_t* body_data = body->data();
  body.reset();
  GatherSink sink;
  c.poll(TimePoint{}, sink);
  const size_t chunk = max_payload(1500);
  ASSERT_EQ(sink.frames.size(), (whole.size() + chunk - 1) / chunk);
  std::vector<uint8_t> joined;
  for (size_t i = 0; i < sink.frames.size(); ++i) {
    const FrameView v = decode_ok(sink.frames[i]);
    EXPECT_EQ(v.header.ext.pdu_length, whole.size());
    EXPECT_EQ(v.header.ext.pdu_offset, i * chunk);
    joined.insert(joined.end(), v.payload.begin(), v.payload.end());
  }
  EXPECT_EQ(joined, whole);
  // Frames 1.. by reference into the body, at their offsets.
  ASSERT_EQ(sink.gathered.size(), sink.frames.size() - 1);
  for (size_t i = 0; i < sink.gathered.size(); ++i)
    EXPECT_EQ(sink.gathered[i], body_data + (i + 1) * chunk - 60);
  // The connection holds the body until the frames are acknowledged.
  EXPECT_FALSE(watch.expired());
  auto unacked = c.release_unacked();
  ASSERT_EQ(unacked.size(), 1u);
  EXPECT_EQ(unacked[0].bytes, whole);
  EXPECT_TRUE(watch.expired());
}

// unshare(): a sender that gave up on a PDU whose data others own (a
// command past its dead time) cannot unsend it, but the connection stops
// sharing the data: what it sends from then on, retransmissions and the
// fragments not sent yet, comes from a private copy, and the owner may
// overwrite its bytes.
TEST(Connection, UnshareSendsTheRestFromACopy) {
  TransportParams p;
  Endpoint e = endpoint_a();
  e.peer_window = 1024;
  p.initial_cwnd = 4;
  Connection c(p, e);
  std::vector<uint8_t> whole;
  fill_pdu(whole, 100060, 5);
  const std::vector<uint8_t> head(whole.begin(), whole.begin() + 60);
  auto body = std::make_shared<std::vector<uint8_t>>(whole.begin() + 60, whole.end());
  ASSERT_TRUE(c.send_pdu_parts(Opcode::kCommandRequest, 302, head,
                               SharedBytes(body, std::span<const uint8_t>(*body))));
  VectorSink sink;
  c.poll(TimePoint{}, sink);
  ASSERT_EQ(sink.frames.size(), 4u);  // the rest waits for the window
  EXPECT_GT(body.use_count(), 1);
  EXPECT_FALSE(c.unshare(&whole));  // another owner: nothing to do
  EXPECT_TRUE(c.unshare(body.get()));
  EXPECT_EQ(body.use_count(), 1);
  EXPECT_FALSE(c.unshare(body.get()));
  std::fill(body->begin(), body->end(), uint8_t{0x5A});
  // The timer's retransmission carries the original bytes.
  sink.frames.clear();
  c.poll(TimePoint{} + seconds(30), sink);
  size_t resent = 0;
  for (const auto& f : sink.frames) {
    const FrameView v = decode_ok(f);
    if (v.payload.empty()) continue;
    ++resent;
    ASSERT_LE(v.header.ext.pdu_offset + v.payload.size(), whole.size());
    EXPECT_TRUE(
        std::equal(v.payload.begin(), v.payload.end(), whole.begin() + v.header.ext.pdu_offset))
        << "offset " << v.header.ext.pdu_offset;
  }
  EXPECT_GT(resent, 0u);
  // And so does everything still to send.
  auto unacked = c.release_unacked();
  ASSERT_EQ(unacked.size(), 1u);
  EXPECT_EQ(unacked[0].bytes, whole);
}

TEST(Connection, SendPduRefusals) {
  TransportParams p;
  p.max_pdu = 1u << 20;
  p.send_queue_limit = 3u << 20;
  Connection c(p, endpoint_a());
  EXPECT_FALSE(c.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>((1u << 20) + 1)));
  EXPECT_FALSE(c.send_pdu(Opcode::kAck, 1, std::vector<uint8_t>(10)));
  EXPECT_FALSE(c.send_pdu(Opcode::kCommandRequest, 512, std::vector<uint8_t>(10)));
  EXPECT_TRUE(c.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(10)));
  EXPECT_FALSE(c.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(10)));  // busy tag
  EXPECT_TRUE(c.send_pdu(Opcode::kCommandReply, 1, std::vector<uint8_t>(10)));     // other opcode
  EXPECT_TRUE(c.send_pdu(Opcode::kCommandRequest, 2, std::vector<uint8_t>(1u << 20)));
  EXPECT_TRUE(c.send_pdu(Opcode::kCommandRequest, 3, std::vector<uint8_t>(1u << 20)));
  EXPECT_FALSE(c.send_pdu(Opcode::kCommandRequest, 4, std::vector<uint8_t>(1u << 20)));  // queue
  EXPECT_EQ(c.send_queue_bytes(), 20u + (2u << 20));
  // Too many fragments: a tiny MTU makes 1024 fragments too few.
  TransportParams small;
  small.mtu = 100;  // 60 bytes per fragment
  Connection d(small, endpoint_a());
  EXPECT_TRUE(d.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(60 * 1024)));
  EXPECT_FALSE(d.send_pdu(Opcode::kCommandRequest, 2, std::vector<uint8_t>(60 * 1024 + 1)));
}

TEST(Connection, TagReusableOnlyAfterAck) {
  TransportParams p;
  p.delayed_ack = Duration::zero();
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 5, std::vector<uint8_t>(3000, 1)));
  VectorSink sa, sb;
  a.poll(TimePoint{}, sa);
  ASSERT_EQ(sa.frames.size(), 3u);
  for (auto& f : sa.frames) b.on_frame(decode_ok(f), TimePoint{} + microseconds(10));
  auto got = b.pop_pdu();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->bytes, std::vector<uint8_t>(3000, 1));
  EXPECT_FALSE(a.send_pdu(Opcode::kCommandRequest, 5, {}));  // not acked yet
  b.poll(TimePoint{} + microseconds(10), sb);
  ASSERT_FALSE(sb.frames.empty());
  for (auto& f : sb.frames) a.on_frame(decode_ok(f), TimePoint{} + microseconds(20));
  EXPECT_EQ(a.in_flight(), 0u);
  EXPECT_TRUE(a.idle());
  EXPECT_TRUE(a.send_pdu(Opcode::kCommandRequest, 5, {}));
  EXPECT_GT(a.stats().srtt, Duration::zero());
}

TEST(Connection, DelayedAckThenAckEvery) {
  TransportParams p;  // delayed_ack 500 us, ack_every 4
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 6, 7)));
  VectorSink sa;
  a.poll(TimePoint{}, sa);
  ASSERT_EQ(sa.frames.size(), 6u);
  const TimePoint t0 = TimePoint{} + microseconds(100);
  VectorSink sb;
  b.on_frame(decode_ok(sa.frames[0]), t0);
  b.poll(t0, sb);
  EXPECT_TRUE(sb.frames.empty());  // delayed
  EXPECT_EQ(b.next_deadline(), t0 + p.delayed_ack);
  b.poll(t0 + p.delayed_ack, sb);
  ASSERT_EQ(sb.frames.size(), 1u);
  FrameView ack = decode_ok(sb.frames[0]);
  EXPECT_EQ(ack.header.common.opcode, Opcode::kAck);
  EXPECT_EQ(ack.header.ext.ack, 1u);
  EXPECT_EQ(ack.header.ext.window, p.receive_window);
  sb.frames.clear();
  const TimePoint t1 = t0 + milliseconds(1);
  for (int i = 1; i < 5; ++i) b.on_frame(decode_ok(sa.frames[i]), t1);
  b.poll(t1, sb);  // four frames: ack at once
  ASSERT_EQ(sb.frames.size(), 1u);
  EXPECT_EQ(decode_ok(sb.frames[0]).header.ext.ack, 5u);
  EXPECT_EQ(b.stats().acks_sent, 2u);
}

// FlowHints: the receiver's remainder of an incoming PDU and window, the
// sender's frames waiting for the window; merged by the smallest remainder.
TEST(Connection, FlowHintsForTheEventLoop) {
  TransportParams p;
  p.receive_window = 8;
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  EXPECT_EQ(a.flow_hints().rx_missing, 0u);
  EXPECT_FALSE(a.flow_hints().tx_waiting);
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 20, 7)));
  EXPECT_TRUE(a.flow_hints().tx_waiting);
  VectorSink sa;
  a.poll(TimePoint{}, sa);
  ASSERT_EQ(sa.frames.size(), 16u);  // the initial congestion window
  EXPECT_TRUE(a.flow_hints().tx_waiting);
  for (size_t i = 0; i < 3; ++i) b.on_frame(decode_ok(sa.frames[i]), TimePoint{});
  const FlowHints hb = b.flow_hints();
  EXPECT_EQ(hb.rx_missing, 1460u * 17);
  EXPECT_EQ(hb.rx_window_bytes, 8u * (1500 + 14));
  EXPECT_FALSE(hb.tx_waiting);

  FlowHints merged;
  merged.merge(hb);
  FlowHints smaller;
  smaller.rx_missing = 1000;
  smaller.rx_window_bytes = 77;
  merged.merge(smaller);
  merged.merge(FlowHints{});  // nothing begun: ignored
  merged.merge(a.flow_hints());
  EXPECT_EQ(merged.rx_missing, 1000u);
  EXPECT_EQ(merged.rx_window_bytes, 77u);
  EXPECT_TRUE(merged.tx_waiting);
}

TEST(Connection, OutOfOrderAcksAtOnceWithSack) {
  TransportParams p;
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 8, 7)));
  VectorSink sa, sb;
  a.poll(TimePoint{}, sa);
  ASSERT_EQ(sa.frames.size(), 8u);
  const TimePoint t = TimePoint{} + microseconds(50);
  b.on_frame(decode_ok(sa.frames[0]), t);
  b.on_frame(decode_ok(sa.frames[2]), t);
  b.on_frame(decode_ok(sa.frames[3]), t);
  b.on_frame(decode_ok(sa.frames[5]), t);
  b.on_frame(decode_ok(sa.frames[3]), t);  // duplicate
  EXPECT_EQ(b.stats().duplicates_received, 1u);
  b.poll(t, sb);
  ASSERT_EQ(sb.frames.size(), 1u);
  const FrameView ack = decode_ok(sb.frames[0]);
  EXPECT_EQ(ack.header.ext.ack, 1u);
  ASSERT_EQ(ack.header.sacks.count, 3);
  // The D-SACK of the duplicate first (RFC 2883), then the block of the most
  // recent arrival, then the lowest ones.
  EXPECT_EQ(ack.header.sacks.blocks[0], (SackBlock{3, 4}));
  EXPECT_EQ(ack.header.sacks.blocks[1], (SackBlock{5, 6}));
  EXPECT_EQ(ack.header.sacks.blocks[2], (SackBlock{2, 4}));
  a.on_frame(ack, t + microseconds(50));
  EXPECT_EQ(a.in_flight(), 4u);  // 1, 4, 6, 7 outstanding
  // Three more SACKed frames above the holes declare frame 1 lost.
  b.on_frame(decode_ok(sa.frames[6]), t);
  b.on_frame(decode_ok(sa.frames[7]), t);
  sb.frames.clear();
  b.poll(t, sb);
  ASSERT_EQ(sb.frames.size(), 1u);
  a.on_frame(decode_ok(sb.frames[0]), t + microseconds(60));
  EXPECT_GT(a.stats().fast_retransmits, 0u);
  sa.frames.clear();
  a.poll(t + microseconds(60), sa);
  ASSERT_FALSE(sa.frames.empty());
  const FrameView rtx = decode_ok(sa.frames[0]);
  EXPECT_EQ(rtx.header.ext.seq, 1u);
  EXPECT_TRUE(rtx.header.ext.flags & kFlagRetransmit);
  for (auto& f : sa.frames) b.on_frame(decode_ok(f), t + microseconds(70));
  EXPECT_TRUE(b.pop_pdu());
}

TEST(Connection, RetransmitsOnTimeoutWithBackoff) {
  TransportParams p;
  Connection a(p, endpoint_a());
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(100, 1)));
  VectorSink s;
  a.poll(TimePoint{}, s);
  ASSERT_EQ(s.frames.size(), 1u);
  const TimePoint d1 = a.next_deadline();
  EXPECT_EQ(d1, TimePoint{} + p.rto.initial);
  a.poll(d1, s);
  ASSERT_EQ(s.frames.size(), 2u);
  EXPECT_TRUE(decode_ok(s.frames[1]).header.ext.flags & kFlagRetransmit);
  EXPECT_EQ(a.stats().timeouts, 1u);
  EXPECT_EQ(a.stats().cwnd, 1u);
  const TimePoint d2 = a.next_deadline();
  EXPECT_EQ(d2 - d1, 2 * p.rto.initial);  // doubled
  a.poll(d2, s);
  EXPECT_EQ(a.next_deadline() - d2, 4 * p.rto.initial);
  EXPECT_EQ(a.stats().frames_retransmitted, 2u);
}

TEST(Connection, ZeroWindowIsProbed) {
  TransportParams p;
  Endpoint e = endpoint_a();
  e.peer_window = 0;
  Connection a(p, e), b(p, endpoint_b());
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(5000, 3)));
  VectorSink sa, sb;
  a.poll(TimePoint{}, sa);
  EXPECT_TRUE(sa.frames.empty());  // window closed: nothing sent
  const TimePoint probe_at = a.next_deadline();
  ASSERT_NE(probe_at, kNever);
  a.poll(probe_at, sa);
  ASSERT_EQ(sa.frames.size(), 1u);
  const FrameView probe = decode_ok(sa.frames[0]);
  EXPECT_TRUE(probe.header.ext.flags & kFlagAckNow);
  b.on_frame(probe, probe_at);
  b.poll(probe_at, sb);
  ASSERT_EQ(sb.frames.size(), 1u);  // the window update
  a.on_frame(decode_ok(sb.frames[0]), probe_at);
  EXPECT_EQ(a.stats().peer_window, p.receive_window);
  sa.frames.clear();
  a.poll(probe_at, sa);
  EXPECT_EQ(sa.frames.size(), 4u);
}

// A receiver that lowers the window it advertises (the target sharing its
// capacity among sessions): the peer keeps to it from the next ack on, and
// frames already sent beyond it are still accepted, not dropped.
TEST(Connection, LoweredAdvertisedWindowLimitsThePeerAndDropsNothing) {
  TransportParams p;
  p.delayed_ack = Duration::zero();
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  EXPECT_EQ(b.advertised_window(), p.receive_window);
  b.set_advertised_window(0);
  EXPECT_EQ(b.advertised_window(), 1u);  // never closed by this
  b.set_advertised_window(60000);
  EXPECT_EQ(b.advertised_window(), p.receive_window);  // never beyond what b accepts
  TimePoint now{};
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(1460 * 2, 1)));
  settle(a, b, now);  // a learns the RTT, its window opens
  ASSERT_TRUE(b.pop_pdu());

  // a sends more than 16 frames on the full window; b lowers its window to 16
  // meanwhile.
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 2, std::vector<uint8_t>(1460 * 40, 2)));
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 3, std::vector<uint8_t>(1460 * 200, 3)));
  VectorSink sa, sb;
  a.poll(now, sa);
  ASSERT_GT(sa.frames.size(), 16u);
  b.set_advertised_window(16);
  now += microseconds(50);
  for (auto& f : sa.frames) b.on_frame(decode_ok(f), now);
  EXPECT_EQ(b.stats().out_of_window, 0u);
  b.poll(now, sb);
  ASSERT_FALSE(sb.frames.empty());
  EXPECT_EQ(decode_ok(sb.frames.back()).header.ext.window, 16u);
  for (auto& f : sb.frames) a.on_frame(decode_ok(f), now);
  EXPECT_EQ(a.stats().peer_window, 16u);
  sa.frames.clear();
  a.poll(now, sa);
  EXPECT_LE(sa.frames.size(), 16u);
  EXPECT_LE(a.in_flight(), 16u);
  // Raised again, the peer uses the whole window once it hears of it.
  b.set_advertised_window(p.receive_window);
  settle(a, b, now);
  for (uint16_t tag : {2, 3}) {
    auto pdu = b.pop_pdu();
    ASSERT_TRUE(pdu);
    EXPECT_EQ(pdu->tag, tag);
  }
  EXPECT_EQ(a.stats().peer_window, p.receive_window);
}

TEST(Connection, EmptySinkLosesNothing) {
  TransportParams p;
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  std::vector<uint8_t> pdu;
  fill_pdu(pdu, 20000, 9);
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandReply, 9, pdu));
  VectorSink s;
  s.refuse = true;
  a.poll(TimePoint{}, s);
  EXPECT_TRUE(s.frames.empty());
  EXPECT_EQ(a.in_flight(), 0u);
  s.refuse = false;
  a.poll(TimePoint{}, s);
  EXPECT_EQ(s.frames.size(), 14u);
  for (auto& f : s.frames) b.on_frame(decode_ok(f), TimePoint{});
  auto got = b.pop_pdu();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->bytes, pdu);
  EXPECT_EQ(got->opcode, Opcode::kCommandReply);
}

TEST(Connection, DropsFramesBeyondTheWindow) {
  TransportParams p;
  p.receive_window = 8;
  Connection b(p, endpoint_b());
  std::vector<uint8_t> payload(10, 1);
  FrameView v;
  v.header.common.opcode = Opcode::kCommandRequest;
  v.header.common.last_fragment = true;
  v.header.ext.pdu_length = 10;
  v.payload = payload;
  v.header.ext.seq = 8;
  b.on_frame(v, TimePoint{});
  EXPECT_EQ(b.stats().out_of_window, 1u);
  v.header.ext.seq = 0xFFFFFFF0u;  // "before" 0: an old duplicate
  b.on_frame(v, TimePoint{});
  EXPECT_EQ(b.stats().duplicates_received, 1u);
  v.header.ext.seq = 7;
  b.on_frame(v, TimePoint{});
  EXPECT_EQ(b.stats().frames_received, 1u);
  EXPECT_TRUE(b.pop_pdu());
}

TEST(Connection, ReassemblyMemoryLimitIsBackpressure) {
  TransportParams p;
  p.reassembly_limit = 150000;
  p.delayed_ack = Duration::zero();
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  Impairments imp;
  Channel ab(imp, 1), ba(imp, 2);
  Stream sa(3, 50, 120000), sb(4, 0, 1);
  const SimResult r = run_pair(a, b, ab, ba, sa, sb);
  EXPECT_TRUE(r.completed);
  EXPECT_EQ(b.stats().pdus_received, 50u);
}

// Garbage from the wire: random headers, acks for unsent data, SACK blocks out
// of range, fragments contradicting earlier ones. Nothing may crash.
TEST(Connection, SurvivesGarbageFrames) {
  TransportParams p;
  p.receive_window = 64;
  Connection c(p, endpoint_a());
  for (uint16_t t = 0; t < 20; ++t)
    ASSERT_TRUE(c.send_pdu(Opcode::kCommandRequest, t, std::vector<uint8_t>(5000, 1)));
  VectorSink s;
  c.poll(TimePoint{}, s);
  std::mt19937_64 rng(1234);
  std::vector<uint8_t> buf(9000);
  for (auto& x : buf) x = static_cast<uint8_t>(rng());
  TimePoint now{};
  for (int i = 0; i < 200000; ++i) {
    now += microseconds(rng() % 100);
    FrameView v;
    auto& h = v.header;
    h.common.opcode =
        static_cast<Opcode>(std::array<uint8_t, 5>{0x00, 0x01, 0x20, 0x21, 0x13}[rng() % 5]);
    h.common.tag = static_cast<uint16_t>(rng() % 512);
    h.common.fragment = static_cast<uint16_t>(rng() % 1024);
    h.common.last_fragment = rng() % 2;
    h.ext.flags = static_cast<uint8_t>(rng() & kFlagsKnown);
    h.ext.window = static_cast<uint16_t>(rng());
    h.ext.seq = rng() % 4 ? static_cast<uint32_t>(rng() % 100) : static_cast<uint32_t>(rng());
    h.ext.ack = rng() % 4 ? static_cast<uint32_t>(rng() % 200) : static_cast<uint32_t>(rng());
    h.ext.pdu_length =
        rng() % 3 ? static_cast<uint32_t>(rng() % 20000) : static_cast<uint32_t>(rng());
    h.ext.pdu_offset = static_cast<uint32_t>(rng() % 20000);
    const auto nsack = rng() % (kMaxSackBlocks + 1);
    for (size_t k = 0; k < nsack; ++k)
      h.sacks.push({static_cast<uint32_t>(rng() % 300), static_cast<uint32_t>(rng() % 300)});
    v.payload = std::span<const uint8_t>(buf.data(), rng() % 1500);
    c.on_frame(v, now);
    if (i % 64 == 0) c.poll(now, s);
    while (c.pop_pdu()) {
    }
    if (s.frames.size() > 10000) s.frames.clear();
  }
  // Random bytes through the decoder, too.
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> f(60 + rng() % 200);
    for (auto& x : f) x = static_cast<uint8_t>(rng());
    f[12] = 0x88;
    f[13] = 0x9A;
    auto d = decode_frame(f);
    if (d.ok()) c.on_frame(d.value(), now);
  }
  const auto& st = c.stats();
  EXPECT_GT(st.out_of_window, 0u);
  EXPECT_GT(st.duplicates_received, 0u);
  EXPECT_GT(st.frames_received, 0u);
  EXPECT_FALSE(st.window_violated);
  EXPECT_LE(c.in_flight(), 4096u);
}

// ---------------------------------------------------------------------------
// Reply placement over a lossy, reordering, duplicating channel: the target
// (a) sends replies, the initiator (b) has registered its buffers. Full good
// replies land in place; sense, underflow and other lengths are delivered
// whole and leave the buffer alone; a placement forgotten while its reply is
// under way (the command completed by another path) is never written again.
TEST(ConnectionPlacement, LossyChannelPlacesExactlyWhatItShould) {
  TransportParams p;
  p.delayed_ack = microseconds(200);
  Connection a(p, endpoint_a()), b(p, endpoint_b());
  Impairments imp;
  imp.loss = 0.03;
  imp.reorder = 0.1;
  imp.duplicate = 0.05;
  Channel ab(imp, 11), ba(imp, 12);
  ChannelSink sink_a(ab), sink_b(ba);
  std::mt19937_64 rng(3);

  enum class Kind { kPlaced, kSense, kUnderflow, kForgotten };
  struct Reply {
    uint16_t tag = 0;
    Kind kind = Kind::kPlaced;
    std::vector<uint8_t> data;  // what the full transfer would be
    std::vector<uint8_t> pdu;
    std::vector<uint8_t> dst;
    bool forgotten = false;
    bool delivered = false;
  };
  constexpr size_t kCount = 96;
  std::vector<Reply> replies(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    Reply& r = replies[i];
    r.tag = static_cast<uint16_t>(i % 24);  // 4 rounds over 24 tags
    r.kind = static_cast<Kind>(rng() % 4);
    fill_pdu(r.data, 4096 * (1 + rng() % 32), i);
    ReplyHeader h;
    h.cmd_sn = static_cast<uint32_t>(i);
    std::vector<uint8_t> data = r.data;
    if (r.kind == Kind::kSense) {
      h.status = 2;
      h.sense.assign(18, 0x70);
      data.clear();
    } else if (r.kind == Kind::kUnderflow) {
      data.resize(data.size() / 2);
      h.flags = kReplyFlagUnderflow;
      h.residual = static_cast<uint32_t>(r.data.size() - data.size());
    }
    h.data_in_length = static_cast<uint32_t>(data.size());
    encode(h, r.pdu);
    r.pdu.insert(r.pdu.end(), data.begin(), data.end());
    r.dst.assign(r.data.size(), 0xEE);
  }
  // Up to 24 replies in flight, each tag's next one after its previous one
  // was delivered (or forgotten), as a command table reuses tags.
  size_t next = 0;
  std::vector<int> on_tag(24, -1);
  TimePoint now{};
  std::vector<uint8_t> frame;
  size_t done = 0;
  size_t stale = 0;
  auto handle = [&](const ReceivedPdu& pdu) {
    ASSERT_EQ(pdu.opcode, Opcode::kCommandReply);
    const int idx = on_tag[pdu.tag];
    if (idx < 0) {
      // The tag's last reply was forgotten before it completed: delivered
      // whole (its command's table would count it unmatched), or placed
      // before the forget. Either way the buffer keeps what its owner wrote.
      ++stale;
      return;
    }
    Reply& r = replies[static_cast<size_t>(idx)];
    const bool full = r.kind == Kind::kPlaced || r.kind == Kind::kForgotten;
    EXPECT_EQ(pdu.data_placed, full) << "reply " << idx;
    if (full) {
      auto d = decode_placed_reply(pdu.bytes, r.dst);
      ASSERT_TRUE(d.ok()) << "reply " << idx;
      EXPECT_EQ(d->header.cmd_sn, static_cast<uint32_t>(idx));
      EXPECT_EQ(r.dst, r.data) << "reply " << idx;
    } else {
      EXPECT_EQ(pdu.bytes, r.pdu) << "reply " << idx;
      EXPECT_EQ(r.dst, std::vector<uint8_t>(r.data.size(), 0xEE)) << "reply " << idx;
    }
    r.delivered = true;
    on_tag[pdu.tag] = -1;
    ++done;
  };
  for (uint64_t iter = 0; iter < 5'000'000 && done < kCount; ++iter) {
    while (next < kCount && on_tag[replies[next].tag] < 0 &&
           a.can_send(Opcode::kCommandReply, replies[next].tag, replies[next].pdu.size())) {
      Reply& r = replies[next];
      b.place_reply(r.tag, r.dst);
      ASSERT_TRUE(a.send_pdu(Opcode::kCommandReply, r.tag, r.pdu));
      on_tag[r.tag] = static_cast<int>(next++);
    }
    sink_a.now = sink_b.now = now;
    a.poll(now, sink_a);
    b.poll(now, sink_b);
    const TimePoint t = std::min({ab.next(), ba.next(), a.next_deadline(), b.next_deadline()});
    ASSERT_NE(t, kNever) << "stuck with " << done << " of " << kCount << " done";
    if (t > now) now = t;
    while (ab.pop_due(now, frame))
      if (auto v = decode_frame(frame); v.ok()) b.on_frame(v.value(), now);
    while (ba.pop_due(now, frame))
      if (auto v = decode_frame(frame); v.ok()) a.on_frame(v.value(), now);
    // A reply to forget: its command "completes by another path" once some
    // of the reply arrived; the caller then reuses the buffer.
    for (int idx : on_tag) {
      if (idx < 0) continue;
      Reply& r = replies[static_cast<size_t>(idx)];
      if (r.kind == Kind::kForgotten && !r.forgotten && b.flow_hints().rx_missing != 0 &&
          rng() % 8 == 0) {
        b.forget_reply_placement(r.tag);
        r.forgotten = true;
        std::fill(r.dst.begin(), r.dst.end(), 0x5A);
        on_tag[r.tag] = -1;  // the tag is free for the next command
        ++done;
      }
    }
    while (auto pdu = b.pop_pdu()) handle(*pdu);
    if (::testing::Test::HasFatalFailure()) return;
  }
  ASSERT_EQ(done, kCount);
  // Let the channel drain: late frames and retransmissions of everything.
  for (int i = 0; i < 200000 && !(a.idle() && b.idle() && ab.empty() && ba.empty()); ++i) {
    sink_a.now = sink_b.now = now;
    a.poll(now, sink_a);
    b.poll(now, sink_b);
    const TimePoint t = std::min({ab.next(), ba.next(), a.next_deadline(), b.next_deadline()});
    if (t == kNever) break;
    if (t > now) now = t;
    while (ab.pop_due(now, frame))
      if (auto v = decode_frame(frame); v.ok()) b.on_frame(v.value(), now);
    while (ba.pop_due(now, frame))
      if (auto v = decode_frame(frame); v.ok()) a.on_frame(v.value(), now);
    while (auto pdu = b.pop_pdu()) handle(*pdu);
  }
  EXPECT_EQ(done, kCount);
  size_t forgotten = 0, placed = 0;
  for (const Reply& r : replies) {
    if (r.forgotten) {
      ++forgotten;
      EXPECT_EQ(r.dst, std::vector<uint8_t>(r.data.size(), 0x5A)) << "a late frame wrote";
    }
    placed += r.delivered && (r.kind == Kind::kPlaced || r.kind == Kind::kForgotten);
  }
  EXPECT_GT(forgotten, 0u);
  EXPECT_GT(placed, 0u);
  EXPECT_GT(a.stats().frames_retransmitted, 0u);
  EXPECT_GT(b.stats().duplicates_received, 0u);
}

// ---------------------------------------------------------------------------
// Gather send (issue 20): a sink that takes a frame as headers plus a slice
// of the PDU by reference gets the same bytes as one the payload is copied
// into, for first transmissions and retransmissions alike, and the slice
// stays valid while the sink holds it, whatever became of the Connection.

// Keeps each frame as its headers plus the payload by reference, as a port
// that sends frames from two pieces does.
class GatherSink : public FrameSink {
 public:
  struct Frame {
    std::vector<uint8_t> head;
    std::span<const uint8_t> payload;
    std::shared_ptr<const void> owner;
    std::vector<uint8_t> joined() const {
      std::vector<uint8_t> f = head;
      f.insert(f.end(), payload.begin(), payload.end());
      return f;
    }
  };
  std::span<uint8_t> acquire(size_t size) override {
    buf_.resize(size);
    return buf_;
  }
  void commit(size_t length) override {
    frames.push_back({std::vector<uint8_t>(buf_.begin(), buf_.begin() + static_cast<long>(length)),
                      {},
                      nullptr});
  }
  void commit_gather(std::span<uint8_t> frame, size_t header_length,
                     std::span<const uint8_t> payload,
                     const std::shared_ptr<const void>& owner) override {
    EXPECT_EQ(frame.data(), buf_.data());
    EXPECT_GE(frame.size(), header_length + payload.size());
    frames.push_back(
        {std::vector<uint8_t>(buf_.begin(), buf_.begin() + static_cast<long>(header_length)),
         payload, owner});
    ++gathered;
  }
  std::vector<Frame> frames;
  size_t gathered = 0;

 private:
  std::vector<uint8_t> buf_;
};

void expect_gather_matches_copy(size_t mtu, bool checksum) {
  SCOPED_TRACE("mtu " + std::to_string(mtu) + (checksum ? " with crc" : " without crc"));
  TransportParams p;
  p.mtu = mtu;
  p.checksum = checksum;
  Endpoint e = endpoint_a();
  e.peer_window = 1024;
  p.initial_cwnd = 1024;
  // A PDU of three fragments and a short tail: first, middle and last frames.
  const size_t chunk = max_payload(mtu);
  std::vector<uint8_t> pdu;
  fill_pdu(pdu, 3 * chunk + 700, mtu);
  VectorSink copied;
  GatherSink gathered;
  std::vector<std::vector<uint8_t>> expected;
  {
    Connection a(p, e), b(p, e);
    ASSERT_TRUE(a.send_pdu(Opcode::kCommandReply, 5, pdu));
    ASSERT_TRUE(
        b.send_pdu_shared(Opcode::kCommandReply, 5, share_bytes(std::vector<uint8_t>(pdu))));
    a.poll(TimePoint{}, copied);
    b.poll(TimePoint{}, gathered);
    // No ack comes: after the RTO both resend the frame that blocks the ack.
    const TimePoint later = TimePoint{} + seconds(1);
    a.poll(later, copied);
    b.poll(later, gathered);
  }  // both Connections, and with them the PDUs, are gone
  ASSERT_EQ(gathered.frames.size(), copied.frames.size());
  ASSERT_GE(copied.frames.size(), 5u);
  EXPECT_EQ(gathered.gathered, 5u) << "4 fragments and 1 retransmission, all gathered";
  for (size_t i = 0; i < copied.frames.size(); ++i) {
    SCOPED_TRACE("frame " + std::to_string(i));
    EXPECT_EQ(gathered.frames[i].joined(), copied.frames[i]);
    const FrameView v = decode_ok(gathered.frames[i].joined());
    EXPECT_EQ(bool(v.header.ext.flags & kFlagChecksum), checksum);
    if (i == 4) {
      EXPECT_TRUE(v.header.ext.flags & kFlagRetransmit);
    }
    // The sink's reference alone keeps the payload readable (ASan checks).
    if (gathered.frames[i].owner) {
      EXPECT_EQ(gathered.frames[i].owner.use_count(), 5);
      EXPECT_TRUE(std::equal(gathered.frames[i].payload.begin(), gathered.frames[i].payload.end(),
                             pdu.begin() + v.header.ext.pdu_offset));
    }
  }
}

TEST(ConnectionGather, FramesAreTheCopiedOnesWithAndWithoutCrc) {
  for (size_t mtu : {size_t{1500}, size_t{9000}})
    for (bool checksum : {true, false}) expect_gather_matches_copy(mtu, checksum);
}

// Small payloads (under 512 bytes) and control frames are copied: a
// reference costs more than such a copy.
TEST(ConnectionGather, SmallPayloadsAreCopied) {
  TransportParams p;
  Connection c(p, endpoint_a());
  ASSERT_TRUE(
      c.send_pdu_shared(Opcode::kCommandRequest, 1, share_bytes(std::vector<uint8_t>(300, 7))));
  GatherSink sink;
  c.poll(TimePoint{}, sink);
  ASSERT_EQ(sink.frames.size(), 1u);
  EXPECT_EQ(sink.gathered, 0u);
  EXPECT_EQ(decode_ok(sink.frames[0].head).payload.size(), 300u);
}

// The default commit_gather copies: a sink that does not override it gets
// whole frames (what the in-memory link, pcap, DPDK and wrapping sinks see).
TEST(ConnectionGather, TheDefaultCopiesThePayloadBehindTheHeaders) {
  TransportParams p;
  Endpoint e = endpoint_a();
  std::vector<uint8_t> pdu;
  fill_pdu(pdu, 4000, 3);
  Connection c(p, e);
  ASSERT_TRUE(
      c.send_pdu_shared(Opcode::kCommandRequest, 1, share_bytes(std::vector<uint8_t>(pdu))));
  VectorSink sink;
  c.poll(TimePoint{}, sink);
  ASSERT_EQ(sink.frames.size(), 3u);
  std::vector<uint8_t> joined;
  for (const auto& f : sink.frames) {
    const FrameView v = decode_ok(f);
    joined.insert(joined.end(), v.payload.begin(), v.payload.end());
  }
  EXPECT_EQ(joined, pdu);
}

}  // namespace
}  // namespace hyperscsi::proto

// Many initiators, one target, one bottleneck (issue 21): N real
// InitiatorSessions and one real TargetEndpoint, served through the engine's
// TxScheduler, exchange encoded frames through the in-memory link's
// rate-limited queues (io::ImpairedQueue) under a virtual clock:
//
//   target --[downlink: rate-limited, the port refuses frames while its queue
//             is full, as a tbf qdisc does to an AF_PACKET socket]--> clients
//   clients --[uplink: rate-limited, drop-tail like a switch port]--> target
//
// Every client keeps QD 128 KiB reads (or writes) outstanding. The tests
// assert that every session gets its fair share of the bottleneck within a
// bounded time and keeps it (Jain's index over successive windows), and that
// the link stays full. Deterministic: fixed seeds, virtual time.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "hyperscsi/io/heap_pool.h"
#include "hyperscsi/io/impairment.h"
#include "hyperscsi/proto/initiator_session.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/target_session.h"
#include "tx_scheduler.h"

namespace hyperscsi {
namespace {

using namespace std::chrono_literals;
using proto::Duration;
using proto::FrameSink;
using proto::MacAddress;
using proto::TimePoint;

constexpr size_t kMtu = 1500;
constexpr uint64_t kRate = 1'000'000'000;  // bit/s, both directions
constexpr uint32_t kIoBytes = 128 * 1024;
constexpr uint32_t kQueueDepth = 32;
// 20 ms of frames at 1 Gbit/s, as the benchmark's tbf (latency 20ms).
constexpr size_t kQueueFrames = 1650;

MacAddress mac_of(uint32_t i) {
  return {0x02, 0, 0, 0, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
}
const MacAddress kTargetMac = {0x02, 0, 0, 0, 0xff, 0xff};

double jain(const std::vector<double>& x) {
  const double sum = std::accumulate(x.begin(), x.end(), 0.0);
  double sq = 0;
  for (double v : x) sq += v * v;
  return sq > 0 ? sum * sum / (double(x.size()) * sq) : 0;
}

// One direction of the wire: frames built in place into pool packets and
// offered to a rate-limited ImpairedQueue.
class Wire {
 public:
  Wire(uint64_t seed, size_t queue_limit)
      : pool_(8192, kMtu),
        queue_(
            [&] {
              io::Impairment imp;
              imp.rate_bps = kRate;
              imp.queue_limit = queue_limit;
              return imp;
            }(),
            seed, kMtu + 14, [] { return io::Packet(); }) {}

  // A sink that refuses frames while `backpressure_at` or more are queued
  // (0: never refuses; the queue drops what exceeds its limit).
  class Sink final : public FrameSink {
   public:
    Sink(Wire& w, TimePoint& now, size_t backpressure_at)
        : w_(w), now_(now), limit_(backpressure_at) {}
    std::span<uint8_t> acquire(size_t size) override {
      if (limit_ != 0 && w_.queue_.in_flight() >= limit_) return {};
      pkt_ = w_.pool_.alloc();
      if (!pkt_ || pkt_.writable().size() < size) return {};
      return pkt_.writable().first(size);
    }
    void commit(size_t length) override {
      if (!pkt_.resize(length)) return;
      w_.queue_.offer(std::move(pkt_), now_);
    }

   private:
    Wire& w_;
    TimePoint& now_;
    size_t limit_;
    io::Packet pkt_;
  };

  size_t take(TimePoint now, std::span<io::Packet> out) { return queue_.take(now, out); }
  TimePoint next_due() const { return queue_.next_due(); }
  const io::ImpairmentStats& stats() const { return queue_.stats(); }

 private:
  io::HeapPacketPool pool_;
  io::ImpairedQueue queue_;
};

struct Client {
  Client(uint32_t i, bool writes) : session(config(i)), index(i), write(writes) {}

  static proto::InitiatorConfig config(uint32_t i) {
    proto::InitiatorConfig c;
    c.local_mac = mac_of(i);
    c.initiator_name = "iqn.test:client" + std::to_string(i);
    c.mtu = kMtu;
    c.window = 256;
    c.seed = 100 + i;
    c.transport.checksum = false;
    return c;
  }

  // Keeps kQueueDepth commands outstanding once established.
  void issue() {
    if (!session.established()) return;
    while (outstanding.size() < kQueueDepth) {
      proto::CommandHeader h;
      h.cmd_sn = next_sn;
      h.reply_ack_sn = outstanding.empty() ? next_sn : outstanding.front();
      h.cdb_length = 10;
      h.cdb[0] = write ? 0x2A : 0x28;  // WRITE(10) / READ(10)
      h.cdb[8] = static_cast<uint8_t>(kIoBytes / 512 & 0xff);
      h.cdb[7] = static_cast<uint8_t>(kIoBytes / 512 >> 8);
      std::vector<uint8_t> pdu;
      if (write) {
        h.flags = proto::kCommandFlagDataOut;
        h.data_out_length = kIoBytes;
        proto::encode(h, pdu);
        pdu.resize(pdu.size() + kIoBytes, static_cast<uint8_t>(next_sn));
      } else {
        h.flags = proto::kCommandFlagDataIn;
        h.expected_data_in = kIoBytes;
        proto::encode(h, pdu);
      }
      if (!session.send_command(static_cast<uint16_t>(next_sn % 512), std::move(pdu))) return;
      outstanding.push_back(next_sn);
      ++next_sn;
    }
  }
  void collect() {
    while (auto r = session.pop_reply()) {
      auto reply = proto::decode_reply(r->bytes);
      if (!reply) continue;
      auto it = std::find(outstanding.begin(), outstanding.end(), reply->header.cmd_sn);
      if (it != outstanding.end()) outstanding.erase(it);
      ++completed;
    }
  }

  // Frames the wire delivered, waiting while the client is stalled (a client
  // process that does not get a CPU: its frames wait in its receive ring).
  void deliver(io::Packet pkt, TimePoint now) {
    inbox.push_back(std::move(pkt));
    if (now >= stalled_until) drain(now);
  }
  void drain(TimePoint now) {
    while (!inbox.empty()) {
      io::Packet pkt = std::move(inbox.front());
      inbox.pop_front();
      auto f = proto::decode_frame(pkt.bytes());
      if (f.ok()) session.on_frame(*f, now);
    }
  }
  bool stalled(TimePoint now) const { return now < stalled_until; }

  proto::InitiatorSession session;
  std::deque<io::Packet> inbox;
  TimePoint stalled_until{};
  TimePoint next_stall = TimePoint::max();
  uint32_t index;
  bool write;
  uint32_t next_sn = 1;
  std::deque<uint32_t> outstanding;
  uint64_t completed = 0;
  uint64_t payload = 0;  // data bytes of this session that crossed the bottleneck
};

// Answers every command at once: reads with 128 KiB of data, writes with status.
void execute(proto::TargetEndpoint& target) {
  while (auto c = target.pop_command()) {
    if (!c->needs_execution()) continue;
    proto::ReplyHeader r;
    r.cmd_sn = c->header.cmd_sn;
    r.data_in_length = c->header.expected_data_in;
    std::vector<uint8_t> pdu;
    proto::encode(r, pdu);
    pdu.resize(pdu.size() + c->header.expected_data_in, 0x5A);
    target.send_reply(c->session_id, c->tag, c->header.cmd_sn, std::move(pdu),
                      (c->header.flags & proto::kCommandFlagDataOut) == 0);
  }
}

struct Outcome {
  std::vector<std::vector<double>> windows;  // per window, per client: MB/s
  double aggregate_mb_s = 0;                 // over the measured part
  uint64_t uplink_drops = 0;
  std::vector<proto::TransportStats> target_sessions;
  std::vector<proto::TransportStats> clients;
};

struct Scenario {
  uint32_t clients = 16;
  bool write = false;
  bool fair = true;
  uint64_t seed = 1;  // the engine's TxScheduler; false: the endpoint's own poll order
  // Client stalls: each client, on average every `stall_every`, stops for up
  // to `stall_max` (uniform): what 64 client processes on two CPUs see.
  Duration stall_every{0};
  Duration stall_max{0};
  Duration warmup = 300ms;
  Duration window = 100ms;
  uint32_t windows = 10;
  // What expect_fair asserts: per window, and over all windows together.
  double window_jain = 0.95;
  double window_slowest = 0.5;  // of the mean
  double total_jain = 0.99;
  double total_slowest = 0.8;
};

// Stalling clients lose their share while they are stalled (they issue and
// acknowledge nothing): a 100 ms window in which one slept for 60 ms says
// nothing about the target. Per window only starvation is asserted; the
// whole second must still be fair.
Scenario stalling(Scenario s) {
  s.stall_every = 30ms;
  s.stall_max = 40ms;
  s.window_jain = 0.90;
  s.window_slowest = 0.25;
  s.total_jain = 0.98;
  s.total_slowest = 0.7;
  return s;
}

Outcome run(const Scenario& s) {
  TimePoint now = TimePoint{} + 1000s;
  proto::TargetConfig tc;
  tc.local_mac = kTargetMac;
  tc.target_name = "iqn.test:fair";
  tc.limits.mtu = kMtu;
  tc.limits.window = 256;
  tc.max_sessions = 256;
  tc.transport.checksum = false;
  tc.seed = 7;
  proto::TargetEndpoint target(tc);
  engine::TxScheduler scheduler;
  // Downlink: the port is refused frames while its queue is full (tbf on an
  // AF_PACKET socket); uplink: a switch port drops what does not fit.
  Wire down(11, 1u << 20), up(12, kQueueFrames);
  Wire::Sink target_sink(down, now, kQueueFrames);
  Wire::Sink client_sink(up, now, 0);

  std::vector<std::unique_ptr<Client>> clients;
  for (uint32_t i = 0; i < s.clients; ++i) {
    clients.push_back(std::make_unique<Client>(i, s.write));
    EXPECT_TRUE(clients.back()->session.login(kTargetMac, tc.target_name, now).ok());
  }
  auto client_of = [&](const MacAddress& m) -> Client* {
    const uint32_t i = (uint32_t{m[4]} << 8) | m[5];
    return m[0] == 0x02 && i < clients.size() ? clients[i].get() : nullptr;
  };

  std::mt19937_64 rng(s.seed);
  auto pick = [&](Duration max) {  // uniform in [0, max]
    return Duration(static_cast<Duration::rep>(rng() % (static_cast<uint64_t>(max.count()) + 1)));
  };
  std::vector<uint32_t> order(s.clients);
  std::iota(order.begin(), order.end(), 0u);
  std::array<io::Packet, 64> burst;
  const TimePoint start = now;
  TimePoint measure_from = TimePoint::max();
  TimePoint window_end = TimePoint::max();
  Outcome out;
  std::vector<uint64_t> at_window_start(s.clients, 0);
  uint64_t measured_bytes = 0;
  const TimePoint limit = start + 2s + s.warmup + s.windows * s.window;
  while (now < limit) {
    // Deliver what the wire has finished carrying.
    for (size_t n; (n = down.take(now, burst)) > 0;) {
      for (size_t k = 0; k < n; ++k) {
        auto f = proto::decode_frame(burst[k].bytes());
        if (f.ok()) {
          if (Client* c = client_of(f->header.dst)) {
            if (f->header.common.opcode == proto::Opcode::kCommandReply && !s.write)
              c->payload += f->payload.size();
            c->deliver(std::move(burst[k]), now);
          }
        }
        burst[k].reset();
      }
    }
    for (size_t n; (n = up.take(now, burst)) > 0;) {
      for (size_t k = 0; k < n; ++k) {
        auto f = proto::decode_frame(burst[k].bytes());
        if (f.ok()) {
          if (s.write && f->header.common.opcode == proto::Opcode::kCommandRequest)
            if (Client* c = client_of(f->header.src)) c->payload += f->payload.size();
          target.on_frame(*f, now);
        }
        burst[k].reset();
      }
    }
    execute(target);
    bool all_up = true;
    for (auto& c : clients) {
      all_up = all_up && c->session.established();
      if (s.stall_every > Duration::zero()) {
        if (c->next_stall == TimePoint::max()) c->next_stall = now + pick(s.stall_every * 2);
        if (now >= c->next_stall) {
          c->stalled_until = now + pick(s.stall_max);
          c->next_stall = c->stalled_until + pick(s.stall_every * 2);
        }
      }
      if (c->stalled(now)) continue;
      c->drain(now);
      c->collect();
      c->issue();
    }
    if (s.fair)
      scheduler.poll(target, now, target_sink);
    else
      target.poll(now, target_sink);
    execute(target);
    // The clients are separate hosts: none of them always reaches the
    // switch first (a fixed order would hand the queue's free room to the
    // first ones every time, and drop-tail the last ones' frames).
    std::shuffle(order.begin(), order.end(), rng);
    for (uint32_t i : order)
      if (!clients[i]->stalled(now)) clients[i]->session.poll(now, client_sink);

    // Windows of measurement once everyone is up and the warm-up is over.
    if (all_up && measure_from == TimePoint::max()) measure_from = now + s.warmup;
    if (now >= measure_from) {
      if (window_end == TimePoint::max()) {
        window_end = measure_from + s.window;
        for (auto& c : clients) at_window_start[c->index] = c->payload;
      } else if (now >= window_end) {
        std::vector<double> mb_s;
        for (auto& c : clients) {
          const uint64_t b = c->payload - at_window_start[c->index];
          mb_s.push_back(double(b) / std::chrono::duration<double>(s.window).count() / 1e6);
          measured_bytes += b;
          at_window_start[c->index] = c->payload;
        }
        out.windows.push_back(std::move(mb_s));
        window_end += s.window;
        if (out.windows.size() >= s.windows) break;
      }
    }

    // Next event: a frame due, or a timer; at least 2 us so a blocked sender
    // (its next_deadline is "now") does not stall virtual time.
    TimePoint next = std::min(down.next_due(), up.next_due());
    next = std::min(next, target.next_deadline());
    for (auto& c : clients) {
      next = std::min(next, c->stalled(now) ? c->stalled_until : c->session.next_deadline());
      next = std::min(next, c->next_stall);
    }
    now = std::max(next, now + 2us);
  }
  EXPECT_EQ(out.windows.size(), s.windows) << "the sessions did not all come up in time";
  out.aggregate_mb_s = double(measured_bytes) / 1e6 /
                       std::chrono::duration<double>(s.window * out.windows.size()).count();
  out.uplink_drops = up.stats().queue_drops;
  for (const proto::SessionInfo& i : target.sessions()) out.target_sessions.push_back(i.transport);
  for (auto& c : clients)
    if (c->session.connection()) out.clients.push_back(c->session.connection()->stats());
  return out;
}

// Data bytes per frame over the wire bytes per frame, at line rate.
double payload_line_rate_mb_s() {
  return double(kRate) / 8 * double(kMtu - 40) / double(kMtu + 14) / 1e6;
}

void report(const char* what, const Scenario& s, const Outcome& o) {
  std::printf("%s: %u clients, %s, aggregate %.1f MB/s (%.1f%% of %.2f), uplink drops %llu\n", what,
              s.clients, s.write ? "write" : "read", o.aggregate_mb_s,
              100 * o.aggregate_mb_s / payload_line_rate_mb_s(), payload_line_rate_mb_s(),
              static_cast<unsigned long long>(o.uplink_drops));
  auto sum = [](const std::vector<proto::TransportStats>& v, const char* who) {
    uint64_t t = 0, sp = 0, rx = 0, fast = 0;
    uint32_t lo = UINT32_MAX, hi = 0;
    for (const auto& x : v) {
      t += x.timeouts;
      sp += x.spurious_timeouts;
      rx += x.frames_retransmitted;
      fast += x.fast_retransmits;
      lo = std::min(lo, x.cwnd);
      hi = std::max(hi, x.cwnd);
    }
    std::printf(
        "  %s: timeouts %llu (spurious %llu), retransmitted %llu (fast %llu), cwnd %u..%u\n", who,
        static_cast<unsigned long long>(t), static_cast<unsigned long long>(sp),
        static_cast<unsigned long long>(rx), static_cast<unsigned long long>(fast), lo, hi);
  };
  sum(o.target_sessions, "target");
  sum(o.clients, "clients");
  if (std::getenv("HS_FAIR_VERBOSE")) {
    for (size_t i = 0; i < o.clients.size(); ++i) {
      double total = 0;
      for (const auto& x : o.windows) total += x[i];
      const auto& c = o.clients[i];
      std::printf(
          "   client %2zu: %6.2f MB/s  cwnd %4u ssthresh %4u to %llu/%llu rtx %llu srtt %.1f rto "
          "%.1f ms\n",
          i, total / double(o.windows.size()), c.cwnd, c.ssthresh, (unsigned long long)c.timeouts,
          (unsigned long long)c.spurious_timeouts, (unsigned long long)c.frames_retransmitted,
          std::chrono::duration<double, std::milli>(c.srtt).count(),
          std::chrono::duration<double, std::milli>(c.rto).count());
    }
    for (const auto& t : o.target_sessions)
      std::printf(
          "   target session: cwnd %4u ssthresh %4u to %llu/%llu rtx %llu srtt %.1f rto %.1f ms "
          "sent %llu\n",
          t.cwnd, t.ssthresh, (unsigned long long)t.timeouts,
          (unsigned long long)t.spurious_timeouts, (unsigned long long)t.frames_retransmitted,
          std::chrono::duration<double, std::milli>(t.srtt).count(),
          std::chrono::duration<double, std::milli>(t.rto).count(),
          (unsigned long long)t.bytes_sent);
  }
  for (size_t w = 0; w < o.windows.size(); ++w) {
    const auto& x = o.windows[w];
    const double mean = std::accumulate(x.begin(), x.end(), 0.0) / double(x.size());
    std::printf("  window %zu: Jain %.3f, slowest/mean %.2f\n", w, jain(x),
                mean > 0 ? *std::min_element(x.begin(), x.end()) / mean : 0.0);
  }
}

void expect_fair(const Scenario& s, const Outcome& o) {
  ASSERT_EQ(o.windows.size(), s.windows);
  // Every 100 ms window after the warm-up: Jain's index and the slowest
  // client against the mean, and over the whole measured second.
  std::vector<double> total(s.clients, 0);
  for (const auto& x : o.windows) {
    const double mean = std::accumulate(x.begin(), x.end(), 0.0) / double(x.size());
    EXPECT_GE(jain(x), s.window_jain);
    EXPECT_GE(*std::min_element(x.begin(), x.end()), s.window_slowest * mean);
    for (size_t i = 0; i < x.size(); ++i) total[i] += x[i];
  }
  const double mean = std::accumulate(total.begin(), total.end(), 0.0) / double(total.size());
  std::printf("  all windows: Jain %.3f, slowest/mean %.2f\n", jain(total),
              *std::min_element(total.begin(), total.end()) / mean);
  EXPECT_GE(jain(total), s.total_jain);
  EXPECT_GE(*std::min_element(total.begin(), total.end()), s.total_slowest * mean);
  EXPECT_GE(o.aggregate_mb_s, 0.95 * payload_line_rate_mb_s());
}

TEST(Fairness, ReadsShareABackpressuredPortFairly) {
  Scenario s;
  s.clients = 32;
  const Outcome fair = run(s);
  report("fair scheduler", s, fair);
  expect_fair(s, fair);
  // What the endpoint's own order gives, for the record (the cause of issue 21).
  s.fair = false;
  report("endpoint order", s, run(s));
}

TEST(Fairness, WritesShareADropTailUplinkFairly) {
  Scenario s;
  s.clients = 32;
  s.write = true;
  const Outcome o = run(s);
  report("writes", s, o);
  expect_fair(s, o);
}

// Clients that stall now and then (a process waiting for a CPU) delay their
// acks by tens of milliseconds: the target's retransmission timers fire for
// frames that were delivered. No session may be left behind by that.
TEST(Fairness, ReadsStayFairWhenClientsStall) {
  Scenario s;
  s.clients = 32;
  s = stalling(s);
  const Outcome o = run(s);
  report("reads, stalling clients", s, o);
  expect_fair(s, o);
}

TEST(Fairness, WritesStayFairWhenClientsStall) {
  Scenario s;
  s.clients = 32;
  s.write = true;
  s = stalling(s);
  const Outcome o = run(s);
  report("writes, stalling clients", s, o);
  expect_fair(s, o);
}

}  // namespace
}  // namespace hyperscsi

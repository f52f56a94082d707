// Reliability of the protocol over the in-memory link: thousands of PDUs of
// random sizes up to 1 MiB through a link that loses, reorders and duplicates
// frames arrive exactly once and bit-exact, each command is executed exactly
// once, and the send window is never exceeded. Time is virtual, so the test
// is deterministic for a given seed and does not depend on machine load.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/io/port_sink.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/messages.h"

namespace hyperscsi {
namespace {

using proto::TimePoint;
using namespace std::chrono_literals;

// Content of PDU `id` at byte i: a cheap deterministic function, so the
// receiver can check every byte without keeping a copy.
uint8_t pattern(uint32_t id, size_t i) {
  uint64_t x = (uint64_t{id} << 32) ^ (i / 8) ^ 0x9E3779B97F4A7C15ull;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return static_cast<uint8_t>(x >> (8 * (i % 8)));
}

struct End {
  io::MemPort* port;
  proto::Connection conn;
  io::PortSink sink;
  uint64_t corrupt = 0;
  End(io::MemPort* p, const proto::TransportParams& params, const proto::Endpoint& ep)
      : port(p), conn(params, ep), sink(*p, 1024) {}

  size_t pump_in(TimePoint now) {
    std::array<io::Packet, 64> burst;
    size_t total = 0;
    for (size_t n; (n = port->rx_burst(burst)) > 0; total += n)
      for (size_t i = 0; i < n; ++i) {
        auto f = proto::decode_frame(burst[i].bytes());
        if (f.ok())
          conn.on_frame(*f, now);
        else
          ++corrupt;
        burst[i].reset();
      }
    return total;
  }
  void pump_out(TimePoint now) {
    conn.poll(now, sink);
    sink.flush();
  }
};

struct Scenario {
  uint32_t pdus = 10000;
  size_t max_pdu = 1u << 20;
  size_t mtu = 1500;
  double loss = 0.10, reorder = 0.10, duplicate = 0.05, corrupt = 0.0;
  uint64_t seed = 42;
  uint32_t queue_depth = 64;
};

struct Outcome {
  uint32_t executed = 0;
  uint32_t replies = 0;
  uint64_t payload_bytes = 0;
  bool all_exact = true;
  bool executed_once = true;
  proto::TransportStats initiator, target;
  io::ImpairmentStats link_ab, link_ba;
  uint64_t corrupt_dropped = 0;
};

Outcome run(const Scenario& s) {
  TimePoint now{};
  io::MemLinkConfig cfg;
  cfg.mtu_a = cfg.mtu_b = s.mtu;
  cfg.seed = s.seed;
  io::Impairment imp;
  imp.loss = s.loss;
  imp.reorder = s.reorder;
  imp.duplicate = s.duplicate;
  imp.corrupt = s.corrupt;
  imp.delay = 50us;
  cfg.a_to_b = cfg.b_to_a = imp;
  cfg.clock = [&now] { return now; };
  auto link = io::make_mem_link(cfg);
  EXPECT_TRUE(link.ok());

  proto::TransportParams params;
  params.mtu = s.mtu;
  params.max_pdu = static_cast<uint32_t>(s.max_pdu + 64);
  End ini(link->a.get(), params, {link->a->mac(), link->b->mac(), 7, 1, params.receive_window});
  End tgt(link->b.get(), params, {link->b->mac(), link->a->mac(), 7, 1, params.receive_window});

  std::mt19937_64 rng(s.seed);
  // Log-uniform sizes from 1 byte to max_pdu: many small, some near 1 MiB.
  std::uniform_real_distribution<double> log_size(0.0, std::log(static_cast<double>(s.max_pdu)));
  auto random_size = [&] { return static_cast<size_t>(std::exp(log_size(rng))); };

  Outcome out;
  std::vector<uint32_t> executions(s.pdus + 1, 0);
  std::vector<int64_t> tag_owner(s.queue_depth, -1);  // cmd_sn in flight per tag
  uint32_t next_id = 1;

  const TimePoint give_up = now + std::chrono::hours(2);  // virtual time
  for (uint64_t step = 0; out.replies < s.pdus && now < give_up && step < 50'000'000; ++step) {
    // Initiator: keep queue_depth commands in flight. The PDU is a command
    // header whose data-out is the test pattern.
    for (uint16_t tag = 0; tag < s.queue_depth && next_id <= s.pdus; ++tag) {
      if (tag_owner[tag] >= 0) continue;
      proto::CommandHeader h;
      h.cmd_sn = next_id;
      h.cdb_length = 6;
      h.flags = proto::kCommandFlagDataOut;
      const size_t size = random_size();
      h.data_out_length = static_cast<uint32_t>(size);
      std::vector<uint8_t> pdu;
      proto::encode(h, pdu);
      const size_t at = pdu.size();
      pdu.resize(at + size);
      for (size_t i = 0; i < size; ++i) pdu[at + i] = pattern(next_id, i);
      if (!ini.conn.send_pdu(proto::Opcode::kCommandRequest, tag, std::move(pdu))) break;
      tag_owner[tag] = next_id++;
    }

    size_t moved = tgt.pump_in(now) + ini.pump_in(now);
    while (auto pdu = tgt.conn.pop_pdu()) {
      auto cmd = proto::decode_command(pdu->bytes);
      if (!cmd.ok() || cmd->header.cmd_sn == 0 || cmd->header.cmd_sn > s.pdus) {
        out.all_exact = false;
        continue;
      }
      const uint32_t id = cmd->header.cmd_sn;
      if (++executions[id] != 1) out.executed_once = false;
      ++out.executed;
      for (size_t i = 0; i < cmd->data_out.size(); ++i)
        if (cmd->data_out[i] != pattern(id, i)) {
          out.all_exact = false;
          break;
        }
      out.payload_bytes += cmd->data_out.size();
      // Reply: a small pattern PDU of its own.
      proto::ReplyHeader r;
      r.cmd_sn = id;
      const size_t size = id % 4096;
      r.data_in_length = static_cast<uint32_t>(size);
      std::vector<uint8_t> reply;
      proto::encode(r, reply);
      const size_t at = reply.size();
      reply.resize(at + size);
      for (size_t i = 0; i < size; ++i) reply[at + i] = pattern(~id, i);
      EXPECT_TRUE(tgt.conn.send_pdu(proto::Opcode::kCommandReply, pdu->tag, std::move(reply)));
    }
    while (auto pdu = ini.conn.pop_pdu()) {
      auto rep = proto::decode_reply(pdu->bytes);
      if (!rep.ok() || pdu->tag >= s.queue_depth || tag_owner[pdu->tag] < 0 ||
          rep->header.cmd_sn != tag_owner[pdu->tag]) {
        out.all_exact = false;
        continue;
      }
      const uint32_t id = rep->header.cmd_sn;
      for (size_t i = 0; i < rep->data_in.size(); ++i)
        if (rep->data_in[i] != pattern(~id, i)) {
          out.all_exact = false;
          break;
        }
      if (rep->data_in.size() != id % 4096) out.all_exact = false;
      tag_owner[pdu->tag] = -1;
      ++out.replies;
    }
    tgt.pump_out(now);
    ini.pump_out(now);
    if (moved == 0) {
      // Jump virtual time to the next timer, but in steps small enough for
      // the link's delayed frames to come due in order.
      const TimePoint next = std::min(ini.conn.next_deadline(), tgt.conn.next_deadline());
      now = std::min(std::max(next, now + 1us), now + 25us);
    }
  }
  out.initiator = ini.conn.stats();
  out.target = tgt.conn.stats();
  out.link_ab = link->a->tx_link_stats();
  out.link_ba = link->b->tx_link_stats();
  out.corrupt_dropped = ini.corrupt + tgt.corrupt;
  return out;
}

void expect_delivered_exactly_once(const Scenario& s, const Outcome& o) {
  EXPECT_EQ(o.executed, s.pdus) << "commands executed";
  EXPECT_EQ(o.replies, s.pdus) << "replies received";
  EXPECT_TRUE(o.all_exact) << "a PDU arrived altered";
  EXPECT_TRUE(o.executed_once) << "a command was executed twice";
  EXPECT_FALSE(o.initiator.window_violated) << "initiator exceeded its send window";
  EXPECT_FALSE(o.target.window_violated) << "target exceeded its send window";
  EXPECT_LE(o.initiator.max_in_flight, o.initiator.max_allowed_window);
}

TEST(Reliability, TenThousandPdusThroughLossyReorderingDuplicatingLink) {
  Scenario s;
  const Outcome o = run(s);
  expect_delivered_exactly_once(s, o);
  // The impairments really happened, and the protocol really recovered.
  EXPECT_GT(o.link_ab.lost, 1000u);
  EXPECT_GT(o.link_ab.duplicated, 500u);
  EXPECT_GT(o.link_ab.reordered, 1000u);
  EXPECT_GT(o.initiator.frames_retransmitted, o.link_ab.lost / 2);
  EXPECT_GT(o.initiator.duplicates_received + o.target.duplicates_received, 0u);
  std::printf(
      "payload %.1f MiB, initiator frames sent %llu retransmitted %llu (fast %llu, "
      "timeouts %llu), link lost %llu dup %llu reordered %llu\n",
      o.payload_bytes / 1048576.0, static_cast<unsigned long long>(o.initiator.frames_sent),
      static_cast<unsigned long long>(o.initiator.frames_retransmitted),
      static_cast<unsigned long long>(o.initiator.fast_retransmits),
      static_cast<unsigned long long>(o.initiator.timeouts),
      static_cast<unsigned long long>(o.link_ab.lost),
      static_cast<unsigned long long>(o.link_ab.duplicated),
      static_cast<unsigned long long>(o.link_ab.reordered));
}

TEST(Reliability, JumboFramesWithCorruption) {
  Scenario s;
  s.pdus = 2000;
  s.mtu = 9000;
  s.corrupt = 0.02;
  s.seed = 7;
  const Outcome o = run(s);
  expect_delivered_exactly_once(s, o);
  EXPECT_GT(o.corrupt_dropped, 0u) << "corrupted frames must fail the checksum";
}

TEST(Reliability, CleanLinkNeedsNoRetransmission) {
  Scenario s;
  s.pdus = 2000;
  s.loss = s.reorder = s.duplicate = 0;
  const Outcome o = run(s);
  expect_delivered_exactly_once(s, o);
  EXPECT_EQ(o.initiator.frames_retransmitted, 0u);
  EXPECT_EQ(o.target.frames_retransmitted, 0u);
}

}  // namespace
}  // namespace hyperscsi

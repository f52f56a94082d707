// A two-host lab for the multipath session machinery on a virtual clock.
//
// Wires: each is a point-to-point link between one initiator port and one
// target port (as a veth pair is), with its own line rate, one-way delay,
// seeded loss, drop-tail queue and an up/down switch per direction. A frame
// is carried by the wire of its source MAC and delivered only to the MAC at
// the far end, so a path pairing ports that share no wire never gets through
// (another segment).
//
// Hosts: the initiator is an InitiatorPaths plus a small command table (tags,
// cmd_sn, reply_ack_sn, data checks); the target is a TargetPaths plus a
// CommandOrderer, a ReplyCache and a RAM disk, executing each command after
// an optional delay, exactly as TargetEndpoint::drain_pdus uses the cache.
// Both the login path and the session parameters are set up directly, as a
// completed login would leave them (the login itself is InitiatorSession's
// and TargetEndpoint's, tested elsewhere).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <vector>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/command_order.h"
#include "hyperscsi/proto/initiator_paths.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/negotiation.h"
#include "hyperscsi/proto/reply_cache.h"
#include "hyperscsi/proto/target_paths.h"

namespace hyperscsi::proto::mptest {

inline MacAddress imac(uint8_t n) {
  return {0x02, 0, 0, 0, 0x01, n};
}
inline MacAddress tmac(uint8_t n) {
  return {0x02, 0, 0, 0, 0x02, n};
}

inline double seconds_of(Duration d) {
  return std::chrono::duration<double>(d).count();
}

// One direction of a wire.
struct WireConfig {
  double rate_bps = 1e9;
  Duration delay = microseconds(20);
  double loss = 0;
  size_t queue_bytes = 1u << 20;  // drop-tail beyond this much waiting to be serialized
  size_t max_frame = SIZE_MAX;    // longer frames vanish (a switch with a smaller MTU)
  uint16_t port_mtu = 0;          // both ports' MTU on this wire; 0: LabConfig::mtu
};

class Direction {
 public:
  Direction(const WireConfig& c, uint64_t seed) : c_(c), rng_(seed) {}
  void send(std::vector<uint8_t> frame, TimePoint now) {
    ++offered;
    if (frame.size() > c_.max_frame) {
      ++dropped_too_big;
      return;
    }
    if (!up) {
      ++dropped_down;
      return;
    }
    if (c_.loss > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < c_.loss) {
      ++dropped_loss;
      return;
    }
    const TimePoint start = std::max(busy_until_, now);
    const double backlog = seconds_of(start - now) * c_.rate_bps / 8;
    if (backlog > static_cast<double>(c_.queue_bytes)) {
      ++dropped_queue;
      return;
    }
    // Serialization (with preamble, FCS and gap: 24 bytes) then propagation.
    const auto ser = std::chrono::nanoseconds(
        static_cast<int64_t>(static_cast<double>(frame.size() + 24) * 8e9 / c_.rate_bps));
    busy_until_ = start + ser;
    bytes += frame.size();
    q_.push(Item{busy_until_ + c_.delay, order_++, std::move(frame)});
  }
  TimePoint next() const { return q_.empty() ? kNever : q_.top().at; }
  bool pop_due(TimePoint now, std::vector<uint8_t>& out) {
    if (q_.empty() || q_.top().at > now) return false;
    out = std::move(const_cast<Item&>(q_.top()).bytes);
    q_.pop();
    return true;
  }
  // Taking a wire down loses what is on it.
  void set_up(bool u) {
    up = u;
    if (!u) {
      while (!q_.empty()) q_.pop();
    }
  }
  void set_loss(double l) { c_.loss = l; }
  // Frames already on the wire keep the delay they were sent with.
  void set_delay(Duration d) { c_.delay = d; }

  bool up = true;
  uint64_t offered = 0, dropped_down = 0, dropped_loss = 0, dropped_queue = 0, bytes = 0;
  uint64_t dropped_too_big = 0;

 private:
  struct Item {
    TimePoint at;
    uint64_t order;
    std::vector<uint8_t> bytes;
    bool operator>(const Item& o) const { return at != o.at ? at > o.at : order > o.order; }
  };
  WireConfig c_;
  std::mt19937_64 rng_;
  TimePoint busy_until_{};
  uint64_t order_ = 0;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> q_;
};

struct Wire {
  Wire(MacAddress i, MacAddress t, const WireConfig& c, uint64_t seed)
      : initiator(i), target(t), i2t(c, seed * 2 + 1), t2i(c, seed * 2 + 2) {}
  MacAddress initiator;
  MacAddress target;
  Direction i2t;
  Direction t2i;
  void set_up(bool u) {
    i2t.set_up(u);
    t2i.set_up(u);
  }
  void set_delay(Duration d) {
    i2t.set_delay(d);
    t2i.set_delay(d);
  }
};

class CollectSink : public FrameSink {
 public:
  std::span<uint8_t> acquire(size_t size) override {
    buf_.assign(size, 0);
    return buf_;
  }
  void commit(size_t length) override {
    buf_.resize(length);
    frames.push_back(std::move(buf_));
    buf_ = {};
  }
  std::vector<std::vector<uint8_t>> frames;

 private:
  std::vector<uint8_t> buf_;
};

inline constexpr uint32_t kBlock = 4096;

// The content the RAM disk starts with, and what a write puts there.
inline uint8_t pattern(uint64_t byte_offset, uint32_t version) {
  uint64_t x = byte_offset / 8 * 0x9E3779B97F4A7C15ull + version * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return static_cast<uint8_t>(x >> (8 * (byte_offset % 8)));
}

// ---------------------------------------------------------------- target --

struct TargetHost {
  TargetHost(TargetPathsConfig cfg, const PathSpec& login, TimePoint now, size_t disk_bytes)
      : paths(std::move(cfg), login, now), disk(disk_bytes) {
    for (size_t i = 0; i < disk.size(); ++i) disk[i] = pattern(i, 0);
  }

  TargetPaths paths;
  CommandOrderer orderer;
  ReplyCache cache;
  std::vector<uint8_t> disk;
  Duration exec_delay{};
  struct Running {
    TimePoint done;
    uint16_t tag;
    CommandHeader header;
    std::vector<uint8_t> pdu;
    size_t data_offset;
  };
  std::deque<Running> running;
  std::map<uint32_t, int> executions;     // cmd_sn -> times executed
  std::map<uint32_t, bool> is_write;      // cmd_sn -> write
  std::vector<uint32_t> execution_order;  // cmd_sn in the order executed
  std::map<CacheDecision, uint64_t> decisions;
  uint64_t malformed = 0;

  void take_commands(TimePoint now) {
    while (auto pdu = paths.transport().pop_pdu()) orderer.push(std::move(*pdu), now);
    while (auto pdu = orderer.pop(now)) {
      if (pdu->opcode != Opcode::kCommandRequest) {
        ++malformed;
        continue;
      }
      auto cmd = decode_command(pdu->bytes);
      if (!cmd) {
        ++malformed;
        continue;
      }
      const CommandHeader h = cmd->header;
      cache.release_below(h.reply_ack_sn);
      const CacheDecision d = cache.begin(h.cmd_sn);
      ++decisions[d];
      if (d == CacheDecision::kReplay) {
        std::span<const uint8_t> stored = cache.stored_reply(h.cmd_sn);
        paths.transport().send_pdu(Opcode::kCommandReply, pdu->tag,
                                   std::vector<uint8_t>(stored.begin(), stored.end()));
        continue;
      }
      if (d != CacheDecision::kExecute && d != CacheDecision::kReexecuteIdempotent) continue;
      const size_t off = static_cast<size_t>(cmd->data_out.data() - pdu->bytes.data());
      running.push_back(Running{now + exec_delay, pdu->tag, h, std::move(pdu->bytes), off});
    }
    while (!running.empty() && running.front().done <= now) {
      execute(running.front());
      running.pop_front();
    }
  }

  void execute(const Running& r) {
    const CommandHeader& h = r.header;
    ++executions[h.cmd_sn];
    execution_order.push_back(h.cmd_sn);
    const uint64_t lba = bytes::load_be64(h.cdb.data() + 2);
    const uint32_t blocks = bytes::load_be32(h.cdb.data() + 10);
    const uint64_t off = lba * kBlock;
    const uint64_t len = uint64_t{blocks} * kBlock;
    ReplyHeader rep;
    rep.cmd_sn = h.cmd_sn;
    std::vector<uint8_t> out;
    const bool write = h.cdb[0] == 0x8A;
    is_write[h.cmd_sn] = write;
    if (off + len > disk.size()) {
      rep.status = 2;
    } else if (write) {
      std::memcpy(disk.data() + off, r.pdu.data() + r.data_offset, len);
    } else {
      rep.data_in_length = static_cast<uint32_t>(len);
    }
    encode(rep, out);
    const size_t data_off = out.size();
    if (!write && rep.status == 0)
      out.insert(out.end(), disk.begin() + off, disk.begin() + off + len);
    cache.complete(h.cmd_sn, out, data_off, !write);
    paths.transport().send_pdu(Opcode::kCommandReply, r.tag, std::move(out));
  }

  TimePoint next_deadline() const {
    TimePoint t = std::min(paths.next_deadline(), orderer.next_deadline());
    if (!running.empty()) t = std::min(t, running.front().done);
    return t;
  }
};

// ------------------------------------------------------------- initiator --

struct Completion {
  TimePoint at;
  uint32_t cmd_sn;
  bool write;
  uint32_t bytes;
};

struct InitiatorHost {
  InitiatorHost(InitiatorPathsConfig cfg, const PathSpec& login, TimePoint now)
      : paths(std::move(cfg), login, now) {
    for (uint16_t t = 0; t <= kMaxTag; ++t) free_tags.push_back(static_cast<uint16_t>(kMaxTag - t));
  }

  InitiatorPaths paths;
  struct Outstanding {
    uint32_t cmd_sn;
    bool write;
    uint64_t lba;
    uint32_t blocks;
    uint32_t version;
    TimePoint issued;
  };
  std::vector<uint16_t> free_tags;
  std::map<uint16_t, Outstanding> by_tag;
  std::set<uint32_t> outstanding_sn;
  uint32_t next_sn = 1000;
  std::vector<Completion> completions;
  uint64_t errors = 0;  // bad status, unmatched, wrong data
  uint64_t unmatched = 0;
  uint64_t data_mismatches = 0;
  // What each block holds once every issued write completed: its version.
  std::map<uint64_t, uint32_t> block_version;

  bool can_issue() const { return !free_tags.empty(); }
  size_t in_flight() const { return by_tag.size(); }

  void issue(bool write, uint64_t lba, uint32_t blocks, uint32_t version, TimePoint now) {
    const uint16_t tag = free_tags.back();
    free_tags.pop_back();
    const uint32_t sn = next_sn++;
    outstanding_sn.insert(sn);
    CommandHeader h;
    h.cmd_sn = sn;
    h.reply_ack_sn = *outstanding_sn.begin();
    h.cdb_length = 16;
    h.cdb[0] = write ? 0x8A : 0x88;  // WRITE(16) / READ(16)
    bytes::store_be64(h.cdb.data() + 2, lba);
    bytes::store_be32(h.cdb.data() + 10, blocks);
    const uint32_t len = blocks * kBlock;
    if (write) {
      h.flags = kCommandFlagDataOut;
      h.data_out_length = len;
    } else {
      h.flags = kCommandFlagDataIn;
      h.expected_data_in = len;
    }
    std::vector<uint8_t> pdu;
    encode(h, pdu);
    if (write) {
      const size_t at = pdu.size();
      pdu.resize(at + len);
      for (uint32_t i = 0; i < len; ++i) pdu[at + i] = pattern(lba * kBlock + i, version);
    }
    by_tag[tag] = Outstanding{sn, write, lba, blocks, version, now};
    EXPECT_TRUE(paths.transport().send_pdu(Opcode::kCommandRequest, tag, std::move(pdu)));
  }

  void take_replies(TimePoint now) {
    while (auto pdu = paths.transport().pop_pdu()) {
      auto rep = decode_reply(pdu->bytes);
      auto it = by_tag.find(pdu->tag);
      if (!rep || it == by_tag.end() || it->second.cmd_sn != rep->header.cmd_sn) {
        ++unmatched;  // a replayed reply whose command completed already
        continue;
      }
      const Outstanding o = it->second;
      by_tag.erase(it);
      outstanding_sn.erase(o.cmd_sn);
      free_tags.push_back(pdu->tag);
      const uint32_t len = o.blocks * kBlock;
      if (rep->header.status != 0) {
        ++errors;
      } else if (o.write) {
        block_version[o.lba] = o.version;  // the test writes whole extents at extent LBAs
      } else {
        const auto want_version = block_version.count(o.lba) ? block_version[o.lba] : 0u;
        bool ok = rep->data_in.size() == len;
        for (uint32_t i = 0; ok && i < len; ++i)
          ok = rep->data_in[i] == pattern(o.lba * kBlock + i, want_version);
        if (!ok) {
          ++data_mismatches;
          ++errors;
        }
      }
      completions.push_back(Completion{now, o.cmd_sn, o.write, len});
    }
  }
};

// ------------------------------------------------------------------ lab --

struct LabConfig {
  uint16_t mtu = 9000;
  std::vector<WireConfig> wires;  // wire i joins initiator port imac(i) and target port tmac(i)
  // Candidate paths beyond the login path (wire 0): pairs (initiator port,
  // target port) by wire index. Empty: one path per further wire.
  std::vector<std::pair<size_t, size_t>> extra_paths;
  std::optional<SessionKeys> keys;
  uint64_t seed = 1;
  size_t disk_bytes = 64u << 20;
  uint32_t session_id = 0x5e551001;
};

class Lab {
 public:
  explicit Lab(const LabConfig& c) : cfg_(c) {
    for (size_t i = 0; i < c.wires.size(); ++i)
      wires.push_back(std::make_unique<Wire>(imac(static_cast<uint8_t>(i)),
                                             tmac(static_cast<uint8_t>(i)), c.wires[i],
                                             c.seed * 100 + i));
    TransportParams base;
    base.max_pdu = (1u << 20) + 4096;
    const uint16_t window = window_for_mtu(c.mtu, 256);

    PathSpec login;
    login.mtu = c.mtu;
    login.receive_window = window;
    login.peer_window = window;

    TargetPathsConfig tc;
    tc.transport.role = PathRole::kTarget;
    tc.transport.session_id = c.session_id;
    tc.transport.epoch = 1;
    tc.transport.transport = base;
    for (size_t i = 0; i < wires.size(); ++i)
      tc.ports.push_back(TargetPort{wires[i]->target, port_mtu(i)});
    tc.max_transfer = base.max_pdu;
    tc.keys = c.keys;
    login.local = wires[0]->target;
    login.peer = wires[0]->initiator;
    target = std::make_unique<TargetHost>(std::move(tc), login, now, c.disk_bytes);

    InitiatorPathsConfig ic;
    ic.transport.role = PathRole::kInitiator;
    ic.transport.session_id = c.session_id;
    ic.transport.epoch = 1;
    ic.transport.transport = base;
    ic.transport.probe_idle = true;
    ic.max_transfer = base.max_pdu;
    ic.keys = c.keys;
    ic.seed = c.seed;
    login.local = wires[0]->initiator;
    login.peer = wires[0]->target;
    initiator = std::make_unique<InitiatorHost>(std::move(ic), login, now);

    std::vector<std::pair<size_t, size_t>> extra = c.extra_paths;
    if (extra.empty())
      for (size_t i = 1; i < wires.size(); ++i) extra.emplace_back(i, i);
    for (auto [a, b] : extra) {
      auto r = initiator->paths.add_candidate(
          PathCandidate{wires[a]->initiator, port_mtu(a), wires[b]->target}, now);
      EXPECT_TRUE(r.ok());
    }
  }

  TimePoint now = TimePoint{} + seconds(100);
  std::vector<std::unique_ptr<Wire>> wires;
  std::unique_ptr<TargetHost> target;
  std::unique_ptr<InitiatorHost> initiator;
  std::function<void(Lab&)> workload;  // called after every step: issue commands
  uint64_t undecodable = 0;

  TimePoint start() const { return TimePoint{} + seconds(100); }
  uint16_t port_mtu(size_t wire) const {
    return cfg_.wires[wire].port_mtu != 0 ? cfg_.wires[wire].port_mtu : cfg_.mtu;
  }

  Wire* wire_of(const MacAddress& m) {
    for (auto& w : wires)
      if (w->initiator == m || w->target == m) return w.get();
    return nullptr;
  }

  void route(std::vector<std::vector<uint8_t>>& frames, bool from_initiator) {
    for (auto& f : frames) {
      if (f.size() < 14) continue;
      MacAddress src, dst;
      std::memcpy(dst.data(), f.data(), 6);
      std::memcpy(src.data(), f.data() + 6, 6);
      Wire* w = wire_of(src);
      if (!w) continue;
      // The far end of the wire only takes frames addressed to it.
      const MacAddress far = from_initiator ? w->target : w->initiator;
      if (dst != far) continue;
      (from_initiator ? w->i2t : w->t2i).send(std::move(f), now);
    }
    frames.clear();
  }

  void deliver(Direction& d, bool to_target) {
    std::vector<uint8_t> f;
    while (d.pop_due(now, f)) {
      auto v = decode_frame(f);
      if (!v) {
        ++undecodable;
        continue;
      }
      FrameView opened;
      if (to_target)
        target->paths.on_frame(v.value(), now, opened);
      else
        initiator->paths.on_frame(v.value(), now, opened);
    }
  }

  void poll_hosts() {
    CollectSink si, st;
    initiator->paths.poll(now, si);
    route(si.frames, true);
    target->take_commands(now);
    target->paths.poll(now, st);
    route(st.frames, false);
    initiator->take_replies(now);
    if (workload) workload(*this);
    // Commands issued by the workload go out at once.
    initiator->paths.poll(now, si);
    route(si.frames, true);
  }

  // Runs the event loop until `until` (virtual time).
  void run_until(TimePoint until) {
    uint64_t spins = 0;
    while (now < until) {
      for (auto& w : wires) {
        deliver(w->i2t, true);
        deliver(w->t2i, false);
      }
      poll_hosts();
      TimePoint t = std::min(initiator->paths.next_deadline(), target->next_deadline());
      for (auto& w : wires) t = std::min({t, w->i2t.next(), w->t2i.next()});
      if (t <= now) {
        // Something is due now: poll again, but never spin in place.
        if (++spins > 1000)
          t = now + microseconds(1);
        else
          continue;
      }
      spins = 0;
      now = std::min(std::max(t, now + std::chrono::nanoseconds(100)), until);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  void run_for(Duration d) { run_until(now + d); }

  // Bytes carried by path `id` in both directions so far (PDU bytes, first
  // transmissions), summed over its generations.
  uint64_t path_bytes(uint8_t id) const {
    uint64_t b = 0;
    if (auto p = initiator->paths.transport().path(id)) b += p->counters.bytes_sent;
    if (auto p = target->paths.transport().path(id)) b += p->counters.bytes_sent;
    return b;
  }

  void print_paths(const char* title) const {
    std::printf("  %s (t=%.3f s)\n", title, seconds_of(now - start()));
    for (const PathInfo& p : initiator->paths.transport().paths()) {
      const auto t = target->paths.transport().path(p.id);
      std::printf(
          "   path %u gen %u %-8s  i->t %7.2f MB  t->i %7.2f MB  rtx %llu/%llu  fail %llu/%llu  "
          "moved %llu/%llu  rate %.0f/%.0f Mbit/s\n",
          p.id, p.gen, std::string(to_string(p.state)).c_str(), p.counters.bytes_sent / 1e6,
          t ? t->counters.bytes_sent / 1e6 : 0.0,
          (unsigned long long)p.counters.frames_retransmitted,
          (unsigned long long)(t ? t->counters.frames_retransmitted : 0),
          (unsigned long long)p.counters.failures,
          (unsigned long long)(t ? t->counters.failures : 0),
          (unsigned long long)p.counters.pdus_moved_off,
          (unsigned long long)(t ? t->counters.pdus_moved_off : 0), p.rate * 8 / 1e6,
          t ? t->rate * 8 / 1e6 : 0.0);
    }
  }

 private:
  LabConfig cfg_;
};

// Goodput over completions in [from, to): PDU payload bytes per second.
inline double goodput(const std::vector<Completion>& c, TimePoint from, TimePoint to) {
  uint64_t bytes = 0;
  for (const Completion& x : c)
    if (x.at >= from && x.at < to) bytes += x.bytes;
  return static_cast<double>(bytes) / seconds_of(to - from);
}

// The longest time without a completion within [from, to).
inline Duration longest_gap(const std::vector<Completion>& c, TimePoint from, TimePoint to) {
  Duration gap{};
  TimePoint last = from;
  for (const Completion& x : c) {
    if (x.at < from || x.at >= to) continue;
    gap = std::max(gap, x.at - last);
    last = x.at;
  }
  return std::max(gap, to - last);
}

}  // namespace hyperscsi::proto::mptest

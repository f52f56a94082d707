// Test harness for the session state machines: nodes (initiators, targets,
// discovery clients) exchanging real encoded frames over an in-test channel
// driven by a virtual clock. The channel can drop everything (link down),
// frames above a size (an MTU bottleneck), a seeded fraction of frames, or
// frames matching a predicate.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/target_session.h"

namespace hyperscsi::proto::test {

class VecSink : public FrameSink {
 public:
  std::span<uint8_t> acquire(size_t size) override {
    buf_.assign(size, 0);
    return buf_;
  }
  void commit(size_t length) override {
    buf_.resize(length);
    frames.push_back(buf_);
  }
  std::vector<std::vector<uint8_t>> frames;

 private:
  std::vector<uint8_t> buf_;
};

struct Node {
  MacAddress mac{};
  std::function<void(const FrameView&, TimePoint)> on_frame;
  std::function<void(TimePoint, FrameSink&)> poll;
};

template <typename T>
Node node_of(const MacAddress& mac, T& obj) {
  return Node{mac, [&obj](const FrameView& f, TimePoint t) { obj.on_frame(f, t); },
              [&obj](TimePoint t, FrameSink& s) { obj.poll(t, s); }};
}

inline MacAddress mac(uint8_t last) {
  return {0x02, 0, 0, 0, 0, last};
}

class Lab {
 public:
  TimePoint now = TimePoint{} + seconds(1000);
  std::vector<Node> nodes;
  bool link_up = true;
  size_t max_frame = SIZE_MAX;  // frames longer than this (Ethernet bytes) are dropped
  uint32_t loss_percent = 0;
  std::function<bool(const FrameView&)> drop_if;  // true: drop this frame
  std::function<void()> after_step;               // e.g. the target's command executor
  uint64_t delivered = 0;
  uint64_t dropped = 0;
  uint64_t dropped_too_big = 0;
  uint64_t undecodable = 0;
  std::map<Opcode, uint64_t> sent_by_opcode;

  void add(Node n) { nodes.push_back(std::move(n)); }
  void seed(uint32_t s) { rng_.seed(s); }

  void step(Duration dt = milliseconds(1)) {
    for (size_t i = 0; i < nodes.size(); ++i) {
      VecSink sink;
      nodes[i].poll(now, sink);
      for (auto& f : sink.frames) route(f, i);
    }
    if (after_step) after_step();
    now += dt;
  }

  // Steps until pred() holds or `limit` of virtual time passed.
  template <typename Pred>
  bool run_until(Pred pred, Duration limit, Duration dt = milliseconds(1)) {
    const TimePoint end = now + limit;
    while (now < end) {
      step(dt);
      if (pred()) return true;
    }
    return pred();
  }
  void run_for(Duration d, Duration dt = milliseconds(1)) {
    run_until([] { return false; }, d, dt);
  }

  // Hands one frame to every node it is addressed to (except its sender).
  void route(const std::vector<uint8_t>& bytes, size_t from) {
    auto decoded = decode_frame(bytes);
    if (!decoded) {
      ++undecodable;
      return;
    }
    const FrameView& view = decoded.value();
    ++sent_by_opcode[view.header.common.opcode];
    if (!link_up || (drop_if && drop_if(view)) || (loss_percent && rng_() % 100 < loss_percent)) {
      ++dropped;
      return;
    }
    if (bytes.size() > max_frame) {
      ++dropped_too_big;
      return;
    }
    for (size_t j = 0; j < nodes.size(); ++j) {
      if (j == from) continue;
      if (view.header.dst == kBroadcastMac || view.header.dst == nodes[j].mac) {
        ++delivered;
        nodes[j].on_frame(view, now);
      }
    }
  }

  // Delivers a hand-built frame straight to node `to`; returns its answers.
  std::vector<std::vector<uint8_t>> inject(size_t to, const FrameHeader& h,
                                           std::span<const uint8_t> body) {
    std::vector<uint8_t> bytes(encoded_size(h, body.size()));
    bytes.resize(encode_frame(bytes, h, body));
    auto decoded = decode_frame(bytes);
    if (!decoded) return {};
    nodes[to].on_frame(decoded.value(), now);
    VecSink sink;
    nodes[to].poll(now, sink);
    return sink.frames;
  }

 private:
  std::mt19937 rng_{12345};
};

// A minimal command executor for the target side: answers every command that
// needs execution with a reply carrying `data_in` bytes derived from cmd_sn,
// and counts executions per (session, cmd_sn).
struct Executor {
  TargetEndpoint* target = nullptr;
  bool hold = false;  // keep commands pending instead of answering
  std::map<std::pair<uint32_t, uint32_t>, int> executions;
  std::vector<IncomingCommand> held;
  std::vector<CacheDecision> decisions;

  static std::vector<uint8_t> reply_for(uint32_t cmd_sn, uint32_t data_in) {
    ReplyHeader r;
    r.cmd_sn = cmd_sn;
    r.status = 0;
    r.data_in_length = data_in;
    std::vector<uint8_t> pdu;
    encode(r, pdu);
    for (uint32_t i = 0; i < data_in; ++i) pdu.push_back(static_cast<uint8_t>(cmd_sn * 7 + i));
    return pdu;
  }

  void answer(const IncomingCommand& c) {
    target->send_reply(c.session_id, c.tag, c.header.cmd_sn,
                       reply_for(c.header.cmd_sn, c.header.expected_data_in),
                       (c.header.flags & kCommandFlagDataOut) == 0);
  }

  void run() {
    while (auto c = target->pop_command()) {
      decisions.push_back(c->decision);
      if (!c->needs_execution()) continue;
      ++executions[{c->session_id, c->header.cmd_sn}];
      if (hold) {
        held.push_back(std::move(*c));
        continue;
      }
      answer(*c);
    }
  }
  void release_held() {
    for (auto& c : held) answer(c);
    held.clear();
  }
};

inline std::vector<uint8_t> read_command(uint32_t cmd_sn, uint32_t reply_ack_sn, uint32_t length) {
  CommandHeader h;
  h.cmd_sn = cmd_sn;
  h.reply_ack_sn = reply_ack_sn;
  h.flags = kCommandFlagDataIn;
  h.expected_data_in = length;
  h.cdb_length = 10;
  h.cdb[0] = 0x28;  // READ(10)
  h.cdb[8] = static_cast<uint8_t>(length / 512);
  std::vector<uint8_t> pdu;
  encode(h, pdu);
  return pdu;
}

}  // namespace hyperscsi::proto::test

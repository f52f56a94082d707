// Drives one proto::Connection with fuzzed frames, acks, SACK blocks, time
// steps and sends. Invariants: every PDU delivered is one that could have
// been sent (within max_pdu, every byte the pattern its sender wrote at that
// offset), delivered bytes match the stats, frames the connection emits decode
// and fit the MTU, and in-flight never exceeds the send window.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <span>
#include <vector>

#include "fuzz_check.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"

namespace hp = hyperscsi::proto;

namespace {

constexpr size_t kMtu = 1500;
constexpr uint32_t kMaxPdu = 64 * 1024;

// The byte a fuzzed sender puts at `offset` of PDU (opcode, tag): delivered
// PDUs are checked against it, so misplaced or invented bytes show.
uint8_t pattern(hp::Opcode op, uint16_t tag, uint32_t offset) {
  return static_cast<uint8_t>(offset * 7u + tag * 13u + static_cast<uint8_t>(op) * 101u + 1u);
}

class CheckingSink : public hp::FrameSink {
 public:
  std::span<uint8_t> acquire(size_t size) override {
    buf_.assign(size, 0);
    return buf_;
  }
  void commit(size_t length) override {
    FUZZ_CHECK(length <= buf_.size(), "committed more than acquired");
    FUZZ_CHECK(length <= kMtu + hp::kEthernetHeaderSize, "emitted frame above the MTU");
    auto f = hp::decode_frame(std::span<const uint8_t>(buf_.data(), length));
    FUZZ_CHECK(f.ok(), "the connection emitted a frame that does not decode");
    if (hp::is_sequenced(f->header.common.opcode)) last_sent_seq = f->header.ext.seq;
    ++frames;
  }
  uint32_t last_sent_seq = 0;
  uint64_t frames = 0;

 private:
  std::vector<uint8_t> buf_;
};

void feed(hp::Connection& c, const hp::FrameHeader& h, std::span<const uint8_t> payload,
          hp::TimePoint now) {
  std::vector<uint8_t> buf(hp::encoded_size(h, payload.size()));
  const size_t n = hp::encode_frame(buf, h, payload);
  if (n == 0) return;  // fields the wire cannot carry
  auto f = hp::decode_frame(std::span<const uint8_t>(buf.data(), n));
  FUZZ_CHECK(f.ok(), "encode_frame wrote a frame decode_frame rejects");
  c.on_frame(*f, now);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider p(data, size);
  hp::TransportParams params;
  params.mtu = kMtu;
  params.max_pdu = kMaxPdu;
  params.receive_window = 64;
  params.reassembly_limit = 4 * kMaxPdu;
  params.send_queue_limit = 4 * kMaxPdu;
  const hp::Endpoint ep{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}, 7, 1, 64};
  hp::Connection c(params, ep);
  CheckingSink sink;
  hp::TimePoint now{};
  uint64_t delivered = 0;
  uint16_t next_tag = 0;

  for (int step = 0; step < 2048 && p.remaining_bytes() > 0; ++step) {
    hp::FrameHeader h;
    h.dst = ep.local;
    h.src = ep.peer;
    h.ext.session_id = ep.session_id;
    h.ext.epoch = ep.epoch;
    switch (p.ConsumeIntegralInRange<uint8_t>(0, 4)) {
      case 0: {  // a data fragment from the peer, near what we expect next
        const uint32_t rcv_nxt = c.control_header(hp::Opcode::kAck).ext.ack;
        h.common.opcode = p.ConsumeBool() ? hp::Opcode::kCommandRequest : hp::Opcode::kCommandReply;
        h.common.tag = p.ConsumeIntegralInRange<uint16_t>(0, p.ConsumeBool() ? 3 : hp::kMaxTag);
        h.common.fragment = p.ConsumeIntegralInRange<uint16_t>(0, p.ConsumeBool() ? 4 : 1023);
        h.common.last_fragment = p.ConsumeBool();
        h.ext.seq = rcv_nxt + static_cast<uint32_t>(p.ConsumeIntegralInRange<int32_t>(-8, 80));
        h.ext.flags = p.ConsumeIntegral<uint8_t>() & hp::kFlagsKnown;
        h.ext.ack =
            sink.last_sent_seq + static_cast<uint32_t>(p.ConsumeIntegralInRange<int32_t>(-4, 4));
        h.ext.window = p.ConsumeIntegral<uint16_t>();
        h.ext.pdu_length = p.ConsumeBool() ? p.ConsumeIntegralInRange<uint32_t>(0, 4000)
                                           : p.ConsumeIntegral<uint32_t>();
        h.ext.pdu_offset = p.ConsumeBool() ? p.ConsumeIntegralInRange<uint32_t>(0, 4000)
                                           : p.ConsumeIntegral<uint32_t>();
        const size_t len = p.ConsumeIntegralInRange<size_t>(0, hp::max_payload(kMtu));
        std::vector<uint8_t> payload(len);
        for (size_t i = 0; i < len; ++i)
          payload[i] =
              pattern(h.common.opcode, h.common.tag, h.ext.pdu_offset + static_cast<uint32_t>(i));
        feed(c, h, payload, now);
        break;
      }
      case 1: {  // a standalone ack with SACK blocks
        h.common.opcode = hp::Opcode::kAck;
        h.ext.flags = hp::kFlagAck | (p.ConsumeIntegral<uint8_t>() & hp::kFlagsKnown);
        h.ext.ack =
            sink.last_sent_seq + static_cast<uint32_t>(p.ConsumeIntegralInRange<int32_t>(-64, 4));
        h.ext.window = p.ConsumeIntegral<uint16_t>();
        const uint8_t n = p.ConsumeIntegralInRange<uint8_t>(0, hp::kMaxSackBlocks);
        for (uint8_t i = 0; i < n; ++i) {
          const uint32_t start = h.ext.ack + p.ConsumeIntegralInRange<uint32_t>(0, 80);
          h.sacks.push({start, start + p.ConsumeIntegralInRange<uint32_t>(0, 16)});
        }
        feed(c, h, {}, now);
        break;
      }
      case 2:  // time passes: retransmissions, delayed acks
        now += hp::microseconds(p.ConsumeIntegralInRange<uint32_t>(0, 3'000'000));
        c.poll(now, sink);
        break;
      case 3: {  // we send a PDU (so acks and SACKs have something to cover)
        const size_t len = p.ConsumeIntegralInRange<size_t>(0, 3 * kMtu);
        const auto op = p.ConsumeBool() ? hp::Opcode::kCommandRequest : hp::Opcode::kCommandReply;
        c.send_pdu(op, next_tag, std::vector<uint8_t>(len, 0xA5));
        next_tag = static_cast<uint16_t>((next_tag + 1) % (hp::kMaxTag + 1));
        c.poll(now, sink);
        break;
      }
      default: {  // an arbitrary frame off the wire, if it decodes (unsequenced only:
                  // sequenced payloads must follow the pattern for the check above)
        const std::vector<uint8_t> raw =
            p.ConsumeBytes<uint8_t>(p.ConsumeIntegralInRange<size_t>(0, 200));
        auto f = hp::decode_frame(raw);
        if (f && !hp::is_sequenced(f->header.common.opcode)) c.on_frame(*f, now);
        break;
      }
    }
    while (auto pdu = c.pop_pdu()) {
      FUZZ_CHECK(pdu->bytes.size() <= kMaxPdu, "a PDU above max_pdu was delivered");
      FUZZ_CHECK(pdu->tag <= hp::kMaxTag, "a PDU with an impossible tag");
      for (size_t i = 0; i < pdu->bytes.size(); ++i)
        FUZZ_CHECK(pdu->bytes[i] == pattern(pdu->opcode, pdu->tag, static_cast<uint32_t>(i)),
                   "delivered PDU holds bytes that were not sent at that offset");
      delivered += pdu->bytes.size();
    }
    FUZZ_CHECK(c.stats().bytes_received == delivered,
               "bytes_received differs from bytes delivered");
    FUZZ_CHECK(!c.stats().window_violated, "in-flight exceeded the send window");
  }
  return 0;
}

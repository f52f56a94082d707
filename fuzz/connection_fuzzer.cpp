// Drives one proto::Connection with fuzzed frames, acks, SACK blocks, time
// steps and sends. Invariants: every PDU delivered is one that could have
// been sent (within max_pdu, every byte the pattern its sender wrote at that
// offset), delivered bytes match the stats, frames the connection emits decode
// and fit the MTU, and in-flight never exceeds the send window.
//
// Reply placement is driven too: place_reply / forget_reply_placement /
// forget_reply_placements interleave with the frames, on destinations inside
// a guarded arena, and a second Connection that never places gets the same
// calls and is the reference. After every step: bytes outside every live
// destination (guards, and destinations forgotten or consumed, which hold a
// canary written afterwards) are untouched, a live destination holds nothing
// but the bytes its reply carries at those offsets, a placed reply is
// delivered once per registration with the sender's bytes, and the two
// connections deliver the same PDUs (but for placed replies whose
// destination was forgotten under way, which are dropped).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <vector>

#include "fuzz_check.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"

namespace hp = hyperscsi::proto;

namespace {

constexpr size_t kMtu = 1500;
constexpr uint32_t kMaxPdu = 64 * 1024;
constexpr uint32_t kHeader = hp::kReplyHeaderFixedSize;

// Reply tags 0..kPlacedTags-1 may have a destination, each in a region of
// its own: kGuard bytes, room for the largest destination, kGuard bytes.
constexpr uint16_t kPlacedTags = 4;
constexpr size_t kGuard = 32;
constexpr size_t kRoom = 2048;  // small: the arena is compared after every step
constexpr size_t kRegion = kGuard + kRoom + kGuard;

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

bool feed(hp::Connection& c, const hp::FrameHeader& h, std::span<const uint8_t> payload,
          hp::TimePoint now) {
  std::vector<uint8_t> buf(hp::encoded_size(h, payload.size()));
  const size_t n = hp::encode_frame(buf, h, payload);
  if (n == 0) return false;  // fields the wire cannot carry
  auto f = hp::decode_frame(std::span<const uint8_t>(buf.data(), n));
  FUZZ_CHECK(f.ok(), "encode_frame wrote a frame decode_frame rejects");
  c.on_frame(*f, now);
  return true;
}

// Sequenced frames the connection has counted one way or another; one that
// counts none was refused for want of reassembly memory (not acknowledged).
uint64_t seen(const hp::Connection& c) {
  const auto& s = c.stats();
  return s.frames_received + s.duplicates_received + s.out_of_window;
}

// The destinations, between guards. Bytes outside live destinations must keep
// their expected value; a live destination's bytes may also have become what
// its reply carries there (the pattern), nothing else.
class Arena {
 public:
  struct Dest {
    bool live = false;
    size_t begin = 0;
    size_t size = 0;
    bool forgotten_live = false;  // forgotten at least once while registered
  };

  Arena() : bytes_(kPlacedTags * kRegion), expected_(bytes_.size()) {
    for (size_t i = 0; i < bytes_.size(); ++i) bytes_[i] = static_cast<uint8_t>(i * 31u + 7u);
    expected_ = bytes_;
  }
  std::span<uint8_t> span(const Dest& d) { return {bytes_.data() + d.begin, d.size}; }
  // The owner writes a canary into a destination it got back.
  void hand_back(Dest& d) {
    if (!d.live) return;
    d.live = false;
    ++canaries_;
    for (size_t i = 0; i < d.size; ++i)
      bytes_[d.begin + i] = expected_[d.begin + i] = static_cast<uint8_t>(0xC5u ^ (canaries_ + i));
  }
  void check(const std::array<Dest, kPlacedTags>& dests) const {
    size_t at = 0;
    for (uint16_t tag = 0; tag < kPlacedTags; ++tag) {
      const Dest& d = dests[tag];
      const size_t live_begin = d.live ? d.begin : at;
      const size_t live_end = d.live ? d.begin + d.size : at;
      FUZZ_CHECK(std::equal(bytes_.begin() + static_cast<ptrdiff_t>(at),
                            bytes_.begin() + static_cast<ptrdiff_t>(live_begin),
                            expected_.begin() + static_cast<ptrdiff_t>(at)),
                 "a byte outside every live destination changed");
      for (size_t i = live_begin; i < live_end; ++i)
        FUZZ_CHECK(bytes_[i] == expected_[i] ||
                       bytes_[i] == pattern(hp::Opcode::kCommandReply, tag,
                                            static_cast<uint32_t>(kHeader + i - d.begin)),
                   "a live destination holds a byte its reply does not carry there");
      at = live_end;
      const size_t region_end = (tag + 1u) * kRegion;
      FUZZ_CHECK(std::equal(bytes_.begin() + static_cast<ptrdiff_t>(at),
                            bytes_.begin() + static_cast<ptrdiff_t>(region_end),
                            expected_.begin() + static_cast<ptrdiff_t>(at)),
                 "a byte outside every live destination changed");
      at = region_end;
    }
  }

 private:
  std::vector<uint8_t> bytes_;
  std::vector<uint8_t> expected_;
  uint32_t canaries_ = 0;
};

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
  // The reference never places. A placed reply is charged no reassembly
  // memory, so the reference gets room for the placeable ones on top: it
  // takes every frame `c` takes (and is given only the ack of one `c`
  // refused for want of memory).
  hp::TransportParams ref_params = params;
  ref_params.reassembly_limit += kPlacedTags * kMaxPdu;
  hp::Connection ref(ref_params, ep);
  CheckingSink sink, ref_sink;
  hp::TimePoint now{};
  uint64_t delivered = 0;
  uint16_t next_tag = 0;
  Arena arena;
  std::array<Arena::Dest, kPlacedTags> dests;
  // The fragment size of this run's well-formed fragments.
  const auto piece = static_cast<uint32_t>(
      p.ConsumeBool() ? p.ConsumeIntegralInRange<size_t>(1, 64)
                      : p.ConsumeIntegralInRange<size_t>(1, hp::max_payload(kMtu)));
  // The current PDU length of each (request|reply, tag < kPlacedTags) slot.
  std::array<uint32_t, 2 * kPlacedTags> lengths{};

  for (int step = 0; step < 2048 && p.remaining_bytes() > 0; ++step) {
    hp::FrameHeader h;
    h.dst = ep.local;
    h.src = ep.peer;
    h.ext.session_id = ep.session_id;
    h.ext.epoch = ep.epoch;
    // Data fragments are 7 in 16 of the steps, each other kind 1 in 16 (raw frames 3).
    const uint8_t kind = p.ConsumeIntegralInRange<uint8_t>(0, 15);
    switch (kind < 7 ? 0 : kind - 6) {
      case 0: {  // a data fragment from the peer, near what we expect next
        const uint32_t rcv_nxt = c.control_header(hp::Opcode::kAck).ext.ack;
        h.common.opcode = p.ConsumeIntegralInRange<uint8_t>(0, 3) == 0 ? hp::Opcode::kCommandRequest
                                                                       : hp::Opcode::kCommandReply;
        h.common.tag = p.ConsumeIntegralInRange<uint16_t>(0, p.ConsumeBool() ? 3 : hp::kMaxTag);
        h.common.fragment = p.ConsumeIntegralInRange<uint16_t>(0, p.ConsumeBool() ? 4 : 1023);
        h.common.last_fragment = p.ConsumeBool();
        h.ext.seq = rcv_nxt + static_cast<uint32_t>(p.ConsumeIntegralInRange<int32_t>(-8, 80));
        h.ext.flags = p.ConsumeIntegral<uint8_t>() & hp::kFlagsKnown;
        h.ext.ack =
            sink.last_sent_seq + static_cast<uint32_t>(p.ConsumeIntegralInRange<int32_t>(-4, 4));
        h.ext.window = p.ConsumeIntegral<uint16_t>();
        // The length: often the slot's current one (so that its fragments
        // agree) or the one a registered destination takes.
        const uint8_t length_kind = p.ConsumeIntegralInRange<uint8_t>(0, 7);
        const bool placeable =
            h.common.opcode == hp::Opcode::kCommandReply && h.common.tag < kPlacedTags;
        uint32_t* current =
            h.common.tag < kPlacedTags
                ? &lengths[static_cast<size_t>(h.common.opcode) * kPlacedTags + h.common.tag]
                : nullptr;
        if (length_kind < 2 && placeable && dests[h.common.tag].live)
          h.ext.pdu_length = static_cast<uint32_t>(kHeader + dests[h.common.tag].size);
        else if (length_kind < 5 && current)
          h.ext.pdu_length = *current;
        else
          h.ext.pdu_length = length_kind < 7 ? p.ConsumeIntegralInRange<uint32_t>(0, 4000)
                                             : p.ConsumeIntegral<uint32_t>();
        if (current) *current = h.ext.pdu_length;
        size_t len = 0;
        if (p.ConsumeBool()) {
          // Well formed: fragment k of pieces of `piece` bytes (fragments of
          // one PDU meet and complete it).
          const uint64_t offset = uint64_t{h.common.fragment} * piece;
          h.ext.pdu_offset = static_cast<uint32_t>(std::min<uint64_t>(offset, h.ext.pdu_length));
          len = std::min<uint64_t>(piece, h.ext.pdu_length - h.ext.pdu_offset);
          h.common.last_fragment = h.ext.pdu_offset + len == h.ext.pdu_length;
        } else {
          h.ext.pdu_offset = p.ConsumeBool() ? p.ConsumeIntegralInRange<uint32_t>(0, 4000)
                                             : p.ConsumeIntegral<uint32_t>();
          len = p.ConsumeIntegralInRange<size_t>(0, hp::max_payload(kMtu));
        }
        std::vector<uint8_t> payload(len);
        for (size_t i = 0; i < len; ++i)
          payload[i] =
              pattern(h.common.opcode, h.common.tag, h.ext.pdu_offset + static_cast<uint32_t>(i));
        const uint64_t before = seen(c);
        if (!feed(c, h, payload, now)) break;
        if (seen(c) != before) {
          feed(ref, h, payload, now);
        } else if (h.ext.flags & hp::kFlagAck) {
          // Refused for want of memory: the reference takes only its ack.
          hp::FrameHeader ack = h;
          ack.common = {};
          ack.common.opcode = hp::Opcode::kAck;
          ack.ext.seq = 0;
          ack.ext.pdu_length = 0;
          ack.ext.pdu_offset = 0;
          feed(ref, ack, {}, now);
        }
        FUZZ_CHECK(c.stats().frames_received == ref.stats().frames_received,
                   "placement changed which frames are accepted");
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
        feed(ref, h, {}, now);
        break;
      }
      case 2:  // time passes: retransmissions, delayed acks
        now += hp::microseconds(p.ConsumeIntegralInRange<uint32_t>(0, 3'000'000));
        c.poll(now, sink);
        ref.poll(now, ref_sink);
        break;
      case 3: {  // we send a PDU (so acks and SACKs have something to cover)
        const size_t len = p.ConsumeIntegralInRange<size_t>(0, 3 * kMtu);
        const auto op = p.ConsumeBool() ? hp::Opcode::kCommandRequest : hp::Opcode::kCommandReply;
        c.send_pdu(op, next_tag, std::vector<uint8_t>(len, 0xA5));
        ref.send_pdu(op, next_tag, std::vector<uint8_t>(len, 0xA5));
        next_tag = static_cast<uint16_t>((next_tag + 1) % (hp::kMaxTag + 1));
        c.poll(now, sink);
        ref.poll(now, ref_sink);
        break;
      }
      case 4: {  // register a destination for a reply (replacing an earlier one)
        const auto tag = p.ConsumeIntegralInRange<uint16_t>(0, kPlacedTags - 1);
        Arena::Dest& d = dests[tag];
        d.forgotten_live |= d.live;
        arena.hand_back(d);
        d.size = p.ConsumeBool() ? p.ConsumeIntegralInRange<size_t>(1, 64)
                                 : p.ConsumeIntegralInRange<size_t>(1, kRoom);
        d.begin = tag * kRegion + kGuard + p.ConsumeIntegralInRange<size_t>(0, kRoom - d.size);
        d.live = true;
        c.place_reply(tag, arena.span(d));
        lengths[kPlacedTags + tag] = static_cast<uint32_t>(kHeader + d.size);
        break;
      }
      case 5: {  // the command ends: its destination is forgotten
        const auto tag = p.ConsumeIntegralInRange<uint16_t>(0, kPlacedTags - 1);
        dests[tag].forgotten_live |= dests[tag].live;
        c.forget_reply_placement(tag);
        arena.hand_back(dests[tag]);
        break;
      }
      case 6:  // every command ends (disconnect, shutdown)
        c.forget_reply_placements();
        for (auto& d : dests) {
          d.forgotten_live |= d.live;
          arena.hand_back(d);
        }
        break;
      default: {  // an arbitrary frame off the wire, if it decodes (unsequenced only:
                  // sequenced payloads must follow the pattern for the check above)
        const std::vector<uint8_t> raw =
            p.ConsumeBytes<uint8_t>(p.ConsumeIntegralInRange<size_t>(0, 200));
        auto f = hp::decode_frame(raw);
        if (f && !hp::is_sequenced(f->header.common.opcode)) {
          c.on_frame(*f, now);
          ref.on_frame(*f, now);
        }
        break;
      }
    }
    std::deque<hp::ReceivedPdu> got;
    while (auto pdu = c.pop_pdu()) {
      FUZZ_CHECK(pdu->pdu_length() <= kMaxPdu, "a PDU above max_pdu was delivered");
      FUZZ_CHECK(pdu->tag <= hp::kMaxTag, "a PDU with an impossible tag");
      for (size_t i = 0; i < pdu->bytes.size(); ++i)
        FUZZ_CHECK(pdu->bytes[i] == pattern(pdu->opcode, pdu->tag, static_cast<uint32_t>(i)),
                   "delivered PDU holds bytes that were not sent at that offset");
      if (pdu->data_placed) {
        FUZZ_CHECK(pdu->opcode == hp::Opcode::kCommandReply && pdu->tag < kPlacedTags,
                   "a PDU placed that was never given a destination");
        Arena::Dest& d = dests[pdu->tag];
        FUZZ_CHECK(d.live, "a second reply placed on one registration");
        FUZZ_CHECK(pdu->bytes.size() == kHeader && pdu->placed_length == d.size,
                   "a placed PDU's header or placed length is off");
        const auto placed = arena.span(d);
        for (size_t i = 0; i < placed.size(); ++i)
          FUZZ_CHECK(
              placed[i] == pattern(pdu->opcode, pdu->tag, static_cast<uint32_t>(kHeader + i)),
              "placed bytes differ from what the sender sent");
      }
      delivered += pdu->pdu_length();
      got.push_back(std::move(*pdu));
    }
    // The reference delivers the same PDUs, and those placed replies `c`
    // dropped because their destination was forgotten under way.
    while (auto want = ref.pop_pdu()) {
      FUZZ_CHECK(!want->data_placed, "the reference placed a reply");
      if (!got.empty() && got.front().opcode == want->opcode && got.front().tag == want->tag) {
        const hp::ReceivedPdu& g = got.front();
        FUZZ_CHECK(g.pdu_length() == want->bytes.size() &&
                       std::equal(g.bytes.begin(), g.bytes.end(), want->bytes.begin()),
                   "placement changed a delivered PDU");
        if (g.data_placed) {
          FUZZ_CHECK(std::memcmp(arena.span(dests[g.tag]).data(), want->bytes.data() + kHeader,
                                 g.placed_length) == 0,
                     "placed bytes differ from the reference's PDU");
          arena.hand_back(dests[g.tag]);  // used once: the owner has it back
        }
        got.pop_front();
        continue;
      }
      FUZZ_CHECK(want->opcode == hp::Opcode::kCommandReply && want->tag < kPlacedTags &&
                     dests[want->tag].forgotten_live,
                 "a PDU dropped that was not a placed reply whose destination was forgotten");
    }
    FUZZ_CHECK(got.empty(), "a PDU delivered that the reference does not deliver");
    arena.check(dests);
    FUZZ_CHECK(c.stats().bytes_received == delivered,
               "bytes_received differs from bytes delivered");
    FUZZ_CHECK(!c.stats().window_violated, "in-flight exceeded the send window");
  }
  return 0;
}

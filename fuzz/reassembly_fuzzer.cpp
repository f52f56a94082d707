// Fuzzes the Reassembler with arbitrary fragment sequences against a shadow
// model: a completed PDU has exactly its announced length, is made of the
// accepted fragments only (each at its offset, no overlap, no gap), duplicates
// match a held fragment, and the memory charged never exceeds the limit.
// Half the fragments are well formed (pieces of one size per run, so that
// PDUs complete), half arbitrary.
//
// Reply placement is driven too: place_reply / forget_reply / forget_replies
// interleave with the fragments, on destinations inside a guarded arena. A
// second Reassembler that never places (with room on top for the placeable
// replies, so it takes whatever the first one takes) is the reference. After every step:
//  - the arena holds exactly what the model says: guard bytes and bytes
//    outside every live destination untouched, a forgotten or consumed
//    destination still holds the canary written into it afterwards, and a
//    live one holds the bytes of the accepted fragments of its placed reply
//    and nothing else (no write before a fragment passed the checks);
//  - both reassemblers give the same verdict (a placed reply whose
//    destination was forgotten is kAbandoned where the reference completes);
//  - a placed reply is delivered once per registration, and its header and
//    placed bytes equal the reference's PDU.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/reassembly.h"

namespace hp = hyperscsi::proto;

namespace {

constexpr uint32_t kMaxPdu = 4096;
constexpr size_t kMemoryLimit = 3 * 4096;
constexpr uint32_t kHeader = hp::kReplyHeaderFixedSize;

// Reply tags 0..kPlacedTags-1 may have a destination, each in a region of
// its own: kGuard bytes, room for the largest destination, kGuard bytes.
constexpr uint16_t kPlacedTags = 4;
constexpr size_t kGuard = 32;
constexpr size_t kRoom = 1024;  // small: the arena is compared after every step
constexpr size_t kRegion = kGuard + kRoom + kGuard;

struct Held {
  uint32_t offset;
  std::vector<uint8_t> bytes;
};

// Accepted fragments per (opcode, tag) slot, since that slot's PDU started.
using Shadow = std::array<std::vector<Held>, 2 * (hp::kMaxTag + 1)>;

int slot_of(hp::Opcode op, uint16_t tag) {
  if (tag > hp::kMaxTag) return -1;
  if (op == hp::Opcode::kCommandRequest) return tag;
  if (op == hp::Opcode::kCommandReply) return hp::kMaxTag + 1 + tag;
  return -1;
}

// Small numbers most of the time so fragments of one PDU meet; any value now and then.
uint32_t small_or_any(FuzzedDataProvider& p, uint32_t small_max) {
  return p.ConsumeBool() ? p.ConsumeIntegralInRange<uint32_t>(0, small_max)
                         : p.ConsumeIntegral<uint32_t>();
}

// Checks a PDU of the reference against the fragments accepted for it.
void check_against_shadow(const hp::ReceivedPdu& pdu, Shadow& shadow) {
  const int slot = slot_of(pdu.opcode, pdu.tag);
  FUZZ_CHECK(slot >= 0, "a PDU completed for an unfragmented opcode or bad tag");
  FUZZ_CHECK(pdu.bytes.size() <= kMaxPdu, "a PDU above max_pdu was delivered");
  auto& held = shadow[static_cast<size_t>(slot)];
  size_t total = 0;
  for (const Held& h : held) {
    FUZZ_CHECK(h.offset + h.bytes.size() <= pdu.bytes.size(), "a fragment lies outside its PDU");
    FUZZ_CHECK(h.bytes.empty() ||
                   std::memcmp(pdu.bytes.data() + h.offset, h.bytes.data(), h.bytes.size()) == 0,
               "delivered bytes differ from the fragment sent at that offset");
    total += h.bytes.size();
  }
  FUZZ_CHECK(total == pdu.bytes.size(), "PDU length differs from the bytes accepted for it");
  held.clear();
}

// The harness's view of one placeable reply tag.
struct Placement {
  enum class Partial : uint8_t { kNone, kCopy, kPlaced, kDropped };
  bool live = false;  // a destination is registered
  size_t begin = 0;   // into the arena
  size_t size = 0;
  Partial partial = Partial::kNone;  // the reply PDU under way under this tag
};

class Arena {
 public:
  Arena() : bytes_(kPlacedTags * kRegion), expected_(bytes_.size()) {
    for (size_t i = 0; i < bytes_.size(); ++i) bytes_[i] = static_cast<uint8_t>(i * 31u + 7u);
    expected_ = bytes_;
  }
  std::span<uint8_t> span(size_t begin, size_t size) { return {bytes_.data() + begin, size}; }
  // The owner writes a canary into a destination it got back: any later
  // write by the reassembler shows as a difference.
  void canary(size_t begin, size_t size) {
    ++canaries_;
    for (size_t i = 0; i < size; ++i)
      bytes_[begin + i] = expected_[begin + i] = static_cast<uint8_t>(0xC5u ^ (canaries_ + i));
  }
  void expect(size_t at, std::span<const uint8_t> b) {
    std::copy(b.begin(), b.end(), expected_.begin() + static_cast<ptrdiff_t>(at));
  }
  bool intact() const { return bytes_ == expected_; }

 private:
  std::vector<uint8_t> bytes_;
  std::vector<uint8_t> expected_;
  uint32_t canaries_ = 0;
};

void forget(Placement& pl, Arena& arena) {
  if (!pl.live) return;
  pl.live = false;
  if (pl.partial == Placement::Partial::kPlaced) pl.partial = Placement::Partial::kDropped;
  arena.canary(pl.begin, pl.size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider p(data, size);
  hp::Reassembler r(kMaxPdu, kMemoryLimit);
  // The reference: no placement, and never out of memory where `r` is not
  // (`r` charges nothing for placed replies, so the reference gets room for
  // the placeable ones on top).
  hp::Reassembler ref(kMaxPdu, kMemoryLimit + kPlacedTags * size_t{kMaxPdu});
  Shadow shadow;
  Arena arena;
  std::array<Placement, kPlacedTags> places;
  // The fragment size of this run's well-formed fragments.
  const uint32_t piece = p.ConsumeBool() ? p.ConsumeIntegralInRange<uint32_t>(1, 64)
                                         : p.ConsumeIntegralInRange<uint32_t>(1, 1500);
  // The current PDU length of each (request|reply, tag < kPlacedTags) slot.
  std::array<uint32_t, 2 * kPlacedTags> lengths{};

  for (int step = 0; step < 4096 && p.remaining_bytes() > 0; ++step) {
    const uint8_t action = p.ConsumeIntegral<uint8_t>();
    if (action == 0) {
      r.clear_partial();
      ref.clear_partial();
      for (auto& s : shadow) s.clear();
      for (auto& pl : places) pl.partial = Placement::Partial::kNone;
    } else if (action < 16) {  // register a destination
      const auto tag = static_cast<uint16_t>(action % kPlacedTags);
      Placement& pl = places[tag];
      forget(pl, arena);  // place_reply replaces an earlier registration
      pl.size = p.ConsumeBool() ? p.ConsumeIntegralInRange<size_t>(1, 64)
                                : p.ConsumeIntegralInRange<size_t>(1, kRoom);
      pl.begin = tag * kRegion + kGuard + p.ConsumeIntegralInRange<size_t>(0, kRoom - pl.size);
      pl.live = true;
      r.place_reply(tag, arena.span(pl.begin, pl.size));
      lengths[kPlacedTags + tag] = static_cast<uint32_t>(kHeader + pl.size);
    } else if (action < 28) {  // the command ends
      const auto tag = static_cast<uint16_t>(action % kPlacedTags);
      forget(places[tag], arena);
      r.forget_reply(tag);
    } else if (action < 30) {  // every command ends
      for (auto& pl : places) forget(pl, arena);
      r.forget_replies();
    } else {
      hp::Fragment f;
      const bool well_formed = p.ConsumeBool();
      if (well_formed) {  // mostly replies under the placeable tags
        f.opcode = p.ConsumeIntegralInRange<uint8_t>(0, 3) == 0 ? hp::Opcode::kCommandRequest
                                                                : hp::Opcode::kCommandReply;
        f.tag = p.ConsumeIntegralInRange<uint16_t>(0, kPlacedTags - 1);
      } else {
        const uint8_t op = p.ConsumeIntegralInRange<uint8_t>(0, 8);
        f.opcode = op == 8 ? hp::Opcode::kAck : static_cast<hp::Opcode>(op & 1);
        f.tag = static_cast<uint16_t>(p.ConsumeBool() ? p.ConsumeIntegralInRange<uint16_t>(0, 3)
                                                      : p.ConsumeIntegral<uint16_t>());
      }
      Placement* pl =
          f.opcode == hp::Opcode::kCommandReply && f.tag < kPlacedTags ? &places[f.tag] : nullptr;
      const int slot = slot_of(f.opcode, f.tag);
      std::vector<uint8_t> payload;
      if (well_formed) {
        // Well formed: fragment k of a PDU cut into pieces of `piece` bytes,
        // so that fragments of one PDU meet and complete it. Its length:
        // often the one a registered destination takes, else the slot's
        // current one (so that its fragments agree), now and then a new one.
        uint32_t* current = slot >= 0 && f.tag < kPlacedTags
                                ? &lengths[static_cast<size_t>(f.opcode) * kPlacedTags + f.tag]
                                : nullptr;
        const uint8_t kind = p.ConsumeIntegralInRange<uint8_t>(0, 7);
        if (kind == 0 || !current)
          f.pdu_length = p.ConsumeIntegralInRange<uint32_t>(0, std::min(kMaxPdu + 64, 32 * piece));
        else if (kind < 6 && pl && pl->live)
          f.pdu_length = static_cast<uint32_t>(kHeader + pl->size);
        else
          f.pdu_length = *current;
        if (current) *current = f.pdu_length;
        f.fragment = p.ConsumeIntegralInRange<uint16_t>(0, 31);
        const uint64_t offset = uint64_t{f.fragment} * piece;
        f.pdu_offset = static_cast<uint32_t>(std::min<uint64_t>(offset, f.pdu_length));
        const uint32_t len = std::min(piece, f.pdu_length - f.pdu_offset);
        f.last = f.pdu_offset + len == f.pdu_length;
        const uint8_t seed = p.ConsumeIntegral<uint8_t>();
        payload.resize(len);
        for (uint32_t i = 0; i < len; ++i)
          payload[i] = static_cast<uint8_t>((f.pdu_offset + i) * 13u + seed);
      } else {
        f.fragment = static_cast<uint16_t>(small_or_any(p, 8));
        f.last = p.ConsumeBool();
        f.pdu_length = pl && pl->live && p.ConsumeIntegralInRange<uint8_t>(0, 3) == 0
                           ? static_cast<uint32_t>(kHeader + pl->size)
                           : small_or_any(p, 5000);
        f.pdu_offset = small_or_any(p, 5000);
        payload = p.ConsumeBytes<uint8_t>(p.ConsumeIntegralInRange<size_t>(0, 1500));
      }
      f.payload = payload;

      const hp::FragmentResult res = r.add(f);
      const bool stored = res == hp::FragmentResult::kAccepted ||
                          res == hp::FragmentResult::kCompleted ||
                          res == hp::FragmentResult::kAbandoned;
      switch (res) {
        case hp::FragmentResult::kAccepted:
        case hp::FragmentResult::kCompleted:
        case hp::FragmentResult::kAbandoned:
          FUZZ_CHECK(slot >= 0, "a fragment of an unfragmented opcode was accepted");
          FUZZ_CHECK(uint64_t{f.pdu_offset} + payload.size() <= f.pdu_length,
                     "a fragment reaching past its PDU was accepted");
          shadow[static_cast<size_t>(slot)].push_back(Held{f.pdu_offset, payload});
          break;
        case hp::FragmentResult::kDuplicate: {
          FUZZ_CHECK(slot >= 0, "duplicate of an unfragmented opcode");
          const auto& held = shadow[static_cast<size_t>(slot)];
          FUZZ_CHECK(std::any_of(held.begin(), held.end(),
                                 [&](const Held& h) {
                                   return h.offset == f.pdu_offset &&
                                          h.bytes.size() == payload.size();
                                 }),
                     "a duplicate that matches no held fragment");
          break;
        }
        case hp::FragmentResult::kBadOpcode:
          FUZZ_CHECK(slot < 0, "a fragmented opcode was refused as bad");
          break;
        case hp::FragmentResult::kTooLarge:
          FUZZ_CHECK(f.pdu_length > kMaxPdu, "a PDU within max_pdu was refused as too large");
          break;
        case hp::FragmentResult::kInconsistent:
        case hp::FragmentResult::kNoMemory:
          break;
      }

      // The model of the placeable tag's reply under way.
      using Mode = Placement::Partial;
      Mode before = Mode::kNone;
      if (pl) {
        before = pl->partial;
        if (before == Mode::kNone && stored) {
          const bool placed = pl->live && f.pdu_length == kHeader + pl->size;
          before = placed ? Mode::kPlaced : Mode::kCopy;
        }
        if (before == Mode::kPlaced && stored && f.pdu_offset + payload.size() > kHeader) {
          // Accepted bytes of a placed reply land in its destination.
          const size_t from = std::max<size_t>(f.pdu_offset, kHeader);
          arena.expect(pl->begin + (from - kHeader),
                       std::span<const uint8_t>(payload).subspan(from - f.pdu_offset));
        }
        FUZZ_CHECK(res != hp::FragmentResult::kAbandoned || before == Mode::kDropped,
                   "a PDU abandoned whose destination was not forgotten");
        pl->partial = stored && res != hp::FragmentResult::kAccepted ? Mode::kNone
                      : stored                                       ? before
                                                                     : pl->partial;
      } else {
        FUZZ_CHECK(res != hp::FragmentResult::kAbandoned, "a PDU abandoned though none was placed");
      }

      // The reference takes whatever `r` took.
      if (res != hp::FragmentResult::kNoMemory) {
        const hp::FragmentResult want =
            res == hp::FragmentResult::kAbandoned ? hp::FragmentResult::kCompleted : res;
        FUZZ_CHECK(ref.add(f) == want, "placement changed a fragment's verdict");
      }

      if (res == hp::FragmentResult::kCompleted || res == hp::FragmentResult::kAbandoned) {
        auto want = ref.pop();
        FUZZ_CHECK(want.has_value() && !ref.pop(), "the reference completed no PDU");
        check_against_shadow(*want, shadow);
        if (res == hp::FragmentResult::kCompleted) {
          auto got = r.pop();
          FUZZ_CHECK(got.has_value() && !r.pop(), "a completed PDU was not poppable");
          FUZZ_CHECK(got->opcode == want->opcode && got->tag == want->tag &&
                         got->pdu_length() == want->bytes.size(),
                     "placement changed a PDU's identity or length");
          if (got->data_placed) {
            FUZZ_CHECK(pl && before == Mode::kPlaced, "a PDU placed that the model did not place");
            FUZZ_CHECK(got->bytes.size() == kHeader && got->placed_length == pl->size,
                       "a placed PDU's header or placed length is off");
            FUZZ_CHECK(std::memcmp(got->bytes.data(), want->bytes.data(), kHeader) == 0 &&
                           std::memcmp(arena.span(pl->begin, pl->size).data(),
                                       want->bytes.data() + kHeader, pl->size) == 0,
                       "placed bytes differ from the reference's PDU");
            // Used once: the destination is handed back to its owner.
            pl->live = false;
            arena.canary(pl->begin, pl->size);
          } else {
            FUZZ_CHECK(!pl || before != Mode::kPlaced, "a placed reply was delivered as a copy");
            FUZZ_CHECK(got->bytes == want->bytes, "a copied PDU differs from the reference's");
          }
        }
      }
      FUZZ_CHECK(!r.pop() && !ref.pop(), "a PDU completed without a completing fragment");
    }
    FUZZ_CHECK(r.bytes_held() <= kMemoryLimit, "memory held above the limit");
    FUZZ_CHECK(arena.intact(), "a byte outside a live destination's placed fragments changed");
  }
  return 0;
}

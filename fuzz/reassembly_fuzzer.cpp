// Fuzzes the Reassembler with arbitrary fragment sequences against a shadow
// model: a completed PDU has exactly its announced length, is made of the
// accepted fragments only (each at its offset, no overlap, no gap), duplicates
// match a held fragment, and the memory charged never exceeds the limit.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.h"
#include "hyperscsi/proto/reassembly.h"

namespace hp = hyperscsi::proto;

namespace {

constexpr uint32_t kMaxPdu = 4096;
constexpr size_t kMemoryLimit = 3 * 4096;

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

void check_completed(hp::Reassembler& r, Shadow& shadow) {
  while (auto pdu = r.pop()) {
    const int slot = slot_of(pdu->opcode, pdu->tag);
    FUZZ_CHECK(slot >= 0, "a PDU completed for an unfragmented opcode or bad tag");
    FUZZ_CHECK(pdu->bytes.size() <= kMaxPdu, "a PDU above max_pdu was delivered");
    auto& held = shadow[static_cast<size_t>(slot)];
    size_t total = 0;
    for (const Held& h : held) {
      FUZZ_CHECK(h.offset + h.bytes.size() <= pdu->bytes.size(), "a fragment lies outside its PDU");
      FUZZ_CHECK(h.bytes.empty() ||
                     std::memcmp(pdu->bytes.data() + h.offset, h.bytes.data(), h.bytes.size()) == 0,
                 "delivered bytes differ from the fragment sent at that offset");
      total += h.bytes.size();
    }
    FUZZ_CHECK(total == pdu->bytes.size(), "PDU length differs from the bytes accepted for it");
    held.clear();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider p(data, size);
  hp::Reassembler r(kMaxPdu, kMemoryLimit);
  Shadow shadow;
  for (int step = 0; step < 4096 && p.remaining_bytes() > 0; ++step) {
    if (p.ConsumeIntegralInRange<uint8_t>(0, 255) == 0) {
      r.clear_partial();
      for (auto& s : shadow) s.clear();
      continue;
    }
    hp::Fragment f;
    const uint8_t op = p.ConsumeIntegralInRange<uint8_t>(0, 8);
    f.opcode = op == 8 ? hp::Opcode::kAck : static_cast<hp::Opcode>(op & 1);
    f.tag = static_cast<uint16_t>(p.ConsumeBool() ? p.ConsumeIntegralInRange<uint16_t>(0, 3)
                                                  : p.ConsumeIntegral<uint16_t>());
    f.fragment = static_cast<uint16_t>(small_or_any(p, 8));
    f.last = p.ConsumeBool();
    f.pdu_length = small_or_any(p, 5000);
    f.pdu_offset = small_or_any(p, 5000);
    const std::vector<uint8_t> payload =
        p.ConsumeBytes<uint8_t>(p.ConsumeIntegralInRange<size_t>(0, 1500));
    f.payload = payload;

    const hp::FragmentResult res = r.add(f);
    const int slot = slot_of(f.opcode, f.tag);
    switch (res) {
      case hp::FragmentResult::kAccepted:
      case hp::FragmentResult::kCompleted:
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
      case hp::FragmentResult::kAbandoned:  // only a forgotten placement is abandoned
        FUZZ_CHECK(false, "a PDU abandoned though no reply was placed");
        break;
    }
    FUZZ_CHECK(r.bytes_held() <= kMemoryLimit, "memory held above the limit");
    check_completed(r, shadow);
  }
  return 0;
}

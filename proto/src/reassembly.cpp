#include "hyperscsi/proto/reassembly.h"

#include <cstring>
#include <vector>

namespace hyperscsi::proto {

namespace {

// Slot index for (opcode, tag), or -1 for opcodes that are never fragmented.
int slot_of(Opcode op, uint16_t tag) {
  if (tag > kMaxTag) return -1;
  if (op == Opcode::kCommandRequest) return tag;
  if (op == Opcode::kCommandReply) return (kMaxTag + 1) + tag;
  return -1;
}

}  // namespace

Fragment Fragment::from_frame(const FrameView& frame) {
  Fragment f;
  f.opcode = frame.header.common.opcode;
  f.tag = frame.header.common.tag;
  f.fragment = frame.header.common.fragment;
  f.last = frame.header.common.last_fragment;
  f.pdu_length = frame.header.ext.pdu_length;
  f.pdu_offset = frame.header.ext.pdu_offset;
  f.payload = frame.payload;
  return f;
}

// One PDU being assembled. Fragment numbers must increase with offsets, which
// lets each new fragment be checked against its nearest neighbours only.
struct Reassembler::Partial {
  Opcode opcode;
  uint16_t tag;
  uint32_t pdu_length;
  uint32_t received = 0;       // bytes stored
  int32_t last_fragment = -1;  // fragment number flagged last, once seen
  std::vector<uint8_t> data;   // reserved to pdu_length; grows as bytes land
  struct Range {
    uint32_t offset = 0;
    uint32_t length = 0;  // 0: not received (empty fragments only exist for empty PDUs)
  };
  std::vector<Range> ranges;  // indexed by fragment number
};

Reassembler::Reassembler(uint32_t max_pdu, size_t memory_limit)
    : max_pdu_(max_pdu), memory_limit_(memory_limit) {}

Reassembler::~Reassembler() = default;

FragmentResult Reassembler::add(const Fragment& f) {
  const int slot = slot_of(f.opcode, f.tag);
  if (slot < 0) {
    ++stats_.bad_opcode;
    return FragmentResult::kBadOpcode;
  }
  if (f.pdu_length > max_pdu_) {
    ++stats_.too_large;
    return FragmentResult::kTooLarge;
  }
  const uint64_t end = uint64_t{f.pdu_offset} + f.payload.size();
  const bool bad_fields = end > f.pdu_length || f.fragment > kMaxFragment ||
                          (f.payload.empty() && f.pdu_length != 0) ||
                          (f.last && end != f.pdu_length) || (!f.last && end == f.pdu_length);
  auto& held = partial_[static_cast<size_t>(slot)];
  if (bad_fields) {
    ++stats_.inconsistent;
    return FragmentResult::kInconsistent;
  }
  if (f.pdu_length == 0) {
    // An empty PDU is a single empty fragment; nothing to hold.
    if (held || f.fragment != 0) {
      ++stats_.inconsistent;
      return FragmentResult::kInconsistent;
    }
    completed_.push_back(ReceivedPdu{f.opcode, f.tag, {}});
    ++stats_.fragments_accepted;
    ++stats_.pdus_completed;
    return FragmentResult::kCompleted;
  }
  if (!held) {
    if (f.pdu_length > memory_limit_ || bytes_held_ > memory_limit_ - f.pdu_length) {
      ++stats_.no_memory;
      return FragmentResult::kNoMemory;
    }
    auto p = std::make_unique<Partial>();
    p->opcode = f.opcode;
    p->tag = f.tag;
    p->pdu_length = f.pdu_length;
    p->data.reserve(f.pdu_length);
    held = std::move(p);
    bytes_held_ += f.pdu_length;
    ++partial_count_;
  }
  const FragmentResult r = check_and_store(*held, f);
  if (r == FragmentResult::kAccepted && held->received == held->pdu_length) {
    complete(static_cast<size_t>(slot));
    return FragmentResult::kCompleted;
  }
  // A first fragment that was rejected leaves nothing behind.
  if (held->received == 0) {
    bytes_held_ -= held->pdu_length;
    --partial_count_;
    held.reset();
  }
  return r;
}

FragmentResult Reassembler::check_and_store(Partial& p, const Fragment& f) {
  const uint32_t offset = f.pdu_offset;
  const auto length = static_cast<uint32_t>(f.payload.size());
  const uint32_t end = offset + length;
  const uint16_t k = f.fragment;
  auto reject = [this] {
    ++stats_.inconsistent;
    return FragmentResult::kInconsistent;
  };
  if (f.pdu_length != p.pdu_length) return reject();
  if (k < p.ranges.size() && p.ranges[k].length != 0) {
    const auto& r = p.ranges[k];
    if (r.offset == offset && r.length == length) {
      ++stats_.duplicates;
      return FragmentResult::kDuplicate;
    }
    return reject();
  }
  if (p.last_fragment >= 0 && (k > p.last_fragment || f.last)) return reject();
  if (f.last && k + 1u < p.ranges.size()) {
    for (size_t i = k + 1u; i < p.ranges.size(); ++i)
      if (p.ranges[i].length != 0) return reject();
  }
  // Neighbours: the nearest received fragments below and above must end
  // before this one starts and start after it ends.
  const size_t n = p.ranges.size();
  for (size_t i = std::min<size_t>(k, n); i-- > 0;) {
    if (p.ranges[i].length == 0) continue;
    if (p.ranges[i].offset + p.ranges[i].length > offset) return reject();
    break;
  }
  for (size_t i = k + 1u; i < n; ++i) {
    if (p.ranges[i].length == 0) continue;
    if (p.ranges[i].offset < end) return reject();
    break;
  }
  // Store. The buffer grows in place (reserved up front) so in-order
  // arrival never zero-fills; a gap is zero-filled once and overwritten later.
  if (k >= p.ranges.size()) p.ranges.resize(k + 1u);
  p.ranges[k] = {offset, length};
  if (f.last) p.last_fragment = k;
  auto& d = p.data;
  if (offset > d.size()) d.resize(offset);
  const size_t in_place = std::min<size_t>(d.size(), end) - offset;
  if (in_place > 0) std::memcpy(d.data() + offset, f.payload.data(), in_place);
  if (in_place < length) d.insert(d.end(), f.payload.begin() + in_place, f.payload.end());
  p.received += length;
  bytes_stored_ += length;
  ++stats_.fragments_accepted;
  return FragmentResult::kAccepted;
}

void Reassembler::complete(size_t slot) {
  auto& held = partial_[slot];
  bytes_held_ -= held->pdu_length;
  bytes_stored_ -= held->received;
  --partial_count_;
  completed_.push_back(ReceivedPdu{held->opcode, held->tag, std::move(held->data)});
  ++stats_.pdus_completed;
  held.reset();
}

std::optional<ReceivedPdu> Reassembler::pop() {
  if (completed_.empty()) return std::nullopt;
  ReceivedPdu pdu = std::move(completed_.front());
  completed_.pop_front();
  return pdu;
}

void Reassembler::clear_partial() {
  for (auto& p : partial_) p.reset();
  bytes_held_ = 0;
  bytes_stored_ = 0;
  partial_count_ = 0;
}

}  // namespace hyperscsi::proto

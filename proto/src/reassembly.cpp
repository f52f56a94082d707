#include "hyperscsi/proto/reassembly.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "hyperscsi/proto/messages.h"

namespace hyperscsi::proto {

namespace {

// Slot index for (opcode, tag), or -1 for opcodes that are never fragmented.
int slot_of(Opcode op, uint16_t tag) {
  if (tag > kMaxTag) return -1;
  if (op == Opcode::kCommandRequest) return tag;
  if (op == Opcode::kCommandReply) return (kMaxTag + 1) + tag;
  return -1;
}

// A placed reply's first bytes, kept here; the rest goes to the caller.
constexpr uint32_t kHeaderBytes = kReplyHeaderFixedSize;

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
  enum class Mode : uint8_t {
    kCopy,     // into `data`
    kPlaced,   // header into `header`, the rest into `placed`
    kDropped,  // was placed, its destination forgotten: header only, dropped when complete
  };
  Opcode opcode;
  uint16_t tag;
  uint32_t pdu_length;
  Mode mode = Mode::kCopy;
  uint32_t received = 0;                       // bytes stored
  int32_t last_fragment = -1;                  // fragment number flagged last, once seen
  std::vector<uint8_t> data;                   // kCopy: reserved to pdu_length; grows as bytes land
  std::array<uint8_t, kHeaderBytes> header{};  // kPlaced/kDropped: bytes [0, 16)
  std::span<uint8_t> placed;                   // kPlaced: bytes [16, pdu_length)
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
    // A reply of exactly the registered size is reassembled in place.
    const std::span<uint8_t> dst =
        f.opcode == Opcode::kCommandReply ? placement_[f.tag] : std::span<uint8_t>();
    const bool place = !dst.empty() && f.pdu_length == kHeaderBytes + dst.size();
    if (!place && (f.pdu_length > memory_limit_ || bytes_held_ > memory_limit_ - f.pdu_length)) {
      ++stats_.no_memory;
      return FragmentResult::kNoMemory;
    }
    auto p = std::make_unique<Partial>();
    p->opcode = f.opcode;
    p->tag = f.tag;
    p->pdu_length = f.pdu_length;
    if (place) {
      p->mode = Partial::Mode::kPlaced;
      p->placed = dst;
    } else {
      p->data.reserve(f.pdu_length);
      bytes_held_ += f.pdu_length;
    }
    held = std::move(p);
    bytes_expected_ += f.pdu_length;
    ++partial_count_;
  }
  const FragmentResult r = check_and_store(*held, f);
  if (r == FragmentResult::kAccepted && held->received == held->pdu_length)
    return complete(static_cast<size_t>(slot));
  // A first fragment that was rejected leaves nothing behind.
  if (held->received == 0) drop(held);
  return r;
}

void Reassembler::drop(std::unique_ptr<Partial>& held) {
  if (held->mode == Partial::Mode::kCopy) bytes_held_ -= held->pdu_length;
  bytes_expected_ -= held->pdu_length;
  bytes_stored_ -= held->received;
  --partial_count_;
  held.reset();
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
  if (k >= p.ranges.size()) p.ranges.resize(k + 1u);
  p.ranges[k] = {offset, length};
  if (f.last) p.last_fragment = k;
  store(p, offset, f.payload);
  p.received += length;
  bytes_stored_ += length;
  ++stats_.fragments_accepted;
  return FragmentResult::kAccepted;
}

// Writes checked bytes at `offset` of the PDU. A copied PDU's buffer grows
// in place (reserved up front) so in-order arrival never zero-fills; a gap is
// zero-filled once and overwritten later. A placed PDU's first bytes go to
// its header, the rest to the caller's buffer (a fragment straddling the
// header's end is split); a dropped one keeps only its header.
void Reassembler::store(Partial& p, uint32_t offset, std::span<const uint8_t> bytes) {
  const size_t length = bytes.size();
  const size_t end = offset + length;
  if (p.mode == Partial::Mode::kCopy) {
    auto& d = p.data;
    if (offset > d.size()) d.resize(offset);
    const size_t in_place = std::min<size_t>(d.size(), end) - offset;
    if (in_place > 0) std::memcpy(d.data() + offset, bytes.data(), in_place);
    if (in_place < length) d.insert(d.end(), bytes.begin() + in_place, bytes.end());
    return;
  }
  if (offset < kHeaderBytes) {
    const size_t n = std::min<size_t>(end, kHeaderBytes) - offset;
    std::memcpy(p.header.data() + offset, bytes.data(), n);
  }
  if (p.mode == Partial::Mode::kPlaced && end > kHeaderBytes) {
    // end <= pdu_length == kHeaderBytes + placed.size(): within the buffer.
    const size_t from = std::max<size_t>(offset, kHeaderBytes);
    std::memcpy(p.placed.data() + (from - kHeaderBytes), bytes.data() + (from - offset),
                end - from);
  }
}

FragmentResult Reassembler::complete(size_t slot) {
  auto& held = partial_[slot];
  Partial& p = *held;
  ReceivedPdu pdu{p.opcode, p.tag, {}};
  FragmentResult r = FragmentResult::kCompleted;
  switch (p.mode) {
    case Partial::Mode::kCopy:
      pdu.bytes = std::move(p.data);
      break;
    case Partial::Mode::kPlaced:
      pdu.bytes.assign(p.header.begin(), p.header.end());
      pdu.data_placed = true;
      pdu.placed_length = p.pdu_length - kHeaderBytes;
      // Used once: a later reply under this tag is not written there.
      if (placement_[p.tag].data() == p.placed.data()) placement_[p.tag] = {};
      ++stats_.placed;
      break;
    case Partial::Mode::kDropped:
      ++stats_.abandoned;
      r = FragmentResult::kAbandoned;
      break;
  }
  drop(held);
  if (r == FragmentResult::kCompleted) {
    completed_.push_back(std::move(pdu));
    ++stats_.pdus_completed;
  }
  return r;
}

void Reassembler::place_reply(uint16_t tag, std::span<uint8_t> data_in) {
  if (tag > kMaxTag) return;
  forget_reply(tag);
  placement_[tag] = data_in;
}

void Reassembler::forget_reply(uint16_t tag) {
  if (tag > kMaxTag) return;
  placement_[tag] = {};
  auto& held = partial_[static_cast<size_t>(slot_of(Opcode::kCommandReply, tag))];
  if (held && held->mode == Partial::Mode::kPlaced) {
    held->mode = Partial::Mode::kDropped;
    held->placed = {};
  }
}

void Reassembler::forget_replies() {
  for (uint16_t tag = 0; tag <= kMaxTag; ++tag) forget_reply(tag);
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
  bytes_expected_ = 0;
  bytes_stored_ = 0;
  partial_count_ = 0;
}

}  // namespace hyperscsi::proto

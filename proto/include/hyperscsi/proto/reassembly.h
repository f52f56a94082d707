// Reassembly of fragmented PDUs, keyed by (opcode, tag). Fragments may arrive
// in any order; exact duplicates are ignored; fragments that contradict what
// is already held (other pdu_length, overlapping bytes, fragment numbers out
// of order with offsets) are rejected and counted. Memory held for partial
// PDUs is bounded; a PDU is delivered as soon as all its bytes are in, so one
// incomplete tag never blocks another.
//
// Ownership: the Reassembler owns the partial buffers and the completed PDUs
// until pop() hands them out. Thread-safety: none; one owner thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>

#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"

namespace hyperscsi::proto {

// The reassembly-relevant fields of one received fragment.
struct Fragment {
  Opcode opcode = Opcode::kCommandRequest;
  uint16_t tag = 0;
  uint16_t fragment = 0;
  bool last = true;
  uint32_t pdu_length = 0;
  uint32_t pdu_offset = 0;
  std::span<const uint8_t> payload;

  static Fragment from_frame(const FrameView& frame);
};

enum class FragmentResult : uint8_t {
  kAccepted,      // stored; the PDU is still incomplete
  kCompleted,     // stored and the PDU is complete (pop() returns it)
  kDuplicate,     // the same fragment was already held: ignored
  kInconsistent,  // contradicts held fragments or its own fields: rejected
  kTooLarge,      // pdu_length above max_pdu: rejected
  kNoMemory,      // a new PDU would exceed the memory limit: rejected (sender retransmits)
  kBadOpcode,     // not a fragmented (sequenced) opcode
};

struct ReassemblyStats {
  uint64_t fragments_accepted = 0;
  uint64_t pdus_completed = 0;
  uint64_t duplicates = 0;
  uint64_t inconsistent = 0;
  uint64_t too_large = 0;
  uint64_t no_memory = 0;
  uint64_t bad_opcode = 0;
};

class Reassembler {
 public:
  // `max_pdu`: largest acceptable pdu_length. `memory_limit`: bytes of
  // partial PDUs held at once (a PDU's full length is charged when its first
  // fragment arrives, and released when it completes).
  Reassembler(uint32_t max_pdu, size_t memory_limit);
  ~Reassembler();
  Reassembler(const Reassembler&) = delete;
  Reassembler& operator=(const Reassembler&) = delete;

  // Checks and stores one fragment. Never throws on any input.
  FragmentResult add(const Fragment& fragment);

  // Completed PDUs in completion order.
  std::optional<ReceivedPdu> pop();
  size_t completed_count() const { return completed_.size(); }

  // Bytes charged for partial PDUs, and how many there are.
  size_t bytes_held() const { return bytes_held_; }
  // Bytes of partial PDUs still to arrive.
  size_t bytes_missing() const { return bytes_held_ - bytes_stored_; }
  size_t partial_count() const { return partial_count_; }
  const ReassemblyStats& stats() const { return stats_; }

  // Drops every partial PDU (completed ones stay poppable).
  void clear_partial();

 private:
  struct Partial;
  static constexpr size_t kSlots = 2 * (kMaxTag + 1);  // (request|reply) x tag

  FragmentResult check_and_store(Partial& p, const Fragment& f);
  void complete(size_t slot);

  uint32_t max_pdu_;
  size_t memory_limit_;
  size_t bytes_held_ = 0;
  size_t bytes_stored_ = 0;  // of bytes_held_, what has arrived
  size_t partial_count_ = 0;
  std::array<std::unique_ptr<Partial>, kSlots> partial_;
  std::deque<ReceivedPdu> completed_;
  ReassemblyStats stats_;
};

}  // namespace hyperscsi::proto

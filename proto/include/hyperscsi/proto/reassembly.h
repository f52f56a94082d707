// Reassembly of fragmented PDUs, keyed by (opcode, tag). Fragments may arrive
// in any order; exact duplicates are ignored; fragments that contradict what
// is already held (other pdu_length, overlapping bytes, fragment numbers out
// of order with offsets) are rejected and counted. Memory held for partial
// PDUs is bounded; a PDU is delivered as soon as all its bytes are in, so one
// incomplete tag never blocks another.
//
// Reply placement (the initiator's READ path): place_reply() registers, per
// tag, the caller's buffer for the data-in of the next reply PDU. A reply
// whose pdu_length is exactly kReplyHeaderFixedSize + that buffer's size is
// then reassembled in place: bytes [0, 16) into a small header buffer, bytes
// [16, pdu_length) straight into the caller's buffer (one copy per frame
// instead of two). Every other reply (sense, underflow, other length) is
// reassembled into a buffer of its own as before. The same rejection rules
// apply in both modes, and nothing is written before a fragment passed them.
//
// Ownership: the Reassembler owns the partial buffers and the completed PDUs
// until pop() hands them out. A placement buffer is borrowed: the caller keeps
// it alive and unchanged by others from place_reply() until forget_reply()
// (or forget_replies(), or the Reassembler's destruction), or until the
// placed PDU completed; after any of these the Reassembler never writes into
// it again. Thread-safety: none; one owner thread.
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
  kAbandoned,     // stored and the PDU is complete, but its placement was
                  // forgotten while it was under way: dropped, nothing to pop
};

struct ReassemblyStats {
  uint64_t fragments_accepted = 0;
  uint64_t pdus_completed = 0;
  uint64_t duplicates = 0;
  uint64_t inconsistent = 0;
  uint64_t too_large = 0;
  uint64_t no_memory = 0;
  uint64_t bad_opcode = 0;
  uint64_t placed = 0;     // of pdus_completed: reply PDUs reassembled in place
  uint64_t abandoned = 0;  // placed PDUs dropped on completion (placement forgotten)
};

class Reassembler {
 public:
  // `max_pdu`: largest acceptable pdu_length. `memory_limit`: bytes of
  // partial PDUs held at once (a PDU's full length is charged when its first
  // fragment arrives, and released when it completes). A PDU reassembled in
  // place holds no buffer of ours and is charged nothing.
  Reassembler(uint32_t max_pdu, size_t memory_limit);
  ~Reassembler();
  Reassembler(const Reassembler&) = delete;
  Reassembler& operator=(const Reassembler&) = delete;

  // Checks and stores one fragment. Never throws on any input.
  FragmentResult add(const Fragment& fragment);

  // Completed PDUs in completion order. A placed reply has data_placed set
  // and holds only its first kReplyHeaderFixedSize bytes.
  std::optional<ReceivedPdu> pop();

  // Registers `data_in` (non-empty, borrowed) as the destination of the next
  // reply PDU under `tag` (see above). Used once: a placed PDU that completes
  // consumes the registration. Replaces an earlier registration for `tag`.
  void place_reply(uint16_t tag, std::span<uint8_t> data_in);
  // Forgets `tag`'s destination. A placed reply already under way goes on
  // being checked (so that its remaining fragments are recognised) but
  // writes nothing more and is dropped when complete (kAbandoned).
  void forget_reply(uint16_t tag);
  // forget_reply() for every tag.
  void forget_replies();
  size_t completed_count() const { return completed_.size(); }

  // Bytes charged for partial PDUs (placed ones are not), and how many
  // partial PDUs there are (placed ones too).
  size_t bytes_held() const { return bytes_held_; }
  // Bytes of partial PDUs (placed ones too) still to arrive.
  size_t bytes_missing() const { return bytes_expected_ - bytes_stored_; }
  size_t partial_count() const { return partial_count_; }
  const ReassemblyStats& stats() const { return stats_; }

  // Drops every partial PDU (completed ones stay poppable).
  void clear_partial();

 private:
  struct Partial;
  static constexpr size_t kSlots = 2 * (kMaxTag + 1);  // (request|reply) x tag

  FragmentResult check_and_store(Partial& p, const Fragment& f);
  static void store(Partial& p, uint32_t offset, std::span<const uint8_t> bytes);
  FragmentResult complete(size_t slot);
  void drop(std::unique_ptr<Partial>& held);

  uint32_t max_pdu_;
  size_t memory_limit_;
  size_t bytes_held_ = 0;      // charged against memory_limit_ (unplaced partials)
  size_t bytes_expected_ = 0;  // pdu_length of every partial PDU
  size_t bytes_stored_ = 0;    // of bytes_expected_, what has arrived
  size_t partial_count_ = 0;
  std::array<std::unique_ptr<Partial>, kSlots> partial_;
  std::array<std::span<uint8_t>, kMaxTag + 1> placement_;  // by reply tag; empty: none
  std::deque<ReceivedPdu> completed_;
  ReassemblyStats stats_;
};

}  // namespace hyperscsi::proto

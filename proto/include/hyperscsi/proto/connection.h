// Connection: reliable, sequenced, flow- and congestion-controlled delivery of
// PDUs between two peers of one session. Shared by the target and initiator.
//
// It fragments outgoing PDUs into sequenced frames (byte-granular, filling the
// MTU), retransmits on timeout (Jacobson/Karels RTO, Karn's rule) and on SACK
// holes (fast retransmit), limits frames in flight to min(cwnd, peer window)
// (AIMD), acknowledges cumulatively and selectively (piggy-backed on outgoing
// frames, or a delayed standalone 0x21 ack), and reassembles incoming PDUs,
// delivering each exactly once. A timeout first resends only the oldest frame
// and undoes its window collapse if the next acks show the originals arrived
// (F-RTO style spurious-timeout detection).
//
// No I/O, no threads, no clock: the owner feeds received frames and the time,
// and collects frames to send through a FrameSink.
// Thread-safety: none; one owner thread per Connection.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/shared_bytes.h"

namespace hyperscsi::proto {

struct RtoParams {
  Duration initial = milliseconds(50);
  Duration min = milliseconds(2);  // the RTO is at least srtt + min
  Duration max = seconds(2);
};

struct TransportParams {
  size_t mtu = 1500;                         // negotiated L3 MTU: frames are at most mtu + 14 bytes
  uint16_t receive_window = 512;             // frames we accept beyond our cumulative ack
  uint32_t max_pdu = (1u << 20) + 4096;      // largest PDU either side may send
  bool checksum = true;                      // set kFlagChecksum on every frame we send
  bool sack = true;                          // send SACK blocks
  Duration delayed_ack = microseconds(500);  // 0: ack every frame at once
  uint32_t ack_every = 4;                    // ack at once after this many unacked frames
  RtoParams rto;
  uint32_t initial_cwnd = 16;           // frames
  uint32_t max_cwnd = 4096;             // frames
  size_t send_queue_limit = 64u << 20;  // bytes of PDUs queued but not yet acked
  size_t reassembly_limit = 64u << 20;  // bytes held for partial incoming PDUs
};

// Who is at each end; stamped into every frame.
struct Endpoint {
  MacAddress local{};
  MacAddress peer{};
  uint32_t session_id = 0;
  uint16_t epoch = 0;
  uint16_t peer_window = 64;  // the peer's advertised window until it says otherwise
  // Multipath (path_set.h): the path and generation stamped into every frame.
  uint8_t path_id = 0;
  uint8_t path_gen = 0;
};

// A complete incoming PDU, handed to the owner exactly once.
struct ReceivedPdu {
  Opcode opcode = Opcode::kCommandRequest;
  uint16_t tag = 0;
  std::vector<uint8_t> bytes;
  // A reply reassembled in place (Connection::place_reply): `bytes` holds
  // only the reply's fixed header (kReplyHeaderFixedSize bytes); the other
  // `placed_length` bytes of the PDU (sense, then data-in) were written at
  // the start of the destination registered for `tag`.
  bool data_placed = false;
  uint32_t placed_length = 0;
  // The PDU's length on the wire.
  size_t pdu_length() const { return bytes.size() + placed_length; }
};

// Where a Connection writes frames. The owner supplies the memory (for
// example a packet buffer of its port) so frames are built in place.
class FrameSink {
 public:
  virtual ~FrameSink() = default;
  // A buffer of at least `size` bytes to write one frame into, or an empty
  // span when none is available now (the Connection stops and retries at the
  // next poll).
  virtual std::span<uint8_t> acquire(size_t size) = 0;
  // The frame just written into the last acquired buffer is `length` bytes.
  virtual void commit(size_t length) = 0;
  // The frame is the `header_length` bytes written at the start of `frame`
  // (the buffer acquire() returned last, with room for the whole frame)
  // followed by `payload`, a slice of bytes `owner` keeps alive. A sink whose
  // port sends a frame from two pieces keeps a reference to `owner` until the
  // frame has left and never copies the payload (issue 20); the default
  // copies it behind the header and commits, so the bytes are the same.
  virtual void commit_gather(std::span<uint8_t> frame, size_t header_length,
                             std::span<const uint8_t> payload,
                             const std::shared_ptr<const void>& owner) {
    (void)owner;
    if (!payload.empty()) std::memcpy(frame.data() + header_length, payload.data(), payload.size());
    commit(header_length + payload.size());
  }
};

struct TransportStats {
  uint64_t pdus_sent = 0;
  uint64_t pdus_received = 0;
  uint64_t frames_sent = 0;  // sequenced frames, first transmissions
  uint64_t frames_retransmitted = 0;
  uint64_t fast_retransmits = 0;
  uint64_t timeouts = 0;
  uint64_t spurious_timeouts = 0;  // timeouts later shown spurious and undone (of `timeouts`)
  uint64_t acks_sent = 0;          // standalone 0x21 frames
  uint64_t frames_received = 0;    // sequenced frames accepted
  uint64_t duplicates_received = 0;
  uint64_t out_of_window = 0;       // sequenced frames dropped: beyond our window
  uint64_t bytes_sent = 0;          // PDU bytes, first transmissions
  uint64_t bytes_received = 0;      // PDU bytes delivered
  uint64_t frames_acked = 0;        // sequenced frames newly acknowledged (cumulatively or by SACK)
  uint64_t bytes_acked = 0;         // their payload bytes
  uint32_t max_in_flight = 0;       // highest frames-in-flight ever seen
  uint32_t max_allowed_window = 0;  // the send window (min(cwnd, peer)) at that moment
  bool window_violated = false;     // set if in-flight ever exceeded the send window
  Duration srtt{};
  Duration rttvar{};
  Duration rto{};
  Duration base_rto{};  // the RTO without timeout backoff
  Duration min_rtt{};   // smallest RTT sample (zero before the first)
  uint32_t cwnd = 0;
  uint32_t ssthresh = 0;
  uint16_t peer_window = 0;
};

// What an event loop learns from its connections before it sleeps: how
// much of an incoming PDU is still to come, so that it can sleep while the
// rest streams in rather than wake per frame, and whether it has frames
// waiting for the send window, which the next ack opens (io::WakePolicy).
// Merged over several connections with merge().
struct FlowHints {
  size_t rx_missing = 0;       // smallest remainder of an incoming PDU begun, bytes (0: none)
  size_t rx_window_bytes = 0;  // our receive window in bytes, on the connection of rx_missing
  bool tx_waiting = false;     // PDUs have fragments not yet sent
  void merge(const FlowHints& o) {
    tx_waiting = tx_waiting || o.tx_waiting;
    if (o.rx_missing != 0 && (rx_missing == 0 || o.rx_missing < rx_missing)) {
      rx_missing = o.rx_missing;
      rx_window_bytes = o.rx_window_bytes;
    }
  }
};

class Connection {
 public:
  Connection(const TransportParams& params, const Endpoint& endpoint);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Queues a PDU (opcode kCommandRequest or kCommandReply) for reliable
  // delivery. Takes ownership of `pdu`. Returns false, keeping nothing, when
  // the PDU exceeds max_pdu or the fragment limit, the send queue is full, or
  // a PDU with the same opcode and tag is still unacknowledged.
  bool send_pdu(Opcode opcode, uint16_t tag, std::vector<uint8_t> pdu);
  // The same for a PDU others hold too (the reply cache): shares it, no copy.
  bool send_pdu_shared(Opcode opcode, uint16_t tag, SharedBytes pdu);
  // The PDU `head` (copied: a header) followed by `body` (shared, no copy):
  // data that lies elsewhere, e.g. a caller's write buffer. The fragment
  // that holds head is sent from a copy of both pieces, the rest from body.
  bool send_pdu_parts(Opcode opcode, uint16_t tag, std::span<const uint8_t> head, SharedBytes body);
  // Every PDU queued or unacknowledged whose shared bytes `owner` owns
  // (send_pdu_shared, send_pdu_parts) takes a private copy of them and
  // drops its reference: later (re)transmissions send the copy, and the
  // owner's bytes are free once frames already handed to the sink are sent.
  // For a sender that gives up on a PDU (a command past its dead time) but
  // cannot unsend it. Returns whether any PDU held such bytes.
  bool unshare(const void* owner);
  // Whether send_pdu would take a PDU of `size` bytes with this opcode and
  // tag now (so a caller with several Connections can choose without losing
  // the PDU to a refusal).
  bool can_send(Opcode opcode, uint16_t tag, size_t size) const;

  // Feeds one decoded frame of this session (the owner has matched
  // session_id and epoch). Processes its ack, window and SACK blocks; keeps
  // its payload if it is sequenced. Never throws.
  void on_frame(const FrameView& frame, TimePoint now);

  // Completed incoming PDUs, in the order they completed.
  std::optional<ReceivedPdu> pop_pdu();

  // Reply placement (reassembly.h): the data-in of the next reply PDU under
  // `tag` lands straight in `data_in` when that reply is exactly its fixed
  // header plus data_in.size() bytes. `data_in` is borrowed until the placed
  // reply is popped, or forget_reply_placement(tag) /
  // forget_reply_placements() / this Connection's destruction, whichever
  // comes first; after that no frame writes into it. Only for the side that
  // receives replies (the initiator), one owner thread like the rest.
  void place_reply(uint16_t tag, std::span<uint8_t> data_in);
  void forget_reply_placement(uint16_t tag);
  void forget_reply_placements();

  // Emits what is due at `now`: retransmissions, new frames within the send
  // window, and a standalone ack if one is owed.
  void poll(TimePoint now, FrameSink& sink);

  // When poll() next has something to do (a timer), or kNever.
  TimePoint next_deadline() const;

  // The receive window our acks advertise, in [1, params.receive_window]
  // (default: all of it). Frames up to params.receive_window beyond our ack
  // are still accepted, so lowering it drops nothing the peer already sent;
  // the peer sends less from its next ack on (a receiver sharing its
  // capacity among sessions, docs/protocol.md 10.4).
  void set_advertised_window(uint16_t frames);
  uint16_t advertised_window() const;

  // Header for an unsequenced control frame (discovery, keepalive, disconnect
  // ...) from this endpoint, with our current ack and window piggy-backed.
  FrameHeader control_header(Opcode opcode, uint8_t extra_flags = 0) const;

  // Multipath failover (path_set.h): hands back every PDU not yet completely
  // acknowledged (queued, partly sent or with frames in flight), oldest first,
  // and forgets them, so that they can be sent again on another path. The
  // peer never gets the rest of their frames from this Connection, so it must
  // send no new PDU afterwards (the path gets a new generation first); it
  // still receives and acknowledges.
  struct UnackedPdu {
    Opcode opcode = Opcode::kCommandRequest;
    uint16_t tag = 0;
    std::vector<uint8_t> bytes;
  };
  std::vector<UnackedPdu> release_unacked();

  // True when nothing is queued, in flight, or owed as an ack.
  bool idle() const;
  // Bytes of PDUs queued or in flight.
  size_t send_queue_bytes() const;
  // Frames sent but not yet acknowledged.
  uint32_t in_flight() const;

  // For the owner's event loop (see FlowHints).
  FlowHints flow_hints() const;

  const TransportStats& stats() const;
  const Endpoint& endpoint() const;
  const TransportParams& params() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hyperscsi::proto

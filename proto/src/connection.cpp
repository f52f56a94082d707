// Connection: sender (fragmentation, send window, retransmission), receiver
// (sequence tracking, acks, SACK) and reassembly glued together.
//
// Sequence numbers start at 0 in both directions for every new Connection:
// sessions are fenced by session_id and epoch, so a random ISN buys nothing.
#include "hyperscsi/proto/connection.h"

#include <algorithm>
#include <bitset>
#include <deque>

#include "hyperscsi/proto/congestion.h"
#include "hyperscsi/proto/reassembly.h"
#include "hyperscsi/proto/rtt.h"
#include "hyperscsi/proto/seq.h"

namespace hyperscsi::proto {

namespace {

// SACKed frames above an unacknowledged one that declare it lost (RFC 6675
// DupThresh), and standalone duplicate acks that do the same without SACK.
constexpr uint32_t kLossThreshold = 3;
constexpr uint32_t kDupAckThreshold = 3;

size_t key_of(Opcode op, uint16_t tag) {
  return (op == Opcode::kCommandReply ? kMaxTag + 1u : 0u) + (tag & kMaxTag);
}

// Smaller payloads are copied into the frame: below this a copy costs less
// than the reference the sink would keep and the port's second iovec.
constexpr size_t kGatherMinPayload = 512;

uint32_t ring_size_for(uint32_t window) {
  uint32_t n = 64;
  while (n < window) n *= 2;
  return n;
}

}  // namespace

// A PDU accepted by send_pdu, alive until every fragment is acknowledged.
struct OutPdu {
  Opcode opcode = Opcode::kCommandRequest;
  uint16_t tag = 0;
  // The PDU is `head` followed by `bytes`: head is empty, or a small header
  // copied in front of data others own (send_pdu_parts).
  std::vector<uint8_t> head;
  SharedBytes bytes;  // never null
  size_t size() const { return head.size() + bytes.size(); }
  uint32_t next_offset = 0;
  uint16_t next_fragment = 0;
  bool all_sent = false;
  uint32_t frames_unacked = 0;  // sent and not yet acked or SACKed
};

// One sequenced frame sent and not yet cumulatively acknowledged.
struct TxFrame {
  std::shared_ptr<OutPdu> pdu;
  uint32_t offset = 0;
  uint32_t length = 0;
  uint16_t fragment = 0;
  bool last = false;
  bool retransmitted = false;  // Karn: no RTT sample from this frame
  bool sacked = false;
  bool lost = false;  // presumed lost, queued for retransmission
  TimePoint sent_at{};
};

struct Connection::Impl {
  Impl(const TransportParams& p, const Endpoint& e)
      : params(p),
        ep(e),
        rtt(p.rto),
        cc(p.initial_cwnd, p.max_cwnd),
        reasm(p.max_pdu, p.reassembly_limit),
        frag_payload(max_payload(p.mtu)),
        peer_window(e.peer_window),
        advertised_window(p.receive_window),
        ring_mask(ring_size_for(p.receive_window) - 1),
        ring((ring_size_for(p.receive_window) + 63) / 64) {}

  // ---- sender ----
  bool can_send(Opcode op, uint16_t tag, size_t size) const;
  bool send_pdu(Opcode op, uint16_t tag, SharedBytes pdu, std::span<const uint8_t> head = {});
  void process_ack(const FrameView& f, TimePoint now);
  // process_ack's steps, in order.
  struct AckSample {  // the RTT sample an ack gives
    bool have = false;
    uint32_t seq = 0;
    TimePoint sent{};
    bool retransmitted = false;
  };
  void sample_candidate(const TxFrame& f, uint32_t seq, AckSample& s);
  void ack_cumulative(uint32_t ack, TimePoint now, AckSample& sample, uint32_t& newly);
  void note_dsacks(const FrameHeader& h, uint32_t ack);
  bool ack_sack_blocks(const FrameHeader& h, TimePoint now, AckSample& sample, uint32_t& newly);
  void take_rtt_sample(const AckSample& sample, TimePoint now);
  void react_to_ack(const FrameHeader& h, bool advanced, uint32_t newly, bool sack_news,
                    uint32_t ack, TimePoint now);
  void frame_acked(TxFrame& f);
  void detect_sack_losses(TimePoint now);
  bool may_retransmit(const TxFrame& f, TimePoint now) const;
  void mark_lost(TxFrame& f, uint32_t seq);
  void on_timeout(TimePoint now);
  bool frto_may_start() const;
  void frto_on_ack(bool advanced, bool loss_signal, bool sack_news, uint32_t ack, TimePoint now);
  void frto_go_back_n();
  void open_undo_episode();
  void close_undo_episode();
  void on_dsack(const SackBlock& b);
  void undo_episode();
  void note_episode_retransmission(uint32_t seq);
  TimePoint head_recovery_deadline() const;
  uint32_t pipe() const { return static_cast<uint32_t>(flight.size()) - sacked_count - lost_count; }
  uint32_t unacked() const { return static_cast<uint32_t>(flight.size()) - sacked_count; }
  bool can_send_new() const {
    return !queue.empty() && (pipe() < cc.cwnd() || frto_new_frames > 0) &&
           flight.size() < peer_window;
  }
  bool can_retransmit() const {
    return lost_count > 0 && (pipe() < cc.cwnd() || flight.front().lost);
  }

  // ---- receiver ----
  void receive_data(const FrameView& f, TimePoint now);
  bool test(uint32_t seq) const { return (ring[(seq & ring_mask) / 64] >> (seq & 63)) & 1u; }
  void set(uint32_t seq) { ring[(seq & ring_mask) / 64] |= uint64_t{1} << (seq & 63); }
  void clear(uint32_t seq) { ring[(seq & ring_mask) / 64] &= ~(uint64_t{1} << (seq & 63)); }
  void compute_sacks();
  bool ack_owed(TimePoint now) const {
    return ack_now || (unacked_rx > 0 && (unacked_rx >= params.ack_every || now >= ack_deadline));
  }
  void ack_sent() {
    unacked_rx = 0;
    ack_now = false;
    ack_deadline = kNever;
  }

  // ---- emission ----
  FrameHeader base_header(Opcode op) const;
  // What fill_ack put into a header: whether every SACK block (D-SACKs
  // included) fitted, and which pending D-SACK blocks it carries.
  struct AckFill {
    bool all_sacks = true;
    uint8_t dsack_mask = 0;  // which pending D-SACK blocks it carries
  };
  AckFill fill_ack(FrameHeader& h, size_t sack_room);
  // `owner`, when given, keeps `payload` alive: the sink may then send the
  // payload from where it lies instead of copying it into the frame.
  bool emit(FrameHeader& h, std::span<const uint8_t> payload, AckFill fill, FrameSink& sink,
            const std::shared_ptr<const void>* owner = nullptr);
  void note_duplicate(uint32_t seq);
  bool transmit(const TxFrame& f, uint32_t seq, bool retransmit, FrameSink& sink);
  void poll(TimePoint now, FrameSink& sink);
  // poll's steps; each returns false when the sink took no more frames.
  bool retransmit_frame(size_t idx, TimePoint now, FrameSink& sink);
  bool send_retransmissions(TimePoint now, FrameSink& sink);
  bool send_new_frames(TimePoint now, FrameSink& sink);
  bool probe_zero_window(TimePoint now, FrameSink& sink);
  bool send_ack(FrameSink& sink);
  bool has_sack_blocks() {
    compute_sacks();
    return sacks.count > 0;
  }
  TimePoint next_deadline() const;

  TransportParams params;
  Endpoint ep;
  mutable TransportStats stats;
  RttEstimator rtt;
  CongestionControl cc;
  Reassembler reasm;
  size_t frag_payload;
  std::vector<uint8_t> straddle;  // transmit()'s scratch for a fragment with a separate head
  TimePoint last_now{};

  // Sender state.
  uint32_t snd_una = 0;                       // oldest unacknowledged sequence number
  uint32_t snd_nxt = 0;                       // next new sequence number
  std::deque<TxFrame> flight;                 // flight[i] is sequence snd_una + i
  std::deque<std::shared_ptr<OutPdu>> queue;  // PDUs with fragments not yet sent
  std::deque<uint32_t> lost_queue;  // sequence numbers to retransmit (stale entries skipped)
  uint32_t sacked_count = 0;
  uint32_t lost_count = 0;
  uint32_t high_sacked = 0;  // one past the highest SACKed sequence number
  uint32_t high_acked = 0;   // one past the highest sequence number acked or SACKed
  uint32_t dupacks = 0;
  uint16_t peer_window;
  uint32_t window_ack = 0;  // ack of the frame the peer window was taken from
  std::bitset<2 * (kMaxTag + 1)> busy_keys;
  size_t queue_bytes = 0;
  TimePoint rtx_deadline = kNever;
  TimePoint last_timeout = TimePoint::min();
  TimePoint latest_delivered_sent{};  // latest transmission time among acked frames
  uint32_t rtt_round_end = 0;         // a sample from this frame or later ends an RTT round
  TimePoint probe_deadline = kNever;
  uint32_t probes = 0;

  // Spurious-timeout detection (F-RTO, RFC 5682's idea): after a timeout only
  // the oldest frame is resent; the next acks decide whether the originals
  // were delivered (undo) or lost (go back N as a plain timeout does).
  enum class Frto : uint8_t { kOff, kFirstAck, kSecondAck };
  Frto frto = Frto::kOff;
  uint32_t frto_recover = 0;          // snd_nxt at the timeout
  uint32_t frto_new_frames = 0;       // new frames that may go beyond cwnd to draw a second ack
  TimePoint frto_resent_at = kNever;  // when the head went out again

  // D-SACK undo (RFC 2883 reports, RFC 3708's use; Linux's undo_retrans): a
  // timeout episode every retransmission of which the peer reports as a
  // duplicate was spurious, whatever F-RTO concluded. This is what catches
  // the lightly loaded direction (commands, status), whose acks queue behind
  // the other direction's data and which has no new data for F-RTO's probe.
  bool undo_open = false;
  uint32_t undo_timeouts = 0;                // timeouts in the open episode
  std::vector<uint32_t> undo_retransmitted;  // its retransmissions not yet reported duplicate
  TimePoint undo_prev_timeout{};             // last_timeout before the episode
  uint32_t undo_recover = 0;                 // snd_nxt at the episode's latest timeout
  TimePoint undo_expiry = kNever;            // no report by then: the episode is closed
  // The frame whose timer opened the episode, as first sent, and when an ack
  // first covered it: if the episode proves spurious, that ack answered the
  // original, and its delay is the round trip the estimator had missed.
  bool undo_head_valid = false;
  uint32_t undo_head_seq = 0;
  TimePoint undo_head_sent{};
  TimePoint undo_head_acked = kNever;

  // Receiver state.
  uint16_t advertised_window;  // <= params.receive_window, which is what we accept
  uint32_t rcv_nxt = 0;        // cumulative ack: next in-order sequence number expected
  uint32_t rcv_high = 0;       // one past the highest sequence number received
  uint32_t last_rcvd = 0;      // the most recently accepted sequence number
  uint32_t ring_mask;
  std::vector<uint64_t> ring;  // received bits for [rcv_nxt, rcv_nxt + window)
  uint32_t unacked_rx = 0;     // frames received since our last ack went out
  bool ack_now = false;
  TimePoint ack_deadline = kNever;
  SackList sacks;
  bool sacks_dirty = false;
  SackList dsacks;  // duplicates that arrived since the last ack that reported them
  std::deque<ReceivedPdu> ready;
};

// ---------------------------------------------------------------- sender --

bool Connection::Impl::can_send(Opcode op, uint16_t tag, size_t size) const {
  if (!is_sequenced(op) || tag > kMaxTag || frag_payload == 0) return false;
  if (size > params.max_pdu) return false;
  const size_t fragments = size == 0 ? 1 : (size + frag_payload - 1) / frag_payload;
  if (fragments > kMaxFragmentsPerPdu) return false;
  if (queue_bytes + size > params.send_queue_limit) return false;
  return !busy_keys.test(key_of(op, tag));
}

bool Connection::Impl::send_pdu(Opcode op, uint16_t tag, SharedBytes pdu,
                                std::span<const uint8_t> head) {
  if (!pdu || !can_send(op, tag, head.size() + pdu.size())) return false;
  const size_t key = key_of(op, tag);
  busy_keys.set(key);
  queue_bytes += head.size() + pdu.size();
  auto out = std::make_shared<OutPdu>();
  out->opcode = op;
  out->tag = tag;
  out->head.assign(head.begin(), head.end());
  out->bytes = std::move(pdu);
  queue.push_back(std::move(out));
  return true;
}

void Connection::Impl::frame_acked(TxFrame& f) {
  ++stats.frames_acked;
  stats.bytes_acked += f.length;
  OutPdu& p = *f.pdu;
  if (--p.frames_unacked == 0 && p.all_sent) {
    // Every fragment is in: the tag may be reused.
    busy_keys.reset(key_of(p.opcode, p.tag));
    queue_bytes -= p.size();
  }
}

void Connection::Impl::process_ack(const FrameView& frame, TimePoint now) {
  const FrameHeader& h = frame.header;
  const uint32_t ack = h.ext.ack;
  // An ack for data never sent, or older than what is already acked: ignore.
  if (seq_gt(ack, snd_nxt) || seq_lt(ack, snd_una)) return;
  if (undo_open && now >= undo_expiry) close_undo_episode();
  if (seq_geq(ack, window_ack)) {
    window_ack = ack;
    peer_window = h.ext.window;
  }

  uint32_t newly = 0;
  AckSample sample;
  const bool advanced = seq_gt(ack, snd_una);
  ack_cumulative(ack, now, sample, newly);
  note_dsacks(h, ack);
  const bool sack_news = ack_sack_blocks(h, now, sample, newly);
  take_rtt_sample(sample, now);
  react_to_ack(h, advanced, newly, sack_news, ack, now);
}

// The newest frame an ack covers gives the RTT sample (Karn's rule is
// applied by the estimator: not if that frame was retransmitted).
void Connection::Impl::sample_candidate(const TxFrame& f, uint32_t seq, AckSample& s) {
  latest_delivered_sent = std::max(latest_delivered_sent, f.sent_at);
  if (s.have && !seq_gt(seq, s.seq)) return;
  s.have = true;
  s.seq = seq;
  s.sent = f.sent_at;
  s.retransmitted = f.retransmitted;
}

// Frames below the cumulative ack leave the flight.
void Connection::Impl::ack_cumulative(uint32_t ack, TimePoint now, AckSample& sample,
                                      uint32_t& newly) {
  while (seq_lt(snd_una, ack)) {
    TxFrame& f = flight.front();
    if (undo_head_valid && snd_una == undo_head_seq && undo_head_acked == kNever)
      undo_head_acked = now;
    if (f.sacked) {
      --sacked_count;
    } else {
      ++newly;
      frame_acked(f);
      sample_candidate(f, snd_una, sample);
    }
    if (f.lost) --lost_count;
    flight.pop_front();
    ++snd_una;
  }
}

// D-SACKs: the peer received those frames twice. Every block at or below
// the cumulative ack is one (an ack may carry several), and so is a first
// block inside another block (RFC 2883).
void Connection::Impl::note_dsacks(const FrameHeader& h, uint32_t ack) {
  for (size_t i = 0; i < h.sacks.count; ++i) {
    const SackBlock& d = h.sacks.blocks[i];
    if (!seq_lt(d.start, d.end)) continue;
    bool is_dsack = seq_leq(d.end, ack);
    for (size_t j = 1; i == 0 && j < h.sacks.count && !is_dsack; ++j) {
      const SackBlock& b = h.sacks.blocks[j];
      is_dsack = seq_geq(d.start, b.start) && seq_leq(d.end, b.end);
    }
    if (is_dsack) on_dsack(d);
  }
}

// Marks the frames in the SACK blocks; true when a block told something new.
bool Connection::Impl::ack_sack_blocks(const FrameHeader& h, TimePoint now, AckSample& sample,
                                       uint32_t& newly) {
  bool sack_news = false;
  // Offsets into the flight (mod 2^32), not serial comparisons: those are
  // not transitive across 2^31, and a block from the wire may span that.
  const uint32_t flight_len = static_cast<uint32_t>(flight.size());
  for (const SackBlock& b : h.sacks.view()) {
    const uint32_t end = b.end - snd_una;
    const uint32_t start = seq_lt(b.start, snd_una) ? 0 : b.start - snd_una;  // from snd_una
    if (start >= end || end > flight_len) continue;  // empty or beyond what was sent
    for (uint32_t i = start; i != end; ++i) {
      const uint32_t s = snd_una + i;
      TxFrame& f = flight[i];
      if (f.sacked) continue;
      if (undo_head_valid && s == undo_head_seq && undo_head_acked == kNever) undo_head_acked = now;
      f.sacked = true;
      ++sacked_count;
      if (f.lost) {
        f.lost = false;
        --lost_count;
      }
      ++newly;
      frame_acked(f);
      sample_candidate(f, s, sample);
      if (seq_geq(s + 1, high_sacked)) high_sacked = s + 1;
      sack_news = true;
    }
  }
  return sack_news;
}

void Connection::Impl::take_rtt_sample(const AckSample& sample, TimePoint now) {
  // Only a frame that advances the highest-acked frontier gives a sample: a
  // frame acked late because it sat behind a hole (or beyond the SACK blocks
  // the peer could fit) would report the hole's repair time, not the RTT.
  // Nor does a frame sent before the last timeout: its own ack may have been
  // lost and this one triggered by the timeout's retransmission (Karn's
  // ambiguity, one step removed).
  if (sample.have && seq_geq(sample.seq, high_acked) && sample.sent > last_timeout) {
    // A round ends with the first sample of a frame sent after the one that
    // began it (snd_nxt then).
    const bool ends_round = seq_geq(sample.seq, rtt_round_end);
    if (rtt.on_sample(now - sample.sent, sample.retransmitted, ends_round) && ends_round)
      rtt_round_end = snd_nxt;
  }
  if (sample.have && seq_geq(sample.seq, high_acked)) high_acked = sample.seq + 1;
  // Keep the frontiers within serial-number reach of snd_una (they are only
  // meaningful above it).
  high_acked = seq_max(high_acked, snd_una);
  high_sacked = seq_max(high_sacked, snd_una);
}

// Loss detection (duplicate acks, F-RTO, SACK), congestion control, the
// undo episode's expiry and the retransmission timer after an ack.
void Connection::Impl::react_to_ack(const FrameHeader& h, bool advanced, uint32_t newly,
                                    bool sack_news, uint32_t ack, TimePoint now) {
  if (advanced) {
    dupacks = 0;
  } else if (newly == 0 && h.sacks.count == 0 && h.common.opcode == Opcode::kAck &&
             (h.ext.flags & kFlagResponse) == 0 && !flight.empty() &&
             ++dupacks == kDupAckThreshold) {
    // Classic fast retransmit for peers that do not send SACK blocks.
    TxFrame& head = flight.front();
    if (!head.lost && may_retransmit(head, now)) {
      mark_lost(head, snd_una);
      ++stats.fast_retransmits;
      close_undo_episode();  // a real loss: nothing to undo
      cc.on_loss(unacked(), snd_nxt);
    }
  }
  if (frto != Frto::kOff) {
    // Evidence of loss: new SACK information, or a standalone duplicate ack,
    // without the cumulative ack moving.
    const bool dup = newly == 0 && h.sacks.count == 0 && h.common.opcode == Opcode::kAck &&
                     (h.ext.flags & kFlagResponse) == 0;
    frto_on_ack(advanced, !advanced && (sack_news || dup), sack_news, ack, now);
  }
  if (sack_news) detect_sack_losses(now);
  cc.on_ack(newly, snd_una);
  // The reports of an episode's retransmissions follow the acks of what was
  // sent before its latest timeout: the wait for them starts only then, and
  // allows twice the delay the timed-out frame itself saw (at a session's
  // start, or behind a receiver that was not scheduled, that delay can be
  // many times the estimate the RTO came from).
  if (undo_open && undo_expiry == kNever && seq_geq(snd_una, undo_recover)) {
    const Duration head = undo_head_valid && undo_head_acked != kNever
                              ? undo_head_acked - undo_head_sent
                              : Duration::zero();
    undo_expiry = now + std::max(2 * rtt.rto() + rtt.srtt(), 2 * head);
  }

  if (flight.empty()) {
    rtx_deadline = kNever;
  } else if (advanced) {
    rtx_deadline = now + rtt.rto();  // restart for the (new) oldest frame
  }
}

bool Connection::Impl::may_retransmit(const TxFrame& f, TimePoint now) const {
  // Each hole at most once per round trip (a retransmission needs an RTT to
  // be acknowledged).
  return !f.retransmitted || now - f.sent_at >= rtt.base_rto();
}

void Connection::Impl::mark_lost(TxFrame& f, uint32_t seq) {
  f.lost = true;
  ++lost_count;
  lost_queue.push_back(seq);
}

void Connection::Impl::detect_sack_losses(TimePoint now) {
  if (!seq_gt(high_sacked, snd_una)) return;
  const auto top = static_cast<size_t>(seq_diff(high_sacked, snd_una));
  // Two rules: DupThresh SACKed frames above a hole (RFC 6675), or, for small
  // windows where three never come, a frame sent a quarter RTT or more after
  // it has already been delivered (time-based, as RACK).
  const Duration reorder = rtt.srtt() / 4;
  uint32_t sacked_above = sacked_count;  // every SACKed frame is below high_sacked
  uint32_t marked = 0;
  for (size_t i = 0; i < top && i < flight.size(); ++i) {
    TxFrame& f = flight[i];
    if (f.sacked) {
      --sacked_above;
      continue;
    }
    const bool overtaken = f.sent_at + reorder < latest_delivered_sent;
    if (sacked_above < kLossThreshold && !overtaken) continue;
    if (f.lost || !may_retransmit(f, now)) continue;
    mark_lost(f, snd_una + static_cast<uint32_t>(i));
    ++marked;
  }
  if (marked > 0) {
    stats.fast_retransmits += marked;
    close_undo_episode();  // a real loss: nothing to undo
    cc.on_loss(unacked(), snd_nxt);
  }
}

// A retransmission of the frame that blocks the cumulative ack can itself be
// lost. When the send window is full nothing else is in transit, so no SACK
// will report it: wait one smoothed round trip plus variance (not the
// clamped RTO), then send it again without declaring a timeout.
TimePoint Connection::Impl::head_recovery_deadline() const {
  // Not in a timeout episode: there the (backed-off) timer resends the head;
  // resent every round trip of a stale estimate instead, it went out dozens
  // of times while the acks were merely late, and every copy needs a
  // duplicate report before the episode can be undone.
  if (flight.empty() || !rtt.has_sample() || undo_open) return kNever;
  const TxFrame& head = flight.front();
  if (!head.retransmitted || head.lost) return kNever;
  // Plus the peer's delayed ack: a lone frame is acked only when that expires.
  const Duration wait =
      std::min(rtt.base_rto(), std::max(rtt.srtt() + 4 * rtt.rttvar(), 2 * rtt.srtt()) +
                                   std::max(params.delayed_ack, Duration::zero()));
  return head.sent_at + wait;
}

// F-RTO only for the first timeout of an episode, with no other repair under
// way: then every frame but the head has been sent exactly once, and an ack
// that moves past the head proves that an original got through.
bool Connection::Impl::frto_may_start() const {
  if (frto != Frto::kOff || rtt.backoff_shift() != 0 || lost_count != 0) return false;
  if (flight.empty() || flight.front().sacked) return false;
  return std::none_of(flight.begin(), flight.end(),
                      [](const TxFrame& f) { return f.retransmitted; });
}

// RFC 5682 steps 2 and 3, SACK-aware. The first ack that carries news must
// move the cumulative ack past the resent head but not to the timeout's
// snd_nxt (if it acks everything, the resent head may have caused it), report
// no holes, and new data must be available to draw another ack. The second
// must move the cumulative ack again, over frames sent only once. Anything
// else: a real timeout, go back N.
void Connection::Impl::frto_on_ack(bool advanced, bool loss_signal, bool sack_news, uint32_t ack,
                                   TimePoint now) {
  if (!advanced && !loss_signal) return;  // no news (a piggy-backed ack, a window update)
  if (frto == Frto::kFirstAck) {
    // An ack moving past the head sooner than half the smallest RTT ever
    // measured after the head was resent was sent before the resent copy
    // could arrive: the original got through (even if it acks everything).
    if (advanced && !sack_news && rtt.has_sample() &&
        (frto_resent_at == kNever || now - frto_resent_at < rtt.min_rtt() / 2)) {
      undo_episode();  // spurious: an F-RTO timeout opens its own episode
      return;
    }
    // New SACK blocks here show holes: some frames were lost, and repairing
    // them would blur what the second ack proves.
    if (advanced && !sack_news && seq_lt(ack, frto_recover) && !queue.empty() &&
        flight.size() < peer_window) {
      frto = Frto::kSecondAck;
      frto_new_frames = 2;
      return;
    }
    frto_go_back_n();
    return;
  }
  if (!advanced) {
    frto_go_back_n();
    return;
  }
  undo_episode();  // two acks advanced over never-resent frames: spurious
}

void Connection::Impl::open_undo_episode() {
  if (undo_open) return;
  undo_open = true;
  undo_head_valid = false;
  undo_timeouts = 0;
  undo_retransmitted.clear();
  undo_prev_timeout = last_timeout;
  undo_expiry = kNever;
}

void Connection::Impl::close_undo_episode() {
  if (!undo_open) return;
  undo_open = false;
  undo_retransmitted.clear();
  undo_expiry = kNever;
  cc.forget_undo();
}

// Each frame the D-SACK reports that was retransmitted in the open episode
// is struck off; when none is left, every retransmission was unnecessary.
void Connection::Impl::on_dsack(const SackBlock& b) {
  if (!undo_open || undo_retransmitted.empty()) return;
  // Walk the (bounded) list, not the block: a block from the wire may span
  // 2^31 sequence numbers. A frame resent twice loses one entry per report:
  // the first resent copy may have been needed and only the second a duplicate.
  std::sort(undo_retransmitted.begin(), undo_retransmitted.end());  // equal seqs adjacent
  const size_t before = undo_retransmitted.size();
  size_t kept = 0;
  for (size_t i = 0; i < before; ++i) {
    const uint32_t s = undo_retransmitted[i];
    const bool first_of_seq = i == 0 || s != undo_retransmitted[i - 1];     // [i-1] is unwritten
    if (first_of_seq && seq_geq(s, b.start) && seq_lt(s, b.end)) continue;  // struck
    undo_retransmitted[kept++] = s;  // compacting in place: kept <= i
  }
  undo_retransmitted.resize(kept);
  if (undo_retransmitted.size() < before && undo_retransmitted.empty()) undo_episode();
}

// A retransmission of the episode that is never reported keeps it from being
// undone; the episode closes a generous wait after everything sent before
// its latest timeout is acknowledged (process_ack arms the expiry then).
void Connection::Impl::note_episode_retransmission(uint32_t seq) {
  constexpr size_t kMaxTracked = 4096;  // beyond this, give up undoing (memory bound)
  if (undo_retransmitted.size() >= kMaxTracked) {
    close_undo_episode();
    return;
  }
  undo_retransmitted.push_back(seq);
}

// Spurious after all: the window and RTO from before the episode come back,
// and frames still marked for retransmission are presumed delivered too
// (their originals went out with the ones just reported; SACK or another
// timeout repairs any that were not).
void Connection::Impl::undo_episode() {
  stats.spurious_timeouts += undo_timeouts;
  cc.undo_timeout();
  // Eifel's response (RFC 4015): the round trip of the original is at least
  // the estimate. Without it a frame that always times out before its ack
  // (a single command frame, say) would never give a sample (Karn's rule)
  // while the undo keeps cancelling the backoff: every one would time out.
  if (undo_head_valid && undo_head_acked != kNever)
    rtt.on_spurious_timeout(undo_head_acked - undo_head_sent);
  undo_head_valid = false;
  rtt.cancel_backoff();
  last_timeout = undo_prev_timeout;
  frto = Frto::kOff;
  frto_new_frames = 0;
  for (TxFrame& f : flight) f.lost = false;
  lost_count = 0;
  lost_queue.clear();
  undo_open = false;
  undo_retransmitted.clear();
  undo_expiry = kNever;
}

// The timeout was real after all: everything sent before it and not SACKed
// goes out again oldest-first, as after a plain timeout (the head resent at
// the timeout and frames sent since are not repeated).
void Connection::Impl::frto_go_back_n() {
  frto = Frto::kOff;
  frto_new_frames = 0;
  lost_queue.clear();
  lost_count = 0;
  for (size_t i = 0; i < flight.size(); ++i) {
    TxFrame& f = flight[i];
    const bool was_lost = f.lost;
    f.lost = false;
    if (f.sacked) continue;
    if (was_lost || f.sent_at < last_timeout) mark_lost(f, snd_una + static_cast<uint32_t>(i));
  }
}

void Connection::Impl::on_timeout(TimePoint now) {
  if (unacked() == 0) {
    rtx_deadline = kNever;
    return;
  }
  ++stats.timeouts;
  // A timeout while an episode still waits for its reports joins it (undone
  // only if every retransmission of both proves needless); closing it instead
  // lost the window from before it whenever the reports were slower than the
  // next timeout (a session's start, a receiver not scheduled). Otherwise it
  // opens its own episode and may try F-RTO.
  if (now >= undo_expiry) close_undo_episode();
  const bool try_frto = !undo_open && frto_may_start();
  open_undo_episode();
  undo_recover = snd_nxt;
  undo_expiry = kNever;  // armed once everything sent so far is acknowledged
  if (undo_timeouts == 0) {
    const TxFrame& head = flight.front();
    undo_head_valid = !head.retransmitted && !head.sacked;
    undo_head_seq = snd_una;
    undo_head_sent = head.sent_at;
    undo_head_acked = kNever;
  }
  ++undo_timeouts;
  last_timeout = now;
  rtt.on_timeout();
  cc.on_timeout(unacked(), snd_nxt);
  dupacks = 0;
  rtx_deadline = now + rtt.rto();
  frto_new_frames = 0;
  if (try_frto) {
    // Resend only the head; the others stay in flight until the acks tell.
    frto = Frto::kFirstAck;
    frto_recover = snd_nxt;
    frto_resent_at = kNever;  // set when poll() sends it
    mark_lost(flight.front(), snd_una);
    return;
  }
  frto = Frto::kOff;
  // Everything not SACKed is presumed lost; it goes out again as the
  // (collapsed) window allows, oldest first.
  lost_queue.clear();
  lost_count = 0;
  for (size_t i = 0; i < flight.size(); ++i) {
    TxFrame& f = flight[i];
    f.lost = false;
    if (!f.sacked) mark_lost(f, snd_una + static_cast<uint32_t>(i));
  }
}

// -------------------------------------------------------------- receiver --

void Connection::Impl::receive_data(const FrameView& frame, TimePoint now) {
  const FrameHeader& h = frame.header;
  const uint32_t seq = h.ext.seq;
  const int32_t d = seq_diff(seq, rcv_nxt);
  const int32_t window = params.receive_window;
  if (d >= window) {
    ++stats.out_of_window;
    return;
  }
  if (d < 0 || test(seq)) {
    // Already have it: the ack that covered it was probably lost, or the
    // sender's timer fired early. Re-ack, reporting the duplicate.
    ++stats.duplicates_received;
    note_duplicate(seq);
    ack_now = true;
    return;
  }
  const FragmentResult r = reasm.add(Fragment::from_frame(frame));
  // No room for a new partial PDU: do not acknowledge, the sender retries.
  if (r == FragmentResult::kNoMemory) return;
  // Any other rejection (counted by the reassembler) still consumes the
  // sequence number, or a broken sender would retransmit it forever.
  set(seq);
  ++stats.frames_received;
  if (seq_geq(seq, rcv_high)) rcv_high = seq + 1;
  last_rcvd = seq;
  if (d > 0) {
    ack_now = true;  // out of order: tell the sender about the hole at once
  } else {
    uint32_t advanced = 0;
    while (test(rcv_nxt)) {
      clear(rcv_nxt);
      ++rcv_nxt;
      ++advanced;
    }
    if (advanced > 1 || rcv_nxt != rcv_high) ack_now = true;  // a hole was filled
  }
  sacks_dirty = true;
  ++unacked_rx;
  if (params.delayed_ack <= Duration::zero() || unacked_rx >= params.ack_every) ack_now = true;
  if (ack_deadline == kNever) ack_deadline = now + params.delayed_ack;
  while (auto pdu = reasm.pop()) {
    ++stats.pdus_received;
    stats.bytes_received += pdu->pdu_length();
    ready.push_back(std::move(*pdu));
  }
}

// Every duplicate is reported once: contiguous duplicates extend a pending
// block, any other (a second copy of a frame already in a block, too) opens
// a block of its own. A receiver that was not scheduled for a while takes
// many frames at once, retransmissions among them, and every one must be
// reported for the sender to undo a spurious timeout. Beyond 8 pending
// blocks a duplicate goes unreported (the sender then undoes nothing, the
// safe side).
void Connection::Impl::note_duplicate(uint32_t seq) {
  if (!params.sack) return;
  for (size_t i = 0; i < dsacks.count; ++i) {
    SackBlock& b = dsacks.blocks[i];
    if (seq == b.end) {
      ++b.end;
      return;
    }
    if (seq + 1 == b.start) {
      --b.start;
      return;
    }
  }
  dsacks.push({seq, seq + 1});
}

void Connection::Impl::compute_sacks() {
  if (!sacks_dirty) return;
  sacks_dirty = false;
  sacks.count = 0;
  if (!params.sack || !seq_lt(rcv_nxt, rcv_high)) return;
  // First the block holding the most recent arrival (RFC 2018): it tells the
  // sender promptly what just got through, which keeps its RTT samples fresh.
  SackBlock recent{0, 0};
  if (seq_gt(last_rcvd, rcv_nxt) && seq_lt(last_rcvd, rcv_high) && test(last_rcvd)) {
    uint32_t lo = last_rcvd, hi = last_rcvd + 1;
    while (seq_gt(lo, rcv_nxt) && test(lo - 1)) --lo;
    while (seq_lt(hi, rcv_high) && test(hi)) ++hi;
    recent = {lo, hi};
    sacks.push(recent);
  }
  // Then the lowest blocks: they bound the holes the sender must fill first.
  uint32_t s = rcv_nxt;
  while (seq_lt(s, rcv_high) && sacks.count < kMaxSackBlocks) {
    while (seq_lt(s, rcv_high) && !test(s)) ++s;
    if (!seq_lt(s, rcv_high)) break;
    const uint32_t start = s;
    while (seq_lt(s, rcv_high) && test(s)) ++s;
    if (!(SackBlock{start, s} == recent)) sacks.push({start, s});
  }
}

// -------------------------------------------------------------- emission --

FrameHeader Connection::Impl::base_header(Opcode op) const {
  FrameHeader h;
  h.dst = ep.peer;
  h.src = ep.local;
  h.common.opcode = op;
  h.common.tag = 0;
  h.common.fragment = 0;
  h.common.last_fragment = true;
  h.ext.flags = params.checksum ? kFlagChecksum : 0;
  h.ext.session_id = ep.session_id;
  h.ext.epoch = ep.epoch;
  h.ext.path_id = ep.path_id;
  h.ext.path_gen = ep.path_gen;
  h.ext.seq = snd_nxt;
  return h;
}

Connection::Impl::AckFill Connection::Impl::fill_ack(FrameHeader& h, size_t sack_room) {
  h.ext.flags |= kFlagAck;
  h.ext.ack = rcv_nxt;
  h.ext.window = advertised_window;
  compute_sacks();
  size_t room = sack_room / kSackBlockSize;
  AckFill fill;
  h.sacks.count = 0;
  // D-SACK blocks first: one above the ack (its copy was SACKed) only in the
  // first place (RFC 2883), then those at or below the ack, as many as fit.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < dsacks.count && room > 0; ++i) {
      const bool below = seq_leq(dsacks.blocks[i].end, rcv_nxt);
      if (pass == 0 ? below || h.sacks.count > 0 : !below) continue;
      h.sacks.push(dsacks.blocks[i]);
      --room;
      fill.dsack_mask |= static_cast<uint8_t>(1u << i);
    }
  }
  const size_t fit = std::min<size_t>(sacks.count, room);
  for (size_t i = 0; i < fit; ++i) h.sacks.push(sacks.blocks[i]);
  const uint8_t all_dsacks = static_cast<uint8_t>((1u << dsacks.count) - 1);
  fill.all_sacks = fit == sacks.count && fill.dsack_mask == all_dsacks;
  return fill;
}

bool Connection::Impl::emit(FrameHeader& h, std::span<const uint8_t> payload, AckFill fill,
                            FrameSink& sink, const std::shared_ptr<const void>* owner) {
  const size_t size = encoded_size(h, payload.size());
  const std::span<uint8_t> buf = sink.acquire(size);
  if (buf.size() < size) return false;  // no buffer now: retry at the next poll
  if (owner != nullptr && payload.size() >= kGatherMinPayload) {
    // Headers here, the payload by reference (large enough to need no padding).
    const size_t head = encode_frame_header(buf, h, payload);
    if (head == 0) return false;  // as below
    sink.commit_gather(buf.first(size), head, payload, *owner);
  } else {
    const size_t n = encode_frame(buf, h, payload);
    if (n == 0) return false;  // cannot happen with the fields we set; nothing was committed
    sink.commit(n);
  }
  if (fill.dsack_mask != 0) {  // reported: drop them from the pending list
    SackList left;
    for (size_t i = 0; i < dsacks.count; ++i)
      if ((fill.dsack_mask & (1u << i)) == 0) left.push(dsacks.blocks[i]);
    dsacks = left;
  }
  // This frame told the peer everything it needs to know about our receive side.
  if (fill.all_sacks) ack_sent();
  return true;
}

bool Connection::Impl::transmit(const TxFrame& f, uint32_t seq, bool retransmit, FrameSink& sink) {
  FrameHeader h = base_header(f.pdu->opcode);
  h.common.tag = f.pdu->tag;
  h.common.fragment = f.fragment;
  h.common.last_fragment = f.last;
  h.ext.seq = seq;
  h.ext.pdu_length = static_cast<uint32_t>(f.pdu->size());
  h.ext.pdu_offset = f.offset;
  if (retransmit) h.ext.flags |= kFlagRetransmit;
  // SACK blocks ride along only in the room the payload leaves in the MTU.
  const size_t used = kHeaderSize + f.length;
  const AckFill fill = fill_ack(h, params.mtu > used ? params.mtu - used : 0);
  const OutPdu& p = *f.pdu;
  if (f.offset >= p.head.size()) {
    const std::span<const uint8_t> payload(p.bytes.data() + (f.offset - p.head.size()), f.length);
    return emit(h, payload, fill, sink, &p.bytes.owner());
  }
  // The fragment that holds (part of) a separate head: both pieces copied
  // into one frame (one frame per PDU; the others go by reference).
  const size_t from_head = std::min<size_t>(p.head.size() - f.offset, f.length);
  straddle.assign(p.head.begin() + f.offset, p.head.begin() + f.offset + from_head);
  straddle.insert(straddle.end(), p.bytes.begin(),
                  p.bytes.begin() + static_cast<ptrdiff_t>(f.length - from_head));
  return emit(h, straddle, fill, sink, nullptr);
}

void Connection::Impl::poll(TimePoint now, FrameSink& sink) {
  if (now > last_now) last_now = now;
  if (now >= rtx_deadline) {
    on_timeout(now);
  } else if (now >= head_recovery_deadline()) {
    mark_lost(flight.front(), snd_una);
    ++stats.fast_retransmits;
  }
  if (!send_retransmissions(now, sink)) return;
  // An ack owed with D-SACK or SACK blocks goes before new data: full-MTU
  // data frames have no room for blocks, and when the port fills this poll
  // may end before the standalone ack below (the peer's undo and loss
  // recovery wait on them).
  if (ack_owed(now) && (dsacks.count > 0 || has_sack_blocks()) && !send_ack(sink)) return;
  if (!send_new_frames(now, sink)) return;
  if (!probe_zero_window(now, sink)) return;
  // A standalone ack if one is owed and nothing above carried it.
  if (ack_owed(now)) send_ack(sink);
}

bool Connection::Impl::retransmit_frame(size_t idx, TimePoint now, FrameSink& sink) {
  TxFrame& f = flight[idx];
  if (!transmit(f, snd_una + static_cast<uint32_t>(idx), true, sink)) return false;
  f.lost = false;
  --lost_count;
  f.retransmitted = true;
  f.sent_at = now;
  if (idx == 0 && frto == Frto::kFirstAck && frto_resent_at == kNever) frto_resent_at = now;
  if (undo_open) note_episode_retransmission(snd_una + static_cast<uint32_t>(idx));
  ++stats.frames_retransmitted;
  if (rtx_deadline == kNever) rtx_deadline = now + rtt.rto();
  return true;
}

// First the frame blocking the cumulative ack (it may always go), then the
// other lost frames oldest-first within the congestion window.
bool Connection::Impl::send_retransmissions(TimePoint now, FrameSink& sink) {
  if (!flight.empty() && flight.front().lost && !retransmit_frame(0, now, sink)) return false;
  while (!lost_queue.empty()) {
    const int32_t idx = seq_diff(lost_queue.front(), snd_una);
    if (idx < 0 || static_cast<size_t>(idx) >= flight.size() ||
        !flight[static_cast<size_t>(idx)].lost) {
      lost_queue.pop_front();  // acknowledged or already resent meanwhile
      continue;
    }
    if (pipe() >= cc.cwnd()) break;
    if (!retransmit_frame(static_cast<size_t>(idx), now, sink)) return false;
    lost_queue.pop_front();
  }
  return true;
}

// New frames within min(cwnd, peer window).
bool Connection::Impl::send_new_frames(TimePoint now, FrameSink& sink) {
  while (can_send_new()) {
    OutPdu& p = *queue.front();
    TxFrame f;
    f.pdu = queue.front();
    f.offset = p.next_offset;
    f.length = static_cast<uint32_t>(std::min(frag_payload, p.size() - p.next_offset));
    f.fragment = p.next_fragment;
    f.last = p.next_offset + f.length == p.size();
    f.sent_at = now;
    // F-RTO's probe frames may exceed the collapsed cwnd (RFC 5682 step 2b).
    const bool frto_probe = pipe() >= cc.cwnd();
    if (!transmit(f, snd_nxt, false, sink)) return false;
    if (frto_probe) --frto_new_frames;
    p.next_offset += f.length;
    ++p.next_fragment;
    ++p.frames_unacked;
    flight.push_back(std::move(f));
    ++snd_nxt;
    ++stats.frames_sent;
    stats.bytes_sent += flight.back().length;
    if (flight.back().last) {
      p.all_sent = true;
      ++stats.pdus_sent;
      queue.pop_front();
    }
    const uint32_t wnd = CongestionControl::send_window(cc.cwnd(), peer_window);
    const uint32_t in_flight = pipe();
    if (in_flight > stats.max_in_flight) {
      stats.max_in_flight = in_flight;
      stats.max_allowed_window = wnd;
    }
    if ((in_flight > wnd && !frto_probe) || flight.size() > peer_window)
      stats.window_violated = true;
    if (rtx_deadline == kNever) rtx_deadline = now + rtt.rto();
  }
  return true;
}

// With nothing in flight and the peer's window shut no ack will come to open
// it, so ask for one (ack-now) after an RTO, backing off.
bool Connection::Impl::probe_zero_window(TimePoint now, FrameSink& sink) {
  if (queue.empty() || !flight.empty() || peer_window != 0) {
    probe_deadline = kNever;
    probes = 0;
    return true;
  }
  if (probe_deadline == kNever) {
    probe_deadline = now + rtt.rto();
    return true;
  }
  if (now < probe_deadline) return true;
  FrameHeader h = base_header(Opcode::kAck);
  h.ext.flags |= kFlagAckNow;
  const AckFill fill = fill_ack(h, kMaxSackBlocks * kSackBlockSize);
  if (!emit(h, {}, fill, sink)) return false;
  ++stats.acks_sent;
  ++probes;
  Duration wait = rtt.rto();
  for (uint32_t i = 0; i < probes && wait < params.rto.max; ++i) wait *= 2;
  probe_deadline = now + std::min(wait, params.rto.max);
  return true;
}

bool Connection::Impl::send_ack(FrameSink& sink) {
  FrameHeader h = base_header(Opcode::kAck);
  // D-SACK blocks go first; the highest regular blocks that do not fit
  // beside them wait for the next ack.
  AckFill fill = fill_ack(h, kMaxSackBlocks * kSackBlockSize);
  fill.all_sacks = true;
  if (!emit(h, {}, fill, sink)) return false;
  ++stats.acks_sent;
  return true;
}

TimePoint Connection::Impl::next_deadline() const {
  if (ack_now || (unacked_rx > 0 && unacked_rx >= params.ack_every)) return last_now;
  if (can_retransmit() || can_send_new()) return last_now;
  if (!queue.empty() && flight.empty() && peer_window == 0 && probe_deadline == kNever)
    return last_now;  // poll arms the probe timer
  TimePoint t = std::min(rtx_deadline, head_recovery_deadline());
  if (unacked_rx > 0) t = std::min(t, ack_deadline);
  return std::min(t, probe_deadline);
}

// ------------------------------------------------------------ Connection --

Connection::Connection(const TransportParams& params, const Endpoint& endpoint)
    : impl_(std::make_unique<Impl>(params, endpoint)) {}

Connection::~Connection() = default;

bool Connection::send_pdu(Opcode opcode, uint16_t tag, std::vector<uint8_t> pdu) {
  return impl_->send_pdu(opcode, tag, share_bytes(std::move(pdu)));
}

bool Connection::send_pdu_shared(Opcode opcode, uint16_t tag, SharedBytes pdu) {
  return impl_->send_pdu(opcode, tag, std::move(pdu));
}

bool Connection::send_pdu_parts(Opcode opcode, uint16_t tag, std::span<const uint8_t> head,
                                SharedBytes body) {
  return impl_->send_pdu(opcode, tag, std::move(body), head);
}

bool Connection::unshare(const void* owner) {
  Impl& s = *impl_;
  bool found = false;
  auto copy = [&](OutPdu& p) {
    if (p.bytes.owner().get() != owner) return;  // also a PDU copied already
    p.bytes = share_bytes(std::vector<uint8_t>(p.bytes.begin(), p.bytes.end()));
    found = true;
  };
  for (const TxFrame& f : s.flight) copy(*f.pdu);
  for (const auto& p : s.queue) copy(*p);
  return found;
}

bool Connection::can_send(Opcode opcode, uint16_t tag, size_t size) const {
  return impl_->can_send(opcode, tag, size);
}

void Connection::on_frame(const FrameView& frame, TimePoint now) {
  Impl& s = *impl_;
  if (now > s.last_now) s.last_now = now;
  const FrameHeader& h = frame.header;
  if (h.ext.flags & kFlagAck) s.process_ack(frame, now);
  if (is_sequenced(h.common.opcode)) s.receive_data(frame, now);
  if (h.ext.flags & kFlagAckNow) s.ack_now = true;
}

std::optional<ReceivedPdu> Connection::pop_pdu() {
  if (impl_->ready.empty()) return std::nullopt;
  ReceivedPdu p = std::move(impl_->ready.front());
  impl_->ready.pop_front();
  return p;
}

void Connection::place_reply(uint16_t tag, std::span<uint8_t> data_in) {
  impl_->reasm.place_reply(tag, data_in);
}

void Connection::forget_reply_placement(uint16_t tag) {
  impl_->reasm.forget_reply(tag);
}

void Connection::forget_reply_placements() {
  impl_->reasm.forget_replies();
}

void Connection::poll(TimePoint now, FrameSink& sink) {
  impl_->poll(now, sink);
}

TimePoint Connection::next_deadline() const {
  return impl_->next_deadline();
}

void Connection::set_advertised_window(uint16_t frames) {
  impl_->advertised_window = std::clamp<uint16_t>(frames, 1, impl_->params.receive_window);
}

uint16_t Connection::advertised_window() const {
  return impl_->advertised_window;
}

FrameHeader Connection::control_header(Opcode opcode, uint8_t extra_flags) const {
  FrameHeader h = impl_->base_header(opcode);
  h.ext.flags |= kFlagAck | extra_flags;
  h.ext.ack = impl_->rcv_nxt;
  h.ext.window = impl_->advertised_window;
  return h;
}

FlowHints Connection::flow_hints() const {
  const Impl& s = *impl_;
  FlowHints h;
  h.rx_missing = s.reasm.bytes_missing();
  h.rx_window_bytes = size_t{s.params.receive_window} * (s.params.mtu + 14);
  h.tx_waiting = !s.queue.empty();
  return h;
}

std::vector<Connection::UnackedPdu> Connection::release_unacked() {
  Impl& s = *impl_;
  std::vector<UnackedPdu> out;
  auto take = [&](const std::shared_ptr<OutPdu>& p) {
    // Every fragment sent and acked or SACKed: the peer has the whole PDU.
    if (p->all_sent && p->frames_unacked == 0) return;
    // A copy: others may share the bytes (this runs only when a path or
    // session gives up its PDUs).
    std::vector<uint8_t> bytes(p->head);
    bytes.insert(bytes.end(), p->bytes.begin(), p->bytes.end());
    out.push_back(UnackedPdu{p->opcode, p->tag, std::move(bytes)});
  };
  // The flight holds each PDU's frames contiguously, oldest PDU first; the
  // queue continues with the one being fragmented (possibly the last in flight).
  const OutPdu* last = nullptr;
  for (const TxFrame& f : s.flight) {
    if (f.pdu.get() == last) continue;
    last = f.pdu.get();
    take(f.pdu);
  }
  for (const auto& p : s.queue) {
    if (p.get() == last) continue;
    take(p);
  }
  s.flight.clear();
  s.queue.clear();
  s.lost_queue.clear();
  s.sacked_count = 0;
  s.lost_count = 0;
  s.busy_keys.reset();
  s.queue_bytes = 0;
  s.snd_una = s.snd_nxt;
  s.high_sacked = s.high_acked = s.snd_nxt;
  s.rtx_deadline = kNever;
  s.probe_deadline = kNever;
  s.frto = Impl::Frto::kOff;
  s.frto_new_frames = 0;
  s.undo_open = false;
  s.undo_retransmitted.clear();
  s.undo_expiry = kNever;
  s.undo_head_valid = false;
  return out;
}

bool Connection::idle() const {
  const Impl& s = *impl_;
  return s.queue.empty() && s.flight.empty() && s.unacked_rx == 0 && !s.ack_now;
}

size_t Connection::send_queue_bytes() const {
  return impl_->queue_bytes;
}

uint32_t Connection::in_flight() const {
  return impl_->unacked();
}

const TransportStats& Connection::stats() const {
  const Impl& s = *impl_;
  TransportStats& st = s.stats;
  st.srtt = s.rtt.srtt();
  st.rttvar = s.rtt.rttvar();
  st.rto = s.rtt.rto();
  st.base_rto = s.rtt.base_rto();
  st.min_rtt = s.rtt.min_rtt();
  st.cwnd = s.cc.cwnd();
  st.ssthresh = s.cc.ssthresh();
  st.peer_window = s.peer_window;
  return st;
}

const Endpoint& Connection::endpoint() const {
  return impl_->ep;
}

const TransportParams& Connection::params() const {
  return impl_->params;
}

}  // namespace hyperscsi::proto

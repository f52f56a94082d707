// The initiator's command table: submissions admitted to tags and cmd_sn
// (up to max_outstanding in flight, the rest waiting in FIFO order), their
// PDUs built and sent in cmd_sn order, replies matched by tag and cmd_sn
// (UNIT ATTENTION, BUSY and TASK SET FULL repeated), dead time and failing
// what is left.
//
// A submit_into() command's reply data lands in the caller's buffer as the
// reply is reassembled (single-path sessions: the tag's destination is
// registered with the session when the command is sent, and forgotten when
// the command leaves the table by any path, see release() and fail_all(),
// and when the session is lost, recovery.cpp). Multipath sessions copy the
// data-in from the reassembled reply instead.
//
// A command with borrowed data-out (ScsiCommand::data_out_borrowed) is
// framed from the caller's bytes each time it is sent (a header copied in
// front: InitiatorSession::send_command_parts); its completion is held in
// lingering_ until the connection and port have let go of those bytes
// (finish(), run_released()), as the header promises the caller.
//
// Thread-safety: submit() is called from any thread (it queues under
// task_mutex_ and wakes the loop); everything else runs on the loop thread.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "hyperscsi/proto/bytes.h"

#include "initiator_impl.h"

namespace hyperscsi::initiator {

namespace {

// Data-out bytes of a command (borrowed, or data_out less its headroom).
size_t data_out_size(const ScsiCommand& c) {
  if (!c.data_out_borrowed.empty()) return c.data_out_borrowed.size();
  return c.data_out.size() - std::min<size_t>(c.data_out_headroom, c.data_out.size());
}

// Conditions every SCSI initiator retries: a UNIT ATTENTION (reported once
// per nexus, e.g. after the target restarted) and BUSY / TASK SET FULL.
constexpr uint32_t kMaxRetries = 8;

CommandResult failed(CompletionError e, std::string message) {
  CommandResult r;
  r.error = e;
  r.message = std::move(message);
  return r;
}

}  // namespace

void Initiator::Impl::submit(ScsiCommand command, Completion done,
                             std::span<uint8_t> data_in_buffer) {
  auto pending = std::make_unique<Pending>();
  pending->cmd = std::move(command);
  pending->done = std::move(done);
  pending->data_in_buffer = data_in_buffer;
  pending->deadline = SteadyClock::now() + options_.dead_time;
  if (!pending->cmd.data_out_borrowed.empty()) {
    pending->borrow =
        std::shared_ptr<BorrowToken>(new BorrowToken(reactor_.waker()), [](BorrowToken* t) {
          if (t->lingering.load() && t->waker) t->waker->wake();
          delete t;
        });
  }
  {
    std::lock_guard lock(task_mutex_);
    submissions_.push_back(std::move(pending));
  }
  // From a poller the loop runs these in this very turn: no wake-up needed.
  if (std::this_thread::get_id() == loop_id_ && polling_) return;
  reactor_.wake();
}

std::optional<proto::ReceivedPdu> Initiator::Impl::next_reply() {
  if (paths_) return paths_->transport().pop_pdu();
  return session_->pop_reply();
}

// The in-flight command a reply with `tag` and `cmd_sn` answers, or end().
Initiator::Impl::InflightMap::iterator Initiator::Impl::match(uint16_t tag, uint32_t cmd_sn) {
  if (tag >= by_tag_.size() || by_tag_[tag] == 0) return inflight_.end();
  auto it = inflight_.find(by_tag_[tag]);
  if (it == inflight_.end() || static_cast<uint32_t>(it->second->seq) != cmd_sn)
    return inflight_.end();
  return it;
}

void Initiator::Impl::drain_replies() {
  run_released();
  if (!session_) return;
  while (auto pdu = next_reply()) {
    if (pdu->data_placed) {
      drain_placed(*pdu);
      continue;
    }
    auto decoded = proto::decode_reply(pdu->bytes);
    if (!decoded) {
      ++stats_.unmatched_replies;
      continue;
    }
    auto it = match(pdu->tag, decoded->header.cmd_sn);
    if (it == inflight_.end()) {
      ++stats_.unmatched_replies;  // a late reply of an expired command
      continue;
    }
    std::unique_ptr<Pending> p = std::move(it->second);
    release(it, p->tag);
    complete(std::move(p), decoded->header, decoded->data_in, false);
  }
}

// A reply whose data the reassembly placed in the command's buffer already
// (its first placed_length bytes: sense, then data-in). The header is
// checked as decode_reply would: a reply whose lengths disagree with what
// was placed fails the command with a clear error.
void Initiator::Impl::drain_placed(const proto::ReceivedPdu& pdu) {
  if (pdu.bytes.size() < 4) {
    ++stats_.unmatched_replies;
    return;
  }
  auto it = match(pdu.tag, proto::bytes::load_be32(pdu.bytes.data()));
  if (it == inflight_.end() || it->second->data_in_buffer.size() < pdu.placed_length) {
    ++stats_.unmatched_replies;  // a late reply: its command already completed
    return;
  }
  std::unique_ptr<Pending> p = std::move(it->second);
  release(it, p->tag);
  const std::span<uint8_t> dst = p->data_in_buffer;
  auto decoded = proto::decode_placed_reply(pdu.bytes, dst.first(pdu.placed_length));
  if (!decoded) {
    finish_failed(std::move(p), CompletionError::kTargetFailure,
                  "malformed reply from the target: its header does not describe the " +
                      std::to_string(pdu.placed_length) + " bytes that followed it (" +
                      std::string(proto::to_string(decoded.error())) + ")");
    return;
  }
  complete(std::move(p), decoded->header, decoded->data_in, true);
}

// Completes (or retries) the command `p` answered by a reply with header
// `h` and data-in `data_in`; `placed`: data_in already lies in p's buffer
// (behind the sense, if any).
void Initiator::Impl::complete(std::unique_ptr<Pending> p, const proto::ReplyHeader& h,
                               std::span<const uint8_t> data_in, bool placed) {
  if (p->sent) wake_policy_.on_reply(SteadyClock::now() - p->sent_at);
  if (h.response == proto::CommandResponse::kCompleted && p->retries < kMaxRetries) {
    const bool unit_attention = h.status == 0x02 && scsi::parse_sense(h.sense).valid &&
                                scsi::parse_sense(h.sense).key == 0x06;
    const bool busy = h.status == 0x08 || h.status == 0x28;
    if (unit_attention) note_unit_attention(p->cmd.lun, h.sense);
    if (unit_attention || busy) {
      ++p->retries;
      ++stats_.retried;
      p->sent = false;
      p->not_before = busy ? SteadyClock::now() +
                                 std::chrono::milliseconds(5 << std::min<uint32_t>(p->retries, 6))
                           : TimePoint{};
      waiting_.push_front(std::move(p));
      return;
    }
  }
  CommandResult r;
  if (h.response != proto::CommandResponse::kCompleted) {
    r.error = CompletionError::kTargetFailure;
    r.message = h.response == proto::CommandResponse::kRejected
                    ? "the target rejected the command PDU as malformed"
                    : "the target could not execute the command";
  }
  r.status = h.status;
  r.sense = h.sense;
  r.residual = h.residual;
  if (p->probe) {
    r.data_in.assign(data_in.begin(), data_in.end());
    finish(std::move(p), std::move(r));
    return;
  }
  ++stats_.completed;
  if (!r.good()) note_failure(p->cmd, r);
  if (std::span<uint8_t> dst = p->data_in_buffer; !dst.empty()) {
    // Into the caller's buffer (one copy, or none when the reassembly
    // placed it there); what did not arrive reads as zeros. A placed reply
    // with sense has its data behind the sense (r.sense holds a copy):
    // moved to the front.
    const size_t n = std::min(dst.size(), data_in.size());
    if (!placed)
      std::copy_n(data_in.begin(), n, dst.begin());
    else if (data_in.data() != dst.data())
      std::memmove(dst.data(), data_in.data(), n);
    std::fill(dst.begin() + static_cast<ptrdiff_t>(n), dst.end(), uint8_t{0});
    stats_.bytes_in += n;
  } else {
    r.data_in.assign(data_in.begin(), data_in.end());
    stats_.bytes_in += r.data_in.size();
  }
  stats_.bytes_out +=
      p->pdu ? p->pdu.size() - command_headroom(p->cmd.cdb.size()) : data_out_size(p->cmd);
  finish(std::move(p), std::move(r));
  // A poller's client (the FUSE export) answers with its next request
  // soon: keep polling for it as if a command were still in flight.
  if (!pollers_.empty()) poll_spin_until_ = SteadyClock::now() + options_.busy_poll;
}

// The command leaves the table (answered, retried under a new tag, expired):
// its tag is free and its buffer no longer a destination of the reassembly.
void Initiator::Impl::release(std::map<uint64_t, std::unique_ptr<Pending>>::iterator it,
                              uint16_t tag) {
  if (session_) session_->forget_reply_placement(tag);
  by_tag_[tag] = 0;
  if (tag != kProbeTag) free_tags_.push_back(tag);
  inflight_.erase(it);
}

void Initiator::Impl::admit(TimePoint now) {
  while (!waiting_.empty() && !free_tags_.empty() && waiting_.front()->not_before <= now) {
    std::unique_ptr<Pending> p = std::move(waiting_.front());
    waiting_.pop_front();
    const auto& c = p->cmd;
    if (!c.data_out_borrowed.empty() && !c.data_out.empty()) {
      finish_failed(std::move(p), CompletionError::kInvalid,
                    "data_out and data_out_borrowed are both set");
      continue;
    }
    if (!session_) {
      finish_failed(std::move(p), CompletionError::kShutdown,
                    "not connected: connect() to a target first");
      continue;
    }
    if (auto f = fenced_.find(c.lun); f != fenced_.end()) {
      finish_failed(std::move(p), CompletionError::kIdentityMismatch, f->second);
      continue;
    }
    if (c.cdb.empty() || c.cdb.size() > proto::kMaxCdbLength) {
      finish_failed(std::move(p), CompletionError::kInvalid,
                    "CDB of " + std::to_string(c.cdb.size()) + " bytes (1..32 allowed)");
      continue;
    }
    const uint32_t mt = session_ && connected_ ? session_->negotiated().max_transfer : 0;
    const size_t out_size = proto::kCommandHeaderFixedSize + c.cdb.size() + data_out_size(c);
    const size_t in_size =
        proto::kReplyHeaderFixedSize + proto::kMaxSenseLength + size_t{c.data_in_length};
    if (mt != 0 && (out_size > mt || in_size > mt)) {
      finish_failed(std::move(p), CompletionError::kInvalid,
                    "transfer exceeds the negotiated maximum of " + std::to_string(mt) +
                        " bytes per command");
      continue;
    }
    p->seq = next_seq_++;
    p->tag = free_tags_.back();
    free_tags_.pop_back();
    by_tag_[p->tag] = p->seq;
    inflight_.emplace(p->seq, std::move(p));
  }
}

proto::CommandHeader Initiator::Impl::command_header(const Pending& p,
                                                     size_t data_out_length) const {
  proto::CommandHeader h;
  h.cmd_sn = static_cast<uint32_t>(p.seq);
  h.reply_ack_sn = static_cast<uint32_t>(inflight_.begin()->first);
  h.lun = p.cmd.lun;
  if (p.cmd.data_in_length > 0) h.flags |= proto::kCommandFlagDataIn;
  if (data_out_length > 0) h.flags |= proto::kCommandFlagDataOut;
  h.task_attribute = p.cmd.task_attribute;
  h.expected_data_in = p.cmd.data_in_length;
  h.data_out_length = static_cast<uint32_t>(data_out_length);
  h.cdb_length = static_cast<uint8_t>(p.cmd.cdb.size());
  std::copy(p.cmd.cdb.begin(), p.cmd.cdb.end(), h.cdb.begin());
  return h;
}

// Hands the command's PDU to the session. A command whose data_out has
// room for the header is built in that buffer once and kept (shared with
// the connection); a later send (after a re-login or a retry) copies it
// under a header with the current reply_ack_sn (the target's command order
// starts from it after a restart). Asks first whether the connection takes
// the PDU, so that a refusal costs no copy.
bool Initiator::Impl::send_command(Pending& p) {
  const size_t room = command_headroom(p.cmd.cdb.size());
  const size_t data = p.pdu ? p.pdu.size() - room : data_out_size(p.cmd);
  const proto::Connection* conn = session_->connection();
  if (conn == nullptr || !conn->can_send(proto::Opcode::kCommandRequest, p.tag, room + data))
    return false;
  if (p.borrow) {
    // Framed from the caller's bytes, under a fresh header each time.
    std::vector<uint8_t> header;
    header.reserve(room);
    proto::encode(command_header(p, data), header);
    if (!session_->send_command_parts(p.tag, header,
                                      proto::SharedBytes(p.borrow, p.cmd.data_out_borrowed)))
      return false;
  } else if (!p.pdu && p.cmd.data_out_headroom == room && p.cmd.data_out.size() >= room) {
    std::vector<uint8_t> header;
    proto::encode(command_header(p, data), header);
    std::copy(header.begin(), header.end(), p.cmd.data_out.begin());
    p.pdu = proto::share_bytes(std::move(p.cmd.data_out));
    p.cmd.data_out.clear();
    if (!session_->send_command_shared(p.tag, p.pdu)) return false;
  } else if (!session_->send_command(p.tag, build_pdu(p))) {
    return false;
  }
  // A full-size good reply is reassembled straight into the caller's buffer.
  if (!p.data_in_buffer.empty() && p.data_in_buffer.size() == p.cmd.data_in_length)
    session_->place_reply(p.tag, p.data_in_buffer);
  return true;
}

// The command's PDU in a new buffer: the header, then its data copied from
// the kept PDU or from data_out (less its headroom).
std::vector<uint8_t> Initiator::Impl::build_pdu(const Pending& p) const {
  const size_t room = command_headroom(p.cmd.cdb.size());
  const size_t data = p.pdu ? p.pdu.size() - room : data_out_size(p.cmd);
  std::vector<uint8_t> pdu;
  pdu.reserve(room + data);
  proto::encode(command_header(p, data), pdu);
  if (p.pdu)
    pdu.insert(pdu.end(), p.pdu.begin() + static_cast<ptrdiff_t>(room), p.pdu.end());
  else if (!p.cmd.data_out_borrowed.empty())
    pdu.insert(pdu.end(), p.cmd.data_out_borrowed.begin(), p.cmd.data_out_borrowed.end());
  else
    pdu.insert(pdu.end(), p.cmd.data_out.end() - static_cast<ptrdiff_t>(data),
               p.cmd.data_out.end());
  return pdu;
}

// Sends, in cmd_sn order, what the current Connection has not got yet.
// Stops at the first refusal so the order holds.
void Initiator::Impl::send_unsent() {
  if (!session_ || !session_->established()) return;
  const TimePoint now = SteadyClock::now();
  for (auto& [seq, p] : inflight_) {
    if (!verify_queue_.empty() && !p->probe) continue;  // the identity check goes first
    if (p->sent) continue;
    // A multipath session's PathSet takes its own copy (it may resend the
    // PDU whole on another path).
    if (paths_) {
      if (!paths_->transport().send_pdu(proto::Opcode::kCommandRequest, p->tag, build_pdu(*p)))
        break;
    } else if (!send_command(*p)) {
      break;
    }
    p->sent = true;
    p->sent_at = now;
  }
}

void Initiator::Impl::expire(TimePoint now) {
  const auto msg = [this] {
    return "no reply from target '" + target_.name + "' within " +
           seconds_text(options_.dead_time) + " s (session " +
           std::string(session_ ? proto::to_string(session_->state()) : "none") +
           (session_ && session_->failure().error != proto::SessionError::kNone
                ? ": " + session_->failure().describe()
                : std::string()) +
           ")";
  };
  while (!inflight_.empty() && inflight_.begin()->second->deadline <= now) {
    auto it = inflight_.begin();
    std::unique_ptr<Pending> p = std::move(it->second);
    release(it, p->tag);
    finish_failed(std::move(p), CompletionError::kDeadTime, msg());
  }
  while (!waiting_.empty() && waiting_.front()->deadline <= now) {
    std::unique_ptr<Pending> p = std::move(waiting_.front());
    waiting_.pop_front();
    finish_failed(std::move(p), CompletionError::kDeadTime, msg());
  }
}

void Initiator::Impl::finish_failed(std::unique_ptr<Pending> p, CompletionError e,
                                    std::string message) {
  CommandResult r = failed(e, std::move(message));
  if (!p->probe) note_failure(p->cmd, r);
  // Failed without the target's reply (dead time, fencing...) while the
  // connection may still hold borrowed data unacknowledged, e.g. on a dead
  // link: it resends from a copy from now on, so the completion runs on
  // time, not when the session is declared dead, and the caller's bytes are
  // free once the port has sent the frames it holds. (After a reply the
  // target has the data: the acks follow, no copy.)
  if (p->borrow && session_ && session_->connection())
    session_->connection()->unshare(p->borrow.get());
  finish(std::move(p), std::move(r));
}

void Initiator::Impl::finish(std::unique_ptr<Pending> p, CommandResult r) {
  if (!p->done) return;
  if (p->borrow) {
    // Lingering first, then our reference dropped: a holder that lets go
    // after the expired() check below sees the flag and wakes the loop.
    p->borrow->lingering.store(true);
    std::weak_ptr<BorrowToken> w = p->borrow;
    p->borrow.reset();
    if (!w.expired()) {
      lingering_.push_back(Lingering{std::move(w), std::move(p->done), std::move(r)});
      return;
    }
    // The holder's reads happen before its release: ordered before ours.
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  p->done(std::move(r));
}

void Initiator::Impl::run_released(bool all) {
  if (lingering_.empty()) return;
  std::vector<Lingering> ready;
  std::erase_if(lingering_, [&](Lingering& l) {
    if (!all && !l.borrow.expired()) return false;
    ready.push_back(std::move(l));
    return true;
  });
  std::atomic_thread_fence(std::memory_order_acquire);  // as in finish()
  for (auto& l : ready) l.done(std::move(l.result));
}

void Initiator::Impl::fail_all(CompletionError e, const std::string& message) {
  if (session_) session_->forget_reply_placements();
  std::deque<std::unique_ptr<Pending>> all;
  for (auto& [seq, p] : inflight_) all.push_back(std::move(p));
  inflight_.clear();
  free_tags_.clear();
  for (uint32_t t = options_.max_outstanding; t-- > 0;)
    free_tags_.push_back(static_cast<uint16_t>(t));
  std::fill(by_tag_.begin(), by_tag_.end(), 0);
  for (auto& p : waiting_) all.push_back(std::move(p));
  waiting_.clear();
  {
    std::lock_guard lock(task_mutex_);
    for (auto& p : submissions_) all.push_back(std::move(p));
    submissions_.clear();
  }
  for (auto& p : all) finish_failed(std::move(p), e, message);
  // The loop has ended (stop()): nothing sends the held commands' data any
  // more, so their completions run now.
  if (!thread_.joinable()) run_released(true);
}

}  // namespace hyperscsi::initiator

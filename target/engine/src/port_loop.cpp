#include "port_loop.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/scsi/opcodes.h"
#include "hyperscsi/scsi/sense.h"
#include "reply_builder.h"

namespace hyperscsi::engine {

using proto::Clock;
using proto::TimePoint;

namespace {
constexpr size_t kMaxRxRoundsPerWake = 8;  // bounds one iteration; the rest waits a turn
// With EngineConfig::read_thread, a session with at least this much reply
// data queued (unsent or unacked) keeps this loop sending while a new read's
// data is copied elsewhere (scsi::CommandRequest::sender_busy): a 64 KiB
// read's worth.
constexpr size_t kSenderBusyBytes = 64u * 1024u;
// Upper bound on one epoll wait: loops re-check their flags at least this often.
constexpr int kMaxWaitMs = 100;
}  // namespace

void Mailbox::push(Completion c) {
  bool was_empty;
  {
    std::lock_guard lock(mu_);
    was_empty = items_.empty();
    items_.push_back(std::move(c));
  }
  // A non-empty mailbox already has a wake in flight, and the take() it
  // causes collects this item too: one wake per batch, not per item.
  if (was_empty && std::this_thread::get_id() != owner_.load()) waker_->wake();
}

bool Mailbox::empty() {
  std::lock_guard lock(mu_);
  return items_.empty();
}

std::deque<Completion> Mailbox::take() {
  std::lock_guard lock(mu_);
  return std::exchange(items_, {});
}

// The sink of a loop that serves multipath sessions: a frame whose source is
// another port's MAC (a path through that port) goes to that port's loop; the
// rest is built in place in this port's sink as usual.
class PortLoop::RoutingSink final : public proto::FrameSink {
 public:
  RoutingSink(PortLoop& loop, io::PortSink& own) : loop_(loop), own_(own) {}
  std::span<uint8_t> acquire(size_t size) override {
    buf_ = own_.acquire(size);
    return buf_;
  }
  void commit(size_t length) override {
    MacAddress src{};
    if (length >= 12) std::copy_n(buf_.data() + 6, 6, src.begin());
    if (length < 12 || src == loop_.port_->mac()) {
      own_.commit(length);
      return;
    }
    // Not committed here: the own sink reuses its buffer for the next frame.
    PortLoop* other = loop_.router_->loop_for(src);
    if (other != nullptr && other != &loop_)
      other->post_tx(std::vector<uint8_t>(buf_.begin(), buf_.begin() + static_cast<long>(length)));
  }

 private:
  PortLoop& loop_;
  io::PortSink& own_;
  std::span<uint8_t> buf_;
};

PortLoop::PortLoop(const EngineConfig& config, std::unique_ptr<io::Port> port,
                   std::shared_ptr<TargetDevice> device)
    : config_(config), port_(std::move(port)), device_(std::move(device)) {
  rx_.resize(std::max<size_t>(1, config_.rx_burst));
}

PortLoop::~PortLoop() {
  stop(false);
}

Status<EngineError> PortLoop::start() {
  if (auto r = reactor_.open(); !r) return Unexpected(EngineError{r.error().message});
  mailbox_ = std::make_shared<Mailbox>(reactor_.waker());
  if (port_->fd() >= 0) {
    if (auto r = reactor_.add(port_->fd(), io::Reactor::Role::kPort); !r)
      return Unexpected(EngineError{"port: " + r.error().message});
  }

  proto::TargetConfig tc;
  tc.local_mac = port_->mac();
  tc.target_name = config_.target_name;
  tc.limits = config_.limits;
  if (tc.limits.mtu == 0)
    tc.limits.mtu = static_cast<uint16_t>(std::min<size_t>(port_->mtu(), 65535));
  tc.limits.window = proto::window_for_mtu(tc.limits.mtu, tc.limits.window);
  tc.max_sessions = config_.max_sessions;
  tc.transport = config_.transport;
  tc.reply_cache = config_.reply_cache;
  tc.seed = config_.seed;
  if (router_ != nullptr) tc.multipath_ports = router_->ports();
  if (tc.seed == 0) tc.seed = (uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  endpoint_ = std::make_unique<proto::TargetEndpoint>(
      tc,
      [this](const proto::LoginRequest& req, const MacAddress& mac) {
        // Admitted when the initiator may see at least one LUN.
        if (visible_luns(req.initiator_name, mac).empty()) {
          spdlog::warn("{}: login of '{}' ({}) refused: no LUN visible to it", port_->spec(),
                       req.initiator_name, format_mac(mac));
          return proto::LoginStatus::kAccessDenied;
        }
        return proto::LoginStatus::kOk;
      },
      [this](std::string_view name, const MacAddress& mac) { return visible_luns(name, mac); });
  proto::SecurityPolicy security;
  security.secret_for = [this](std::string_view name) -> std::optional<proto::crypto::SecretBytes> {
    auto it = config_.initiator_secrets.find(name);
    if (it == config_.initiator_secrets.end()) return std::nullopt;
    return it->second;
  };
  security.required_protection = [this](std::string_view name, const MacAddress& mac,
                                        bool authenticated) {
    return required_protection(name, mac, authenticated);
  };
  endpoint_->set_security(std::move(security));
  sink_ = std::make_unique<io::PortSink>(*port_);
  sink_->pace_at_port_rate();
  if (router_ != nullptr) route_sink_ = std::make_unique<RoutingSink>(*this, *sink_);
  refresh_table();
  thread_ = std::thread([this] { run(); });
  return {};
}

void PortLoop::stop(bool disconnect) {
  if (!thread_.joinable()) return;
  disconnect_on_stop_ = disconnect;
  stop_ = true;
  wake();
  thread_.join();
}

void PortLoop::wake() {
  if (mailbox_) reactor_.wake();
}

proto::FrameSink& PortLoop::out_sink() {
  if (route_sink_) return *route_sink_;
  return *sink_;
}

// Frames waiting in one direction for this loop to take them. Normally a
// turn's worth (a path's window); the bound keeps a flood of frames bearing a
// multipath session's id on another port from growing the queue without
// limit while this loop is busy (they are dropped and counted; the protocol
// resends what mattered).
constexpr size_t kMaxForeignFrames = 4096;

void PortLoop::post_rx(std::vector<uint8_t> frame) {
  {
    std::lock_guard lock(foreign_mu_);
    if (foreign_rx_.size() >= kMaxForeignFrames) {
      counters_.handoffs_dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    foreign_rx_.push_back(std::move(frame));
  }
  foreign_pending_.store(true);
  wake();
}

void PortLoop::post_tx(std::vector<uint8_t> frame) {
  {
    std::lock_guard lock(foreign_mu_);
    if (foreign_tx_.size() >= kMaxForeignFrames) {
      counters_.handoffs_dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    foreign_tx_.push_back(std::move(frame));
  }
  foreign_pending_.store(true);
  wake();
}

void PortLoop::take_foreign(TimePoint now) {
  if (!foreign_pending_.exchange(false)) return;
  std::vector<std::vector<uint8_t>> rx;
  std::vector<std::vector<uint8_t>> tx;
  {
    std::lock_guard lock(foreign_mu_);
    rx.swap(foreign_rx_);
    tx.swap(foreign_tx_);
  }
  for (const auto& bytes : rx) {
    auto frame = proto::decode_frame(bytes);
    if (frame) endpoint_->on_frame(*frame, now);
  }
  for (const auto& bytes : tx) {
    // A frame the port cannot take now is lost like one lost on the wire:
    // its path retransmits it.
    std::span<uint8_t> room = sink_->acquire(bytes.size());
    if (room.size() < bytes.size()) continue;
    std::copy(bytes.begin(), bytes.end(), room.begin());
    sink_->commit(bytes.size());
  }
}

std::vector<proto::LunInfo> PortLoop::visible_luns(std::string_view name,
                                                   const MacAddress& mac) const {
  std::vector<proto::LunInfo> out;
  const bool announcement = name.empty() && mac == proto::kBroadcastMac;
  for (const auto& [n, slot] : *table_) {
    // Announcements go to everyone: only open LUNs are named in them.
    if (announcement ? slot.access->open() : slot.access->allows(name, mac))
      out.push_back(lun_info(*slot.entry));
  }
  return out;
}

std::optional<proto::Protection> PortLoop::required_protection(std::string_view name,
                                                               const MacAddress& mac,
                                                               bool authenticated) const {
  // The strongest level any LUN visible to this session requires; nothing
  // visible refuses the login.
  std::optional<proto::Protection> need;
  for (const auto& [n, slot] : *table_) {
    const AccessList& a = *slot.access;
    if (!a.allows(name, mac) || (!authenticated && a.needs_auth())) continue;
    need = std::max(need.value_or(proto::Protection::kOff), a.protection);
  }
  if (!need) {
    spdlog::warn("{}: login of '{}' ({}) refused: no LUN visible to it {}", port_->spec(), name,
                 format_mac(mac),
                 authenticated ? "" : "without authentication (configure its secret)");
  }
  return need;
}

void PortLoop::refresh_table() {
  const uint64_t g = device_->generation();
  if (g == table_generation_) return;
  table_ = device_->luns();
  table_generation_ = g;
}

void PortLoop::run() {
  mailbox_->set_owner(std::this_thread::get_id());
  spdlog::info("{}: serving target '{}' (mac {}, mtu {})", port_->spec(), config_.target_name,
               format_mac(port_->mac()), port_->mtu());
  if (config_.announce_at_start) endpoint_->announce(Clock::now());
  while (!stop_) {
    const TimePoint now = Clock::now();
    if (wait(now).ready < 0 && errno != EINTR) {
      spdlog::error("{}: epoll_wait: {}", port_->spec(), std::strerror(errno));
      break;
    }
    refresh_table();
    const TimePoint t = Clock::now();
    rx_bytes_ = 0;
    receive(t);
    take_foreign(t);
    wake_policy_.on_turn(t, rx_bytes_);
    counters_.turns.fetch_add(1, std::memory_order_relaxed);
    take_commands();
    poll_units();
    answer_completions();
    handle_events();
    // The sessions share the port fairly (tx_scheduler.h).
    tx_.poll(*endpoint_, Clock::now(), out_sink());
    take_commands();  // poll() may have completed PDUs
    answer_completions();
    tx_.poll(*endpoint_, Clock::now(), out_sink());
    tx_progress_ = sink_->flush() > 0;
    unwatch_idle();
    update_drain_state();
    publish_snapshot_if_asked();
  }
  if (disconnect_on_stop_) {
    const TimePoint now = Clock::now();
    for (const proto::SessionInfo& s : endpoint_->sessions())
      endpoint_->disconnect(s.session_id, proto::DisconnectReason::kShutdown, now);
    endpoint_->poll(now, out_sink());
    sink_->flush();
  }
  // Commands still executing on units reply into the mailbox, which outlives
  // this loop; their answers are simply not sent.
  spdlog::info("{}: stopped", port_->spec());
}

TimePoint PortLoop::deadline(TimePoint now) const {
  if (port_->poll_mode()) return now;
  if (!mailbox_->empty()) return now;  // own pushes do not wake the fd
  if (foreign_pending_.load()) return now;
  TimePoint d = std::min(endpoint_->next_deadline(), now + std::chrono::milliseconds(kMaxWaitMs));
  // Frames held for the pacing clock go when it allows; frames the device
  // queue refused after a pause (no event says when there is room); a full
  // send buffer wakes us through EPOLLOUT.
  if (sink_->paced())
    d = std::min(d, sink_->release_time());
  else if (sink_->pending() > 0 && !want_writable_)
    d = std::min(d, now + tx_backoff_);
  return d;
}

void PortLoop::watch_writable(bool on) {
  if (on == want_writable_ || port_->fd() < 0) return;
  if (reactor_.set_writable(port_->fd(), on)) want_writable_ = on;
}

io::Reactor::WaitResult PortLoop::wait(TimePoint now) {
  // A sender whose frames the port did not take sleeps until something can
  // move: the send buffer drains (EPOLLOUT), or a pause passes after the
  // device queue refused them (doubling while nothing moves).
  if (sink_->pending() > 0 && !sink_->paced()) {
    counters_.tx_full_waits.fetch_add(1, std::memory_order_relaxed);
    const bool socket_full = port_->tx_blocked() == io::TxBlock::kSocketFull;
    watch_writable(socket_full);
    tx_backoff_ = tx_progress_ || tx_backoff_ == proto::Duration::zero()
                      ? std::chrono::microseconds(100)
                      : std::min<proto::Duration>(2 * tx_backoff_, std::chrono::milliseconds(1));
  } else {
    watch_writable(false);
    tx_backoff_ = proto::Duration::zero();
  }
  const TimePoint until = deadline(now);
  if (until <= now) return reactor_.wait(now, until);  // only takes what is ready
  counters_.sleeps.fetch_add(1, std::memory_order_relaxed);
  // While an incoming PDU streams in at the link's pace, or frames wait for
  // the pacing clock (acks could only open a window they may not use yet),
  // wait for the mailbox and the LUNs only, and take what piled up in one
  // turn.
  proto::Duration hold = proto::Duration::zero();
  if (sink_->paced())
    hold = until - now;
  else if (sink_->pending() == 0)
    hold = wake_policy_.hold(now, until, endpoint_->flow_hints());
  wake_policy_.on_wait(now, hold > proto::Duration::zero());
  if (hold > proto::Duration::zero()) {
    counters_.holds.fetch_add(1, std::memory_order_relaxed);
    // Frames that fill the next release already wait for the pacing clock:
    // a command or a completion taken now would only queue behind them, so
    // sleep through to the release instead of waking for each (a stop or a
    // stats request waits at most that long, about a millisecond).
    if (sink_->release_covered()) {
      counters_.paced_sleeps.fetch_add(1, std::memory_order_relaxed);
      return reactor_.wait(now, now + hold, io::Reactor::Watch::kNothing);
    }
    return reactor_.wait(now, now + hold, io::Reactor::Watch::kQuiet);
  }
  return reactor_.wait(now, until);
}

void PortLoop::log_malformed(proto::DecodeError e, TimePoint now) {
  ++malformed_since_log_;
  if (now - last_malformed_log_ < config_.malformed_log_interval) return;
  spdlog::warn("{}: dropped {} malformed frame(s), last: {}", port_->spec(), malformed_since_log_,
               proto::to_string(e));
  malformed_since_log_ = 0;
  last_malformed_log_ = now;
}

void PortLoop::receive(TimePoint now) {
  const MacAddress self = port_->mac();
  for (size_t round = 0; round < kMaxRxRoundsPerWake; ++round) {
    const size_t n = port_->rx_burst(std::span<io::Packet>(rx_));
    for (size_t i = 0; i < n; ++i) {
      io::Packet pkt = std::move(rx_[i]);
      counters_.frames_received.fetch_add(1, std::memory_order_relaxed);
      rx_bytes_ += pkt.size();
      auto frame = proto::decode_frame(pkt.bytes());
      if (!frame) {
        counters_.malformed_frames.fetch_add(1, std::memory_order_relaxed);
        log_malformed(frame.error(), now);
        continue;
      }
      const MacAddress& dst = frame->header.dst;
      const bool group = (dst[0] & 0x01) != 0;  // broadcast or multicast
      if (!group && dst != self) {
        counters_.frames_not_for_us.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (router_ != nullptr && router_->any()) {
        // A frame of a multipath session homed on another loop goes there.
        const uint32_t sid = frame->header.ext.session_id;
        const proto::Opcode op = frame->header.common.opcode;
        if (sid != 0 && op != proto::Opcode::kLoginRequest &&
            op != proto::Opcode::kDiscoveryRequest) {
          PortLoop* home = router_->home_of(sid);
          if (home != nullptr && home != this) {
            const auto b = pkt.bytes();
            home->post_rx(std::vector<uint8_t>(b.begin(), b.end()));
            continue;
          }
        }
      }
      endpoint_->on_frame(*frame, now);
    }
    if (n < rx_.size()) break;
  }
}

const PortLoop::Peer* PortLoop::peer_of(uint32_t session_id) {
  auto it = peers_.find(session_id);
  if (it != peers_.end()) return &it->second;
  auto info = endpoint_->session(session_id);
  if (!info) return nullptr;
  return &peers_
              .emplace(session_id, Peer{info->initiator_name, info->initiator_mac,
                                        info->authenticated, info->protection})
              .first->second;
}

void PortLoop::take_commands() {
  while (auto cmd = endpoint_->pop_command()) handle_command(std::move(*cmd));
}

void PortLoop::handle_command(proto::IncomingCommand cmd) {
  if (!cmd.needs_execution()) {
    counters_.replays.fetch_add(1, std::memory_order_relaxed);  // the endpoint answered it
    return;
  }
  if (cmd.header.cdb_length == 0) {
    scsi::CommandResult r;
    r.status = scsi::status::kCheckCondition;
    r.sense = scsi::encode_fixed_sense(scsi::sense::invalid_opcode());
    answer_now(std::move(cmd), std::move(r), false);
    return;
  }
  if (draining_) {
    counters_.commands_busy.fetch_add(1, std::memory_order_relaxed);
    scsi::CommandResult r;
    r.status = scsi::status::kBusy;
    answer_now(std::move(cmd), std::move(r), false);
    return;
  }
  const Peer* found = peer_of(cmd.session_id);
  if (!found) {
    endpoint_->abandon(cmd.session_id, cmd.header.cmd_sn);
    return;
  }
  const Peer peer = *found;
  auto p = std::make_shared<PendingCommand>();
  p->reexecutable = scsi::is_reexecutable(cmd.header.cdb[0]);
  p->cmd = std::move(cmd);
  scsi::CommandRequest req;
  req.cdb = p->cmd.header.cdb_view();
  req.data_out = p->cmd.data_out();
  req.expected_data_in = p->cmd.header.expected_data_in;
  req.nexus = scsi::Nexus{peer.name, p->cmd.session_id};
  if (config_.read_thread) {
    const proto::Connection* c = endpoint_->connection(p->cmd.session_id);
    req.sender_busy = c != nullptr && c->send_queue_bytes() >= kSenderBusyBytes;
  }
  ++in_flight_local_;
  // The device answers REPORT LUNS and absent or hidden LUNs at once; a
  // unit's completion may come later from whichever loop polls its store.
  // The callback moves its reference into the mailbox, so an entry is never
  // released while its mutex is held.
  std::shared_ptr<LunEntry> entry;
  const scsi::Routed how = table_->execute(
      peer, p->cmd.header.lun, req,
      [mb = mailbox_, p](scsi::CommandResult r) mutable {
        mb->push(Completion{std::move(p), std::move(r)});
      },
      &entry);
  switch (how) {
    case scsi::Routed::kUnit:
      counters_.commands_executed.fetch_add(1, std::memory_order_relaxed);
      watch(entry);
      p->entry = std::move(entry);  // keeps the unit alive until answered
      break;
    case scsi::Routed::kReportLuns:
      break;
    case scsi::Routed::kNeedsAuth:
      counters_.commands_unauthenticated.fetch_add(1, std::memory_order_relaxed);
      counters_.commands_denied.fetch_add(1, std::memory_order_relaxed);
      break;
    case scsi::Routed::kHidden:
      counters_.commands_denied.fetch_add(1, std::memory_order_relaxed);
      break;
    case scsi::Routed::kAbsent:
      counters_.commands_absent.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

void PortLoop::answer_now(proto::IncomingCommand cmd, scsi::CommandResult result,
                          bool reexecutable) {
  PendingCommand p;
  p.cmd = std::move(cmd);
  p.reexecutable = reexecutable;
  send(p, std::move(result));
}

void PortLoop::send(const PendingCommand& p, scsi::CommandResult&& result) {
  proto::SharedBytes pdu = build_reply_pdu(p.cmd.header.cmd_sn, std::move(result));
  if (endpoint_->send_reply(p.cmd.session_id, p.cmd.tag, p.cmd.header.cmd_sn, std::move(pdu),
                            p.reexecutable)) {
    counters_.replies_sent.fetch_add(1, std::memory_order_relaxed);
  } else {
    counters_.replies_failed.fetch_add(1, std::memory_order_relaxed);
  }
}

void PortLoop::poll_units() {
  for (auto& [raw, entry] : watched_) {
    std::lock_guard lock(entry->mu);
    if (entry->unit) entry->unit->store().poll();
  }
}

void PortLoop::answer_completions() {
  std::deque<Completion> done = mailbox_->take();
  for (Completion& c : done) {
    if (in_flight_local_ > 0) --in_flight_local_;
    send(*c.pending, std::move(c.result));
  }
  // `done` releases the PendingCommands (and maybe the last LunEntry) here,
  // outside every unit's mutex.
}

void PortLoop::watch(const std::shared_ptr<LunEntry>& entry) {
  if (watched_.count(entry.get()) != 0) return;
  watched_.emplace(entry.get(), entry);
  if (entry->completion_fd < 0) return;
  if (auto r = reactor_.add(entry->completion_fd, io::Reactor::Role::kQuiet); !r)
    spdlog::warn("{}: cannot watch LUN {} completions: {}", port_->spec(), entry->lun,
                 r.error().message);
}

void PortLoop::unwatch_idle() {
  // A unit stays watched while it has commands or is still in the table (so
  // a busy LUN does not cost two epoll_ctl calls per command); idle units no
  // longer in the table are dropped so a removed LUN can be released.
  for (auto it = watched_.begin(); it != watched_.end();) {
    const auto slot = table_->find(it->second->lun);
    if (slot != table_->end() && slot->second.entry == it->second) {
      ++it;
      continue;
    }
    bool idle;
    {
      std::lock_guard lock(it->second->mu);
      idle = !it->second->unit || (it->second->unit->commands_in_flight() == 0 &&
                                   it->second->unit->store().in_flight() == 0);
    }
    if (!idle) {
      ++it;
      continue;
    }
    if (it->second->completion_fd >= 0) reactor_.remove(it->second->completion_fd);
    it = watched_.erase(it);
  }
}

void PortLoop::handle_events() {
  while (auto e = endpoint_->pop_event()) {
    switch (e->kind) {
      case proto::TargetEventKind::kSessionEstablished:
        spdlog::info("{}: session {:08x} established with '{}' ({}){}, protection {}",
                     port_->spec(), e->session_id, e->initiator_name, format_mac(e->initiator_mac),
                     e->authenticated ? " authenticated" : "", proto::to_string(e->protection));
        peers_[e->session_id] =
            Peer{e->initiator_name, e->initiator_mac, e->authenticated, e->protection};
        home_if_multipath(e->session_id);
        break;
      case proto::TargetEventKind::kSessionResumed:
        spdlog::info("{}: session {:08x} resumed (epoch {})", port_->spec(), e->session_id,
                     e->epoch);
        peers_[e->session_id] =
            Peer{e->initiator_name, e->initiator_mac, e->authenticated, e->protection};
        home_if_multipath(e->session_id);
        break;
      case proto::TargetEventKind::kSessionClosed: {
        spdlog::info("{}: session {:08x} of '{}' closed ({})", port_->spec(), e->session_id,
                     e->initiator_name, proto::to_string(e->reason));
        peers_.erase(e->session_id);
        if (router_ != nullptr) router_->clear_home(e->session_id, this);
        const scsi::Nexus nexus{e->initiator_name, e->session_id};
        for (const auto& [n, slot] : *table_) {
          std::lock_guard lock(slot.entry->mu);
          if (slot.entry->unit) slot.entry->unit->nexus_gone(nexus);
        }
        break;
      }
    }
  }
}

void PortLoop::home_if_multipath(uint32_t session_id) {
  if (router_ == nullptr) return;
  auto info = endpoint_->session(session_id);
  if (info && (info->negotiated.features & proto::kFeatureMultipath) != 0) {
    router_->set_home(session_id, this);
    spdlog::info("{}: session {:08x} is multipath over {} target ports", port_->spec(), session_id,
                 router_->ports().size());
  }
}

void PortLoop::update_drain_state() {
  in_flight_.store(in_flight_local_);
  if (!draining_) return;
  size_t unacked = 0;
  for (const proto::SessionInfo& s : endpoint_->sessions()) {
    const proto::Connection* c = endpoint_->connection(s.session_id);
    if (c && (c->in_flight() > 0 || c->send_queue_bytes() > 0)) ++unacked;
  }
  unacked_.store(unacked);
}

bool PortLoop::snapshot(std::vector<SessionReport>& sessions, proto::TargetStats& stats,
                        std::chrono::milliseconds timeout) {
  std::unique_lock lock(snap_mu_);
  const uint64_t want = ++snap_requested_;
  wake();
  if (!thread_.joinable()) return false;
  if (!snap_cv_.wait_for(lock, timeout, [&] { return snap_published_ >= want; })) return false;
  sessions.insert(sessions.end(), snap_sessions_.begin(), snap_sessions_.end());
  stats = snap_stats_;
  return true;
}

void PortLoop::publish_snapshot_if_asked() {
  {
    std::lock_guard lock(snap_mu_);
    if (snap_published_ >= snap_requested_) return;
  }
  std::vector<SessionReport> reports;
  for (proto::SessionInfo& s : endpoint_->sessions())
    reports.push_back(SessionReport{std::string(port_->spec()), std::move(s)});
  // This thread's CPU time and the times it slept and was woken.
  rusage ru{};
  if (::getrusage(RUSAGE_THREAD, &ru) == 0) {
    const auto ns = [](const timeval& tv) {
      return static_cast<uint64_t>(tv.tv_sec) * 1000000000u +
             static_cast<uint64_t>(tv.tv_usec) * 1000u;
    };
    counters_.cpu_ns.store(ns(ru.ru_utime) + ns(ru.ru_stime), std::memory_order_relaxed);
    counters_.wakeups.store(static_cast<uint64_t>(ru.ru_nvcsw), std::memory_order_relaxed);
  }
  {
    std::lock_guard lock(snap_mu_);
    snap_sessions_ = std::move(reports);
    snap_stats_ = endpoint_->stats();
    snap_published_ = snap_requested_;
  }
  snap_cv_.notify_all();
}

}  // namespace hyperscsi::engine

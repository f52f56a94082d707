// Initiator::Impl: the event loop that owns the port, the discovery client
// and the session, and the command table (tags, cmd_sn, recovery, dead time).
#include "hyperscsi/initiator/initiator.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "hyperscsi/base/secret_file.h"
#include "hyperscsi/io/port_sink.h"
#include "hyperscsi/io/rx_filter.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/proto/discovery.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/initiator_paths.h"
#include "hyperscsi/proto/negotiation.h"

namespace hyperscsi::initiator {

using proto::TimePoint;
using SteadyClock = std::chrono::steady_clock;

std::string_view to_string(ErrorKind k) {
  switch (k) {
    case ErrorKind::kInterfaceAbsent:
      return "interface absent";
    case ErrorKind::kNotRoot:
      return "not root";
    case ErrorKind::kPort:
      return "port error";
    case ErrorKind::kNoTarget:
      return "no target answers";
    case ErrorKind::kLunAbsent:
      return "LUN absent";
    case ErrorKind::kAccessDenied:
      return "access denied";
    case ErrorKind::kMtuMismatch:
      return "MTU mismatch";
    case ErrorKind::kLoginRejected:
      return "login rejected";
    case ErrorKind::kNotConnected:
      return "not connected";
    case ErrorKind::kScsi:
      return "SCSI error";
    case ErrorKind::kCommandFailed:
      return "command failed";
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
  }
  return "?";
}

std::string_view to_string(CompletionError e) {
  switch (e) {
    case CompletionError::kNone:
      return "none";
    case CompletionError::kDeadTime:
      return "dead time expired";
    case CompletionError::kShutdown:
      return "initiator shut down";
    case CompletionError::kInvalid:
      return "invalid command";
    case CompletionError::kTargetFailure:
      return "target failure";
    case CompletionError::kIdentityMismatch:
      return "LUN fenced";
  }
  return "?";
}

uint32_t command_headroom(size_t cdb_length) {
  return static_cast<uint32_t>(proto::kCommandHeaderFixedSize + cdb_length);
}

std::string CommandResult::describe() const {
  if (error != CompletionError::kNone) {
    std::string s(to_string(error));
    if (!message.empty()) s += ": " + message;
    return s;
  }
  std::string s(scsi::status_name(status));
  if (status == 0x02) s += ": " + scsi::describe_sense(sense);
  return s;
}

namespace {

struct Pending {
  ScsiCommand cmd;
  Completion done;
  std::span<uint8_t> data_in_buffer;  // submit_into(): where the data-in lands
  TimePoint deadline{};
  uint64_t seq = 0;  // cmd_sn is its low 32 bits
  uint16_t tag = 0;
  bool sent = false;       // handed to the current Connection
  TimePoint sent_at{};     // when it was, for the reply time
  uint32_t retries = 0;    // UNIT ATTENTION / BUSY retries so far
  TimePoint not_before{};  // BUSY: wait a little before sending again
  bool probe = false;      // the initiator's own identity check (tag kProbeTag)
  // The PDU as first sent, when it was built in data_out's own buffer (its
  // headroom): a later send copies it under a fresh header.
  proto::SharedBytes pdu;
};

// Data-out bytes of a command (data_out less its headroom).
size_t data_out_size(const ScsiCommand& c) {
  return c.data_out.size() - std::min<size_t>(c.data_out_headroom, c.data_out.size());
}

// The tag of the identity check after a re-login; commands use the others.
constexpr uint16_t kProbeTag = 511;

// Conditions every SCSI initiator retries: a UNIT ATTENTION (reported once
// per nexus, e.g. after the target restarted) and BUSY / TASK SET FULL.
constexpr uint32_t kMaxRetries = 8;

// Longest sleep of the I/O thread. Every timer it serves (the session's
// keepalive and dead time, commands' dead time, logins, discovery) is a
// deadline the wait already honours and every request posts to its eventfd,
// so this is only a safety net: an idle session wakes for its keepalives
// (every 3 s by default), not ten times a second (issue 14).
constexpr auto kMaxSleep = std::chrono::seconds(10);

CommandResult failed(CompletionError e, std::string message) {
  CommandResult r;
  r.error = e;
  r.message = std::move(message);
  return r;
}

Error map_session_failure(const proto::SessionFailure& f, const TargetInfo& target,
                          size_t our_mtu) {
  using proto::LoginStatus;
  using proto::SessionError;
  const std::string who = "target '" + target.name + "' (" + io::to_string(target.mac) + ")";
  switch (f.error) {
    case SessionError::kNoAnswer:
      return {ErrorKind::kNoTarget, who + " did not answer the login"};
    case SessionError::kMtuMismatch:
      return {ErrorKind::kMtuMismatch,
              "MTU mismatch with " + who + ": frames of the negotiated MTU " +
                  std::to_string(f.mtu) +
                  " do not pass (small frames do); set the same MTU on both ends and every "
                  "switch between them"};
    case SessionError::kLoginRejected:
      switch (f.login_status) {
        case LoginStatus::kAccessDenied:
          return {ErrorKind::kAccessDenied, who + " denied access to this initiator"};
        case LoginStatus::kAuthFailed:
          return {ErrorKind::kAccessDenied,
                  "authentication with " + who +
                      " failed: wrong or missing shared secret on one side (or a target "
                      "that could not prove it knows the secret)"};
        case LoginStatus::kUnknownTarget:
          return {ErrorKind::kNoTarget, who + " does not know that target name"};
        case LoginStatus::kMtuMismatch:
          return {ErrorKind::kMtuMismatch, "MTU mismatch with " + who + ": our MTU is " +
                                               std::to_string(our_mtu) + ", the target's is " +
                                               std::to_string(target.mtu)};
        default:
          return {ErrorKind::kLoginRejected,
                  who + " rejected the login: " + std::string(proto::to_string(f.login_status))};
      }
    default:
      return {ErrorKind::kLoginRejected, who + ": " + f.describe()};
  }
}

}  // namespace

class Initiator::Impl {
 public:
  Impl(std::unique_ptr<io::Port> port, Options options,
       std::vector<std::unique_ptr<io::Port>> extra = {})
      : port_(std::move(port)),
        options_(std::move(options)),
        sink_(*port_, 1024),
        route_sink_(*this),
        wake_policy_(wake_config(options_)) {
    sink_.pace_at_port_rate();
    for (auto& p : extra) {
      ExtraPort e;
      e.sink = std::make_unique<io::PortSink>(*p, 1024);
      e.sink->pace_at_port_rate();
      e.port = std::move(p);
      extra_.push_back(std::move(e));
    }
    // A multipath session receives on every port: pausing one is not worth
    // the bookkeeping.
    if (!extra_.empty()) rx_pause_supported_ = false;
    options_.max_outstanding = std::clamp<uint32_t>(options_.max_outstanding, 1, kProbeTag);
    if (options_.seed == 0) options_.seed = std::random_device{}() | 1ull << 40;
    for (uint32_t t = options_.max_outstanding; t-- > 0;)
      free_tags_.push_back(static_cast<uint16_t>(t));
    by_tag_.assign(512, 0);
  }

  ~Impl() { stop(); }

  Status<Error> start() {
    event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (event_fd_ < 0 || epoll_fd_ < 0)
      return Unexpected{Error{ErrorKind::kPort, "eventfd/epoll failed"}};
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = event_fd_;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, event_fd_, &ev);
    if (port_->fd() >= 0) {
      ev.data.fd = port_->fd();
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, port_->fd(), &ev);
    }
    for (auto& e : extra_) {
      if (e.port->fd() < 0) continue;
      ev.data.fd = e.port->fd();
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, e.port->fd(), &ev);
    }
    sync_rx_filter();  // discovery and login replies only, until a session exists
    thread_ = std::thread([this] { run(); });
    return {};
  }

  void stop() {
    if (thread_.joinable()) {
      post([this] { stop_ = true; });
      thread_.join();
    }
    // The loop is gone: fail what is left on this thread.
    fail_all(CompletionError::kShutdown, "the initiator was destroyed");
    if (event_fd_ >= 0) ::close(event_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    event_fd_ = epoll_fd_ = -1;
  }

  // Runs `task` on the loop thread.
  void post(std::function<void()> task) {
    {
      std::lock_guard lock(task_mutex_);
      tasks_.push_back(std::move(task));
    }
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
  }

  template <typename T>
  T call(std::function<T()> fn) {
    auto p = std::make_shared<std::promise<T>>();
    auto f = p->get_future();
    post([p, fn = std::move(fn)] { p->set_value(fn()); });
    return f.get();
  }

  // --- public operations (any thread) ---

  Result<std::vector<TargetInfo>, Error> discover(std::string_view filter) {
    auto p = std::make_shared<std::promise<std::vector<TargetInfo>>>();
    auto f = p->get_future();
    post([this, p, name = std::string(filter)] {
      proto::DiscoveryConfig cfg;
      cfg.local_mac = port_->mac();
      cfg.initiator_name = options_.initiator_name;
      cfg.target_filter = name;
      cfg.window = options_.discovery_window;
      cfg.seed = options_.seed + (++rounds_);
      if (discovery_wait_) discovery_wait_->set_value({});
      discovery_ = std::make_unique<proto::DiscoveryClient>(cfg);
      discovery_->start(SteadyClock::now());
      discovery_wait_ = p;
    });
    std::vector<TargetInfo> found = f.get();
    if (found.empty()) {
      std::string msg = "no target answered discovery on " + std::string(port_->spec());
      if (!filter.empty()) msg += " (looking for '" + std::string(filter) + "')";
      msg += " within " +
             std::to_string(
                 std::chrono::duration_cast<std::chrono::milliseconds>(options_.discovery_window)
                     .count()) +
             " ms";
      return Unexpected{Error{ErrorKind::kNoTarget, msg}};
    }
    return found;
  }

  Status<Error> connect(const TargetInfo& target) {
    auto p = std::make_shared<std::promise<Status<Error>>>();
    auto f = p->get_future();
    post([this, p, target] {
      fail_all(CompletionError::kShutdown, "replaced by a new session");
      if (connect_wait_)
        connect_wait_->set_value(Unexpected{Error{ErrorKind::kNotConnected, "superseded"}});
      {
        std::lock_guard lock(target_mutex_);  // written only here, on the loop thread
        target_ = target;
        identities_.clear();  // another target's LUNs
      }
      fenced_.clear();
      verify_queue_.clear();
      proto::InitiatorConfig cfg;
      cfg.local_mac = port_->mac();
      cfg.initiator_name = options_.initiator_name;
      cfg.mtu = static_cast<uint16_t>(std::min<size_t>(port_->mtu(), 65535));
      cfg.window = proto::window_for_mtu(cfg.mtu, cfg.window);
      cfg.max_transfer = options_.max_transfer;
      cfg.auth = options_.auth;
      cfg.secret = options_.secret;
      cfg.protection = options_.protection;
      if (!options_.checksum) cfg.features &= ~proto::kFeatureChecksum;
      if (!extra_.empty()) cfg.features |= proto::kFeatureMultipath;
      paths_.reset();
      cfg.login_timeout = options_.login_timeout;
      cfg.login_attempts = options_.login_attempts;
      cfg.seed = options_.seed + (++rounds_);
      session_ = std::make_unique<proto::InitiatorSession>(cfg);
      connected_ = false;
      recovering_ = false;
      (void)session_->login(target.mac, target.name, SteadyClock::now());
      connect_wait_ = p;
    });
    return f.get();
  }

  void disconnect() {
    auto p = std::make_shared<std::promise<void>>();
    auto f = p->get_future();
    post([this, p] {
      connected_ = false;
      recovering_ = false;
      fail_all(CompletionError::kShutdown, "disconnected");
      if (session_ && session_->disconnect(SteadyClock::now()).ok()) {
        disconnect_wait_ = p;
        disconnect_deadline_ = SteadyClock::now() + std::chrono::seconds(2);
      } else {
        p->set_value();
      }
    });
    f.get();
  }

  void submit(ScsiCommand command, Completion done, std::span<uint8_t> data_in_buffer = {}) {
    auto pending = std::make_unique<Pending>();
    pending->cmd = std::move(command);
    pending->done = std::move(done);
    pending->data_in_buffer = data_in_buffer;
    pending->deadline = SteadyClock::now() + options_.dead_time;
    {
      std::lock_guard lock(task_mutex_);
      submissions_.push_back(std::move(pending));
    }
    // From a poller the loop runs these in this very turn: no wake-up needed.
    if (std::this_thread::get_id() == loop_id_ && polling_) return;
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
  }

  void add_poller(int fd, std::function<void()> poll) {
    call<bool>([this, fd, poll = std::move(poll)]() mutable {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
      pollers_.emplace_back(fd, std::move(poll));
      return true;
    });
  }

  void remove_poller(int fd) {
    call<bool>([this, fd] {
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
      std::erase_if(pollers_, [fd](const auto& p) { return p.first == fd; });
      return true;
    });
  }

  Stats stats() {
    return call<Stats>([this] { return snapshot(); });
  }

  uint32_t max_data() const { return max_data_.load(); }
  TargetInfo target() const {
    std::lock_guard lock(target_mutex_);
    return target_;
  }
  io::Port& port() { return *port_; }

 private:
  // --- loop thread ---

  static io::WakeConfig wake_config(const Options& o) {
    io::WakeConfig c;
    c.busy_poll = o.busy_poll;
    return c;
  }

  void run() {
    loop_id_ = std::this_thread::get_id();
    std::vector<io::Packet> rx(64);
    while (!stop_) {
      polling_ = true;  // their submissions go out in this turn
      for (auto& [fd, poll] : pollers_) poll();
      polling_ = false;
      run_tasks();
      if (stop_) break;
      TimePoint now = SteadyClock::now();
      rx_bytes_ = 0;
      update_rx_pause(now);
      receive(rx, now);
      wake_policy_.on_turn(now, rx_bytes_);
      ++wake_.turns;
      drain_replies();
      recover(now);
      sync_paths(now);
      admit(now);
      send_unsent();
      expire(now);
      if (paths_) {
        paths_->poll(now, route_sink_);  // the login session waits while its paths carry it
        path_events();
        drain_replies();
      } else if (session_) {
        session_->poll(now, sink_);
      }
      if (discovery_) discovery_->poll(now, sink_);
      tx_progress_ = sink_.flush() > 0;
      for (auto& e : extra_) tx_progress_ = (e.sink->flush() > 0) || tx_progress_;
      finish_waits(now);
      flush_failure_log(now);
      wait(now);
    }
  }

  void run_tasks() {
    std::deque<std::function<void()>> tasks;
    {
      std::lock_guard lock(task_mutex_);
      tasks.swap(tasks_);
      while (!submissions_.empty()) {
        waiting_.push_back(std::move(submissions_.front()));
        submissions_.pop_front();
        ++stats_.submitted;
      }
    }
    uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(event_fd_, &v, sizeof v);
    for (auto& t : tasks) t();
  }

  void receive(std::vector<io::Packet>& rx, TimePoint now) {
    receive_on(*port_, rx, now);
    for (auto& e : extra_) receive_on(*e.port, rx, now);
  }

  void receive_on(io::Port& port, std::vector<io::Packet>& rx, TimePoint now) {
    for (int burst = 0; burst < 16; ++burst) {
      const size_t n = port.rx_burst(std::span<io::Packet>(rx));
      for (size_t i = 0; i < n; ++i) {
        if (foreign(rx[i].bytes())) {
          rx[i].reset();
          continue;
        }
        rx_bytes_ += rx[i].size();
        auto frame = proto::decode_frame(rx[i].bytes());
        if (frame) {
          const proto::FrameView& view = frame.value();
          const auto op = view.header.common.opcode;
          if (op == proto::Opcode::kDiscoveryReply || op == proto::Opcode::kDiscoveryRequest) {
            if (discovery_) discovery_->on_frame(view, now);
          } else if (paths_ && view.header.ext.session_id == session_->session_id() &&
                     view.header.ext.epoch == session_->epoch()) {
            on_path_frame(view, now);
          } else if (session_) {
            session_->on_frame(view, now);
            // A login reply may name a new session: narrow to it before we answer.
            if (op == proto::Opcode::kLoginReply) sync_rx_filter();
          }
        } else {
          ++malformed_frames_;
        }
        rx[i].reset();
      }
      if (n < rx.size()) break;
    }
  }

  // The port's receive filter follows the session (io/rx_filter.h): before
  // login, discovery and login replies only; then also this session's frames.
  // The kernel applies it where the backend can; foreign() applies it again
  // here, to frames queued before a change or from a backend without one.
  void sync_rx_filter() {
    io::RxFilter want = session_
                            ? io::RxFilter::session(session_->target_mac(), session_->session_id())
                            : io::RxFilter::session(io::MacAddress{}, 0);
    if (session_ && session_->multipath() && !session_->target_ports().empty()) {
      // Every port of the target may send us this session's frames.
      std::vector<io::MacAddress> peers;
      for (const proto::TargetPort& t : session_->target_ports()) peers.push_back(t.mac);
      if (std::find(peers.begin(), peers.end(), session_->target_mac()) == peers.end())
        peers.push_back(session_->target_mac());
      want = io::RxFilter::session(peers, session_->session_id());
    }
    if (want == rx_filter_) return;
    rx_filter_ = want;
    kernel_filter_ = port_->set_rx_filter(want).ok();
    for (auto& e : extra_) kernel_filter_ = e.port->set_rx_filter(want).ok() && kernel_filter_;
  }

  // --- multipath (docs/protocol.md 14) ---
  //
  // How a multipath session's frames flow here: the InitiatorSession logs in
  // on the first port (and verifies its MTU) as for one port; once it is
  // established with MULTIPATH negotiated, an InitiatorPaths takes over the
  // session's transport: path 0 is the login pair, the other (local port,
  // target port) pairs join. From then on the session's frames from every
  // port go to the paths (a Disconnect also to the InitiatorSession, which
  // starts the usual recovery), commands go to the PathSet, which picks the
  // path and moves a failed path's undelivered commands to the others, and
  // the InitiatorSession is not polled (its Connection would otherwise send
  // keepalives nobody answers to it); the paths' silence for the dead time
  // counts as a dead target. Frames leave through route_sink_, which sends
  // each on the port whose MAC is its source. All on the loop thread.

  void on_path_frame(const proto::FrameView& view, TimePoint now) {
    proto::FrameView opened;
    const auto r = paths_->on_frame(view, now, opened);
    const bool disconnect = view.header.common.opcode == proto::Opcode::kDisconnect;
    if (r == proto::PathSet::FrameResult::kForOwner) {
      if (opened.header.common.opcode == proto::Opcode::kDisconnect) session_->on_frame(view, now);
    } else if (r == proto::PathSet::FrameResult::kDropped && disconnect) {
      // A target that restarted rejects the session from whichever port.
      session_->on_frame(view, now);
    }
  }

  void sync_paths(TimePoint now) {
    if (extra_.empty()) return;
    const bool want = session_ && connected_ && session_->established() && session_->multipath();
    if (session_ && connected_ && session_->established() && !session_->multipath() &&
        !single_path_logged_) {
      single_path_logged_ = true;
      log(LogLevel::kWarning, who() + " does not offer multipath: the session uses " +
                                  std::string(port_->spec()) + " only");
    }
    if (!want) {
      if (paths_) {
        paths_.reset();
        sync_rx_filter();
      }
      return;
    }
    if (paths_) {
      const uint32_t dead_ms = session_->negotiated().dead_time_ms;
      const TimePoint heard = std::max(paths_->transport().last_heard(), paths_since_);
      if (dead_ms != 0 && now - heard >= std::chrono::milliseconds(dead_ms)) {
        log(LogLevel::kWarning,
            who() + " lost: nothing heard on any path for " + std::to_string(dead_ms) + " ms; " +
                std::to_string(inflight_.size() + waiting_.size()) + " command(s) pending");
        paths_.reset();
        lost_session();
        last_attempt_resume_ = false;
        log(LogLevel::kInfo, "re-login started: logging in to " + who() + " afresh");
        (void)session_->login(target_.mac, target_.name, now);
        recover_seen_ = session_->state();
        sync_rx_filter();
      }
      return;
    }
    const proto::LoginReply& n = session_->negotiated();
    proto::InitiatorPathsConfig ic;
    ic.transport.role = proto::PathRole::kInitiator;
    ic.transport.session_id = n.session_id;
    ic.transport.epoch = n.epoch;
    ic.transport.transport = proto::transport_params_for(n, proto::TransportParams{});
    ic.transport.probe_idle = true;
    ic.max_transfer = n.max_transfer;
    ic.window_cap = proto::window_for_mtu(n.mtu, 256);
    ic.checksum = (n.features & proto::kFeatureChecksum) != 0;
    ic.keys = session_->multipath_keys();
    ic.login_protection = session_->login_path_protection();  // its counters go on
    ic.seed = options_.seed + (++rounds_);
    proto::PathSpec login;
    login.local = port_->mac();
    login.peer = session_->target_mac();
    login.mtu = n.mtu;
    login.receive_window = n.window;
    login.peer_window = n.window;
    login.checksum = ic.checksum;
    paths_ = std::make_unique<proto::InitiatorPaths>(std::move(ic), login, now);
    paths_since_ = now;
    std::vector<proto::LocalPort> locals;
    locals.push_back(proto::LocalPort{port_->mac(), clamp_mtu(port_->mtu()), std::nullopt});
    for (auto& e : extra_)
      locals.push_back(proto::LocalPort{e.port->mac(), clamp_mtu(e.port->mtu()), std::nullopt});
    auto cands = proto::candidate_paths(locals, session_->target_ports(), port_->mac(),
                                        session_->target_mac());
    if (!cands) {
      log(LogLevel::kWarning, "multipath: " + std::string(proto::to_string(cands.error())) +
                                  "; the session stays on its login path");
    } else {
      for (const proto::PathCandidate& c : cands.value()) (void)paths_->add_candidate(c, now);
      log(LogLevel::kInfo, "multipath session " + hex32(n.session_id) + ": joining " +
                               std::to_string(cands.value().size()) + " more path(s) to " + who());
    }
    // Commands the login's Connection took but did not deliver go again on
    // the paths (the target's reply cache makes that exactly-once).
    for (auto& [seq, p] : inflight_) p->sent = false;
    sync_rx_filter();
  }

  // The operator hears of every path that fails or comes back; failovers
  // are counted per path id across generations and sessions.
  void path_events() {
    while (auto e = paths_->pop_event()) {
      if (e->id >= path_failovers_.size()) continue;
      if (e->kind == proto::PathEventKind::kFailed) {
        ++path_failovers_[e->id];
        log(LogLevel::kWarning, "path " + std::to_string(e->id) + " to " + who() + " failed (" +
                                    std::string(proto::to_string(e->failure)) +
                                    "): " + std::to_string(e->pdus_moved) +
                                    " command(s) moved to the other paths");
      } else if (e->kind == proto::PathEventKind::kActivated && path_failovers_[e->id] > 0) {
        log(LogLevel::kInfo, "path " + std::to_string(e->id) + " to " + who() + " is back");
      }
    }
  }

  static uint16_t clamp_mtu(size_t mtu) {
    return static_cast<uint16_t>(std::min<size_t>(mtu, 65535));
  }

  // Sends each frame on the port whose MAC is its source (the path's local
  // port); built in place in the first port's sink, copied for another port.
  class RouteSink final : public proto::FrameSink {
   public:
    explicit RouteSink(Impl& impl) : impl_(impl) {}
    std::span<uint8_t> acquire(size_t size) override {
      buf_ = impl_.sink_.acquire(size);
      return buf_;
    }
    void commit(size_t length) override {
      io::MacAddress src{};
      if (length >= 12) std::copy_n(buf_.data() + 6, 6, src.begin());
      if (length < 12 || src == impl_.port_->mac()) {
        impl_.sink_.commit(length);
        return;
      }
      for (auto& e : impl_.extra_) {
        if (e.port->mac() != src) continue;
        std::span<uint8_t> room = e.sink->acquire(length);
        if (room.size() < length) return;  // lost like on the wire: the path retransmits
        std::copy_n(buf_.data(), length, room.data());
        e.sink->commit(length);
        return;
      }
    }

   private:
    Impl& impl_;
    std::span<uint8_t> buf_;
  };

  // An established session without commands for Options::rx_pause_after
  // stops receiving (io::Port::set_rx_paused): every socket on an interface
  // costs the kernel a little for each frame of every session, a paused one
  // nothing. Anything to send or to wait for (a command, a keepalive that is
  // due, discovery, a login, a disconnect) resumes it first, in this
  // iteration of the loop, before the frame goes out.
  void update_rx_pause(TimePoint now) {
    if (options_.rx_pause_after <= Duration::zero() || !rx_pause_supported_) return;
    if (rx_busy()) last_busy_ = now;
    const bool pause = rx_quiet_since(now) <= now && session_->next_deadline() > now;
    if (pause == rx_paused_) return;
    const auto st = port_->set_rx_paused(pause);
    if (!st) {
      // A port that cannot pause keeps receiving: never ask again (retrying
      // would spin this loop, whose next wake-up is the pause time). A failed
      // resume is tried again on the next iteration: it must not stay paused.
      if (pause) rx_pause_supported_ = false;
      return;
    }
    rx_paused_ = pause;
    if (pause) ++stats_.rx_pauses;
  }

  bool rx_busy() const {
    return !session_ || !session_->established() || !inflight_.empty() || !waiting_.empty() ||
           discovery_ || connect_wait_ || disconnect_wait_;
  }

  // When the loop should wake to pause the port (kNever: not needed).
  TimePoint rx_pause_at(TimePoint now) {
    if (rx_paused_ || !rx_pause_supported_ || options_.rx_pause_after <= Duration::zero())
      return proto::kNever;
    return rx_quiet_since(now);
  }

  // From when on the port may stay paused if nothing changes (kNever: not
  // while this lasts).
  TimePoint rx_quiet_since(TimePoint now) {
    if (rx_busy() || sink_.pending() > 0) return proto::kNever;
    const proto::Connection* c = session_->connection();
    if (c != nullptr && !c->idle()) return proto::kNever;  // its own timers wake the loop
    // A keepalive just sent: wait for its answer (or give it up after 1 s).
    const proto::InitiatorStats& ks = session_->stats();
    if (ks.keepalives_sent != probes_seen_) {
      probes_seen_ = ks.keepalives_sent;
      answers_seen_ = ks.keepalives_answered;
      probe_open_ = true;
      probe_sent_at_ = now;
    } else if (probe_open_ && (ks.keepalives_answered != answers_seen_ ||
                               now - probe_sent_at_ >= std::chrono::seconds(1))) {
      probe_open_ = false;
    }
    TimePoint at = last_busy_ + options_.rx_pause_after;
    if (probe_open_) at = std::max(at, probe_sent_at_ + std::chrono::seconds(1));
    return at;
  }

  // True (and counted) for a frame of another session on this host.
  bool foreign(std::span<const uint8_t> frame) {
    if (io::rx_filter_matches(rx_filter_, frame)) return false;
    ++stats_.foreign_frames;
    return true;
  }

  std::optional<proto::ReceivedPdu> next_reply() {
    if (paths_) return paths_->transport().pop_pdu();
    return session_->pop_reply();
  }

  void drain_replies() {
    if (!session_) return;
    while (auto pdu = next_reply()) {
      auto decoded = proto::decode_reply(pdu->bytes);
      if (!decoded || pdu->tag >= by_tag_.size() || by_tag_[pdu->tag] == 0) {
        ++stats_.unmatched_replies;
        continue;
      }
      auto it = inflight_.find(by_tag_[pdu->tag]);
      if (it == inflight_.end() ||
          static_cast<uint32_t>(it->second->seq) != decoded->header.cmd_sn) {
        ++stats_.unmatched_replies;  // a late reply of an expired command
        continue;
      }
      std::unique_ptr<Pending> p = std::move(it->second);
      release(it, p->tag);
      if (p->sent) wake_policy_.on_reply(SteadyClock::now() - p->sent_at);
      const proto::ReplyHeader& h = decoded->header;
      if (h.response == proto::CommandResponse::kCompleted && p->retries < kMaxRetries) {
        const bool unit_attention = h.status == 0x02 && scsi::parse_sense(h.sense).valid &&
                                    scsi::parse_sense(h.sense).key == 0x06;
        const bool busy = h.status == 0x08 || h.status == 0x28;
        if (unit_attention) note_unit_attention(p->cmd.lun, h.sense);
        if (unit_attention || busy) {
          ++p->retries;
          ++stats_.retried;
          p->sent = false;
          p->not_before = busy ? SteadyClock::now() + std::chrono::milliseconds(
                                                          5 << std::min<uint32_t>(p->retries, 6))
                               : TimePoint{};
          waiting_.push_front(std::move(p));
          continue;
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
        r.data_in.assign(decoded->data_in.begin(), decoded->data_in.end());
        if (p->done) p->done(std::move(r));
        continue;
      }
      ++stats_.completed;
      if (!r.good()) note_failure(p->cmd, r);
      if (std::span<uint8_t> dst = p->data_in_buffer; !dst.empty()) {
        // Into the caller's buffer (one copy); what did not arrive reads as zeros.
        const size_t n = std::min(dst.size(), decoded->data_in.size());
        std::copy_n(decoded->data_in.begin(), n, dst.begin());
        std::fill(dst.begin() + static_cast<ptrdiff_t>(n), dst.end(), uint8_t{0});
        stats_.bytes_in += n;
      } else {
        r.data_in.assign(decoded->data_in.begin(), decoded->data_in.end());
        stats_.bytes_in += r.data_in.size();
      }
      stats_.bytes_out +=
          p->pdu ? p->pdu->size() - command_headroom(p->cmd.cdb.size()) : data_out_size(p->cmd);
      if (p->done) p->done(std::move(r));
      // A poller's client (the FUSE export) answers with its next request
      // soon: keep polling for it as if a command were still in flight.
      if (!pollers_.empty()) poll_spin_until_ = SteadyClock::now() + options_.busy_poll;
    }
  }

  void release(std::map<uint64_t, std::unique_ptr<Pending>>::iterator it, uint16_t tag) {
    by_tag_[tag] = 0;
    if (tag != kProbeTag) free_tags_.push_back(tag);
    inflight_.erase(it);
  }

  // True when the session failed or died since recover() last left it (in this
  // iteration's poll()), or failed with no login timed: recover() acts on it at
  // once. A state recover() left as it is (a backed-off login waits for
  // next_login_) never spins the loop.
  bool recovery_due() const {
    if (!session_ || !connected_) return false;
    using S = proto::InitiatorState;
    const S s = session_->state();
    return (s != recover_seen_ && (s == S::kDead || s == S::kDisconnected || s == S::kFailed)) ||
           (s == S::kFailed && next_login_ == proto::kNever);
  }

  void recover(TimePoint now) {
    if (!session_ || !connected_) return;
    using S = proto::InitiatorState;
    const S s = session_->state();
    switch (s) {
      case S::kEstablished:
        if (recovering_) {
          recovering_ = false;
          if (last_attempt_resume_)
            ++stats_.resumes;
          else
            ++stats_.relogins;
          backoff_ = options_.login_timeout;
          update_negotiated();
          log(LogLevel::kInfo,
              std::string(last_attempt_resume_ ? "session resumed with " : "logged in again to ") +
                  who() + ": session " + hex32(session_->session_id()) + " epoch " +
                  std::to_string(session_->epoch()) + ", " + std::to_string(inflight_.size()) +
                  " command(s) to reissue");
          // A fresh login may reach a restarted target with other disks.
          if (!last_attempt_resume_) start_identity_check(now);
        }
        break;
      case S::kDead:
      case S::kDisconnected:
        log(LogLevel::kWarning, who() + " lost: " + session_->failure().describe() + "; " +
                                    std::to_string(inflight_.size() + waiting_.size()) +
                                    " command(s) pending");
        lost_session();
        if ((session_->negotiated().features & proto::kFeatureSessionResume) != 0 &&
            session_->resume(now).ok()) {
          last_attempt_resume_ = true;
          log(LogLevel::kInfo, "re-login started: resuming session " +
                                   hex32(session_->session_id()) + " with " + who());
        } else {
          last_attempt_resume_ = false;
          next_login_ = now;
          log(LogLevel::kInfo, "re-login started: logging in to " + who() + " afresh");
        }
        break;
      case S::kFailed:
        if (!recovering_) lost_session();
        if (last_attempt_resume_) {
          last_attempt_resume_ = false;
          next_login_ = now;  // the target forgot the session: log in afresh at once
          log(LogLevel::kInfo, "resume failed (" + session_->failure().describe() +
                                   "): logging in to " + who() + " afresh");
        }
        if (next_login_ == proto::kNever) {
          ++stats_.relogin_failures;
          if (now - last_relogin_log_ >= std::chrono::seconds(10)) {
            log(LogLevel::kWarning, "re-login to " + who() +
                                        " failed: " + session_->failure().describe() + " (" +
                                        std::to_string(stats_.relogin_failures) +
                                        " failed attempt(s) so far); retrying");
            last_relogin_log_ = now;
          }
          next_login_ = now + backoff_;
          backoff_ = std::min<proto::Duration>(backoff_ * 2, options_.reconnect_backoff_max);
        }
        if (now >= next_login_) {
          next_login_ = proto::kNever;
          (void)session_->login(target_.mac, target_.name, now);
        }
        break;
      default:
        break;
    }
    recover_seen_ = session_->state();
  }

  // --- identity checks and the operator's log (loop thread) ---

  std::string who() const {
    return "target '" + target_.name + "' (" + io::to_string(target_.mac) + ")";
  }
  // "60", "1.5": whole seconds without a fraction.
  static std::string seconds_text(proto::Duration d) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    char b[32];
    if (ms % 1000 == 0)
      std::snprintf(b, sizeof b, "%lld", static_cast<long long>(ms / 1000));
    else
      std::snprintf(b, sizeof b, "%.3g", static_cast<double>(ms) / 1000.0);
    return b;
  }
  static std::string hex32(uint32_t v) {
    char b[12];
    std::snprintf(b, sizeof b, "%08x", v);
    return b;
  }
  void log(LogLevel level, const std::string& text) const {
    if (options_.log) options_.log(level, text);
  }

  // After a fresh login: read each remembered LUN's identity again before
  // anything is reissued (send_unsent holds the rest back meanwhile).
  void start_identity_check(TimePoint now) {
    if (!verify_queue_.empty()) return;  // a check is under way; its probe is resent
    {
      std::lock_guard lock(target_mutex_);
      for (const auto& [lun, id] : identities_)
        if (!id.empty() && fenced_.count(lun) == 0) verify_queue_.push_back(lun);
    }
    if (!verify_queue_.empty()) issue_probe(now);
  }

  void issue_probe(TimePoint now) {
    auto p = std::make_unique<Pending>();
    const uint16_t lun = verify_queue_.front();
    p->cmd.lun = lun;
    p->cmd.cdb = scsi::inquiry_vpd_cdb(0x83, 255);
    p->cmd.data_in_length = 255;
    p->probe = true;
    p->deadline = now + options_.dead_time;
    p->seq = next_seq_++;
    p->tag = kProbeTag;
    p->done = [this, lun](CommandResult&& r) { on_probe(lun, r); };
    by_tag_[kProbeTag] = p->seq;
    inflight_.emplace(p->seq, std::move(p));
  }

  void on_probe(uint16_t lun, const CommandResult& r) {
    if (r.error == CompletionError::kShutdown) {  // disconnected or destroyed
      verify_queue_.clear();
      return;
    }
    if (r.error == CompletionError::kDeadTime) {  // no target yet: ask again after the next login
      issue_probe(SteadyClock::now());
      return;
    }
    std::string expected;
    {
      std::lock_guard lock(target_mutex_);
      expected = identities_[lun];
    }
    const std::string found = r.good() ? scsi::lu_identity(r.data_in) : std::string();
    const std::string name = "LUN " + std::to_string(lun) + " of " + who();
    if (r.good() && found == expected) {
      log(LogLevel::kInfo, name + " is the same disk (identity " + expected + ")");
    } else {
      fence(lun, name +
                     (!r.good() ? " cannot be identified after the re-login (" + r.describe() + ")"
                      : found.empty() ? " reports no identity after the re-login"
                                      : " is another disk after the re-login (identity " + found +
                                            ", attached " + expected + ")") +
                     ": its I/O fails so that no other disk's data is served; attach it again "
                     "to use it");
    }
    verify_queue_.pop_front();
    if (!verify_queue_.empty()) issue_probe(SteadyClock::now());
  }

  // Fails the LUN's pending commands and every later one with `why`.
  void fence(uint16_t lun, const std::string& why) {
    fenced_[lun] = why;
    ++stats_.identity_mismatches;
    log(LogLevel::kError, "identity mismatch: " + why);
    std::vector<std::unique_ptr<Pending>> doomed;
    for (auto it = inflight_.begin(); it != inflight_.end();) {
      const auto next = std::next(it);
      if (!it->second->probe && it->second->cmd.lun == lun) {
        std::unique_ptr<Pending> p = std::move(it->second);
        release(it, p->tag);
        doomed.push_back(std::move(p));
      }
      it = next;
    }
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if ((*it)->cmd.lun == lun) {
        doomed.push_back(std::move(*it));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& p : doomed) finish_failed(std::move(p), CompletionError::kIdentityMismatch, why);
  }

  void note_unit_attention(uint16_t lun, const std::vector<uint8_t>& sense) {
    const scsi::SenseInfo s = scsi::parse_sense(sense);
    if (s.asc == 0x2a && s.ascq == 0x09)
      log(LogLevel::kWarning, "LUN " + std::to_string(lun) + " of " + who() +
                                  ": capacity changed (unit attention CAPACITY DATA HAS "
                                  "CHANGED); the attached size stays until it is attached again");
  }

  // Counts a command completed without GOOD; logs at most one line a second.
  void note_failure(const ScsiCommand& cmd, const CommandResult& r) {
    ++stats_.failed;
    if (r.error == CompletionError::kDeadTime) ++stats_.timed_out;
    if (r.error == CompletionError::kIdentityMismatch) ++stats_.fenced;
    if (r.error == CompletionError::kShutdown) return;  // counted, not news
    ++fail_log_.count;
    if (r.error == CompletionError::kDeadTime) ++fail_log_.timed_out;
    fail_log_.last = "LUN " + std::to_string(cmd.lun) + " " + opcode_name(cmd.cdb) + ": " +
                     (r.error == CompletionError::kIdentityMismatch
                          ? std::string("LUN fenced (identity mismatch, logged above)")
                          : r.describe());
    flush_failure_log(SteadyClock::now());
  }

  void flush_failure_log(TimePoint now) {
    if (fail_log_.count == 0 || now - fail_log_.logged < std::chrono::seconds(1)) return;
    std::string line = fail_log_.count == 1
                           ? (fail_log_.timed_out ? "command timed out: " : "command failed: ")
                           : std::to_string(fail_log_.count) + " commands failed (" +
                                 std::to_string(fail_log_.timed_out) + " timed out), last: ";
    log(LogLevel::kError, line + fail_log_.last);
    fail_log_.count = fail_log_.timed_out = 0;
    fail_log_.logged = now;
  }

  static std::string opcode_name(const std::vector<uint8_t>& cdb) {
    if (cdb.empty()) return "(no CDB)";
    switch (cdb[0]) {
      case 0x28:
        return "READ(10)";
      case 0x88:
        return "READ(16)";
      case 0x2a:
        return "WRITE(10)";
      case 0x8a:
        return "WRITE(16)";
      case 0x35:
        return "SYNCHRONIZE CACHE(10)";
      case 0x91:
        return "SYNCHRONIZE CACHE(16)";
      case 0x42:
        return "UNMAP";
      case 0x12:
        return "INQUIRY";
      case 0x25:
        return "READ CAPACITY(10)";
      case 0x9e:
        return "READ CAPACITY(16)";
      default: {
        char b[16];
        std::snprintf(b, sizeof b, "opcode 0x%02x", cdb[0]);
        return b;
      }
    }
  }

 public:
  void remember_identity(uint16_t lun, std::string id) {
    std::lock_guard lock(target_mutex_);
    identities_[lun] = std::move(id);
  }
  std::string lun_identity(uint16_t lun) const {
    std::lock_guard lock(target_mutex_);
    auto it = identities_.find(lun);
    return it == identities_.end() ? std::string() : it->second;
  }

 private:
  // The session is gone: nothing we sent on it counts any more.
  void lost_session() {
    if (!recovering_) {
      recovering_ = true;
      backoff_ = options_.login_timeout;
    }
    for (auto& [seq, p] : inflight_) {
      if (p->sent) ++stats_.reissued;
      p->sent = false;
    }
  }

  void update_negotiated() {
    const uint32_t mt = session_->negotiated().max_transfer;
    const uint32_t overhead = 512;  // command/reply headers with the largest CDB and sense
    uint32_t data = mt > overhead ? mt - overhead : 0;
    data &= ~4095u;
    if (data == 0) data = 4096;
    max_data_.store(data);
  }

  void admit(TimePoint now) {
    while (!waiting_.empty() && !free_tags_.empty() && waiting_.front()->not_before <= now) {
      std::unique_ptr<Pending> p = std::move(waiting_.front());
      waiting_.pop_front();
      const auto& c = p->cmd;
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

  proto::CommandHeader command_header(const Pending& p, size_t data_out_length) const {
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
  bool send_command(Pending& p) {
    const size_t room = command_headroom(p.cmd.cdb.size());
    const size_t data = p.pdu ? p.pdu->size() - room : data_out_size(p.cmd);
    const proto::Connection* conn = session_->connection();
    if (conn == nullptr || !conn->can_send(proto::Opcode::kCommandRequest, p.tag, room + data))
      return false;
    if (!p.pdu && p.cmd.data_out_headroom == room && p.cmd.data_out.size() >= room) {
      std::vector<uint8_t> header;
      proto::encode(command_header(p, data), header);
      std::copy(header.begin(), header.end(), p.cmd.data_out.begin());
      p.pdu = proto::share_bytes(std::move(p.cmd.data_out));
      p.cmd.data_out.clear();
      return session_->send_command_shared(p.tag, p.pdu);
    }
    return session_->send_command(p.tag, build_pdu(p));
  }

  // The command's PDU in a new buffer: the header, then its data copied from
  // the kept PDU or from data_out (less its headroom).
  std::vector<uint8_t> build_pdu(const Pending& p) const {
    const size_t room = command_headroom(p.cmd.cdb.size());
    const size_t data = p.pdu ? p.pdu->size() - room : data_out_size(p.cmd);
    std::vector<uint8_t> pdu;
    pdu.reserve(room + data);
    proto::encode(command_header(p, data), pdu);
    if (p.pdu)
      pdu.insert(pdu.end(), p.pdu->begin() + static_cast<ptrdiff_t>(room), p.pdu->end());
    else
      pdu.insert(pdu.end(), p.cmd.data_out.end() - static_cast<ptrdiff_t>(data),
                 p.cmd.data_out.end());
    return pdu;
  }

  // Sends, in cmd_sn order, what the current Connection has not got yet.
  // Stops at the first refusal so the order holds.
  void send_unsent() {
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

  void expire(TimePoint now) {
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

  void finish_failed(std::unique_ptr<Pending> p, CompletionError e, std::string message) {
    CommandResult r = failed(e, std::move(message));
    if (!p->probe) note_failure(p->cmd, r);
    if (p->done) p->done(std::move(r));
  }

  void fail_all(CompletionError e, const std::string& message) {
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
  }

  void finish_waits(TimePoint now) {
    if (discovery_ && discovery_->done(now)) {
      std::vector<TargetInfo> out;
      for (const auto& t : discovery_->results())
        out.push_back(TargetInfo{t.mac, t.name, t.mtu, t.features, t.luns});
      if (discovery_wait_) discovery_wait_->set_value(std::move(out));
      discovery_wait_.reset();
      discovery_.reset();
    }
    if (connect_wait_ && session_) {
      const auto s = session_->state();
      if (s == proto::InitiatorState::kEstablished) {
        connected_ = true;
        update_negotiated();
        connect_wait_->set_value({});
        connect_wait_.reset();
      } else if (s != proto::InitiatorState::kLoggingIn &&
                 s != proto::InitiatorState::kVerifyingMtu) {
        connect_wait_->set_value(
            Unexpected{map_session_failure(session_->failure(), target_, port_->mtu())});
        connect_wait_.reset();
      }
    }
    if (disconnect_wait_ && session_) {
      const auto s = session_->state();
      if (s != proto::InitiatorState::kDisconnecting || now >= disconnect_deadline_) {
        disconnect_wait_->set_value();
        disconnect_wait_.reset();
      }
    }
  }

  // Sleeps until the next turn is due. Frames the port did not take wait
  // for the send buffer to drain (EPOLLOUT) or a pause (the device queue
  // refused them). While a reply streams in at the link's pace, or the
  // pipeline of commands is long, it holds: sleeps on the eventfd alone and
  // takes what piled up in one turn. Otherwise it busy-polls while that pays (io::WakePolicy), then
  // sleeps on the port.
  void wait(TimePoint now) {
    TimePoint until = now + kMaxSleep;
    if (paths_)
      until = std::min(until, paths_->next_deadline());
    else if (session_)
      until = std::min(until, session_->next_deadline());
    for (auto& e : extra_)
      if (e.sink->pending() > 0) until = std::min(until, now + std::chrono::microseconds(100));
    if (discovery_) until = std::min(until, discovery_->next_deadline());
    if (!inflight_.empty()) until = std::min(until, inflight_.begin()->second->deadline);
    if (!waiting_.empty()) {
      until = std::min(until, waiting_.front()->deadline);
      if (waiting_.front()->not_before > now) until = std::min(until, waiting_.front()->not_before);
    }
    if (next_login_ != proto::kNever) until = std::min(until, next_login_);
    until = std::min(until, rx_pause_at(now));
    // Failures held back for the once-a-second summary (flush_failure_log):
    // the loop no longer wakes every 100 ms on its own.
    if (fail_log_.count > 0) until = std::min(until, fail_log_.logged + std::chrono::seconds(1));
    // A session that failed or died in this iteration's poll(): recover() acts on it next time
    // round (it has no deadline of its own to wake the loop).
    if (recovery_due()) until = now;
    const bool paced = sink_.paced();
    if (paced) until = std::min(until, sink_.release_time());
    const bool tx_full = sink_.pending() > 0 && !paced;
    if (tx_full) {
      ++wake_.tx_full_waits;
      const bool socket_full = port_->tx_blocked() == io::TxBlock::kSocketFull;
      watch_writable(socket_full);
      tx_backoff_ = tx_progress_ || tx_backoff_ == proto::Duration::zero()
                        ? std::chrono::microseconds(50)
                        : std::min<proto::Duration>(2 * tx_backoff_, std::chrono::milliseconds(1));
      if (!socket_full) until = std::min(until, now + tx_backoff_);
    } else {
      watch_writable(false);
      tx_backoff_ = proto::Duration::zero();
    }
    if (port_->poll_mode() || until <= now) return;  // poll-mode ports are polled every turn
    proto::FlowHints hints;
    if (session_ && session_->connection()) hints = session_->connection()->flow_hints();
    // Frames waiting for the pacing clock: acks could only open a window
    // they may not use yet, so hold until it.
    const proto::Duration hold = paced     ? until - now
                                 : tx_full ? proto::Duration::zero()
                                           : wake_policy_.hold(now, until, hints, inflight_.size());
    wake_policy_.on_wait(now, hold > proto::Duration::zero());
    if (hold > proto::Duration::zero()) {
      ++wake_.sleeps;
      ++wake_.holds;
      const timespec ts = to_timespec(hold);
      // A poller's fd (the FUSE export's /dev/fuse) ends a hold as a
      // submission does: its requests must not wait for the replies' batch.
      hold_fds_.assign(1, pollfd{event_fd_, POLLIN, 0});
      for (const auto& poller : pollers_) hold_fds_.push_back(pollfd{poller.first, POLLIN, 0});
      ::ppoll(hold_fds_.data(), hold_fds_.size(), &ts, nullptr);
      return;
    }
    // Busy-poll while that pays, and for a moment after a poller's command
    // completed (the next request of a QD1 client is due soon).
    if (wake_policy_.should_poll(inflight_.size()) ||
        (now < poll_spin_until_ && options_.busy_poll.count() > 0)) {
      const TimePoint start = SteadyClock::now();
      const bool found = busy_poll(std::min<TimePoint>(until, start + options_.busy_poll));
      const TimePoint end = SteadyClock::now();
      ++wake_.polls;
      wake_.poll_ns += static_cast<uint64_t>((end - start).count());
      wake_policy_.on_poll(found, end - start);
      if (found) {
        ++wake_.poll_hits;
        return;
      }
      now = end;
      if (until <= now) return;
    }
    ++wake_.sleeps;
    const timespec ts = to_timespec(until - now);
    epoll_event evs[4];
    ::epoll_pwait2(epoll_fd_, evs, 4, &ts, nullptr);
  }

  static timespec to_timespec(proto::Duration d) {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(std::chrono::duration_cast<std::chrono::seconds>(d).count());
    ts.tv_nsec = static_cast<long>((d - std::chrono::seconds(ts.tv_sec)).count());
    return ts;
  }

  void watch_writable(bool on) {
    if (on == want_writable_ || port_->fd() < 0) return;
    epoll_event ev{};
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.fd = port_->fd();
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, port_->fd(), &ev) == 0) want_writable_ = on;
  }

  // Checks the epoll set without sleeping until something is ready (true) or
  // `until` (false). A zero-timeout epoll_pwait2 is one cheap system call;
  // sleeping and being woken by the other CPU is what costs the latency.
  bool busy_poll(TimePoint until) {
    const timespec zero{};
    epoll_event evs[4];
    do {
      if (::epoll_pwait2(epoll_fd_, evs, 4, &zero, nullptr) > 0) return true;
    } while (SteadyClock::now() < until);
    return false;
  }

  Stats snapshot() const {
    Stats s = stats_;
    if (session_) {
      s.state = std::string(proto::to_string(session_->state()));
      s.session_id = session_->session_id();
      s.epoch = session_->epoch();
      s.mtu = session_->negotiated().mtu;
      s.max_transfer = session_->negotiated().max_transfer;
      if (session_->connection()) s.transport = session_->connection()->stats();
      if (paths_) path_stats(s);
    } else {
      s.state = "not connected";
    }
    s.target_name = target_.name;
    s.target_mac = target_.mac;
    s.in_flight = static_cast<uint32_t>(inflight_.size());
    s.queued = static_cast<uint32_t>(waiting_.size());
    s.port = port_->counters();
    s.wake = wake_;
    s.reply_time = wake_policy_.reply_time();
    rusage ru{};
    if (::getrusage(RUSAGE_THREAD, &ru) == 0) {  // this is the loop thread
      s.wakeups = static_cast<uint64_t>(ru.ru_nvcsw);
      s.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                      static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    }
    s.rx_filter = io::to_string(rx_filter_) + (kernel_filter_ ? "" : " (in user space)") +
                  (rx_paused_ ? " (paused)" : "");
    return s;
  }

  void path_stats(Stats& s) const {
    const auto cands = paths_->candidates();
    proto::TransportStats sum;
    for (const proto::PathInfo& p : paths_->transport().paths()) {
      PathStats ps;
      ps.id = p.id;
      ps.state = std::string(proto::to_string(p.state));
      for (const proto::CandidateInfo& c : cands)
        if (c.id == p.id) {
          ps.state = std::string(proto::to_string(c.state));
          ps.redemptions = c.redemptions;
        }
      ps.local_mac = p.local;
      ps.target_mac = p.peer;
      ps.mtu = p.mtu;
      ps.frames_sent = p.counters.frames_sent;
      ps.frames_received = p.counters.frames_received;
      ps.frames_retransmitted = p.counters.frames_retransmitted;
      ps.pdus_sent = p.counters.pdus_sent;
      ps.pdus_received = p.counters.pdus_received;
      ps.failures = std::max<uint64_t>(p.counters.failures, path_failovers_[p.id % 16]);
      ps.pdus_moved_off = p.counters.pdus_moved_off;
      ps.srtt = p.transport.srtt;
      proto::add_path_counters(sum, p.counters);
      s.paths.push_back(std::move(ps));
    }
    // Candidates never installed (unreachable, refused) are reported too.
    for (const proto::CandidateInfo& c : cands) {
      bool listed = false;
      for (const PathStats& ps : s.paths) listed = listed || ps.id == c.id;
      if (listed) continue;
      PathStats ps;
      ps.id = c.id;
      ps.state = std::string(proto::to_string(c.state));
      ps.local_mac = c.candidate.local;
      ps.target_mac = c.candidate.target;
      s.paths.push_back(std::move(ps));
    }
    s.transport = sum;
  }

  struct ExtraPort {
    std::unique_ptr<io::Port> port;
    std::unique_ptr<io::PortSink> sink;
  };

  std::unique_ptr<io::Port> port_;
  Options options_;
  io::PortSink sink_;
  std::vector<ExtraPort> extra_;  // multipath: the other ports
  RouteSink route_sink_;
  std::unique_ptr<proto::InitiatorPaths> paths_;  // a multipath session's transport
  TimePoint paths_since_{};
  std::array<uint64_t, proto::kMaxPaths> path_failovers_{};
  bool single_path_logged_ = false;
  std::thread thread_;
  std::atomic<std::thread::id> loop_id_{};
  std::vector<std::pair<int, std::function<void()>>> pollers_;  // loop thread only
  std::vector<pollfd> hold_fds_;  // loop thread only: what a hold watches
  bool polling_ = false;          // the loop thread is running pollers_
  TimePoint poll_spin_until_{};   // busy-poll until then after a poller's command completed
  int event_fd_ = -1;
  int epoll_fd_ = -1;
  bool stop_ = false;
  uint64_t rounds_ = 0;

  std::mutex task_mutex_;
  std::deque<std::function<void()>> tasks_;
  std::deque<std::unique_ptr<Pending>> submissions_;

  // Loop-thread state.
  std::unique_ptr<proto::DiscoveryClient> discovery_;
  std::shared_ptr<std::promise<std::vector<TargetInfo>>> discovery_wait_;
  std::unique_ptr<proto::InitiatorSession> session_;
  std::shared_ptr<std::promise<Status<Error>>> connect_wait_;
  std::shared_ptr<std::promise<void>> disconnect_wait_;
  TimePoint disconnect_deadline_{};
  mutable std::mutex target_mutex_;
  TargetInfo target_;
  bool connected_ = false;
  bool recovering_ = false;
  bool last_attempt_resume_ = false;
  TimePoint next_login_ = proto::kNever;
  proto::InitiatorState recover_seen_{};  // the state recover() last saw (recovery_due())
  proto::Duration backoff_{};
  TimePoint last_relogin_log_{};
  // LUN -> identity (open_lun), guarded by target_mutex_; fenced LUNs and
  // the identity check after a re-login (loop thread).
  std::map<uint16_t, std::string> identities_;
  std::map<uint16_t, std::string> fenced_;
  std::deque<uint16_t> verify_queue_;  // front: the LUN whose probe is in flight
  struct {
    uint64_t count = 0, timed_out = 0;
    std::string last;
    TimePoint logged{};
  } fail_log_;

  std::deque<std::unique_ptr<Pending>> waiting_;
  std::map<uint64_t, std::unique_ptr<Pending>> inflight_;  // by seq: cmd_sn order
  std::vector<uint64_t> by_tag_;                           // tag -> seq (0: free)
  std::vector<uint16_t> free_tags_;
  uint64_t next_seq_ = 1;
  uint64_t malformed_frames_ = 0;
  io::RxFilter rx_filter_ = io::RxFilter::all();  // what the port was last asked to deliver
  bool kernel_filter_ = false;                    // whether the port's kernel applies it
  bool rx_paused_ = false;                        // update_rx_pause()
  bool rx_pause_supported_ = true;                // false once the port failed to pause
  TimePoint last_busy_{};                         // last time commands or a login were under way
  uint64_t probes_seen_ = 0;                      // keepalives_sent when last looked at
  uint64_t answers_seen_ = 0;                     // keepalives_answered when that probe went out
  bool probe_open_ = false;                       // that probe is not answered yet
  TimePoint probe_sent_at_{};
  Stats stats_;

  // Waiting (see wait()).
  io::WakePolicy wake_policy_;
  io::WakeCounters wake_;
  size_t rx_bytes_ = 0;         // received in the current turn
  bool tx_progress_ = false;    // the last flush sent something
  bool want_writable_ = false;  // EPOLLOUT on the port: frames wait for a full send buffer
  proto::Duration tx_backoff_{};
  std::atomic<uint32_t> max_data_{64 * 1024};
};

// --- Initiator ---

Initiator::Initiator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Initiator::~Initiator() = default;

std::vector<std::string> split_port_list(std::string_view list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    if (comma > start) out.emplace_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

namespace {
Result<std::unique_ptr<io::Port>, Error> open_one_port(std::string_view port_spec) {
  auto port = ports::open_port(port_spec);
  if (!port) {
    const io::PortError& e = port.error();
    switch (e.kind) {
      case io::PortErrorKind::kNoSuchInterface:
        return Unexpected{Error{ErrorKind::kInterfaceAbsent, "interface absent: " + e.message}};
      case io::PortErrorKind::kPermission:
        return Unexpected{
            Error{ErrorKind::kNotRoot, "not root: opening " + std::string(port_spec) +
                                           " needs root (CAP_NET_RAW): " + e.message}};
      default:
        return Unexpected{Error{ErrorKind::kPort,
                                "cannot open port " + std::string(port_spec) + ": " + e.message}};
    }
  }
  return std::move(port).value();
}
}  // namespace

Result<std::unique_ptr<Initiator>, Error> Initiator::create(
    std::vector<std::unique_ptr<io::Port>> ports, Options options) {
  if (ports.empty() || !ports.front())
    return Unexpected{Error{ErrorKind::kInvalidArgument, "no port"}};
  for (size_t i = 0; i < ports.size(); ++i) {
    if (!ports[i]) return Unexpected{Error{ErrorKind::kInvalidArgument, "no port"}};
    for (size_t j = 0; j < i; ++j)
      if (ports[j]->mac() == ports[i]->mac())
        return Unexpected{Error{ErrorKind::kInvalidArgument,
                                "the same port given twice: " + std::string(ports[i]->spec()) +
                                    " and " + std::string(ports[j]->spec()) + " are both " +
                                    io::to_string(ports[i]->mac())}};
  }
  std::unique_ptr<io::Port> first = std::move(ports.front());
  ports.erase(ports.begin());
  auto impl = std::make_unique<Impl>(std::move(first), std::move(options), std::move(ports));
  if (auto st = impl->start(); !st) return Unexpected{st.error()};
  return std::unique_ptr<Initiator>(new Initiator(std::move(impl)));
}

Result<std::unique_ptr<Initiator>, Error> Initiator::open(std::span<const std::string> port_specs,
                                                          Options options) {
  if (port_specs.empty()) return Unexpected{Error{ErrorKind::kInvalidArgument, "no port"}};
  if (port_specs.size() == 1) return open(port_specs.front(), std::move(options));
  std::vector<std::unique_ptr<io::Port>> ports;
  for (size_t i = 0; i < port_specs.size(); ++i) {
    for (size_t j = 0; j < i; ++j)
      if (port_specs[j] == port_specs[i])
        return Unexpected{
            Error{ErrorKind::kInvalidArgument, "the same port given twice: " + port_specs[i]}};
    auto p = open_one_port(port_specs[i]);
    if (!p) return Unexpected{p.error()};
    ports.push_back(std::move(p).value());
  }
  return create(std::move(ports), std::move(options));
}

Result<std::unique_ptr<Initiator>, Error> Initiator::create(std::unique_ptr<io::Port> port,
                                                            Options options) {
  if (!port) return Unexpected{Error{ErrorKind::kInvalidArgument, "no port"}};
  auto impl = std::make_unique<Impl>(std::move(port), std::move(options));
  if (auto st = impl->start(); !st) return Unexpected{st.error()};
  return std::unique_ptr<Initiator>(new Initiator(std::move(impl)));
}

Result<std::unique_ptr<Initiator>, Error> Initiator::open(std::string_view port_spec,
                                                          Options options) {
  auto port = open_one_port(port_spec);
  if (!port) return Unexpected{port.error()};
  return create(std::move(port).value(), std::move(options));
}

Result<std::vector<TargetInfo>, Error> Initiator::discover(std::string_view target_filter) {
  return impl_->discover(target_filter);
}

Status<Error> Initiator::connect(const TargetInfo& target) {
  return impl_->connect(target);
}

Result<TargetInfo, Error> Initiator::connect(std::string_view target_name) {
  auto found = impl_->discover(target_name);
  if (!found) return Unexpected{found.error()};
  std::vector<TargetInfo>& list = found.value();
  if (target_name.empty() && list.size() > 1) {
    std::string names;
    for (const auto& t : list) names += (names.empty() ? "" : ", ") + t.name;
    return Unexpected{Error{ErrorKind::kInvalidArgument,
                            "several targets answered (" + names + "): choose one with --target"}};
  }
  const TargetInfo& t = list.front();
  if (auto st = impl_->connect(t); !st) return Unexpected{st.error()};
  return t;
}

void Initiator::disconnect() {
  impl_->disconnect();
}

void Initiator::submit(ScsiCommand command, Completion done) {
  impl_->submit(std::move(command), std::move(done));
}

void Initiator::submit_into(ScsiCommand command, std::span<uint8_t> data_in, Completion done) {
  impl_->submit(std::move(command), std::move(done), data_in);
}

void Initiator::add_poller(int fd, std::function<void()> poll) {
  impl_->add_poller(fd, std::move(poll));
}

void Initiator::remove_poller(int fd) {
  impl_->remove_poller(fd);
}

std::future<CommandResult> Initiator::execute(ScsiCommand command) {
  auto p = std::make_shared<std::promise<CommandResult>>();
  auto f = p->get_future();
  impl_->submit(std::move(command), [p](CommandResult&& r) { p->set_value(std::move(r)); });
  return f;
}

Stats Initiator::stats() const {
  return impl_->stats();
}
TargetInfo Initiator::target() const {
  return impl_->target();
}
uint32_t Initiator::max_data_per_command() const {
  return impl_->max_data();
}
io::MacAddress Initiator::local_mac() const {
  return impl_->port().mac();
}
size_t Initiator::port_mtu() const {
  return impl_->port().mtu();
}
std::string Initiator::lun_identity(uint16_t lun) const {
  return impl_->lun_identity(lun);
}
void Initiator::remember_identity(uint16_t lun, std::string identity) {
  impl_->remember_identity(lun, std::move(identity));
}

Result<proto::crypto::SecretBytes, Error> read_secret_file(const std::string& path) {
  auto r = base::read_secret_file(path, proto::kMinSecretSize);
  if (!r) return Unexpected{Error{ErrorKind::kInvalidArgument, r.error().message}};
  return std::move(r).value();
}

}  // namespace hyperscsi::initiator

// Initiator::Impl, private to the library: the state of one Initiator and
// the declaration of its parts, each defined in its own file (named at each
// group below): the reactor (reactor.cpp), the receive filter (rx_control.cpp),
// the command table (command_table.cpp), recovery (recovery.cpp) and the
// identity check after a re-login (identity_check.cpp), multipath
// (multipath.cpp), discovery/login/disconnect (session_setup.cpp), stats
// (stats.cpp) and the operator's log (operator_log.cpp); initiator.cpp holds
// the public Initiator over it.
//
// Thread-safety: the members marked "any thread" post work to the loop
// thread (task_mutex_ guards the queues they share with it; target_mutex_
// guards target_ and identities_); everything else runs on the loop thread
// only, which owns the ports, the protocol state machines and the command
// table.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/io/port_sink.h"
#include "hyperscsi/io/reactor.h"
#include "hyperscsi/io/rx_filter.h"
#include "hyperscsi/io/wake_policy.h"
#include "hyperscsi/proto/discovery.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/initiator_paths.h"
#include "hyperscsi/proto/initiator_session.h"
#include "hyperscsi/proto/negotiation.h"

namespace hyperscsi::initiator {

using proto::TimePoint;
using SteadyClock = std::chrono::steady_clock;

// The owner of a command's borrowed data-out (ScsiCommand::
// data_out_borrowed) as the connection and port share it: when the last
// reference goes after the command finished (`lingering`), it wakes the
// loop, whose held completion may run now (from any thread: a port may
// drop a frame's reference on its own).
struct BorrowToken {
  explicit BorrowToken(std::shared_ptr<io::Waker> w) : waker(std::move(w)) {}
  std::shared_ptr<io::Waker> waker;
  std::atomic<bool> lingering{false};
};

// A command from submit() until its completion ran: waiting, then in
// flight under a tag (command_table.cpp).
struct Pending {
  ScsiCommand cmd;
  Completion done;
  // submit_into(): where the data-in lands (borrowed until `done` ran); on
  // a single-path session also the reassembly's destination for the reply
  // while the command is in flight (command_table.cpp).
  std::span<uint8_t> data_in_buffer;
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
  // ScsiCommand::data_out_borrowed: the reference every send shares with
  // the connection and port. The completion waits until it is the last one
  // (Lingering).
  std::shared_ptr<BorrowToken> borrow;
};

// A completion of a borrowed-data command held back until nothing but it
// refers to the caller's bytes (the connection may still hold frames not
// yet acknowledged, a port frames not yet sent).
struct Lingering {
  std::weak_ptr<BorrowToken> borrow;
  Completion done;
  CommandResult result;
};

// The tag of the identity check after a re-login; commands use the others.
constexpr uint16_t kProbeTag = 511;

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

  // --- any thread (not the loop thread, except submit()) ---
  // reactor.cpp
  Status<Error> start();
  void stop();
  void post(std::function<void()> task);
  void add_poller(int fd, std::function<void()> poll);
  void remove_poller(int fd);
  // session_setup.cpp
  Result<std::vector<TargetInfo>, Error> discover(std::string_view filter);
  Status<Error> connect(const TargetInfo& target);
  void disconnect();
  // command_table.cpp
  void submit(ScsiCommand command, Completion done, std::span<uint8_t> data_in_buffer = {});
  // stats.cpp
  Stats stats();
  // identity_check.cpp
  void remember_identity(uint16_t lun, std::string id);
  std::string lun_identity(uint16_t lun) const;

  template <typename T>
  T call(std::function<T()> fn) {
    auto p = std::make_shared<std::promise<T>>();
    auto f = p->get_future();
    post([p, fn = std::move(fn)] { p->set_value(fn()); });
    return f.get();
  }

  uint32_t max_data() const { return max_data_.load(); }
  TargetInfo target() const {
    std::lock_guard lock(target_mutex_);
    return target_;
  }
  io::Port& port() { return *port_; }

 private:
  // Sends each frame on the port whose MAC is its source (multipath.cpp).
  class RouteSink final : public proto::FrameSink {
   public:
    explicit RouteSink(Impl& impl) : impl_(impl) {}
    std::span<uint8_t> acquire(size_t size) override;
    void commit(size_t length) override;

   private:
    Impl& impl_;
    std::span<uint8_t> buf_;
  };

  // --- loop thread ---
  using InflightMap = std::map<uint64_t, std::unique_ptr<Pending>>;

  // reactor.cpp: the loop thread, its wake-ups and its waiting
  static io::WakeConfig wake_config(const Options& o);
  void run();
  void run_tasks();
  void receive(std::vector<io::Packet>& rx, TimePoint now);
  void receive_on(io::Port& port, std::vector<io::Packet>& rx, TimePoint now);
  void wait(TimePoint now);
  void watch_writable(bool on);

  // rx_control.cpp: what the ports deliver (receive filter, idle pause)
  void sync_rx_filter();
  void update_rx_pause(TimePoint now);
  bool rx_busy() const;
  TimePoint rx_pause_at(TimePoint now);
  TimePoint rx_quiet_since(TimePoint now);
  bool foreign(std::span<const uint8_t> frame);

  // command_table.cpp: tags, cmd_sn order, sending, replies, dead time
  std::optional<proto::ReceivedPdu> next_reply();
  void drain_replies();
  InflightMap::iterator match(uint16_t tag, uint32_t cmd_sn);
  void drain_placed(const proto::ReceivedPdu& pdu);
  void complete(std::unique_ptr<Pending> p, const proto::ReplyHeader& h,
                std::span<const uint8_t> data_in, bool placed);
  void release(InflightMap::iterator it, uint16_t tag);
  void admit(TimePoint now);
  proto::CommandHeader command_header(const Pending& p, size_t data_out_length) const;
  bool send_command(Pending& p);
  std::vector<uint8_t> build_pdu(const Pending& p) const;
  void send_unsent();
  void expire(TimePoint now);
  void finish_failed(std::unique_ptr<Pending> p, CompletionError e, std::string message);
  // Runs p's completion with `r`, or holds it in lingering_ while its
  // borrowed data-out is referenced elsewhere.
  void finish(std::unique_ptr<Pending> p, CommandResult r);
  // Runs the held completions whose data is free now (`all`: every one: the
  // loop has ended, nothing sends any more).
  void run_released(bool all = false);
  void fail_all(CompletionError e, const std::string& message);

  // recovery.cpp: resume or re-login after the session died
  bool recovery_due() const;
  void recover(TimePoint now);
  void lost_session();
  void update_negotiated();

  // identity_check.cpp: LUN identities after a re-login, fencing
  void start_identity_check(TimePoint now);
  void issue_probe(TimePoint now);
  void on_probe(uint16_t lun, const CommandResult& r);
  void fence(uint16_t lun, const std::string& why);

  // multipath.cpp: the paths of a multipath session
  void on_path_frame(const proto::FrameView& view, TimePoint now);
  void sync_paths(TimePoint now);
  void path_events();
  static uint16_t clamp_mtu(size_t mtu);

  // session_setup.cpp: discovery, login and disconnect
  void finish_waits(TimePoint now);

  // stats.cpp: the Stats snapshot
  Stats snapshot() const;
  void path_stats(Stats& s) const;

  // operator_log.cpp: the operator's log
  std::string who() const;
  static std::string seconds_text(proto::Duration d);
  static std::string hex32(uint32_t v);
  void log(LogLevel level, const std::string& text) const;
  void note_unit_attention(uint16_t lun, const std::vector<uint8_t>& sense);
  void note_failure(const ScsiCommand& cmd, const CommandResult& r);
  void flush_failure_log(TimePoint now);
  static std::string opcode_name(const std::vector<uint8_t>& cdb);

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
  bool polling_ = false;  // the loop thread is running pollers_
  // The last wait may have seen a poller's fd readable (or did not look):
  // pollers run only then, not every turn (a read() that would block each).
  bool pollers_due_ = true;
  TimePoint poll_spin_until_{};  // busy-poll until then after a poller's command completed
  // The ports, the pollers' fds (quiet: they end a hold) and the wake-up of
  // post() and submit() (reactor.cpp).
  io::Reactor reactor_;
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
  InflightMap inflight_;              // by seq: cmd_sn order
  std::vector<Lingering> lingering_;  // loop thread
  std::vector<uint64_t> by_tag_;      // tag -> seq (0: free)
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

}  // namespace hyperscsi::initiator

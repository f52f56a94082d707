// PortLoop: the event loop of one port (one thread). See target_engine.h for
// the data flow. Everything but the atomics, the mailbox and the snapshot
// request is touched only by the loop thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/io/port_sink.h"
#include "hyperscsi/io/reactor.h"
#include "hyperscsi/io/wake_policy.h"
#include "multipath_router.h"
#include "target_device.h"
#include "tx_scheduler.h"

namespace hyperscsi::engine {

// A command handed to a LogicalUnit; keeps its PDU (the data-out) alive until
// the completion has been answered.
struct PendingCommand {
  proto::IncomingCommand cmd;
  std::shared_ptr<LunEntry> entry;  // null for commands answered without a unit
  bool reexecutable = false;
};

struct Completion {
  std::shared_ptr<PendingCommand> pending;
  scsi::CommandResult result;
};

// Completions travel from whichever thread polled the store to the loop that
// owns the command's session. It shares the loop's wake-up: the last holder
// may be a completion on another thread after the loop is gone.
class Mailbox {
 public:
  explicit Mailbox(std::shared_ptr<io::Waker> waker) : waker_(std::move(waker)) {}
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;
  // From any thread. Wakes the owner only when the mailbox was empty and the
  // caller is another thread: the owner takes its own pushes later in the
  // same loop turn, and never sleeps while items wait (see empty()).
  void push(Completion c);
  std::deque<Completion> take();
  bool empty();
  void set_owner(std::thread::id id) { owner_.store(id); }

 private:
  std::mutex mu_;
  std::atomic<std::thread::id> owner_{};
  std::deque<Completion> items_;
  std::shared_ptr<io::Waker> waker_;
};

struct LoopCounters {
  std::atomic<uint64_t> frames_received{0};
  std::atomic<uint64_t> malformed_frames{0};
  std::atomic<uint64_t> frames_not_for_us{0};
  // Multipath frames not handed to another loop: its queue was full.
  std::atomic<uint64_t> handoffs_dropped{0};
  std::atomic<uint64_t> commands_executed{0};
  std::atomic<uint64_t> commands_denied{0};
  std::atomic<uint64_t> commands_unauthenticated{0};  // allowed by name/MAC, not by auth policy
  std::atomic<uint64_t> commands_absent{0};
  std::atomic<uint64_t> commands_busy{0};
  std::atomic<uint64_t> replays{0};
  std::atomic<uint64_t> replies_sent{0};
  std::atomic<uint64_t> replies_failed{0};
  // How the loop waited (io::WakeCounters) and the CPU time of its thread
  // (as of the last stats request).
  std::atomic<uint64_t> turns{0};
  std::atomic<uint64_t> sleeps{0};
  std::atomic<uint64_t> holds{0};
  std::atomic<uint64_t> paced_sleeps{0};  // holds that watched nothing (PortSink::release_covered)
  std::atomic<uint64_t> tx_full_waits{0};
  std::atomic<uint64_t> cpu_ns{0};
  std::atomic<uint64_t> wakeups{0};  // voluntary context switches: sleeps that ended
};

class PortLoop {
 public:
  PortLoop(const EngineConfig& config, std::unique_ptr<io::Port> port,
           std::shared_ptr<TargetDevice> device);
  ~PortLoop();  // stops and joins

  Status<EngineError> start();
  // Asks the thread to end the sessions (if `disconnect`) and exit; joins it.
  void stop(bool disconnect);
  void set_draining() {
    draining_ = true;
    wake();
  }
  // For drain(): commands executing, and sessions with unacknowledged replies.
  size_t commands_in_flight() const { return in_flight_.load(); }
  size_t sessions_unacked() const { return unacked_.load(); }

  // Fresh sessions and endpoint stats from the loop thread (waits up to `timeout`).
  bool snapshot(std::vector<SessionReport>& sessions, proto::TargetStats& stats,
                std::chrono::milliseconds timeout);
  const LoopCounters& counters() const { return counters_; }
  std::string_view spec() const { return port_->spec(); }
  MacAddress port_mac() const { return port_->mac(); }
  size_t port_mtu() const { return port_->mtu(); }

  // Multipath (multipath_router.h): set before start(). Then the endpoint
  // offers MULTIPATH with every port of the router, and frames of sessions
  // homed on other loops travel through post_rx/post_tx.
  void set_router(MultipathRouter* router) { router_ = router; }
  // From any thread: a frame of a session homed here that arrived on another
  // port; a frame to send on this loop's port for a session homed elsewhere.
  void post_rx(std::vector<uint8_t> frame);
  void post_tx(std::vector<uint8_t> frame);

 private:
  using Peer = Initiator;  // access.h

  class RoutingSink;

  void run();
  void wake();
  void take_foreign(proto::TimePoint now);
  proto::FrameSink& out_sink();
  void refresh_table();
  void receive(proto::TimePoint now);
  void poll_units();
  void answer_completions();
  void take_commands();
  void handle_command(proto::IncomingCommand cmd);
  void answer_now(proto::IncomingCommand cmd, scsi::CommandResult result, bool reexecutable);
  void send(const PendingCommand& p, scsi::CommandResult&& result);  // takes the data buffer
  void handle_events();
  void home_if_multipath(uint32_t session_id);
  void watch(const std::shared_ptr<LunEntry>& entry);
  void unwatch_idle();
  void publish_snapshot_if_asked();
  void update_drain_state();
  proto::TimePoint deadline(proto::TimePoint now) const;
  io::Reactor::WaitResult wait(proto::TimePoint now);
  void watch_writable(bool on);
  const Peer* peer_of(uint32_t session_id);
  std::vector<proto::LunInfo> visible_luns(std::string_view name, const MacAddress& mac) const;
  std::optional<proto::Protection> required_protection(std::string_view name, const MacAddress& mac,
                                                       bool authenticated) const;
  void log_malformed(proto::DecodeError e, proto::TimePoint now);

  const EngineConfig& config_;
  std::unique_ptr<io::Port> port_;
  std::shared_ptr<TargetDevice> device_;
  std::shared_ptr<const TargetDevice::Luns> table_;  // the device's LUN list, refreshed each turn
  uint64_t table_generation_ = 0;

  // Watches the port, and as quiet fds (which end a hold) the LUNs'
  // completions; its wake-up is the mailbox's. A hold waits on the quiet fds
  // alone, or on nothing when paced frames already fill the next release.
  io::Reactor reactor_;
  bool want_writable_ = false;    // EPOLLOUT on the port: frames wait for a full send buffer
  proto::Duration tx_backoff_{};  // pause after the device queue refused frames
  io::WakePolicy wake_policy_;
  size_t rx_bytes_ = 0;       // received in the current turn
  bool tx_progress_ = false;  // the last flush sent something
  std::shared_ptr<Mailbox> mailbox_;
  std::unique_ptr<proto::TargetEndpoint> endpoint_;
  std::unique_ptr<io::PortSink> sink_;
  TxScheduler tx_;  // shares the port among the sessions (issue 21)
  std::map<LunEntry*, std::shared_ptr<LunEntry>> watched_;
  std::unordered_map<uint32_t, Peer> peers_;
  std::vector<io::Packet> rx_;

  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> disconnect_on_stop_{false};
  std::atomic<bool> draining_{false};
  std::atomic<size_t> in_flight_{0};
  std::atomic<size_t> unacked_{0};
  size_t in_flight_local_ = 0;

  // Snapshot requests from other threads.
  std::mutex snap_mu_;
  std::condition_variable snap_cv_;
  uint64_t snap_requested_ = 0;
  uint64_t snap_published_ = 0;
  std::vector<SessionReport> snap_sessions_;
  proto::TargetStats snap_stats_;

  // Multipath: frames crossing from and to other loops (multipath_router.h).
  MultipathRouter* router_ = nullptr;
  std::unique_ptr<RoutingSink> route_sink_;
  std::mutex foreign_mu_;
  std::vector<std::vector<uint8_t>> foreign_rx_;
  std::vector<std::vector<uint8_t>> foreign_tx_;
  std::atomic<bool> foreign_pending_{false};

  proto::TimePoint last_malformed_log_{};
  uint64_t malformed_since_log_ = 0;
  LoopCounters counters_;
};

}  // namespace hyperscsi::engine

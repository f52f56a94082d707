// TargetEngine: serves SCSI logical units to HyperSCSI initiators over one or
// more ports.
//
// One event-loop thread per port. Each loop owns that port's
// proto::TargetEndpoint (discovery, login, sessions, exactly-once replies) and
// waits with epoll on the port fd (busy-polls poll-mode ports), the store
// completion fds of the LUNs it has commands on, and an eventfd for control,
// with the endpoint's next deadline as timeout. A received frame is decoded
// (malformed ones are counted and logged at a limited rate, never fatal), fed
// to the endpoint; each command is checked against the LUN's access list,
// executed on its scsi::LogicalUnit and answered with a reply PDU (ReplyHeader,
// sense, data-in, residuals) through TargetEndpoint::send_reply.
//
// LUNs are shared by all ports: a LogicalUnit (and its store) is used under
// its own mutex, by one loop at a time (TargetEngine.OneLunDrivenFromTwoPorts-
// IsNeverEnteredByTwoLoopsAtOnce holds it to that), and its completions are
// handed to the loop the command came from through that loop's mailbox, so
// commands from any port may reach any LUN.
//
// Ownership: the engine owns its ports, endpoints and logical units. A removed
// LUN disappears at once for new commands; it is flushed and destroyed after
// its in-flight commands have completed.
// Thread-safety: every public method may be called from any thread (the
// daemon's main thread); the engine's own threads never call back into the
// caller except through spdlog.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "hyperscsi/engine/access.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/negotiation.h"
#include "hyperscsi/proto/reply_cache.h"
#include "hyperscsi/proto/result.h"
#include "hyperscsi/proto/target_session.h"
#include "hyperscsi/scsi/logical_unit.h"

namespace hyperscsi::engine {

struct EngineError {
  std::string message;
};

struct EngineConfig {
  std::string target_name = "hyperscsi-target";
  // What the target offers at login. mtu 0: each port's own MTU.
  proto::TargetLimits limits{.mtu = 0};
  proto::TransportParams transport;
  proto::ReplyCacheLimits reply_cache;
  size_t max_sessions = 256;
  uint64_t seed = 0;     // session-id randomness; 0: from std::random_device
  size_t rx_burst = 32;  // frames taken from the port per rx_burst call
  std::chrono::milliseconds malformed_log_interval{1000};  // at most one log line per interval
  bool announce_at_start = true;  // broadcast a DiscoveryReply when a loop starts
  // Secrets shared with initiators, by initiator name (auth.h). An initiator
  // without one can only log in unauthenticated.
  std::map<std::string, proto::crypto::SecretBytes, std::less<>> initiator_secrets;
  // Multipath (docs/protocol.md 14): with several ports, offer MULTIPATH with
  // every port's MAC, so that one session runs over several paths (see
  // multipath_router.h for how its frames cross between the port loops).
  bool multipath = false;
  // Large reads of memory-backed LUNs copied on the store's own thread while
  // the session has a send backlog (scsi::CommandRequest::sender_busy), so
  // the port loop goes on sending: for a target host with CPUs to spare. Off
  // by default: where the loop is not the bottleneck (a paced 1 Gbit/s link)
  // or the CPUs are all busy, the hand-off only costs (docs/benchmarks.md).
  bool read_thread = false;
};

// One LUN to serve.
struct LunDefinition {
  uint16_t lun = 0;
  std::unique_ptr<scsi::LogicalUnit> unit;
  AccessList access;
};

// Who uses a LUN, for the daemon's reload decisions and log lines.
struct LunUsage {
  std::vector<scsi::Nexus> nexuses;  // sessions that sent it commands and have not ended
  std::optional<scsi::Nexus> owner;  // an exclusive LUN's owner
  store::StoreIdentity identity;     // its store's
  uint64_t num_blocks = 0;
  uint32_t block_size = 0;
};

// One LUN's store, as seen by the stats interface.
struct LunStats {
  uint16_t lun = 0;
  store::StoreCounters store;
};

// Counters of the whole engine (sums over its ports).
struct EngineStats {
  uint64_t frames_received = 0;
  uint64_t malformed_frames = 0;   // decode_frame refused them
  uint64_t frames_not_for_us = 0;  // unicast to another MAC
  uint64_t handoffs_dropped = 0;   // multipath frames dropped at a full loop-to-loop queue
  uint64_t commands_executed = 0;  // handed to a LogicalUnit
  uint64_t commands_denied = 0;    // LUN exists but the access list hides it
  uint64_t commands_absent = 0;    // LUN does not exist
  uint64_t commands_busy = 0;      // refused with BUSY while draining
  uint64_t replays = 0;            // duplicates answered from the reply cache
  uint64_t replies_sent = 0;
  uint64_t replies_failed = 0;            // session gone or the connection refused the reply
  uint64_t commands_unauthenticated = 0;  // LUN hidden by its auth/protection policy
  proto::TargetStats endpoint;            // summed over ports (as of the last sessions() call)
  // The port loops (summed over ports): turns, waits that could block, of
  // those the holds (port not watched while a PDU streams in or frames wait
  // for the pacing clock) and the waits for a full transmit path; then the
  // loop threads' wake-ups (voluntary context switches) and CPU time. The
  // target never busy-polls.
  uint64_t loop_turns = 0;
  uint64_t loop_waits = 0;
  uint64_t loop_holds = 0;
  uint64_t loop_paced_sleeps =
      0;  // of the holds: paced frames filled the next release (no fd watched)
  uint64_t loop_tx_full_waits = 0;
  uint64_t loop_wakeups = 0;
  double loop_cpu_seconds = 0;
  std::vector<LunStats> luns;  // each LUN's store (TargetEngine::lun_stats())
};

// A session as seen by the stats interface.
struct SessionReport {
  std::string port;  // spec of the port it runs on
  proto::SessionInfo info;
};

struct DrainReport {
  bool completed = true;        // everything finished and was acknowledged within the timeout
  size_t commands_left = 0;     // commands still executing when the timeout hit
  size_t sessions_unacked = 0;  // sessions whose replies were not all acknowledged
  size_t flush_errors = 0;      // LUNs whose final flush failed
};

class PortLoop;
class MultipathRouter;

class TargetEngine {
 public:
  TargetEngine(EngineConfig config, std::vector<std::unique_ptr<io::Port>> ports);
  ~TargetEngine();  // stop() if still running, then flushes and closes every LUN
  TargetEngine(const TargetEngine&) = delete;
  TargetEngine& operator=(const TargetEngine&) = delete;

  // LUN table. Errors: duplicate LUN, no unit.
  Status<EngineError> add_lun(LunDefinition def);
  // False if absent. New commands see the LUN absent at once; commands in
  // flight finish, then the unit is flushed and destroyed.
  bool remove_lun(uint16_t lun);
  // remove_lun(), then waits up to `wait_closed` until the unit is flushed
  // and closed (its backing store unlocked, so it can be opened again).
  // False if absent or still open when the wait ended.
  bool remove_lun(uint16_t lun, std::chrono::milliseconds wait_closed);
  // Sessions using a LUN and its identity; nullopt if absent.
  std::optional<LunUsage> lun_usage(uint16_t lun) const;
  // Replaces a LUN's access list; false if absent. Applies to the next command.
  bool set_access(uint16_t lun, AccessList access);
  std::vector<uint16_t> luns() const;
  bool has_lun(uint16_t lun) const;

  // Starts one thread per port. Errors: already started, epoll/eventfd setup.
  Status<EngineError> start();
  // Stops accepting commands (BUSY), waits up to `timeout` for in-flight
  // commands to complete and their replies to be acknowledged, flushes every
  // LUN's store, ends the sessions (Disconnect kShutdown) and stops the loops.
  DrainReport drain(std::chrono::milliseconds timeout);
  // Stops the loops at once (no drain). Idempotent.
  void stop();
  bool running() const { return running_; }

  // Sessions of every port, fresh from the loops (waits up to `timeout`).
  std::vector<SessionReport> sessions(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(1000)) const;
  EngineStats stats() const;
  // Each LUN's store counters, ascending; read under the LUN's mutex, so any
  // thread may call it while the loops run.
  std::vector<LunStats> lun_stats() const;
  const EngineConfig& config() const { return config_; }
  size_t port_count() const { return loops_.size(); }

 private:
  size_t flush_all_luns();

  EngineConfig config_;
  std::shared_ptr<scsi::Device<AccessList>> device_;  // the LUNs and their access lists
  std::unique_ptr<MultipathRouter> router_;           // outlives the loops, which point at it
  std::vector<std::unique_ptr<PortLoop>> loops_;
  mutable std::mutex control_mu_;  // start/drain/stop
  std::atomic<bool> running_{false};
};

}  // namespace hyperscsi::engine

// PathSet: the transport of one side of a multipath session
// (docs/protocol.md section 14). A session has up to 16 paths (local port x
// peer port), numbered by path_id and renewed by generation. Each path
// generation is a Connection of its own, like an MPTCP subflow: its own
// sequence numbers, acks and SACK, RTT, RTO and congestion window, its own
// reassembly, and (in a protected session) its own frame keys. So one slow
// or lossy path neither stalls nor confuses the others.
//
// Session level, above the paths:
//  - send_pdu() queues a PDU; the scheduler (path_scheduler.h) hands each PDU
//    whole to the active path with the shortest expected service time (a
//    path's Connection fragments it at that path's MTU). An active path with
//    no backlog that was given no PDU for kRetryIdlePath (or none yet in its
//    generation, so also a path just activated) gets the next one it can
//    take, whatever its estimates say: only its own traffic re-measures
//    them, so a path measured slow once would otherwise stay idle for good;
//  - complete PDUs from every path come out of pop_pdu(), in arrival order;
//    ordering by cmd_sn and exactly-once execution are the owners' (the
//    target's ReplyCache and CommandOrderer, the initiator's command table);
//  - failure (path_health.h): a path whose frames stop being acknowledged,
//    or (with probe_idle, the initiator) that stays silent, is declared
//    failed within T_fail; its Connection is dropped and every PDU it had not
//    delivered completely goes back to the front of the queue, to be sent
//    whole on the surviving paths. Frames of a failed generation are ignored
//    afterwards; the path comes back only as a new generation (install());
//  - keepalives: with probe_idle, a path quiet for T_fail / 4 gets one;
//    either side answers a keepalive on the path it came on, padded alike.
//
// What a PathSet does not do: joining, verifying and redeeming paths (the
// control planes initiator_paths.h and target_paths.h drive install(),
// activate(), fail() and remove()), and session-level frames (login,
// disconnect, path requests), which on_frame() hands back to the owner.
//
// Reply placement (Connection::place_reply) is not offered here: a
// multipath initiator copies each reply's data-in. Registering a buffer on
// every path's Connection is not safe as placement stands, because a path
// can carry a reply of an earlier command under the same tag: the target's
// PathSet resends every reply it saw no ack for when it fails a path (it
// fails on missing acks, so also when we did receive the reply), and by
// then the tag may belong to a new command with a buffer of the same size.
// A Reassembler places by tag and pdu_length alone, and writes fragments
// before the header (the cmd_sn) is known, so that stale reply would land in
// the new command's buffer. What wiring it takes:
//  - the Reassembler places only a reply whose fragment at offset 0 arrives
//    first and carries the registered cmd_sn (a reply starting with any
//    other fragment, or another cmd_sn, is copied);
//  - here, a per-tag table of (buffer, cmd_sn) registered on every path's
//    Connection, on a new generation's Connection at install(), and
//    forgotten on all of them at once (a retired Connection takes its
//    registrations with it);
//  - in the initiator, the registration when the PathSet takes a command,
//    and forgetting it with the command in every way it ends (release(),
//    fail_all(), recovery, sync_paths dropping the PathSet).
//
// Frames leave through one FrameSink; each carries the source MAC of its
// path's local port, by which the owner picks the port to send it on.
// Ownership: the PathSet owns its Connections, sealers and queued PDUs.
// No I/O, no clock, no threads; the data path never throws.
// Thread-safety: none; one owner thread.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/clock.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/frame_protection.h"
#include "hyperscsi/proto/multipath.h"
#include "hyperscsi/proto/path_auth.h"
#include "hyperscsi/proto/path_health.h"
#include "hyperscsi/proto/path_scheduler.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::proto {

namespace detail {
class Outbox;
}

enum class PathState : uint8_t {
  kStandby,  // installed, carries acks and keepalives, takes no new PDUs (yet)
  kActive,   // takes new PDUs
  kFailed,   // no Connection; its frames are ignored until a new generation
};
std::string_view to_string(PathState s);

enum class PathFailure : uint8_t {
  kNone,
  kStuck,     // unacknowledged frames, no ack progress for T_fail
  kSilent,    // nothing heard for T_fail (the probing side)
  kPeerLeft,  // the peer said so (a Path Request kLeave)
  kReplaced,  // a newer generation took its place
  kLeft,      // the owner removed or failed it (orderly leave, MTU...)
};
std::string_view to_string(PathFailure f);

struct PathSetConfig {
  PathRole role = PathRole::kInitiator;  // which direction's frame keys seal
  uint32_t session_id = 0;
  uint16_t epoch = 0;
  TransportParams transport;  // per path: mtu, windows and checksum set by install()
  PathHealthConfig health;
  bool probe_idle = false;         // keepalives on quiet paths; silence fails a path
  double initial_rate = 125e6;     // bytes/s assumed before a path is measured (1 Gbit/s)
  size_t queue_limit = 64u << 20;  // bytes of PDUs waiting for a path
};

// One path generation to install.
struct PathSpec {
  uint8_t id = 0;
  uint8_t gen = 0;
  MacAddress local{};
  MacAddress peer{};
  uint16_t mtu = 1500;          // the path's L3 MTU (the protection trailer comes off it)
  uint16_t receive_window = 0;  // frames we accept beyond our ack; 0: config.transport's
  uint16_t peer_window = 64;    // what the peer accepts
  bool checksum = true;         // crc32 on every frame (negotiated CHECKSUM)
  PathState state = PathState::kStandby;
};

// Per-path counters, summed over its generations.
struct PathCounters {
  uint64_t generations = 0;
  uint64_t pdus_sent = 0;  // PDUs handed to the path
  uint64_t pdus_received = 0;
  uint64_t bytes_sent = 0;  // PDU bytes, first transmissions
  uint64_t bytes_received = 0;
  uint64_t frames_sent = 0;
  uint64_t frames_retransmitted = 0;
  uint64_t frames_received = 0;
  uint64_t timeouts = 0;
  uint64_t failures = 0;        // times declared failed, any cause
  uint64_t pdus_moved_off = 0;  // undelivered PDUs moved to other paths
  uint64_t keepalives_sent = 0;
  uint64_t keepalives_answered = 0;  // answers we received
  uint64_t frames_stale = 0;         // for a failed or older generation
  uint64_t frames_misrouted = 0;     // MACs other than the path's
  ProtectionStats protection_drops;
};

// Adds one path's counters to a session's transport totals (a multipath
// session's transport is the sum of its paths', on either side).
void add_path_counters(TransportStats& sum, const PathCounters& path);

struct PathInfo {
  uint8_t id = 0;
  uint8_t gen = 0;
  PathState state = PathState::kFailed;
  PathFailure last_failure = PathFailure::kNone;
  MacAddress local{};
  MacAddress peer{};
  uint16_t mtu = 0;
  TimePoint state_since{};
  Duration fail_timeout{};  // T_fail now
  double rate = 0;          // estimated delivery rate, bytes/s
  bool rate_measured = false;
  uint64_t backlog_bytes = 0;
  TransportStats transport;  // the current generation (zeros when failed)
  PathCounters counters;
};

struct PathSetStats {
  uint64_t pdus_queued = 0;  // accepted by send_pdu
  uint64_t pdus_received = 0;
  uint64_t pdus_moved = 0;       // moved off failed or replaced paths
  uint64_t queue_refusals = 0;   // send_pdu refused: queue full
  uint64_t frames_bad_path = 0;  // path_id above 15 or never installed
  uint64_t failures = 0;
};

enum class PathEventKind : uint8_t {
  kInstalled,
  kActivated,
  kFailed,  // failure says why; pdus_moved went to the queue
  kRemoved,
  kProbeAnswered,  // a keepalive answer (probe_id, l3_size): for verification
};
struct PathEvent {
  PathEventKind kind = PathEventKind::kInstalled;
  uint8_t id = 0;
  uint8_t gen = 0;
  PathFailure failure = PathFailure::kNone;
  uint32_t pdus_moved = 0;
  uint32_t probe_id = 0;
  size_t l3_size = 0;
};

class PathSet {
 public:
  explicit PathSet(PathSetConfig config);
  ~PathSet();
  PathSet(const PathSet&) = delete;
  PathSet& operator=(const PathSet&) = delete;

  // Installs generation spec.gen of path spec.id with fresh sequence numbers.
  // An older generation of the same id is replaced: its undelivered PDUs go
  // back to the queue. `frame_keys`: this path generation's keys when the
  // session's frames are protected (path_auth.h), else null. `continue_with`:
  // a sealer and opener already in use on these keys (the login path's, see
  // SharedProtection), taken instead of fresh ones. False if the id is out
  // of range or the keys are unusable.
  bool install(const PathSpec& spec, TimePoint now, const SessionKeys* frame_keys = nullptr,
               const SharedProtection& continue_with = {});
  bool activate(uint8_t id, TimePoint now);
  // Declares a path failed: its Connection goes, undelivered PDUs move.
  bool fail(uint8_t id, PathFailure why, TimePoint now);
  // Forgets a path entirely (after fail() if it still had a Connection).
  bool remove(uint8_t id, PathFailure why, TimePoint now);

  // Queues a PDU (kCommandRequest or kCommandReply) for the best path. False
  // when the queue is full or the PDU could never be sent (too large).
  bool send_pdu(Opcode opcode, uint16_t tag, std::vector<uint8_t> pdu);
  std::optional<ReceivedPdu> pop_pdu();

  enum class FrameResult : uint8_t {
    kHandled,   // a transport frame of one of our paths (data, ack, keepalive)
    kForOwner,  // verified (and opened) but session-level: see `opened`
    kDropped,   // stale generation, unknown path, wrong MACs, failed protection
  };
  // A frame whose session_id and epoch the owner has matched. Path requests
  // and replies (0x31, 0x32) come back as kForOwner untouched; other
  // session-level frames (Disconnect) after their path's checks and
  // protection. `opened` stays valid until the next on_frame().
  FrameResult on_frame(const FrameView& frame, TimePoint now, FrameView& opened);

  // Control frames on path `id`: header from its Connection (acks ride
  // along), sealed when the path is protected. False if it has none.
  bool queue_control(uint8_t id, Opcode opcode, uint8_t flags, std::vector<uint8_t> body);
  // A keepalive on path `id` padded to `pad_to` bytes of L3 (0: minimal);
  // returns its probe id (its answer raises kProbeAnswered), 0 if no Connection.
  uint32_t send_probe(uint8_t id, uint16_t pad_to);
  // A frame sent as it is (path requests and replies: never sealed).
  void queue_unsealed(const FrameHeader& header, std::vector<uint8_t> body);
  // Writes only the queued control frames (unsealed ones, then each path's,
  // sealed with its keys): the last words of a session that is going away
  // (its Disconnect or the answer to one), without its data or timers.
  void flush_control(FrameSink& sink);

  void poll(TimePoint now, FrameSink& sink);
  TimePoint next_deadline() const;

  std::optional<PathEvent> pop_event();

  bool has(uint8_t id) const;
  std::optional<PathState> state(uint8_t id) const;
  std::optional<uint8_t> generation(uint8_t id) const;
  std::optional<PathInfo> path(uint8_t id) const;
  std::vector<PathInfo> paths() const;
  size_t active_count() const;
  // The active path (else any with a Connection) with the smallest RTT: for
  // session-level frames.
  std::optional<uint8_t> best_path() const;
  // The last time any path heard anything (for the session's dead time).
  TimePoint last_heard() const { return last_heard_; }
  // True when nothing is queued, in flight or owed on any path.
  bool idle() const;
  size_t queued_bytes() const { return queue_bytes_; }
  size_t queued_pdus() const { return queue_.size(); }
  const PathSetStats& stats() const { return stats_; }
  const PathSetConfig& config() const { return config_; }

 private:
  struct Path;
  struct Queued {
    Opcode opcode;
    uint16_t tag;
    std::vector<uint8_t> bytes;
  };

  Path* find(uint8_t id);
  const Path* find(uint8_t id) const;
  void retire_connection(Path& p, PathFailure why, TimePoint now);
  void dispatch();
  void check_health(Path& p, TimePoint now);
  void drain(Path& p);
  void push_event(PathEvent e);
  PathInfo info(const Path& p) const;

  PathSetConfig config_;
  std::array<std::unique_ptr<Path>, kMaxPaths> paths_;
  std::deque<Queued> queue_;
  size_t queue_bytes_ = 0;
  bool dispatch_pending_ = false;
  std::deque<ReceivedPdu> ready_;
  std::deque<PathEvent> events_;
  std::unique_ptr<detail::Outbox> unsealed_;
  std::vector<uint8_t> scratch_;  // the payload of the last opened frame
  std::vector<PathLoad> loads_;   // dispatch scratch
  std::vector<size_t> ranked_;
  TimePoint last_now_{};
  TimePoint last_heard_{};
  uint32_t next_probe_id_ = 1;
  PathSetStats stats_;
};

// A Path Request or Reply ready to queue (PathSet::queue_unsealed).
struct PathControlFrame {
  FrameHeader header;
  std::vector<uint8_t> body;
};

// The framing and proofs of path control (docs/protocol.md 14.5, 14.6),
// shared by both sides' control planes (initiator_paths.h, target_paths.h):
// the header of a message travelling on a given path (never sealed), its
// proof from the session's proof key in an authenticated session, and the
// check of a received message's proof.
// Ownership: holds the session's proof key (wiped with it). Thread-safety:
// none needed; const after construction.
class PathControl {
 public:
  // `self`: the side that sends with this object. `keys`: the login's keys
  // of an authenticated session (proofs made and required), else nullopt.
  PathControl(PathRole self, uint32_t session_id, uint16_t epoch,
              const std::optional<SessionKeys>& keys);

  bool authenticated() const { return proof_key_.has_value(); }

  // `req` travelling on path (path_id, path_gen) from `src` to `dst`; its
  // proof field is filled in (authenticated sessions).
  PathControlFrame request(const MacAddress& src, const MacAddress& dst, uint8_t path_id,
                           uint8_t path_gen, PathRequest req) const;
  // `reply` to the request that `request_header` carried: back on its path,
  // from its destination to its source.
  PathControlFrame reply(const FrameHeader& request_header, PathReply reply) const;
  // A kLeave notice about (id, gen), queued on `set`'s best path when that is
  // another path. False when no other path can carry it (the peer then finds
  // out by its own failure detection).
  bool send_leave(PathSet& set, uint8_t id, uint8_t gen, uint32_t nonce) const;

  // Whether the peer's message carried by the frame with header `h` has a
  // valid proof; always true in an unauthenticated session.
  bool verify(const FrameHeader& h, const PathRequest& m) const;
  bool verify(const FrameHeader& h, const PathReply& m) const;

 private:
  PathBinding binding(const FrameHeader& h) const;
  PathRole peer() const {
    return self_ == PathRole::kInitiator ? PathRole::kTarget : PathRole::kInitiator;
  }

  PathRole self_;
  uint32_t session_id_;
  uint16_t epoch_;
  std::optional<crypto::SecretBytes> proof_key_;
};

}  // namespace hyperscsi::proto

// TxScheduler: shares one port's transmit queue fairly among the sessions
// served on it (deficit round robin over frame bytes).
//
// Without it every session's Connection emitted its whole send window in a
// fixed order whenever the loop polled; on a port whose queue fills (a link
// slower than the sessions' windows together: a shaped or congested GbE
// port), the sessions polled first took the room the port freed and the last
// ones starved (issue 21; docs/benchmarks.md "Many initiators, one target").
// Now each pass hands every session a budget of `quantum` bytes (plus what it
// was owed from the last pass) through a sink that refuses frames beyond it;
// sessions that hit their budget get another round while the port takes
// frames. When the port refuses a frame the pass ends and the next one starts
// with the session that was cut off, so no session is always last.
//
// Ownership: keeps only per-session deficits (bytes) and where to resume; the
// sessions, the endpoint and the sink belong to the caller.
// Thread-safety: none; used by the port loop's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/target_session.h"

namespace hyperscsi::engine {

struct TxSchedulerStats {
  uint64_t passes = 0;
  uint64_t rounds = 0;        // rounds over the sessions, summed over passes
  uint64_t budget_stops = 0;  // a session held back by its budget (it got another round)
  uint64_t port_full = 0;     // passes ended because the port refused a frame
};

class TxScheduler {
 public:
  // `quantum`: bytes a session may emit per round; at least one full frame
  // (smaller values are raised to the largest frame seen).
  explicit TxScheduler(size_t quantum = 4 * 1514);

  // Lets one session emit what is due into the given sink.
  using PollSession = std::function<void(uint32_t session_id, proto::FrameSink& sink)>;

  // One pass over `sessions` (ids in any order; duplicates ignored).
  // Returns when no session is held back by its budget, or when `sink`
  // refuses a frame (port full).
  void run(std::span<const uint32_t> sessions, proto::FrameSink& sink, const PollSession& poll);

  // The target's usual call: control frames first, then every session fairly.
  void poll(proto::TargetEndpoint& endpoint, proto::TimePoint now, proto::FrameSink& sink);

  const TxSchedulerStats& stats() const { return stats_; }
  // Bytes the session is owed from earlier passes (tests).
  size_t deficit(uint32_t session_id) const;

 private:
  size_t quantum_;
  std::unordered_map<uint32_t, size_t> deficit_;
  uint32_t resume_at_ = 0;  // the first session of the next pass (ids are sorted)
  bool have_resume_ = false;
  bool cut_off_ = false;       // the last pass ended mid-round at resume_at_ (port full)
  std::vector<uint32_t> ids_;  // scratch
  TxSchedulerStats stats_;
};

}  // namespace hyperscsi::engine

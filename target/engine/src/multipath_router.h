// MultipathRouter: how a multipath session's frames cross between the
// engine's port loops (docs/protocol.md 14).
//
// The design: a session stays owned by its home PortLoop, the loop of the
// port it logged in on (its TargetEndpoint holds the session, its reply
// cache and its TargetPaths). A frame of that session arriving on another
// port is handed, as bytes, to the home loop (PortLoop::post_rx); a frame the
// home loop's session sends from another port's MAC (its path's local port)
// is handed to that port's loop to send (PortLoop::post_tx). So every io::Port
// and every TargetEndpoint is still touched by its own loop thread only (the
// contract of port_loop.h), at the price of one copy and one wake-up per
// frame on a path that is not the home port's; frames on the home port take
// the usual way.
//
// Ownership: the engine owns the router and the loops; the router only
// points at them. The port table is fixed before the loops start (no lock);
// the session table is guarded by a shared mutex, and `any()` lets loops skip
// the lookup while no multipath session exists.
// Thread-safety: every method may be called from any loop thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <shared_mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/multipath.h"

namespace hyperscsi::engine {

class PortLoop;

class MultipathRouter {
 public:
  // Before the loops start.
  void add_port(PortLoop* loop, const MacAddress& mac, uint16_t mtu) {
    ports_.emplace_back(mac, loop);
    list_.push_back(proto::TargetPort{mac, mtu});
  }
  const std::vector<proto::TargetPort>& ports() const { return list_; }

  PortLoop* loop_for(const MacAddress& mac) const {
    for (const auto& [m, loop] : ports_)
      if (m == mac) return loop;
    return nullptr;
  }

  void set_home(uint32_t session_id, PortLoop* home) {
    std::unique_lock lock(mu_);
    homes_[session_id] = home;
    count_.store(homes_.size(), std::memory_order_relaxed);
  }
  void clear_home(uint32_t session_id, const PortLoop* home) {
    std::unique_lock lock(mu_);
    auto it = homes_.find(session_id);
    if (it != homes_.end() && it->second == home) homes_.erase(it);
    count_.store(homes_.size(), std::memory_order_relaxed);
  }
  PortLoop* home_of(uint32_t session_id) const {
    std::shared_lock lock(mu_);
    auto it = homes_.find(session_id);
    return it == homes_.end() ? nullptr : it->second;
  }
  bool any() const { return count_.load(std::memory_order_relaxed) != 0; }

 private:
  std::vector<std::pair<MacAddress, PortLoop*>> ports_;
  std::vector<proto::TargetPort> list_;
  mutable std::shared_mutex mu_;
  std::unordered_map<uint32_t, PortLoop*> homes_;
  std::atomic<size_t> count_{0};
};

}  // namespace hyperscsi::engine

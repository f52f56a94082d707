#include "hyperscsi/engine/target_engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "multipath_router.h"
#include "port_loop.h"
#include "target_device.h"

namespace hyperscsi::engine {

using Clock = std::chrono::steady_clock;

TargetEngine::TargetEngine(EngineConfig config, std::vector<std::unique_ptr<io::Port>> ports)
    : config_(std::move(config)), device_(std::make_shared<TargetDevice>()) {
  for (auto& p : ports)
    loops_.push_back(std::make_unique<PortLoop>(config_, std::move(p), device_));
  if (config_.multipath && loops_.size() > 1) {
    router_ = std::make_unique<MultipathRouter>();
    for (auto& l : loops_) {
      router_->add_port(l.get(), l->port_mac(),
                        static_cast<uint16_t>(std::min<size_t>(l->port_mtu(), 65535)));
      l->set_router(router_.get());
    }
  }
}

TargetEngine::~TargetEngine() {
  stop();
  loops_.clear();
  // A request still in a store's kernel ring holds its command, and through
  // it the LUN entry that owns the store: a cycle that only finishing the
  // requests breaks (the snapshot keeps every entry alive meanwhile).
  for (const auto& [n, slot] : *device_->luns()) {
    std::lock_guard lock(slot.entry->mu);
    if (slot.entry->unit) slot.entry->unit->store().drain();
  }
  // Dropping the table flushes and closes every LUN (LunEntry's destructor).
  device_->update([](TargetDevice::Map& t) {
    t.clear();
    return true;
  });
}

Status<EngineError> TargetEngine::add_lun(LunDefinition def) {
  if (!def.unit) return Unexpected(EngineError{"LUN " + std::to_string(def.lun) + ": no unit"});
  if (def.lun > scsi::kMaxLun)
    return Unexpected(EngineError{"LUN " + std::to_string(def.lun) + " exceeds " +
                                  std::to_string(scsi::kMaxLun)});
  auto entry = std::make_shared<LunEntry>(def.lun, std::move(def.unit));
  auto access = std::make_shared<const AccessList>(std::move(def.access));
  bool duplicate = false;
  device_->update([&](TargetDevice::Map& t) {
    if (t.count(entry->lun) != 0) {
      duplicate = true;
      return false;
    }
    t.emplace(entry->lun, TargetDevice::Slot{entry, access});
    return true;
  });
  if (duplicate) {
    // Not published: nobody else holds it, but its destructor would flush the
    // unit; that is harmless for a unit that has seen no command.
    return Unexpected(EngineError{"duplicate LUN " + std::to_string(def.lun)});
  }
  spdlog::info("LUN {}: {} blocks of {} bytes{}", entry->lun, entry->num_blocks, entry->block_size,
               entry->read_only ? ", read-only" : "");
  return {};
}

bool TargetEngine::remove_lun(uint16_t lun) {
  const bool removed = device_->update([&](TargetDevice::Map& t) { return t.erase(lun) != 0; });
  if (removed) spdlog::info("LUN {}: removed (closes once its commands finished)", lun);
  return removed;
}

bool TargetEngine::remove_lun(uint16_t lun, std::chrono::milliseconds wait_closed) {
  std::weak_ptr<const bool> gone;
  {
    const auto table = device_->luns();
    auto it = table->find(lun);
    if (it == table->end()) return false;
    gone = it->second.entry->closed_marker;
  }
  if (!remove_lun(lun)) return false;
  // Loops drop an idle removed entry within one turn (at most 100 ms apart).
  const auto deadline = Clock::now() + wait_closed;
  while (!gone.expired() && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return gone.expired();
}

std::optional<LunUsage> TargetEngine::lun_usage(uint16_t lun) const {
  const auto table = device_->luns();
  auto it = table->find(lun);
  if (it == table->end()) return std::nullopt;
  LunUsage u;
  std::lock_guard lock(it->second.entry->mu);
  if (const auto& unit = it->second.entry->unit) {
    u.nexuses = unit->nexuses();
    u.owner = unit->owner();
    u.identity = unit->store().identity();
    u.num_blocks = unit->store().num_blocks();
    u.block_size = unit->store().block_size();
  }
  return u;
}

bool TargetEngine::set_access(uint16_t lun, AccessList access) {
  auto list = std::make_shared<const AccessList>(std::move(access));
  return device_->update([&](TargetDevice::Map& t) {
    auto it = t.find(lun);
    if (it == t.end()) return false;
    it->second.access = list;
    return true;
  });
}

std::vector<uint16_t> TargetEngine::luns() const {
  std::vector<uint16_t> out;
  for (const auto& [n, slot] : *device_->luns()) out.push_back(n);
  return out;
}

bool TargetEngine::has_lun(uint16_t lun) const {
  return device_->luns()->count(lun) != 0;
}

Status<EngineError> TargetEngine::start() {
  std::lock_guard lock(control_mu_);
  if (running_) return Unexpected(EngineError{"engine already started"});
  if (loops_.empty()) return Unexpected(EngineError{"no port to serve"});
  for (auto& l : loops_) {
    auto st = l->start();
    if (!st) {
      for (auto& s : loops_) s->stop(false);
      return st;
    }
  }
  running_ = true;
  return {};
}

size_t TargetEngine::flush_all_luns() {
  size_t errors = 0;
  for (const auto& [n, slot] : *device_->luns()) {
    std::lock_guard lock(slot.entry->mu);
    if (!slot.entry->flush_locked()) {
      spdlog::error("LUN {}: flush failed", n);
      ++errors;
    }
  }
  return errors;
}

DrainReport TargetEngine::drain(std::chrono::milliseconds timeout) {
  std::lock_guard lock(control_mu_);
  DrainReport report;
  if (running_) {
    for (auto& l : loops_) l->set_draining();
    const auto deadline = Clock::now() + timeout;
    // Let every loop see the flag and report its state at least once.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    for (;;) {
      size_t cmds = 0, unacked = 0;
      for (auto& l : loops_) {
        cmds += l->commands_in_flight();
        unacked += l->sessions_unacked();
      }
      report.commands_left = cmds;
      report.sessions_unacked = unacked;
      if (cmds == 0 && unacked == 0) break;
      if (Clock::now() >= deadline) {
        report.completed = false;
        spdlog::warn("drain timed out: {} command(s) executing, {} session(s) unacknowledged", cmds,
                     unacked);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  report.flush_errors = flush_all_luns();
  if (report.flush_errors) report.completed = false;
  for (auto& l : loops_) l->stop(true);
  running_ = false;
  return report;
}

void TargetEngine::stop() {
  std::lock_guard lock(control_mu_);
  for (auto& l : loops_) l->stop(false);
  running_ = false;
}

std::vector<SessionReport> TargetEngine::sessions(std::chrono::milliseconds timeout) const {
  std::vector<SessionReport> out;
  proto::TargetStats ignored;
  for (const auto& l : loops_) l->snapshot(out, ignored, timeout);
  return out;
}

std::vector<LunStats> TargetEngine::lun_stats() const {
  std::vector<LunStats> out;
  for (const auto& [n, slot] : *device_->luns()) {
    std::lock_guard lock(slot.entry->mu);
    if (slot.entry->unit)
      out.push_back({static_cast<uint16_t>(n), slot.entry->unit->store().counters()});
  }
  return out;
}

EngineStats TargetEngine::stats() const {
  EngineStats s;
  s.luns = lun_stats();
  for (const auto& l : loops_) {
    // The snapshot first: it also refreshes the loop's CPU time and wake-ups.
    std::vector<SessionReport> unused;
    proto::TargetStats t;
    const bool fresh = l->snapshot(unused, t, std::chrono::milliseconds(200));
    const LoopCounters& c = l->counters();
    s.loop_turns += c.turns.load();
    s.loop_waits += c.sleeps.load();
    s.loop_holds += c.holds.load();
    s.loop_paced_sleeps += c.paced_sleeps.load();
    s.loop_tx_full_waits += c.tx_full_waits.load();
    s.loop_wakeups += c.wakeups.load();
    s.loop_cpu_seconds += static_cast<double>(c.cpu_ns.load()) / 1e9;
    s.frames_received += c.frames_received.load();
    s.malformed_frames += c.malformed_frames.load();
    s.frames_not_for_us += c.frames_not_for_us.load();
    s.handoffs_dropped += c.handoffs_dropped.load();
    s.commands_executed += c.commands_executed.load();
    s.commands_denied += c.commands_denied.load();
    s.commands_unauthenticated += c.commands_unauthenticated.load();
    s.commands_absent += c.commands_absent.load();
    s.commands_busy += c.commands_busy.load();
    s.replays += c.replays.load();
    s.replies_sent += c.replies_sent.load();
    s.replies_failed += c.replies_failed.load();
    if (fresh) {
      s.endpoint.discovery_requests += t.discovery_requests;
      s.endpoint.discovery_replies += t.discovery_replies;
      s.endpoint.announcements += t.announcements;
      s.endpoint.logins_accepted += t.logins_accepted;
      s.endpoint.logins_refused += t.logins_refused;
      s.endpoint.duplicate_logins += t.duplicate_logins;
      s.endpoint.resumes += t.resumes;
      s.endpoint.keepalives_answered += t.keepalives_answered;
      s.endpoint.unknown_session += t.unknown_session;
      s.endpoint.stale_epoch += t.stale_epoch;
      s.endpoint.disconnects += t.disconnects;
      s.endpoint.sessions_reclaimed += t.sessions_reclaimed;
      s.endpoint.command_protocol_errors += t.command_protocol_errors;
      s.endpoint.malformed += t.malformed;
      s.endpoint.frames_ignored += t.frames_ignored;
      s.endpoint.auth_challenges += t.auth_challenges;
      s.endpoint.auth_successes += t.auth_successes;
      s.endpoint.auth_failures += t.auth_failures;
      s.endpoint.auth_replays += t.auth_replays;
      s.endpoint.auth_evicted += t.auth_evicted;
      s.endpoint.frames_unprotected += t.frames_unprotected;
      s.endpoint.frames_bad_tag += t.frames_bad_tag;
      s.endpoint.frames_replayed += t.frames_replayed;
    }
  }
  return s;
}

}  // namespace hyperscsi::engine

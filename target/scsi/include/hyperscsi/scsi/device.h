// scsi::Device: one SCSI target device (after SPDK's lib/scsi spdk_scsi_dev
// and LIO's se_device/se_lun): its LUN list, each LUN's access rule (the
// per-initiator view), REPORT LUNS as each initiator sees it, and the routing
// of one command to its LogicalUnit or to the SPC-4 answers for a LUN that is
// absent or hidden (lun_map.h: answer_absent_lun). A transport (the engine)
// asks it: frame -> endpoint -> device.luns()->execute(who, lun, request) -> reply.
//
// `Access` is the transport's rule for one LUN (the engine's AccessList:
// initiator names, MACs, authentication, protection). The device only asks it
// `access.admission(who)` for the transport's view `who` of the initiator, so
// this layer stays free of the transport.
//
// Threading: the LUN list is an immutable snapshot (Luns) replaced as a whole
// on every change (copy on write); readers on any thread take one with
// luns() and pick up a new one when generation() moves. Each LogicalUnit sits
// in a LunEntry with its own mutex, held for every call into the unit or its
// store. An entry lives as long as anyone holds it (a snapshot, a loop
// watching its completion fd, a command in flight); the last holder flushes
// the store and destroys the unit. Device methods: any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "hyperscsi/base/scsi_opcodes.h"
#include "hyperscsi/scsi/command.h"
#include "hyperscsi/scsi/logical_unit.h"
#include "hyperscsi/scsi/lun_map.h"

namespace hyperscsi::scsi {

struct LunEntry {
  LunEntry(std::uint64_t number, std::unique_ptr<LogicalUnit> u);
  ~LunEntry();  // flushes the store and waits for it (no command can be in flight)
  LunEntry(const LunEntry&) = delete;
  LunEntry& operator=(const LunEntry&) = delete;

  // Flushes the store and waits for every request; false if the flush failed.
  // Caller holds mu.
  bool flush_locked();
  // Executes `req` on the unit and submits the store's queue; a unit already
  // flushed away (a racing shutdown) answers LOGICAL UNIT NOT SUPPORTED.
  // Takes mu. `done` must not release the last reference to this entry.
  void execute(const CommandRequest& req, CommandCallback done);

  const std::uint64_t lun;
  // The store's geometry, captured at creation (discovery replies read it
  // without the mutex).
  const bool read_only;
  const std::uint32_t block_size;
  const std::uint64_t num_blocks;
  const int completion_fd;  // the store's; stable for the unit's life
  std::mutex mu;
  std::unique_ptr<LogicalUnit> unit;  // guarded by mu
  // Expires only after ~LunEntry has flushed and closed the unit (a weak_ptr
  // to the entry itself expires before its destructor runs): what a caller
  // that reopens the same store waits for.
  const std::shared_ptr<const bool> closed_marker = std::make_shared<const bool>(true);
};

// What an access rule says of one initiator.
enum class Admission {
  kAdmitted,   // sees the LUN
  kHidden,     // does not (treated exactly as an absent LUN)
  kNeedsAuth,  // would, but its session is not secure enough (also hidden)
};

// How Luns::execute routed a command (for the transport's counters).
enum class Routed { kUnit, kReportLuns, kAbsent, kHidden, kNeedsAuth };

template <typename Access>
class Device {
 public:
  struct Slot {
    std::shared_ptr<LunEntry> entry;
    std::shared_ptr<const Access> access;
  };
  using Map = std::map<std::uint64_t, Slot>;

  // One immutable snapshot of the LUN list.
  class Luns {
   public:
    explicit Luns(Map m) : map_(std::move(m)) {}
    typename Map::const_iterator begin() const { return map_.begin(); }
    typename Map::const_iterator end() const { return map_.end(); }
    typename Map::const_iterator find(std::uint64_t lun) const { return map_.find(lun); }
    std::size_t size() const { return map_.size(); }
    std::size_t count(std::uint64_t lun) const { return map_.count(lun); }
    const Map& map() const { return map_; }

    // The LUNs `who` is admitted to, ascending.
    template <typename Who>
    std::vector<std::uint64_t> admitted(const Who& who) const {
      std::vector<std::uint64_t> out;
      for (const auto& [n, slot] : map_)
        if (slot.access->admission(who) == Admission::kAdmitted) out.push_back(n);
      return out;
    }

    // Runs one command from `who` (I_T nexus `req.nexus`) addressed to `lun`:
    // REPORT LUNS lists the LUNs admitted to `who`; an admitted LUN's unit
    // executes it; an absent or hidden LUN gets the SPC-4 answers. `done`
    // runs exactly once, before this returns or later from whichever thread
    // polls the unit's store (with the entry's mutex held). `entry` is set to
    // the unit's entry when one executes (to watch its completions).
    template <typename Who>
    Routed execute(const Who& who, std::uint64_t lun, const CommandRequest& req,
                   CommandCallback done, std::shared_ptr<LunEntry>* entry = nullptr) const {
      if (!req.cdb.empty() && req.cdb[0] == op::kReportLuns) {
        const std::vector<std::uint64_t> seen = admitted(who);
        done(report_luns(req.cdb, seen, req.expected_data_in));
        return Routed::kReportLuns;
      }
      auto it = map_.find(lun);
      Routed how = Routed::kAbsent;
      if (it != map_.end()) {
        const Admission a = it->second.access->admission(who);
        if (a == Admission::kAdmitted) {
          if (entry) *entry = it->second.entry;
          it->second.entry->execute(req, std::move(done));
          return Routed::kUnit;
        }
        how = a == Admission::kNeedsAuth ? Routed::kNeedsAuth : Routed::kHidden;
      }
      answer_absent_lun(req, std::move(done));
      return how;
    }

   private:
    Map map_;
  };

  Device() : luns_(std::make_shared<const Luns>(Map{})) {}

  std::shared_ptr<const Luns> luns() const {
    std::lock_guard lock(mu_);
    return luns_;
  }
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  // Applies `change` (bool(Map&)) to a copy of the list and publishes it;
  // `change` returns false to leave the list unchanged. The old snapshot is
  // released outside the lock (it may be the last holder of an entry).
  template <typename F>
  bool update(F&& change) {
    std::shared_ptr<const Luns> old;
    std::lock_guard lock(mu_);
    Map next = luns_->map();
    if (!change(next)) return false;
    old = std::move(luns_);
    luns_ = std::make_shared<const Luns>(std::move(next));
    generation_.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Luns> luns_;
  std::atomic<std::uint64_t> generation_{1};
};

}  // namespace hyperscsi::scsi

// LunDirectory: the engine's LUN table, shared by every port loop.
//
// The table itself is an immutable snapshot replaced as a whole on every
// change (copy on write), so loops read it without locks and pick up a new
// one when the generation counter moves. Each LUN's LogicalUnit sits in a
// LunEntry with its own mutex: every call into the unit or its store is made
// with that mutex held. An entry lives as long as anyone holds it (the table,
// a loop watching its completion fd, a command in flight); the last holder
// flushes the store and destroys the unit.
// Thread-safety: LunDirectory methods from any thread; LunEntry::unit only
// with LunEntry::mu held.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "hyperscsi/engine/access.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/scsi/logical_unit.h"

namespace hyperscsi::engine {

struct LunEntry {
  LunEntry(uint16_t number, std::unique_ptr<scsi::LogicalUnit> u);
  ~LunEntry();  // flushes the store and waits for it (no command can be in flight)
  LunEntry(const LunEntry&) = delete;
  LunEntry& operator=(const LunEntry&) = delete;

  // Flushes the store and waits for every request; false if the flush failed.
  // Caller holds mu.
  bool flush_locked();

  const uint16_t lun;
  const proto::LunInfo info;  // captured at creation, for discovery replies
  const int completion_fd;    // the store's; stable for the unit's life
  std::mutex mu;
  std::unique_ptr<scsi::LogicalUnit> unit;  // guarded by mu
  // Expires only after ~LunEntry has flushed and closed the unit (a weak_ptr
  // to the entry itself expires before its destructor runs): what a caller
  // that reopens the same store waits for.
  const std::shared_ptr<const bool> closed_marker = std::make_shared<const bool>(true);
};

struct LunSlot {
  std::shared_ptr<LunEntry> entry;
  std::shared_ptr<const AccessList> access;
};

using LunTable = std::map<uint16_t, LunSlot>;

class LunDirectory {
 public:
  LunDirectory() : table_(std::make_shared<const LunTable>()) {}

  std::shared_ptr<const LunTable> snapshot() const {
    std::lock_guard lock(mu_);
    return table_;
  }
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  // Applies `change` to a copy of the table and publishes it. `change`
  // returns false to leave the table unchanged.
  template <typename F>
  bool update(F&& change) {
    std::shared_ptr<const LunTable> old;  // released outside the lock
    std::lock_guard lock(mu_);
    auto next = std::make_shared<LunTable>(*table_);
    if (!change(*next)) return false;
    old = std::move(table_);
    table_ = std::move(next);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const LunTable> table_;
  std::atomic<uint64_t> generation_{1};
};

}  // namespace hyperscsi::engine

#include "range_lock.h"

#include <vector>

namespace hyperscsi::scsi {

bool RangeLock::conflicts(const Entry& a, const Entry& b) {
  if (!a.exclusive && !b.exclusive) return false;
  // Zero-length ranges still order against exclusive locks on the same LBA.
  const std::uint64_t a_end = a.lba + (a.count == 0 ? 1 : a.count);
  const std::uint64_t b_end = b.lba + (b.count == 0 ? 1 : b.count);
  return a.lba < b_end && b.lba < a_end;
}

bool RangeLock::blocked(const Entry& e, std::list<Entry>::const_iterator waiters_end) const {
  for (const Entry& h : held_) {
    if (conflicts(e, h)) return true;
  }
  for (auto it = waiting_.cbegin(); it != waiters_end; ++it) {
    if (conflicts(e, *it)) return true;
  }
  return false;
}

void RangeLock::acquire(std::uint64_t lba, std::uint64_t count, bool exclusive,
                        std::function<void(Handle)> on_granted) {
  Entry e{next_++, lba, count, exclusive, std::move(on_granted)};
  if (blocked(e, waiting_.cend())) {
    waiting_.push_back(std::move(e));
    return;
  }
  const Handle id = e.id;
  auto cb = std::move(e.on_granted);
  held_.push_back(std::move(e));
  cb(id);
}

void RangeLock::release(Handle h) {
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (it->id == h) {
      held_.erase(it);
      break;
    }
  }
  // Grant, in order, every waiter no longer blocked by holders or earlier waiters.
  std::vector<std::pair<Handle, std::function<void(Handle)>>> granted;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (!blocked(*it, it)) {
      granted.emplace_back(it->id, std::move(it->on_granted));
      held_.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [id, cb] : granted) cb(id);
}

}  // namespace hyperscsi::scsi

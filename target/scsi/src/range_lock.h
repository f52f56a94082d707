// RangeLock: LBA-range locks with FIFO fairness, so COMPARE AND WRITE (an
// exclusive lock) is atomic with respect to overlapping reads and writes
// (shared locks) without stalling unrelated commands. Single-threaded (the LU's
// owner thread); grants run the waiter's continuation synchronously.
#pragma once

#include <cstdint>
#include <functional>
#include <list>

namespace hyperscsi::scsi {

class RangeLock {
 public:
  using Handle = std::uint64_t;
  // Calls on_granted(handle) now or when every earlier conflicting lock is gone.
  void acquire(std::uint64_t lba, std::uint64_t count, bool exclusive,
               std::function<void(Handle)> on_granted);
  void release(Handle h);
  std::size_t held() const { return held_.size(); }
  std::size_t waiting() const { return waiting_.size(); }

 private:
  struct Entry {
    Handle id;
    std::uint64_t lba;
    std::uint64_t count;
    bool exclusive;
    std::function<void(Handle)> on_granted;
  };
  static bool conflicts(const Entry& a, const Entry& b);
  bool blocked(const Entry& e, std::list<Entry>::const_iterator waiters_end) const;

  Handle next_ = 1;
  std::list<Entry> held_;
  std::list<Entry> waiting_;
};

}  // namespace hyperscsi::scsi

#include "read_thread.h"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

namespace hyperscsi::store {

ReadThread::ReadThread(int fd, int notify_fd)
    : fd_(fd), notify_fd_(notify_fd), worker_([this] { run(); }) {}

ReadThread::~ReadThread() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_.notify_one();
  worker_.join();
}

void ReadThread::push(std::uint64_t offset, std::span<std::byte> buf) {
  bool was_idle;
  {
    std::lock_guard lock(mutex_);
    was_idle = todo_.empty();
    todo_.push_back(Job{offset, buf});
  }
  ++outstanding_;
  if (was_idle) work_.notify_one();
}

void ReadThread::take(std::vector<IoStatus>& out) {
  std::lock_guard lock(mutex_);
  outstanding_ -= done_.size();
  out.insert(out.end(), done_.begin(), done_.end());
  done_.clear();
}

void ReadThread::wait_one() {
  std::unique_lock lock(mutex_);
  finished_.wait(lock, [&] { return !done_.empty() || outstanding_ == 0; });
}

// A short read is retried from where it stopped; a read must fill its buffer
// (BlockStore::submit_read), so end of file is a medium error.
IoStatus ReadThread::read_all(const Job& job) const {
  std::size_t done = 0;
  while (done < job.buf.size()) {
    const ssize_t n = ::pread(fd_, job.buf.data() + done, job.buf.size() - done,
                              static_cast<off_t>(job.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_status_from_errno(errno);
    if (n == 0) return IoStatus::kMediumError;
    done += static_cast<std::size_t>(n);
  }
  return IoStatus::kOk;
}

void ReadThread::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return stop_ || !todo_.empty(); });
    if (todo_.empty()) return;  // stopping, and nothing left to read
    const Job job = todo_.front();
    lock.unlock();
    const IoStatus status = read_all(job);
    lock.lock();
    todo_.pop_front();
    const bool first = done_.empty();
    done_.push_back(status);
    finished_.notify_all();
    if (first) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t w = ::write(notify_fd_, &one, sizeof one);
    }
  }
}

}  // namespace hyperscsi::store

// ReadThread: large memory-file reads copied on a thread of their own, so the
// port loop that owns the store keeps sending frames meanwhile (issue 16: on
// an unshaped link the target's one sending thread is the bottleneck of a
// read stream, and the page-cache copy was 12-22% of it).
//
// One worker thread takes reads in order and finishes them in that order,
// so the owner matches results to its requests by position alone.
// Threading: push(), take(), outstanding() and wait_one() from the store's
// owner only (BlockStore: one thread, or callers serialised by one lock, as
// the engine's unit mutex does); the worker touches only the queues, under
// the mutex, and the buffers it was given.
// Ownership: each buffer must stay valid until its result has been taken.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "hyperscsi/store/block_store.h"

namespace hyperscsi::store {

class ReadThread {
 public:
  // `notify_fd`: an eventfd written (1) when a result is ready and none was
  // waiting; the owner's event loop watches it. Not owned.
  ReadThread(int fd, int notify_fd);
  // Finishes the reads already pushed, then joins the worker.
  ~ReadThread();
  ReadThread(const ReadThread&) = delete;
  ReadThread& operator=(const ReadThread&) = delete;

  // Queues a read of buf.size() bytes at `offset` of the file.
  void push(std::uint64_t offset, std::span<std::byte> buf);
  // Appends the statuses of finished reads, oldest first, to `out`.
  void take(std::vector<IoStatus>& out);
  // Reads pushed whose status has not been taken yet.
  std::size_t outstanding() const { return outstanding_; }
  // Blocks until at least one result can be taken (or none is outstanding).
  void wait_one();

 private:
  struct Job {
    std::uint64_t offset;
    std::span<std::byte> buf;
  };
  void run();
  IoStatus read_all(const Job& job) const;

  const int fd_;
  const int notify_fd_;
  std::size_t outstanding_ = 0;  // owner thread only
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable finished_;
  std::deque<Job> todo_;        // under mutex_
  std::vector<IoStatus> done_;  // under mutex_
  bool stop_ = false;           // under mutex_
  std::thread worker_;          // last: starts after the members above exist
};

}  // namespace hyperscsi::store

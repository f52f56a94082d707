// The baseline: a local file or block device through pread/pwrite on a few
// threads (one per outstanding I/O up to a cap), the simplest thing that keeps
// the queue depth busy.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "transport.h"

namespace hyperscsi::bench {
namespace {

class LocalTransport final : public Transport {
 public:
  LocalTransport(int fd, uint64_t size, bool direct, unsigned threads)
      : fd_(fd), size_(size), direct_(direct) {
    for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~LocalTransport() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    ::close(fd_);
  }
  std::string name() const override { return "local"; }
  std::string backend() const override { return direct_ ? "pread-direct" : "pread"; }
  uint64_t size_bytes() const override { return size_; }
  uint32_t block_size() const override { return 512; }
  void submit(const IoRequest& request, IoDone done) override {
    {
      std::lock_guard lock(mu_);
      queue_.push_back({request, std::move(done)});
    }
    cv_.notify_one();
  }

 private:
  struct Job {
    IoRequest request;
    IoDone done;
  };
  void work() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      std::string error = transfer(job.request);
      job.done(error.empty(), error);
    }
  }
  // Loops over short transfers; a short read at the end of a file is an error.
  std::string transfer(const IoRequest& r) {
    size_t done = 0;
    while (done < r.length) {
      const ssize_t n =
          r.write ? ::pwrite(fd_, r.buffer + done, r.length - done, off_t(r.offset + done))
                  : ::pread(fd_, r.buffer + done, r.length - done, off_t(r.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return std::string(r.write ? "pwrite: " : "pread: ") + std::strerror(errno);
      if (n == 0) return "short transfer at offset " + std::to_string(r.offset + done);
      done += size_t(n);
    }
    return {};
  }

  int fd_;
  uint64_t size_;
  bool direct_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

TransportResult open_local(const LocalOptions& options) {
  if (options.path.empty()) return Unexpected(std::string("--path is required for local"));
  const int flags = O_RDWR | O_CLOEXEC | (options.direct ? O_DIRECT : 0);
  const int fd = ::open(options.path.c_str(), flags);
  if (fd < 0) return Unexpected("cannot open " + options.path + ": " + std::strerror(errno));
  struct stat st {};
  uint64_t size = 0;
  if (::fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) size = 0;
  } else {
    size = uint64_t(st.st_size);
  }
  if (size < 512) {
    ::close(fd);
    return Unexpected(options.path + " is empty or smaller than one 512-byte block");
  }
  const unsigned threads = std::max(1u, std::min(options.threads, 64u));
  return std::unique_ptr<Transport>(
      new LocalTransport(fd, size & ~uint64_t(511), options.direct, threads));
}

}  // namespace hyperscsi::bench

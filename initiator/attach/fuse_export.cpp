#define FUSE_USE_VERSION 34
#include "fuse_export.h"

#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <linux/falloc.h>
#include <linux/loop.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace hyperscsi::attach {

namespace {

using hyperscsi::Status;
using initiator::ByteDevice;
using initiator::Error;

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;  // 1
constexpr fuse_ino_t kFileIno = 2;
constexpr double kAttrTimeout = 3600;  // nothing changes behind the kernel's back

// One served mount: the export and the count of requests whose reply is
// still owed by a completion (they must be answered before the session goes).
class Server {
 public:
  explicit Server(FuseExport& exp) : exp_(exp) {}

  FuseExport& exp() { return exp_; }
  ByteDevice& dev() { return *exp_.device; }

  void begin() { outstanding_.fetch_add(1, std::memory_order_relaxed); }
  void end() {
    if (outstanding_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(mutex_);
      cv_.notify_all();
    }
  }
  void wait_idle() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return outstanding_.load(std::memory_order_acquire) == 0; });
  }

  // Work that may wait for commands (a read-modify-write, the edges of a
  // punched hole) runs on this one helper thread, never where requests are
  // read: that may be the initiator's loop thread, which must not block.
  void start_helper() {
    helper_ = std::thread([this] {
      std::unique_lock lock(helper_mutex_);
      for (;;) {
        helper_cv_.wait(lock, [this] { return helper_stop_ || !helper_jobs_.empty(); });
        if (helper_jobs_.empty()) return;  // stopping, nothing left
        auto job = std::move(helper_jobs_.front());
        helper_jobs_.pop_front();
        lock.unlock();
        job();
        lock.lock();
      }
    });
  }
  void run_blocking(std::function<void()> job) {
    {
      std::lock_guard lock(helper_mutex_);
      helper_jobs_.push_back(std::move(job));
    }
    helper_cv_.notify_one();
  }
  // Runs what is queued, then ends the helper.
  void stop_helper() {
    if (!helper_.joinable()) return;
    {
      std::lock_guard lock(helper_mutex_);
      helper_stop_ = true;
    }
    helper_cv_.notify_one();
    helper_.join();
  }

  // Read buffers come from here and go back here: one power-of-two class
  // per size from 4 KiB to 1 MiB, so that a 4 KiB read does not go through
  // malloc's bins and coalescing every time (a tenth of the daemon's CPU in
  // the 4 KiB QD32 profile). Any thread; a few buffers per class are kept.
  uint8_t* take_buffer(size_t size) {
    const size_t c = size_class(size);
    if (c < kClasses) {
      std::lock_guard lock(pool_mutex_);
      auto& free = pool_[c];
      if (!free.empty()) {
        uint8_t* b = free.back().release();
        free.pop_back();
        return b;
      }
    }
    return new uint8_t[c < kClasses ? kMinBuffer << c : size];
  }
  void give_buffer(uint8_t* b, size_t size) {
    const size_t c = size_class(size);
    if (c < kClasses) {
      std::lock_guard lock(pool_mutex_);
      if (pool_[c].size() < std::min(kKeepPerClass, kKeepBytes >> c)) {
        pool_[c].emplace_back(b);
        return;
      }
    }
    delete[] b;
  }

  struct stat file_attr() const {
    struct stat st {};
    st.st_ino = kFileIno;
    st.st_mode = S_IFREG | (exp_.device->read_only() ? 0400 : 0600);
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(exp_.device->size());
    st.st_blksize = static_cast<blksize_t>(exp_.device->block_size());
    st.st_blocks = static_cast<blkcnt_t>(exp_.device->size() / 512);
    return st;
  }

  static struct stat dir_attr() {
    struct stat st {};
    st.st_ino = kRootIno;
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 2;
    return st;
  }

 private:
  FuseExport& exp_;
  std::atomic<uint64_t> outstanding_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread helper_;
  std::mutex helper_mutex_;
  std::condition_variable helper_cv_;
  std::deque<std::function<void()>> helper_jobs_;
  bool helper_stop_ = false;

  static constexpr size_t kMinBuffer = 4096;
  static constexpr size_t kClasses = 9;  // 4 KiB .. 1 MiB
  static constexpr size_t kKeepPerClass = 64;
  static constexpr size_t kKeepBytes = (32u << 20) / kMinBuffer;  // per class, in 4 KiB units
  // The class whose buffers hold `size` bytes, or kClasses when none does.
  static size_t size_class(size_t size) {
    size_t c = 0;
    while (c < kClasses && (kMinBuffer << c) < size) ++c;
    return c;
  }
  std::mutex pool_mutex_;
  std::array<std::vector<std::unique_ptr<uint8_t[]>>, kClasses> pool_;
};

Server& server(fuse_req_t req) {
  return *static_cast<Server*>(fuse_req_userdata(req));
}

void reply_status(fuse_req_t req, const Status<Error>& st) {
  fuse_reply_err(req, st ? 0 : ByteDevice::errno_of(st.error()));
}

void op_init(void* userdata, fuse_conn_info* conn) {
  auto* s = static_cast<Server*>(userdata);
  // 1 MiB requests: libfuse derives max_pages (256) from max_write.
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
  conn->max_background = std::clamp(s->exp().max_background, 16u, 65535u);
  conn->congestion_threshold = conn->max_background * 3 / 4;
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  // Writes are never extended or truncated, so there is nothing to invalidate.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Server& s = server(req);
  if (parent != kRootIno || s.exp().file_name != name) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  fuse_entry_param e{};
  e.ino = kFileIno;
  e.generation = 1;
  e.attr = s.file_attr();
  e.attr_timeout = kAttrTimeout;
  e.entry_timeout = kAttrTimeout;
  fuse_reply_entry(req, &e);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino == kRootIno) {
    const struct stat st = Server::dir_attr();
    fuse_reply_attr(req, &st, kAttrTimeout);
  } else if (ino == kFileIno) {
    const struct stat st = server(req).file_attr();
    fuse_reply_attr(req, &st, kAttrTimeout);
  } else {
    fuse_reply_err(req, ENOENT);
  }
}

// The file has the LUN's size for good: truncating to it is a no-op, to any
// other size EPERM; mode, owner and times are not kept (ENOSYS, as the
// high-level API answered without those operations).
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  Server& s = server(req);
  if (ino != kFileIno) {
    fuse_reply_err(req, ino == kRootIno ? EPERM : ENOENT);
    return;
  }
  if ((to_set & FUSE_SET_ATTR_SIZE) != 0 &&
      static_cast<uint64_t>(attr->st_size) != s.dev().size()) {
    fuse_reply_err(req, EPERM);
    return;
  }
  constexpr int kUnkept = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
                          FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                          FUSE_SET_ATTR_MTIME_NOW;
  if ((to_set & kUnkept) != 0) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  const struct stat st = s.file_attr();
  fuse_reply_attr(req, &st, kAttrTimeout);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kFileIno) {
    fuse_reply_err(req, ino == kRootIno ? EISDIR : ENOENT);
    return;
  }
  if (server(req).dev().read_only() && (fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EROFS);
    return;
  }
  fi->direct_io = 1;  // no page cache in between: every read/write is a SCSI command
  fi->keep_cache = 0;
  // O_TRUNC is ignored, as for a block device (atomic_o_trunc: no setattr follows).
  fuse_reply_open(req, fi);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Server& s = server(req);
  if (ino != kFileIno) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  const uint64_t total = s.dev().size();
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (static_cast<uint64_t>(off) >= total || size == 0) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  size = static_cast<size_t>(std::min<uint64_t>(size, total - static_cast<uint64_t>(off)));
  // The data lands here straight from the reply PDU and goes to the kernel
  // from here: one copy in user space. Freed by the completion (runs once).
  uint8_t* data = s.take_buffer(size);
  s.begin();
  s.dev().read({data, size}, static_cast<uint64_t>(off), [&s, req, data, size](Status<Error> st) {
    if (st)
      fuse_reply_buf(req, reinterpret_cast<const char*>(data), size);
    else
      fuse_reply_err(req, ByteDevice::errno_of(st.error()));
    s.give_buffer(data, size);
    s.end();
  });
}

// The receive buffer of the request being processed on this thread (set by
// the readers around fuse_session_process_buf), so that op_write can take it
// over instead of copying the data out of it.
thread_local fuse_buf* t_request_buf = nullptr;

struct RequestBufScope {
  explicit RequestBufScope(fuse_buf* b) { t_request_buf = b; }
  ~RequestBufScope() { t_request_buf = nullptr; }
  RequestBufScope(const RequestBufScope&) = delete;
  RequestBufScope& operator=(const RequestBufScope&) = delete;
};

// Writes at least this large borrow the request's buffer; smaller ones copy
// (a copy of a few KiB costs less than a fresh 1 MiB receive buffer).
constexpr size_t kBorrowMinWrite = 16 << 10;

// Takes the receive buffer holding [data, data + size) from libfuse (its
// next receive allocates a new one), or nullptr when the data lies elsewhere.
void* take_request_buf(const char* data, size_t size) {
  fuse_buf* b = t_request_buf;
  if (b == nullptr || b->mem == nullptr || (b->flags & FUSE_BUF_IS_FD) != 0) return nullptr;
  const char* mem = static_cast<const char*>(b->mem);
  if (data < mem || data + size > mem + b->size) return nullptr;
  void* taken = b->mem;
  b->mem = nullptr;
  return taken;
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) {
  Server& s = server(req);
  if (ino != kFileIno) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if (s.dev().read_only()) {
    fuse_reply_err(req, EROFS);
    return;
  }
  const uint64_t total = s.dev().size();
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (static_cast<uint64_t>(off) >= total) {
    fuse_reply_err(req, ENOSPC);
    return;
  }
  size = static_cast<size_t>(std::min<uint64_t>(size, total - static_cast<uint64_t>(off)));
  const bool fua = (fi->flags & O_DSYNC) != 0;
  s.begin();
  const std::span<const uint8_t> data(reinterpret_cast<const uint8_t*>(buf), size);
  const uint32_t bs = s.dev().block_size();
  // `buf` lies in libfuse's receive buffer, reused for the next request
  // after we return. An aligned write takes that buffer over: the command
  // borrows the data from it (issue 13: no copy), the completion frees it
  // after the reply is sent (the initiator runs it once nothing refers to
  // the data). Otherwise the write copies the data before returning.
  void* owned = size >= kBorrowMinWrite && off % bs == 0 && size % bs == 0
                    ? take_request_buf(buf, size)
                    : nullptr;
  ByteDevice::Done done = [&s, req, size, owned](Status<Error> st) {
    if (st)
      fuse_reply_write(req, size);
    else
      fuse_reply_err(req, ByteDevice::errno_of(st.error()));
    std::free(owned);
    s.end();
  };
  if (s.dev().write_nowait(data, static_cast<uint64_t>(off), fua, done, owned != nullptr)) return;
  // Unaligned, or a read-modify-write holds the gate: on the helper thread.
  s.run_blocking([&s, copy = std::vector<uint8_t>(data.begin(), data.end()), off, fua,
                  done = std::move(done)]() mutable {
    s.dev().write(copy, static_cast<uint64_t>(off), fua, std::move(done));
  });
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  Server& s = server(req);
  if (ino != kFileIno) {
    fuse_reply_err(req, 0);
    return;
  }
  s.begin();
  s.dev().flush([&s, req](Status<Error> st) {
    reply_status(req, st);
    s.end();
  });
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  Server& s = server(req);
  if (ino != kFileIno) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if (off < 0 || len < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (s.dev().read_only()) {
    fuse_reply_err(req, EROFS);
    return;
  }
  if (mode == 0) {
    fuse_reply_err(req, 0);  // the LUN is fully allocated already
    return;
  }
  // The loop device turns REQ_OP_DISCARD and REQ_OP_WRITE_ZEROES into
  // PUNCH_HOLE, and WRITE_ZEROES with REQ_NOUNMAP into ZERO_RANGE.
  const bool punch = mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  const bool zero = (mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE;
  if (!punch && !zero) {
    fuse_reply_err(req, EOPNOTSUPP);
    return;
  }
  // The file never grows: a range past its end is cut off there.
  const uint64_t total = s.dev().size();
  const auto start = static_cast<uint64_t>(off);
  if (start >= total) {
    fuse_reply_err(req, (mode & FALLOC_FL_KEEP_SIZE) != 0 ? 0 : ENOSPC);
    return;
  }
  const uint64_t length = std::min<uint64_t>(static_cast<uint64_t>(len), total - start);
  s.begin();
  s.run_blocking([&s, req, start, length, punch] {
    auto reply = [&s, req](Status<Error> st) {
      reply_status(req, st);
      s.end();
    };
    if (punch)
      s.dev().discard(start, length, reply);
    else
      s.dev().write_zeroes(start, length, reply);
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  if (ino != kRootIno) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  Server& s = server(req);
  struct Entry {
    const char* name;
    fuse_ino_t ino;
    mode_t mode;
  };
  const Entry entries[] = {{".", kRootIno, S_IFDIR},
                           {"..", kRootIno, S_IFDIR},
                           {s.exp().file_name.c_str(), kFileIno, S_IFREG}};
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < std::size(entries); ++i) {
    struct stat st {};
    st.st_ino = entries[i].ino;
    st.st_mode = entries[i].mode;
    const size_t n = fuse_add_direntry(req, buf.data() + used, size - used, entries[i].name, &st,
                                       static_cast<off_t>(i + 1));
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

// --- serving ---

// SIGTERM/SIGINT/SIGHUP end serving: the handler only writes to an eventfd.
// SIGUSR2 (empty handler, no SA_RESTART) interrupts a reader's blocking read
// of /dev/fuse at the end.
std::atomic<int> g_stop_fd{-1};

void on_stop_signal(int) {
  const int fd = g_stop_fd.load();
  if (fd >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
  }
}

void on_wake_signal(int) {}

constexpr int kWakeSignal = SIGUSR2;

class SignalScope {
 public:
  explicit SignalScope(int stop_fd) {
    g_stop_fd = stop_fd;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < std::size(kStop); ++i) ::sigaction(kStop[i], &sa, &old_[i]);
    sa.sa_handler = on_wake_signal;
    ::sigaction(kWakeSignal, &sa, &old_wake_);
  }
  ~SignalScope() {
    for (size_t i = 0; i < std::size(kStop); ++i) ::sigaction(kStop[i], &old_[i], nullptr);
    ::sigaction(kWakeSignal, &old_wake_, nullptr);
    g_stop_fd = -1;
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  static constexpr int kStop[] = {SIGTERM, SIGINT, SIGHUP};
  struct sigaction old_[3]{};
  struct sigaction old_wake_ {};
};

// Why FUSE cannot be used here, or empty.
std::string fuse_unavailable() {
  struct stat st {};
  if (::stat("/dev/fuse", &st) != 0)
    return std::string("FUSE unavailable: /dev/fuse: ") + std::strerror(errno) +
           " (a kernel without FUSE, or a container without the device)";
  if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != 10 || minor(st.st_rdev) != 229)
    return "FUSE unavailable: /dev/fuse is not the FUSE device (character device 10:229)";
  const int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return std::string("FUSE unavailable: cannot open /dev/fuse: ") + std::strerror(errno);
  ::close(fd);
  return {};
}

struct Reader {
  std::thread thread;
  std::atomic<bool> done{false};
  int error = 0;  // errno of a failed read, 0 for an ordinary end
};

// Requests read on the initiator's loop thread (FuseExport::readers == 0):
// a burst per turn of its loop from the non-blocking /dev/fuse.
struct LoopReader {
  fuse_session* se = nullptr;
  int ended_fd = -1;
  fuse_buf buf{};
  bool ended = false;
  int error = 0;
  void poll() {
    for (int i = 0; i < 64 && !ended; ++i) {
      const int res = fuse_session_receive_buf(se, &buf);
      if (res == -EAGAIN || res == -EINTR) return;
      if (res <= 0) {  // exited, or unmounted from outside (ENODEV)
        if (res < 0) error = -res;
        ended = true;
        const uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(ended_fd, &one, sizeof one);
        return;
      }
      RequestBufScope scope(&buf);
      fuse_session_process_buf(se, &buf);
    }
  }
};

void read_requests(fuse_session* se, Reader& r, int ended_fd) {
  fuse_buf buf{};
  while (!fuse_session_exited(se)) {
    const int res = fuse_session_receive_buf(se, &buf);
    if (res == -EINTR || res == -EAGAIN) continue;
    if (res <= 0) {  // 0: exited, or the file system was unmounted (ENODEV)
      if (res < 0) r.error = -res;
      break;
    }
    RequestBufScope scope(&buf);
    fuse_session_process_buf(se, &buf);
  }
  std::free(buf.mem);
  r.done = true;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(ended_fd, &one, sizeof one);
}

}  // namespace

int serve_fuse(const std::string& dir, FuseExport& exp,
               const std::function<std::string()>& on_ready, std::string& error) {
  if (std::string why = fuse_unavailable(); !why.empty()) {
    error = why;
    return 1;
  }
  // Request buffers of up to 1 MiB are allocated and freed per request (on
  // different threads): keep them in the heap rather than mmap'ed and
  // trimmed, so that they are not faulted in afresh every time (the old
  // export paid ~270 page faults per 1 MiB read).
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  Server server(exp);
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.fsync = op_fsync;
  ops.fallocate = op_fallocate;
  ops.readdir = op_readdir;

  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  fuse_opt_add_arg(&args, "hyperscsi-attach");
  fuse_opt_add_arg(&args, "-o");
  fuse_opt_add_arg(&args, ::geteuid() == 0 ? "fsname=hyperscsi,subtype=hyperscsi,allow_other"
                                           : "fsname=hyperscsi,subtype=hyperscsi");
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &server);
  fuse_opt_free_args(&args);
  if (!se) {
    error = "cannot create the FUSE session";
    return 1;
  }
  if (fuse_session_mount(se, dir.c_str()) != 0) {
    fuse_session_destroy(se);
    error = "cannot mount FUSE on " + dir + " (libfuse's reason is in the attach log)";
    return 1;
  }

  const int stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const int ended_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const int fuse_fd = fuse_session_fd(se);
  initiator::Initiator& ini = exp.device->lun().initiator();
  std::vector<std::unique_ptr<Reader>> readers;
  LoopReader loop_reader{se, ended_fd};
  server.start_helper();
  {
    SignalScope signals(stop_fd);
    if (exp.readers == 0) {
      ::fcntl(fuse_fd, F_SETFL, ::fcntl(fuse_fd, F_GETFL) | O_NONBLOCK);
      ini.add_poller(fuse_fd, [&loop_reader] { loop_reader.poll(); });
    }
    for (unsigned i = 0; i < exp.readers; ++i) {
      auto r = std::make_unique<Reader>();
      Reader& ref = *r;
      r->thread = std::thread([se, &ref, ended_fd] { read_requests(se, ref, ended_fd); });
      readers.push_back(std::move(r));
    }

    error = on_ready();
    if (error.empty()) {
      // Until a stop signal, or a reader ended (unmounted from outside).
      pollfd fds[2] = {{stop_fd, POLLIN, 0}, {ended_fd, POLLIN, 0}};
      while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
      }
    }

    fuse_session_exit(se);
    if (exp.readers == 0) ini.remove_poller(fuse_fd);
    for (auto& r : readers) {
      // Interrupt its read of /dev/fuse until it notices (a signal that lands
      // just before the read starts is lost, hence the repetition).
      while (!r->done) {
        ::pthread_kill(r->thread.native_handle(), kWakeSignal);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      r->thread.join();
    }
  }
  // Every reply still owed goes out before the session does.
  server.stop_helper();
  server.wait_idle();
  std::free(loop_reader.buf.mem);
  int read_error = loop_reader.error;
  for (auto& r : readers) read_error = read_error ? read_error : r->error;
  if (read_error != 0 && error.empty())
    error = std::string("reading /dev/fuse failed: ") + std::strerror(read_error);
  fuse_session_unmount(se);
  fuse_session_destroy(se);
  ::close(stop_fd);
  ::close(ended_fd);
  return error.empty() ? 0 : 1;
}

std::string attach_loop(const std::string& file, uint32_t block_size, bool read_only,
                        bool& direct_io) {
  const int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) return std::string("error: cannot open /dev/loop-control: ") + std::strerror(errno);
  // The loop device's logical block size: the LUN's, so that the loop device
  // never sends a request that is not block-aligned (a read-modify-write).
  const bool bs_ok =
      block_size >= 512 && block_size <= 4096 && (block_size & (block_size - 1)) == 0;
  const int access = read_only ? O_RDONLY : O_RDWR;
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      ::close(ctl);
      return std::string("error: no free loop device: ") + std::strerror(errno);
    }
    const std::string dev = "/dev/loop" + std::to_string(n);
    const int lfd = ::open(dev.c_str(), O_RDWR | O_CLOEXEC);
    if (lfd < 0) continue;
    for (int dio = 1; dio >= 0; --dio) {
      const int ffd = ::open(file.c_str(), access | O_CLOEXEC | (dio ? O_DIRECT : 0));
      if (ffd < 0) continue;
      loop_config cfg{};
      cfg.fd = static_cast<__u32>(ffd);
      cfg.block_size = bs_ok ? block_size : 0;
      cfg.info.lo_flags = (dio ? LO_FLAGS_DIRECT_IO : 0) | (read_only ? LO_FLAGS_READ_ONLY : 0);
      std::snprintf(reinterpret_cast<char*>(cfg.info.lo_file_name), LO_NAME_SIZE, "%s",
                    file.c_str());
      int rc = ::ioctl(lfd, LOOP_CONFIGURE, &cfg);
      int err = errno;
      if (rc != 0 && err == EINVAL && cfg.block_size != 0) {
        cfg.block_size = 0;  // an older kernel: 512-byte logical blocks
        rc = ::ioctl(lfd, LOOP_CONFIGURE, &cfg);
        err = errno;
      }
      ::close(ffd);
      if (rc == 0) {
        loop_info64 info{};
        direct_io = ::ioctl(lfd, LOOP_GET_STATUS64, &info) == 0 &&
                    (info.lo_flags & LO_FLAGS_DIRECT_IO) != 0;
        ::close(lfd);
        ::close(ctl);
        return dev;
      }
      if (err == EBUSY) break;  // raced with another user: next device
    }
    ::close(lfd);
  }
  ::close(ctl);
  return "error: LOOP_CONFIGURE failed on every free loop device";
}

std::string detach_loop(const std::string& loop_dev) {
  const int fd = ::open(loop_dev.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open ") + loop_dev + ": " + std::strerror(errno);
  const int rc = ::ioctl(fd, LOOP_CLR_FD, 0);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != ENXIO) return std::string("LOOP_CLR_FD failed: ") + std::strerror(err);
  return {};
}

std::string mount_point_of(const std::string& dev) {
  std::ifstream in("/proc/self/mounts");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string what, where;
    ls >> what >> where;
    if (what == dev) return where;
  }
  return {};
}

}  // namespace hyperscsi::attach

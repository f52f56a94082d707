#include "hyperscsi/store/uring_store.h"

#include "read_thread.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <fstream>
#include <numeric>
#include <vector>

namespace hyperscsi::store {
namespace {

enum class Op : std::uint8_t { kRead, kWrite, kFlush, kUnmap };

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<std::byte, FreeDeleter>;

struct Request {
  Op op = Op::kRead;
  bool fua = false;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::byte* read_buf = nullptr;
  const std::byte* write_buf = nullptr;
  AlignedBuf bounce;  // set when O_DIRECT needs an aligned copy
  IoCallback cb;
};

// One kernel operation: one or more merged requests.
struct KernelOp {
  Op op = Op::kRead;
  bool fua = false;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::vector<Request> reqs;
  std::vector<iovec> iov;
};

constexpr std::size_t kMaxIov = IOV_MAX;
constexpr std::uint64_t kMaxOpBytes = 1ull << 30;  // CQE res is an int
// Memory-file reads at least this long are copied on the ReadThread when the
// caller prefers it (set_read_offload); smaller ones inline, where the
// hand-off would cost about as much as the copy.
constexpr std::uint64_t kOffloadMinBytes = 128u * 1024u;

StoreError err(StoreError::Kind k, std::string_view path, std::string_view why) {
  return StoreError{k, std::string(path) + ": " + std::string(why)};
}

class UringStore final : public BlockStore {
 public:
  UringStore(std::string path, int fd, bool is_block, std::uint64_t blocks,
             std::uint32_t block_size, bool read_only, bool direct, std::uint32_t dio_mem_align,
             bool can_unmap)
      : path_(std::move(path)),
        fd_(fd),
        is_block_(is_block),
        blocks_(blocks),
        block_size_(block_size),
        read_only_(read_only),
        direct_(direct),
        dio_mem_align_(dio_mem_align),
        can_unmap_(can_unmap) {}

  Status<StoreError> init(unsigned depth) {
    io_uring_params p{};
    int rc = io_uring_queue_init_params(depth, &ring_, &p);
    if (rc < 0)
      return Unexpected(err(StoreError::Kind::kIoSetupFailed, path_,
                            std::string("io_uring_queue_init: ") + std::strerror(-rc)));
    ring_ok_ = true;
    max_ops_in_kernel_ = p.cq_entries;
    struct statfs fs {};
    memory_fs_ = !is_block_ && ::fstatfs(fd_, &fs) == 0 &&
                 (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
    event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (event_fd_ < 0)
      return Unexpected(err(StoreError::Kind::kIoSetupFailed, path_,
                            std::string("eventfd: ") + std::strerror(errno)));
    rc = io_uring_register_eventfd(&ring_, event_fd_);
    if (rc < 0)
      return Unexpected(err(StoreError::Kind::kIoSetupFailed, path_,
                            std::string("register eventfd: ") + std::strerror(-rc)));
    return {};
  }

  ~UringStore() override {
    if (ring_ok_) {
      drain();
      io_uring_queue_exit(&ring_);
    }
    reader_.reset();
    if (event_fd_ >= 0) ::close(event_fd_);
    // Release the export lock now: the ring's teardown can hold the file
    // (and with it the flock) a little longer in the kernel, and a successor
    // that reopens the file at once (SIGHUP reload) must find it free.
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

  std::uint32_t block_size() const override { return block_size_; }
  std::uint64_t num_blocks() const override { return blocks_; }
  bool read_only() const override { return read_only_; }
  bool supports_unmap() const override { return can_unmap_ && !read_only_; }
  bool unmapped_reads_zero() const override { return supports_unmap() && !is_block_; }
  std::string describe() const override {
    return std::string(is_block_ ? "blockdev:" : "file:") + path_ + (direct_ ? " (O_DIRECT)" : "");
  }
  StoreIdentity identity() const override { return identity_; }
  void set_identity(StoreIdentity id) { identity_ = std::move(id); }
  // Files: the file system's holes (SEEK_DATA/SEEK_HOLE; UNMAP punches
  // them). Block devices do not say.
  std::optional<Allocation> allocation_at(std::uint64_t offset) const override {
    if (is_block_ || offset >= size_bytes()) return std::nullopt;
    const off_t at = static_cast<off_t>(offset);
    const off_t data = ::lseek(fd_, at, SEEK_DATA);
    if (data < 0 && errno != ENXIO) return std::nullopt;  // no SEEK_DATA here
    std::uint64_t end = 0;
    bool allocated = false;
    if (data == at) {
      const off_t hole = ::lseek(fd_, at, SEEK_HOLE);
      if (hole < 0) return std::nullopt;
      allocated = true;
      // A block partly backed counts as mapped: round the run up.
      end = (static_cast<std::uint64_t>(hole) + block_size_ - 1) / block_size_ * block_size_;
    } else {
      // A hole up to the next data (or to the end of the file).
      end = data < 0 ? size_bytes() : static_cast<std::uint64_t>(data) / block_size_ * block_size_;
      if (end <= offset) {  // data starts inside this block: it is mapped
        allocated = true;
        end = offset + block_size_;
      }
    }
    return Allocation{allocated, std::min(end, size_bytes()) - offset};
  }

  void submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) override {
    Request r;
    r.op = Op::kRead;
    r.offset = offset;
    r.length = buf.size();
    r.read_buf = buf.data();
    r.cb = std::move(cb);
    accept(std::move(r));
  }
  void submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                    IoCallback cb) override {
    Request r;
    r.op = Op::kWrite;
    r.fua = fua;
    r.offset = offset;
    r.length = buf.size();
    r.write_buf = buf.data();
    r.cb = std::move(cb);
    accept(std::move(r));
  }
  void submit_flush(IoCallback cb) override {
    Request r;
    r.op = Op::kFlush;
    r.cb = std::move(cb);
    accept(std::move(r));
  }
  void submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) override {
    Request r;
    r.op = Op::kUnmap;
    r.offset = offset;
    r.length = length;
    r.cb = std::move(cb);
    accept(std::move(r));
  }

  void set_read_offload(bool prefer) override { offload_preferred_ = prefer; }
  void submit() override;
  int completion_fd() const override { return event_fd_; }
  std::size_t poll() override;
  void drain() override;
  std::size_t in_flight() const override {
    return pending_.size() + reqs_in_kernel_ + done_.size() + offloaded_.size();
  }
  StoreCounters counters() const override { return counters_; }

 private:
  bool in_range(std::uint64_t offset, std::uint64_t length) const {
    const std::uint64_t size = size_bytes();
    return offset % block_size_ == 0 && length % block_size_ == 0 && offset <= size &&
           length <= size - offset && length <= kMaxOpBytes;
  }
  void accept(Request r);
  void complete_later(Request r, IoStatus s);
  bool try_inline(Request& r);
  void signal() {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
  }
  io_uring_sqe* get_sqe();
  void queue_kernel_op(std::unique_ptr<KernelOp> op);
  void build_rw_ops(std::vector<Request>& seg);
  void finish_op(KernelOp& op, int res);
  IoStatus finish_sync(KernelOp& op, std::uint64_t done);
  void run_done();
  std::size_t run_offloaded();
  // Memory files only: starts the ReadThread at the first offloaded read. A
  // thread that cannot be started leaves every read inline (no throw here).
  bool has_reader() {
    if (reader_ || !memory_fs_ || reader_failed_) return reader_ != nullptr;
    try {
      reader_ = std::make_unique<ReadThread>(fd_, event_fd_);
    } catch (const std::exception&) {
      reader_failed_ = true;
    }
    return reader_ != nullptr;
  }

  std::string path_;
  StoreIdentity identity_;
  int fd_;
  bool is_block_;
  std::uint64_t blocks_;
  std::uint32_t block_size_;
  bool read_only_;
  bool direct_;
  std::uint32_t dio_mem_align_;
  bool can_unmap_;
  io_uring ring_{};
  bool ring_ok_ = false;
  int event_fd_ = -1;
  bool memory_fs_ = false;    // tmpfs/ramfs: reads and writes never wait for a device
  bool nowait_reads_ = true;  // cleared when the filesystem rejects RWF_NOWAIT
  unsigned max_ops_in_kernel_ = 0;
  unsigned ops_in_kernel_ = 0;
  unsigned sqes_unsubmitted_ = 0;
  std::size_t reqs_in_kernel_ = 0;
  std::vector<Request> pending_;
  std::vector<std::pair<Request, IoStatus>> done_;
  bool offload_preferred_ = false;      // set_read_offload
  bool reader_failed_ = false;          // the ReadThread could not be started
  std::unique_ptr<ReadThread> reader_;  // memory files, from the first offloaded read
  std::deque<Request> offloaded_;       // on reader_, in its order
  StoreCounters counters_;
};

// Requests that need no device are done at once with one preadv2/pwritev2
// instead of an io_uring round trip: on tmpfs (or ramfs) every read and write
// is a memory copy, and io_uring would hand it to an io-wq worker thread
// because tmpfs does not support non-blocking I/O (RWF_NOWAIT fails with
// EOPNOTSUPP there). On other filesystems a read is tried with RWF_NOWAIT,
// which succeeds on a page-cache hit. Anything else, and any short or failed
// attempt, goes to io_uring. Writes are only done here when nothing is queued
// or in the kernel, so they never overtake a flush or unmap.
bool UringStore::try_inline(Request& r) {
  if (direct_ || r.bounce || r.op == Op::kFlush || r.op == Op::kUnmap) return false;
  int flags = 0;
  if (memory_fs_) {
    if (r.op == Op::kWrite && (!pending_.empty() || ops_in_kernel_ > 0)) return false;
    if (r.fua) flags = RWF_DSYNC;
  } else if (r.op == Op::kRead && nowait_reads_) {
    flags = RWF_NOWAIT;
  } else {
    return false;
  }
  const off_t pos = static_cast<off_t>(r.offset);
  ssize_t n;
  if (r.op == Op::kRead) {
    iovec iov{r.read_buf, static_cast<std::size_t>(r.length)};
    n = ::preadv2(fd_, &iov, 1, pos, flags);
  } else {
    iovec iov{const_cast<std::byte*>(r.write_buf), static_cast<std::size_t>(r.length)};
    n = ::pwritev2(fd_, &iov, 1, pos, flags);
  }
  if (n < 0 && errno == EOPNOTSUPP && flags == RWF_NOWAIT) nowait_reads_ = false;
  if (n < 0 || static_cast<std::uint64_t>(n) != r.length) {
    ++counters_.inline_misses;  // io_uring redoes the whole request and reports any error
    return false;
  }
  ++counters_.inline_ops;
  (r.op == Op::kRead ? counters_.bytes_read : counters_.bytes_written) += r.length;
  return true;
}

void UringStore::complete_later(Request r, IoStatus s) {
  if (done_.empty()) signal();
  done_.emplace_back(std::move(r), s);
}

void UringStore::accept(Request r) {
  if (r.op != Op::kFlush) {
    if (!in_range(r.offset, r.length)) return complete_later(std::move(r), IoStatus::kOutOfRange);
    if (r.op != Op::kRead && read_only_) return complete_later(std::move(r), IoStatus::kReadOnly);
    if (r.op == Op::kUnmap && !can_unmap_) {
      return complete_later(std::move(r), IoStatus::kUnsupported);
    }
  } else if (read_only_) {
    ++counters_.flushes;  // nothing can be dirty
    return complete_later(std::move(r), IoStatus::kOk);
  }
  if (r.length == 0 && r.op != Op::kFlush) return complete_later(std::move(r), IoStatus::kOk);
  switch (r.op) {
    case Op::kRead:
      ++counters_.reads;
      break;
    case Op::kWrite:
      ++counters_.writes;
      if (r.fua) ++counters_.fua_writes;
      break;
    case Op::kUnmap:
      ++counters_.unmaps;
      break;
    case Op::kFlush:
      break;
  }
  if (direct_ && (r.op == Op::kRead || r.op == Op::kWrite)) {
    const auto addr =
        reinterpret_cast<std::uintptr_t>(r.op == Op::kRead ? static_cast<const void*>(r.read_buf)
                                                           : static_cast<const void*>(r.write_buf));
    if (addr % dio_mem_align_ != 0) {
      const std::size_t align = std::max<std::size_t>(dio_mem_align_, 4096);
      const std::size_t len = (r.length + align - 1) / align * align;
      r.bounce.reset(static_cast<std::byte*>(std::aligned_alloc(align, len)));
      if (!r.bounce) return complete_later(std::move(r), IoStatus::kMediumError);
      if (r.op == Op::kWrite) std::memcpy(r.bounce.get(), r.write_buf, r.length);
      ++counters_.bounced;
    }
  }
  if (offload_preferred_ && !direct_ && r.op == Op::kRead && r.length >= kOffloadMinBytes &&
      has_reader()) {
    reader_->push(r.offset, std::span(r.read_buf, r.length));
    ++counters_.offloaded_reads;
    offloaded_.push_back(std::move(r));
    return;
  }
  if (try_inline(r)) return complete_later(std::move(r), IoStatus::kOk);
  // Wake the event loop so the next poll() submits this batch: everything
  // queued until then goes to the kernel with one io_uring_submit.
  if (pending_.empty() && done_.empty()) signal();
  pending_.push_back(std::move(r));
}

io_uring_sqe* UringStore::get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // SQ ring full: push what we have and try again.
    io_uring_submit(&ring_);
    ++counters_.batches;
    sqes_unsubmitted_ = 0;
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void UringStore::queue_kernel_op(std::unique_ptr<KernelOp> op) {
  io_uring_sqe* sqe = get_sqe();
  if (sqe == nullptr) {  // cannot happen after a submit; fail the requests rather than lose them
    for (auto& r : op->reqs) complete_later(std::move(r), IoStatus::kMediumError);
    return;
  }
  const int fd = fd_;
  switch (op->op) {
    case Op::kRead:
      io_uring_prep_readv(sqe, fd, op->iov.data(), static_cast<unsigned>(op->iov.size()),
                          op->offset);
      break;
    case Op::kWrite:
      io_uring_prep_writev2(sqe, fd, op->iov.data(), static_cast<unsigned>(op->iov.size()),
                            op->offset, op->fua ? RWF_DSYNC : 0);
      break;
    case Op::kFlush:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      // Drain: start only after everything submitted before has completed.
      io_uring_sqe_set_flags(sqe, IOSQE_IO_DRAIN);
      break;
    case Op::kUnmap:
      io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              static_cast<off_t>(op->offset), static_cast<off_t>(op->length));
      break;
  }
  reqs_in_kernel_ += op->reqs.size();
  ++ops_in_kernel_;
  ++sqes_unsubmitted_;
  ++counters_.ops_submitted;
  io_uring_sqe_set_data(sqe, op.release());
}

// Sort one barrier-free segment by kind and offset and fold adjacent requests.
void UringStore::build_rw_ops(std::vector<Request>& seg) {
  std::stable_sort(seg.begin(), seg.end(), [](const Request& a, const Request& b) {
    if (a.op != b.op) return a.op < b.op;
    if (a.fua != b.fua) return a.fua < b.fua;
    return a.offset < b.offset;
  });
  std::unique_ptr<KernelOp> cur;
  for (auto& r : seg) {
    const bool joins = cur && cur->op == r.op && cur->fua == r.fua &&
                       cur->offset + cur->length == r.offset && cur->iov.size() < kMaxIov &&
                       cur->length + r.length <= kMaxOpBytes;
    if (!joins) {
      if (cur) queue_kernel_op(std::move(cur));
      cur = std::make_unique<KernelOp>();
      cur->op = r.op;
      cur->fua = r.fua;
      cur->offset = r.offset;
    } else {
      ++counters_.merged;
    }
    void* base = r.bounce            ? static_cast<void*>(r.bounce.get())
                 : r.op == Op::kRead ? static_cast<void*>(r.read_buf)
                                     : const_cast<std::byte*>(r.write_buf);  // writev takes void*
    cur->iov.push_back(iovec{base, static_cast<std::size_t>(r.length)});
    cur->length += r.length;
    cur->reqs.push_back(std::move(r));
  }
  if (cur) queue_kernel_op(std::move(cur));
  seg.clear();
}

void UringStore::submit() {
  if (!pending_.empty() && ops_in_kernel_ < max_ops_in_kernel_) {
    std::vector<Request> batch;
    // Keep kernel ops below the CQ size so completions never overflow; a
    // request merges into at most one op, so taking this many is safe.
    const std::size_t room = max_ops_in_kernel_ - ops_in_kernel_;
    const std::size_t take = std::min(room, pending_.size());
    batch.assign(std::make_move_iterator(pending_.begin()),
                 std::make_move_iterator(pending_.begin() + static_cast<std::ptrdiff_t>(take)));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(take));

    std::vector<Request> seg;
    for (auto& r : batch) {
      if (r.op == Op::kRead || r.op == Op::kWrite) {
        seg.push_back(std::move(r));
        continue;
      }
      build_rw_ops(seg);
      if (r.op == Op::kUnmap && is_block_) {
        // No discard opcode in this liburing: BLKDISCARD synchronously.
        std::uint64_t range[2] = {r.offset, r.length};
        const int rc = ::ioctl(fd_, BLKDISCARD, range);
        complete_later(std::move(r), rc == 0 ? IoStatus::kOk : io_status_from_errno(errno));
        continue;
      }
      auto op = std::make_unique<KernelOp>();
      op->op = r.op;
      op->offset = r.offset;
      op->length = r.length;
      op->reqs.push_back(std::move(r));
      if (op->op == Op::kFlush) ++counters_.flushes;
      queue_kernel_op(std::move(op));
    }
    build_rw_ops(seg);
  }
  if (sqes_unsubmitted_ > 0) {
    // On a transient failure (EAGAIN/EBUSY under memory or CQ pressure) the
    // SQEs stay in the ring; keep the flag so the next poll()/drain() retries.
    const int rc = io_uring_submit(&ring_);
    ++counters_.batches;
    if (rc >= 0) sqes_unsubmitted_ = 0;
  }
}

// Completes the tail of a short transfer synchronously (rare: signals, EOF races).
IoStatus UringStore::finish_sync(KernelOp& op, std::uint64_t done) {
  std::vector<iovec> iov = op.iov;
  std::size_t idx = 0;
  std::uint64_t skip = done;
  while (idx < iov.size() && skip >= iov[idx].iov_len) skip -= iov[idx++].iov_len;
  if (idx < iov.size()) {
    iov[idx].iov_base = static_cast<char*>(iov[idx].iov_base) + skip;
    iov[idx].iov_len -= skip;
  }
  for (int guard = 0; idx < iov.size() && guard < 1024; ++guard) {
    const off_t pos = static_cast<off_t>(op.offset + done);
    const int cnt = static_cast<int>(iov.size() - idx);
    ssize_t n = op.op == Op::kRead ? ::preadv2(fd_, &iov[idx], cnt, pos, 0)
                                   : ::pwritev2(fd_, &iov[idx], cnt, pos, op.fua ? RWF_DSYNC : 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return io_status_from_errno(errno);
    }
    if (n == 0) return op.op == Op::kRead ? IoStatus::kMediumError : IoStatus::kNoSpace;
    done += static_cast<std::uint64_t>(n);
    auto left = static_cast<std::uint64_t>(n);
    while (idx < iov.size() && left >= iov[idx].iov_len) left -= iov[idx++].iov_len;
    if (idx < iov.size()) {
      iov[idx].iov_base = static_cast<char*>(iov[idx].iov_base) + left;
      iov[idx].iov_len -= left;
    }
  }
  return idx < iov.size() ? IoStatus::kMediumError : IoStatus::kOk;
}

void UringStore::finish_op(KernelOp& op, int res) {
  IoStatus s = IoStatus::kOk;
  if (res < 0) {
    if ((res == -EAGAIN || res == -EINTR) && (op.op == Op::kRead || op.op == Op::kWrite)) {
      s = finish_sync(op, 0);
    } else {
      s = io_status_from_errno(-res);
    }
  } else if ((op.op == Op::kRead || op.op == Op::kWrite) &&
             static_cast<std::uint64_t>(res) < op.length) {
    s = finish_sync(op, static_cast<std::uint64_t>(res));
  }
  for (auto& r : op.reqs) {
    if (s == IoStatus::kOk) {
      if (r.op == Op::kRead) {
        if (r.bounce) std::memcpy(r.read_buf, r.bounce.get(), r.length);
        counters_.bytes_read += r.length;
      } else if (r.op == Op::kWrite) {
        counters_.bytes_written += r.length;
      }
    } else {
      ++counters_.errors;
    }
  }
  reqs_in_kernel_ -= op.reqs.size();
  --ops_in_kernel_;
  for (auto& r : op.reqs) {
    if (r.cb) r.cb(s);
  }
}

void UringStore::run_done() {
  std::vector<std::pair<Request, IoStatus>> list;
  list.swap(done_);
  for (auto& [r, s] : list) {
    if (s != IoStatus::kOk) ++counters_.errors;
    if (r.cb) r.cb(s);
  }
}

// Completes the reads the ReadThread has finished, in the order pushed.
std::size_t UringStore::run_offloaded() {
  if (offloaded_.empty()) return 0;
  std::vector<IoStatus> finished;  // local: a callback may submit (or drain) again
  reader_->take(finished);
  for (const IoStatus s : finished) {
    Request r = std::move(offloaded_.front());
    offloaded_.pop_front();
    if (s == IoStatus::kOk) {
      counters_.bytes_read += r.length;
    } else {
      ++counters_.errors;
    }
    if (r.cb) r.cb(s);
  }
  return finished.size();
}

std::size_t UringStore::poll() {
  std::uint64_t discard = 0;
  [[maybe_unused]] ssize_t n = ::read(event_fd_, &discard, sizeof discard);
  submit();
  std::size_t ran = done_.size();
  run_done();
  ran += run_offloaded();
  io_uring_cqe* cqes[64];
  for (;;) {
    const unsigned got = io_uring_peek_batch_cqe(&ring_, cqes, 64);
    if (got == 0) break;
    for (unsigned i = 0; i < got; ++i) {
      std::unique_ptr<KernelOp> op(static_cast<KernelOp*>(io_uring_cqe_get_data(cqes[i])));
      const int res = cqes[i]->res;
      io_uring_cqe_seen(&ring_, cqes[i]);
      ran += op->reqs.size();
      finish_op(*op, res);
    }
  }
  // Callbacks may have queued more work; send it as one batch.
  submit();
  if (!done_.empty()) signal();
  return ran;
}

void UringStore::drain() {
  while (in_flight() > 0) {
    submit();
    if (done_.empty() && ops_in_kernel_ > 0) {
      // Submit-and-wait also retries SQEs an earlier submit could not hand over.
      const int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc >= 0) sqes_unsubmitted_ = 0;
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        break;  // ring broken: cannot make progress
      }
    } else if (done_.empty() && pending_.empty() && !offloaded_.empty()) {
      reader_->wait_one();
    }
    poll();
  }
}

std::uint32_t dio_alignment(int fd, std::uint32_t* offset_align) {
  struct statx stx {};
  std::uint32_t mem = 512;
  *offset_align = 512;
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN) != 0 && stx.stx_dio_mem_align != 0) {
    mem = stx.stx_dio_mem_align;
    *offset_align = stx.stx_dio_offset_align;
  }
  return mem;
}

bool block_device_discards(dev_t rdev) {
  std::ifstream f("/sys/dev/block/" + std::to_string(major(rdev)) + ":" +
                  std::to_string(minor(rdev)) + "/queue/discard_max_bytes");
  std::uint64_t v = 0;
  return static_cast<bool>(f >> v) && v > 0;
}

}  // namespace

Result<std::unique_ptr<BlockStore>, StoreError> open_uring_store(std::string_view path_view,
                                                                 const StoreOptions& o) {
  const std::string path(path_view);
  using K = StoreError::Kind;
  if (o.block_size != 512 && o.block_size != 4096) {
    return Unexpected(err(K::kBadBlockSize, path,
                          "block size " + std::to_string(o.block_size) + " is not 512 or 4096"));
  }
  struct stat st {};
  bool created = false;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return Unexpected(err(K::kOpenFailed, path, std::strerror(errno)));
    if (o.create_size == 0) {
      return Unexpected(err(K::kNotFound, path, "no such file (give a size to create it)"));
    }
    if (o.create_size % o.block_size != 0) {
      return Unexpected(err(K::kBadSize, path,
                            "size " + std::to_string(o.create_size) +
                                " is not a multiple of the block size " +
                                std::to_string(o.block_size)));
    }
    int cfd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
    if (cfd < 0)
      return Unexpected(err(K::kOpenFailed, path, std::string("create: ") + std::strerror(errno)));
    const int rc = ::ftruncate(cfd, static_cast<off_t>(o.create_size));
    const int saved = errno;
    ::close(cfd);
    if (rc != 0) {
      ::unlink(path.c_str());
      return Unexpected(
          err(K::kOpenFailed, path, std::string("ftruncate: ") + std::strerror(saved)));
    }
    created = true;
    if (::stat(path.c_str(), &st) != 0) {
      return Unexpected(err(K::kOpenFailed, path, std::strerror(errno)));
    }
  }
  const bool is_block = S_ISBLK(st.st_mode);
  if (!is_block && !S_ISREG(st.st_mode)) {
    return Unexpected(err(K::kUnsupportedType, path, "neither a regular file nor a block device"));
  }
  int flags = (o.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (o.direct_io) flags |= O_DIRECT;
  // O_EXCL on a block device: refused while it is mounted or held by
  // device-mapper, md or another exclusive opener.
  if (is_block && !o.read_only) flags |= O_EXCL;
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    const int e = errno;
    if (is_block && e == EBUSY) {
      const std::string user = block_device_user(st.st_rdev);
      return Unexpected(
          err(K::kBusy, path,
              "the device is in use (" +
                  (user.empty() ? std::string("opened exclusively by another program") : user) +
                  "); unmount or release it first"));
    }
    return Unexpected(err(K::kOpenFailed, path,
                          std::string(o.read_only ? "cannot open for reading: "
                                                  : "cannot open for reading and writing: ") +
                              std::strerror(e)));
  }
  // One export per backing store: the lock lives as long as the fd.
  if (::flock(fd, (o.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    const int e = errno;
    struct stat lst {};
    ::fstat(fd, &lst);
    ::close(fd);
    if (e != EWOULDBLOCK)
      return Unexpected(err(K::kOpenFailed, path, std::string("flock: ") + std::strerror(e)));
    std::string holder = lock_holder(lst.st_dev, lst.st_ino);
    if (holder.rfind("pid " + std::to_string(::getpid()) + " ", 0) == 0 ||
        holder == "pid " + std::to_string(::getpid()))
      holder = "this process (another LUN exports it)";
    return Unexpected(err(K::kBusy, path,
                          "already exported, locked by " +
                              (holder.empty() ? std::string("another process") : holder) +
                              "; a backing store is exported once (read-only exports may share "
                              "it)"));
  }
  std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  bool can_unmap = true;
  if (is_block) {
    int sector = 512;
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0 || ::ioctl(fd, BLKSSZGET, &sector) != 0) {
      const int e = errno;
      ::close(fd);
      return Unexpected(err(K::kOpenFailed, path, std::string("block ioctl: ") + std::strerror(e)));
    }
    if (sector <= 0 || o.block_size % static_cast<std::uint32_t>(sector) != 0) {
      ::close(fd);
      return Unexpected(err(K::kBadBlockSize, path,
                            "block size " + std::to_string(o.block_size) +
                                " is not a multiple of the device sector size " +
                                std::to_string(sector)));
    }
    can_unmap = block_device_discards(st.st_rdev);
  }
  (void)created;
  if (size == 0 || size % o.block_size != 0) {
    ::close(fd);
    return Unexpected(err(K::kBadSize, path,
                          "size " + std::to_string(size) +
                              " is not a non-zero multiple of the block size " +
                              std::to_string(o.block_size)));
  }
  std::uint32_t mem_align = 1;
  if (o.direct_io) {
    std::uint32_t off_align = 512;
    mem_align = dio_alignment(fd, &off_align);
    if (off_align == 0 || o.block_size % off_align != 0) {
      ::close(fd);
      return Unexpected(err(K::kBadBlockSize, path,
                            "O_DIRECT needs offsets aligned to " + std::to_string(off_align) +
                                " bytes; block size " + std::to_string(o.block_size) +
                                " does not fit"));
    }
  }
  StoreIdentity identity;
  if (is_block) {
    identity = block_device_identity(st.st_rdev);
  } else {
    std::string why;
    auto id = file_identity(fd, path, true, why);
    if (!id) {
      ::close(fd);
      return Unexpected(err(K::kOpenFailed, path, why));
    }
    identity = std::move(*id);
  }
  auto store = std::make_unique<UringStore>(path, fd, is_block, size / o.block_size, o.block_size,
                                            o.read_only, o.direct_io, mem_align, can_unmap);
  store->set_identity(std::move(identity));
  if (auto s = store->init(o.queue_depth == 0 ? 256 : o.queue_depth); !s) {
    return Unexpected(s.error());
  }
  return std::unique_ptr<BlockStore>(std::move(store));
}

}  // namespace hyperscsi::store

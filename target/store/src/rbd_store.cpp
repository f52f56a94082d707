// The rbd: backing store: a Ceph RBD image through librbd's asynchronous C
// API, built as the run-time module hyperscsi-store-rbd.so (store_module.h).
//
// Data path. Every request goes to librbd at once (rbd_aio_read/write/
// discard/writesame/compare_and_write/flush); librbd calls back on one of its
// own threads, where the completion is only queued (under a mutex) and the
// store's eventfd is written. The owner thread's poll() takes the queue and
// runs the callbacks, exactly as the io_uring store's completions arrive: the
// port loop watches completion_fd() and never waits on the cluster. FUA is a
// write followed by a flush issued from poll() when the write completed.
//
// Bounds. The cluster connection is shared by every image opened with the
// same Ceph settings. client_mount_timeout and rados_mon_op_timeout bound the
// start-up (an unreachable monitor is an error after connect_timeout_s), and
// rados_osd_op_timeout bounds each I/O: a blocked OSD makes commands wait,
// then fail with kTimedOut (no write is acknowledged that Ceph did not
// acknowledge). librbd's cache is off (writes complete only when the OSDs
// have them, the same for every gateway of the image), and partial discards
// are zeroed so unmapped blocks read back as zeros.
//
// Size. A header watch (rbd_update_watch) tells us when the image changed; a
// helper thread then asks librbd for the size (that call may wait for the
// cluster, so never on the port loop) and take_capacity_change() hands a new
// size to the SCSI layer, which raises CAPACITY DATA HAS CHANGED.
#include <poll.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/store/block_store.h"
#include "store_module.h"

#ifndef HYPERSCSI_STORE_BUILD_TAG
#error "HYPERSCSI_STORE_BUILD_TAG must be defined"
#endif

namespace hyperscsi::store {
namespace {

using K = StoreError::Kind;

constexpr const char* kBlockSizeKey = "hyperscsi.block_size";
constexpr std::uint64_t kMaxCompareAndWrite = 512;

StoreError err(K kind, std::string_view spec, const std::string& why) {
  return StoreError{kind, std::string(spec) + ": " + why};
}

struct ImageName {
  std::string pool, ns, image;
  std::string text() const { return pool + "/" + (ns.empty() ? "" : ns + "/") + image; }
};

// "rbd:POOL/IMAGE" or "rbd:POOL/NAMESPACE/IMAGE".
Result<ImageName, StoreError> parse_spec(std::string_view spec) {
  std::string_view rest = spec.substr(4);
  std::vector<std::string> parts;
  while (true) {
    const auto slash = rest.find('/');
    parts.emplace_back(rest.substr(0, slash));
    if (slash == std::string_view::npos) break;
    rest = rest.substr(slash + 1);
  }
  const auto bad = [&](const std::string& why) {
    return Unexpected(
        err(K::kBadSpec, spec, why + " (expected rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE)"));
  };
  if (parts.size() < 2 || parts.size() > 3) return bad("wrong number of '/'");
  for (const auto& p : parts) {
    if (p.empty()) return bad("empty pool, namespace or image name");
    if (p.size() > 255) return bad("name longer than 255 bytes");
  }
  if (parts.back().find('@') != std::string::npos)
    return bad("snapshots (IMAGE@SNAP) are not served");
  ImageName n;
  n.pool = parts[0];
  n.image = parts.back();
  if (parts.size() == 3) n.ns = parts[1];
  return n;
}

std::string conf_get(rados_t r, const char* key) {
  char buf[512] = {};
  if (rados_conf_get(r, key, buf, sizeof buf - 1) != 0) return {};
  return buf;
}

// One connection to a cluster, shared by the images opened with the same
// settings (one set of librados threads and sockets per daemon, not per LUN).
// Thread-safety: get() from any thread; the handle is thread-safe (librados).
class Cluster {
 public:
  static Result<std::shared_ptr<Cluster>, StoreError> get(const RbdOptions& o,
                                                          std::string_view spec);
  ~Cluster() { rados_shutdown(rados_); }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;
  rados_t handle() const { return rados_; }
  const std::string& who() const { return who_; }
  const RbdOptions& options() const { return options_; }

 private:
  Cluster(rados_t r, std::string who, RbdOptions o)
      : rados_(r), who_(std::move(who)), options_(std::move(o)) {}
  static Result<rados_t, StoreError> connect(const RbdOptions& o, std::string_view spec,
                                             const std::string& who);

  rados_t rados_;
  std::string who_;  // "client.ID"
  RbdOptions options_;
};

std::mutex g_clusters_mu;
std::vector<std::weak_ptr<Cluster>> g_clusters;

Result<rados_t, StoreError> Cluster::connect(const RbdOptions& o, std::string_view spec,
                                             const std::string& who) {
  rados_t r = nullptr;
  int rc = rados_create2(&r, "ceph", who.c_str(), 0);
  if (rc < 0) {
    return Unexpected(err(K::kIoSetupFailed, spec,
                          "cannot create a Ceph client for " + who + ": " + std::strerror(-rc)));
  }
  const auto fail = [&](K kind, const std::string& why) {
    rados_shutdown(r);
    return Unexpected(err(kind, spec, why));
  };
  if (!o.conf_file.empty() && ::access(o.conf_file.c_str(), R_OK) != 0) {
    const int e = errno;
    return fail(K::kOpenFailed,
                "cannot read the Ceph configuration " + o.conf_file + ": " + std::strerror(e));
  }
  rc = rados_conf_read_file(r, o.conf_file.empty() ? nullptr : o.conf_file.c_str());
  if (rc < 0 && !o.conf_file.empty()) {
    return fail(K::kOpenFailed,
                "cannot parse the Ceph configuration " + o.conf_file + ": " + std::strerror(-rc));
  }
  rados_conf_parse_env(r, nullptr);  // CEPH_ARGS, as every Ceph client honours it
  if (!o.keyring.empty()) {
    if (::access(o.keyring.c_str(), R_OK) != 0) {
      const int e = errno;
      return fail(K::kOpenFailed, "cannot read the keyring " + o.keyring + ": " + std::strerror(e));
    }
    rados_conf_set(r, "keyring", o.keyring.c_str());
  }
  const auto set_seconds = [&](const char* key, std::uint32_t s) {
    if (s != 0) rados_conf_set(r, key, std::to_string(s).c_str());
  };
  set_seconds("client_mount_timeout", o.connect_timeout_s);
  set_seconds("rados_mon_op_timeout", o.connect_timeout_s);
  set_seconds("rados_osd_op_timeout", o.op_timeout_s);
  // Several gateways may serve one image: no client-side write-back cache,
  // so an acknowledged write is in the cluster for every gateway.
  rados_conf_set(r, "rbd_cache", "false");
  // librbd's default, stated: submitting never waits (lock acquisition, throttles);
  // the port loop calls submit_* and must not block.
  rados_conf_set(r, "rbd_non_blocking_aio", "true");
  // Discards of part of an object zero it, so unmapped blocks read zeros (LBPRZ).
  rados_conf_set(r, "rbd_skip_partial_discard", "false");

  const std::string mons = conf_get(r, "mon_host");
  if (mons.empty()) {
    return fail(K::kOpenFailed,
                "no Ceph monitor addresses (mon_host) in " +
                    (o.conf_file.empty() ? std::string("the default ceph.conf") : o.conf_file));
  }
  rc = rados_connect(r);
  if (rc < 0) {
    const std::string keyring = conf_get(r, "keyring");
    switch (-rc) {
      case ETIMEDOUT:
        return fail(K::kUnreachable, "no answer from the Ceph monitors (" + mons + ") within " +
                                         conf_get(r, "client_mount_timeout") +
                                         " s: cluster unreachable");
      case EACCES:
      case EPERM:
        return fail(K::kAccessDenied, "the Ceph monitors refused " + who + " (wrong key? keyring " +
                                          keyring + "): " + std::strerror(-rc));
      case ENOENT:
        return fail(K::kAccessDenied, "no key for " + who + " (keyring " + keyring +
                                          "; give one with --ceph-keyring or [ceph] keyring)");
      default:
        return fail(K::kOpenFailed, "cannot connect to the Ceph cluster (" + mons + ") as " + who +
                                        ": " + std::strerror(-rc));
    }
  }
  return r;
}

Result<std::shared_ptr<Cluster>, StoreError> Cluster::get(const RbdOptions& o,
                                                          std::string_view spec) {
  const std::string who = "client." + (o.client_id.empty() ? std::string("admin") : o.client_id);
  // Held across connect: two LUNs of one cluster opened together share one connection.
  std::lock_guard lock(g_clusters_mu);
  for (auto it = g_clusters.begin(); it != g_clusters.end();) {
    auto c = it->lock();
    if (!c) {
      it = g_clusters.erase(it);
      continue;
    }
    if (c->options() == o) return c;
    ++it;
  }
  auto r = connect(o, spec, who);
  if (!r) return Unexpected(r.error());
  std::shared_ptr<Cluster> c(new Cluster(r.value(), who, o));
  g_clusters.push_back(c);
  return c;
}

enum class Op : std::uint8_t { kRead, kWrite, kFlush, kUnmap, kWriteSame, kCompareAndWrite };

class RbdStore;

// One request; lives from submit_* until its callback ran in poll().
struct Request {
  RbdStore* store = nullptr;
  Op op = Op::kRead;
  bool fua = false;
  bool flushing = false;  // FUA: the write is done, the flush after it is in flight
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  ssize_t result = 0;               // librbd's return value
  std::optional<IoStatus> refused;  // failed before reaching librbd
  std::uint64_t mismatch = 0;       // compare-and-write: where librbd saw the difference
  IoCallback cb;
  CompareCallback compare_cb;
};

class RbdStore final : public BlockStore {
 public:
  RbdStore(std::string spec, std::shared_ptr<Cluster> cluster, rados_ioctx_t io, rbd_image_t image,
           std::uint64_t size, std::uint64_t object_size, std::uint32_t block_size, bool read_only,
           int event_fd, StoreIdentity identity)
      : spec_(std::move(spec)),
        identity_(std::move(identity)),
        cluster_(std::move(cluster)),
        io_(io),
        image_(image),
        size_(size),
        blocks_(size / block_size),
        object_size_(object_size),
        block_size_(block_size),
        read_only_(read_only),
        event_fd_(event_fd),
        observed_size_(size) {}

  // Registers the header watch and starts the size thread. Without the watch
  // the store works but does not notice resizes; librbd 16 accepts the watch
  // on a read-only open but never calls it (it keeps no header watch then).
  void watch() {
    if (rbd_update_watch(image_, &watch_handle_, &RbdStore::on_update, this) == 0) {
      watching_ = true;
      size_thread_ = std::thread([this] { size_loop(); });
    }
  }

  ~RbdStore() override {
    drain();
    if (watching_) rbd_update_unwatch(image_, watch_handle_);  // no callback runs after this
    {
      std::lock_guard lock(size_mu_);
      stop_ = true;
    }
    size_cv_.notify_all();
    if (size_thread_.joinable()) size_thread_.join();
    rbd_close(image_);
    rados_ioctx_destroy(io_);
    ::close(event_fd_);
  }

  std::uint32_t block_size() const override { return block_size_; }
  std::uint64_t num_blocks() const override { return blocks_; }
  bool read_only() const override { return read_only_; }
  bool supports_unmap() const override { return !read_only_; }
  bool unmapped_reads_zero() const override { return supports_unmap(); }
  std::string describe() const override {
    return spec_ + " (" + cluster_->who() + ", objects of " + std::to_string(object_size_ >> 10) +
           " KiB" + (read_only_ ? ", read-only" : "") + ")";
  }
  StoreIdentity identity() const override { return identity_; }
  bool offloads_write_same() const override { return true; }
  // librbd 16 (Ceph Pacific) compares and writes one 512-byte sector at most
  // (-EINVAL otherwise); longer ranges are emulated by the SCSI layer.
  bool offloads_compare_and_write(std::uint64_t length) const override {
    return length <= kMaxCompareAndWrite;
  }

  void submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) override {
    Request* r = make(Op::kRead, offset, buf.size(), false, std::move(cb));
    ++counters_.reads;
    if (!check(r, false)) return;
    issue(r, [&](rbd_completion_t c) {
      return rbd_aio_read(image_, offset, buf.size(), reinterpret_cast<char*>(buf.data()), c);
    });
  }

  void submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                    IoCallback cb) override {
    Request* r = make(Op::kWrite, offset, buf.size(), fua, std::move(cb));
    ++counters_.writes;
    if (fua) ++counters_.fua_writes;
    if (!check(r, true)) return;
    issue(r, [&](rbd_completion_t c) {
      return rbd_aio_write(image_, offset, buf.size(), reinterpret_cast<const char*>(buf.data()),
                           c);
    });
  }

  void submit_flush(IoCallback cb) override {
    Request* r = make(Op::kFlush, 0, 0, false, std::move(cb));
    ++counters_.flushes;
    issue(r, [&](rbd_completion_t c) { return rbd_aio_flush(image_, c); });
  }

  void submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) override {
    Request* r = make(Op::kUnmap, offset, length, false, std::move(cb));
    ++counters_.unmaps;
    if (!check(r, true)) return;
    issue(r, [&](rbd_completion_t c) { return rbd_aio_discard(image_, offset, length, c); });
  }

  void submit_write_same(std::uint64_t offset, std::uint64_t length,
                         std::span<const std::byte> block, bool fua, IoCallback cb) override {
    Request* r = make(Op::kWriteSame, offset, length, fua, std::move(cb));
    ++counters_.write_sames;
    if (fua) ++counters_.fua_writes;
    if (block.size() != block_size_) r->refused = IoStatus::kOutOfRange;
    if (!check(r, true)) return;
    issue(r, [&](rbd_completion_t c) {
      return rbd_aio_writesame(image_, offset, length, reinterpret_cast<const char*>(block.data()),
                               block.size(), c, 0);
    });
  }

  void submit_compare_and_write(std::uint64_t offset, std::span<const std::byte> compare,
                                std::span<const std::byte> data, bool fua,
                                CompareCallback cb) override {
    Request* r = make(Op::kCompareAndWrite, offset, data.size(), fua, nullptr);
    r->compare_cb = std::move(cb);
    ++counters_.compare_and_writes;
    if (fua) ++counters_.fua_writes;
    if (compare.size() != data.size()) r->refused = IoStatus::kOutOfRange;
    if (data.size() > kMaxCompareAndWrite) r->refused = IoStatus::kUnsupported;
    if (!check(r, true)) return;
    issue(r, [&](rbd_completion_t c) {
      return static_cast<int>(rbd_aio_compare_and_write(
          image_, offset, data.size(), reinterpret_cast<const char*>(compare.data()),
          reinterpret_cast<const char*>(data.data()), c, &r->mismatch, 0));
    });
  }

  bool take_capacity_change() override {
    const std::uint64_t now = observed_size_.load(std::memory_order_acquire);
    if (now == size_) return false;
    size_ = now;
    blocks_ = now / block_size_;
    ++counters_.capacity_changes;
    return true;
  }

  void submit() override {}  // requests went to librbd when accepted
  int completion_fd() const override { return event_fd_; }

  std::size_t poll() override {
    std::uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(event_fd_, &v, sizeof v);
    std::vector<Request*> batch;
    {
      std::lock_guard lock(done_mu_);
      batch.swap(done_);
    }
    std::size_t ran = 0;
    for (Request* r : batch) ran += finish(r) ? 1 : 0;
    return ran;
  }

  void drain() override {
    while (in_flight_ > 0) {
      if (poll() > 0) continue;
      pollfd p{event_fd_, POLLIN, 0};
      ::poll(&p, 1, 100);
    }
  }

  std::size_t in_flight() const override { return in_flight_; }
  StoreCounters counters() const override { return counters_; }

 private:
  Request* make(Op op, std::uint64_t offset, std::uint64_t length, bool fua, IoCallback cb) {
    auto* r = new Request;
    r->store = this;
    r->op = op;
    r->offset = offset;
    r->length = length;
    r->fua = fua;
    r->cb = std::move(cb);
    ++in_flight_;
    ++counters_.ops_submitted;
    return r;
  }

  // Refuses what librbd must not see; the refusal completes in the next poll().
  bool check(Request* r, bool writes) {
    if (!r->refused) {
      const bool aligned = r->offset % block_size_ == 0 && r->length % block_size_ == 0;
      if (!aligned || r->offset > size_ || r->length > size_ - r->offset)
        r->refused = IoStatus::kOutOfRange;
      else if (writes && read_only_)
        r->refused = IoStatus::kReadOnly;
    }
    if (!r->refused) return true;
    completed(r);
    return false;
  }

  template <typename Start>
  void issue(Request* r, Start&& start) {
    rbd_completion_t c = nullptr;
    int rc = rbd_aio_create_completion(r, &RbdStore::on_complete, &c);
    if (rc == 0) {
      rc = start(c);
      if (rc < 0) rbd_aio_release(c);
    }
    if (rc < 0) {
      r->refused = io_status_from_errno(-rc);
      completed(r);
    }
  }

  // On a librbd thread.
  static void on_complete(rbd_completion_t c, void* arg) {
    auto* r = static_cast<Request*>(arg);
    r->result = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    r->store->completed(r);
  }

  // From any thread: queue for poll() and wake the owner's loop.
  void completed(Request* r) {
    bool was_empty;
    {
      std::lock_guard lock(done_mu_);
      was_empty = done_.empty();
      done_.push_back(r);
    }
    if (was_empty) {
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
    }
  }

  IoStatus status_of(const Request& r) const {
    if (r.refused) return *r.refused;
    // A short read (the image shrank under it) filled only part of the buffer.
    if (r.op == Op::kRead && r.result >= 0 && static_cast<std::uint64_t>(r.result) < r.length)
      return IoStatus::kMediumError;
    if (r.result >= 0) return IoStatus::kOk;
    return io_status_from_errno(static_cast<int>(-r.result));
  }

  // Owner thread. False when the request goes on (the flush after a FUA write).
  bool finish(Request* r) {
    IoStatus s = status_of(*r);
    if (s == IoStatus::kOk && r->fua && !r->flushing) {
      r->flushing = true;
      r->result = 0;
      issue(r, [&](rbd_completion_t c) { return rbd_aio_flush(image_, c); });
      return false;
    }
    std::unique_ptr<Request> owned(r);
    --in_flight_;
    if (s != IoStatus::kOk) {
      ++counters_.errors;
    } else if (r->op == Op::kRead) {
      counters_.bytes_read += r->length;
    } else if (r->op == Op::kWrite || r->op == Op::kWriteSame || r->op == Op::kCompareAndWrite) {
      counters_.bytes_written += r->length;
    }
    if (r->op == Op::kCompareAndWrite) {
      // librbd 16 reports the first difference relative to the range; should a
      // later one report the image offset (it is then >= the range's), subtract.
      std::uint64_t at = 0;
      if (s == IoStatus::kMiscompare)
        at = r->mismatch >= r->offset ? r->mismatch - r->offset : r->mismatch;
      if (r->compare_cb) r->compare_cb(s, at);
    } else if (r->cb) {
      r->cb(s);
    }
    return true;
  }

  // On a librbd thread: the image header changed (resize, snapshot, lock...).
  static void on_update(void* arg) {
    auto* self = static_cast<RbdStore*>(arg);
    {
      std::lock_guard lock(self->size_mu_);
      self->size_dirty_ = true;
    }
    self->size_cv_.notify_all();
  }

  // Asks librbd for the size after each header change; may wait on the cluster.
  void size_loop() {
    std::unique_lock lock(size_mu_);
    while (true) {
      size_cv_.wait(lock, [&] { return stop_ || size_dirty_; });
      if (stop_) return;
      size_dirty_ = false;
      lock.unlock();
      std::uint64_t size = 0;
      if (rbd_get_size(image_, &size) == 0 &&
          size != observed_size_.load(std::memory_order_acquire)) {
        observed_size_.store(size, std::memory_order_release);
        const std::uint64_t one = 1;  // the loop's next poll lets the LU see it
        [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
      }
      lock.lock();
    }
  }

  const std::string spec_;
  const StoreIdentity identity_;
  std::shared_ptr<Cluster> cluster_;
  rados_ioctx_t io_;
  rbd_image_t image_;
  std::uint64_t size_;    // owner thread: the size the SCSI layer sees
  std::uint64_t blocks_;  // owner thread
  const std::uint64_t object_size_;
  const std::uint32_t block_size_;
  const bool read_only_;
  const int event_fd_;

  std::size_t in_flight_ = 0;  // owner thread
  StoreCounters counters_;     // owner thread
  std::mutex done_mu_;
  std::vector<Request*> done_;  // guarded by done_mu_

  bool watching_ = false;
  std::uint64_t watch_handle_ = 0;
  std::atomic<std::uint64_t> observed_size_;  // written by the size thread
  std::mutex size_mu_;
  std::condition_variable size_cv_;
  bool size_dirty_ = false;  // guarded by size_mu_
  bool stop_ = false;        // guarded by size_mu_
  std::thread size_thread_;
};

// The block size kept with the image (rbd image-meta set IMAGE hyperscsi.block_size 4096),
// so every gateway of an image exports the same geometry. 0: not set.
Result<std::uint32_t, StoreError> image_block_size(rbd_image_t image, std::string_view spec) {
  char buf[32] = {};
  std::size_t len = sizeof buf - 1;
  const int rc = rbd_metadata_get(image, kBlockSizeKey, buf, &len);
  if (rc == -ENOENT) return 0u;
  if (rc < 0) {
    return Unexpected(err(
        K::kOpenFailed, spec,
        std::string("cannot read image metadata ") + kBlockSizeKey + ": " + std::strerror(-rc)));
  }
  const std::string v(buf);
  if (v != "512" && v != "4096") {
    return Unexpected(
        err(K::kBadBlockSize, spec,
            std::string("image metadata ") + kBlockSizeKey + " is '" + v + "', not 512 or 4096"));
  }
  return static_cast<std::uint32_t>(std::stoul(v));
}

Result<std::unique_ptr<BlockStore>, StoreError> open_rbd(std::string_view spec,
                                                         const StoreOptions& o) {
  auto name = parse_spec(spec);
  if (!name) return Unexpected(name.error());
  if (o.block_size != 512 && o.block_size != 4096) {
    return Unexpected(err(K::kBadBlockSize, spec,
                          "block size " + std::to_string(o.block_size) + " is not 512 or 4096"));
  }
  auto cluster = Cluster::get(o.rbd, spec);
  if (!cluster) return Unexpected(cluster.error());
  const std::string who = cluster.value()->who();

  rados_ioctx_t io = nullptr;
  int rc = rados_ioctx_create(cluster.value()->handle(), name->pool.c_str(), &io);
  if (rc < 0) {
    if (rc == -ENOENT)
      return Unexpected(err(K::kNotFound, spec, "pool '" + name->pool + "' does not exist"));
    return Unexpected(err(rc == -ETIMEDOUT ? K::kUnreachable : K::kOpenFailed, spec,
                          "cannot open pool '" + name->pool + "': " + std::strerror(-rc)));
  }
  if (!name->ns.empty()) rados_ioctx_set_namespace(io, name->ns.c_str());
  rbd_image_t image = nullptr;
  rc = o.read_only ? rbd_open_read_only(io, name->image.c_str(), &image, nullptr)
                   : rbd_open(io, name->image.c_str(), &image, nullptr);
  if (rc < 0) {
    rados_ioctx_destroy(io);
    switch (-rc) {
      case ENOENT:
        return Unexpected(err(K::kNotFound, spec,
                              "image '" + name->image + "' does not exist in pool '" + name->pool +
                                  (name->ns.empty() ? "" : "/" + name->ns) + "'"));
      case EACCES:
      case EPERM:
        return Unexpected(err(K::kAccessDenied, spec,
                              who + " may not open the image (its caps: ceph auth get " + who +
                                  "): " + std::strerror(-rc)));
      case ETIMEDOUT:
        return Unexpected(err(K::kUnreachable, spec,
                              "no OSD answered within the op timeout while opening the image"));
      default:
        return Unexpected(
            err(K::kOpenFailed, spec, std::string("cannot open the image: ") + std::strerror(-rc)));
    }
  }
  const auto close_all = [&] {
    rbd_close(image);
    rados_ioctx_destroy(io);
  };
  rbd_image_info_t info{};
  rc = rbd_stat(image, &info, sizeof info);
  if (rc < 0) {
    close_all();
    return Unexpected(
        err(K::kOpenFailed, spec, std::string("cannot stat the image: ") + std::strerror(-rc)));
  }
  auto kept = image_block_size(image, spec);
  if (!kept) {
    close_all();
    return Unexpected(kept.error());
  }
  std::uint32_t bs = o.block_size;
  if (kept.value() != 0) {
    if (o.block_size_set && kept.value() != o.block_size) {
      close_all();
      return Unexpected(err(K::kBadBlockSize, spec,
                            "the image keeps block size " + std::to_string(kept.value()) + " (" +
                                kBlockSizeKey + "), the LUN asks for " +
                                std::to_string(o.block_size)));
    }
    bs = kept.value();
  }
  if (info.size == 0 || info.size % bs != 0) {
    close_all();
    return Unexpected(err(K::kBadSize, spec,
                          "image size " + std::to_string(info.size) +
                              " is not a non-zero multiple of the block size " +
                              std::to_string(bs)));
  }
  // The identity belongs to the image, not to this gateway: the cluster's
  // fsid, the pool and the image's id (stable across renames), so every
  // gateway exporting it reports the same device (VPD page 0x83).
  char fsid[64] = {};
  char image_id[128] = {};
  if (rados_cluster_fsid(cluster.value()->handle(), fsid, sizeof fsid) < 0 ||
      rbd_get_id(image, image_id, sizeof image_id) < 0) {
    close_all();
    return Unexpected(err(K::kOpenFailed, spec, "cannot read the cluster fsid or the image id"));
  }
  StoreIdentity identity =
      name_identity(std::string("rbd:") + fsid + "/" + std::to_string(rados_ioctx_get_id(io)) +
                        "/" + name->ns + "/" + image_id,
                    "ceph image id " + std::string(image_id) + " in cluster " + fsid);
  const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) {
    const int e = errno;
    close_all();
    return Unexpected(err(K::kIoSetupFailed, spec, std::string("eventfd: ") + std::strerror(e)));
  }
  auto store = std::make_unique<RbdStore>(std::string(spec), std::move(cluster).value(), io, image,
                                          info.size, info.obj_size, bs, o.read_only, efd,
                                          std::move(identity));
  store->watch();
  return std::unique_ptr<BlockStore>(std::move(store));
}

const char* backend_version() {
  static const std::string v = [] {
    int major = 0, minor = 0, extra = 0;
    rbd_version(&major, &minor, &extra);
    return "librbd " + std::to_string(major) + "." + std::to_string(minor) + "." +
           std::to_string(extra);
  }();
  return v.c_str();
}

BlockStore* open_entry(std::string_view spec, const StoreOptions& options, StoreError* error) {
  auto s = open_rbd(spec, options);
  if (!s) {
    *error = s.error();
    return nullptr;
  }
  return std::move(s).value().release();
}

}  // namespace
}  // namespace hyperscsi::store

extern "C" HYPERSCSI_STORE_MODULE_EXPORT const hyperscsi::store::StoreModule*
hyperscsi_store_module_rbd() {
  static const hyperscsi::store::StoreModule m{
      hyperscsi::store::kStoreModuleAbi, HYPERSCSI_STORE_BUILD_TAG, "rbd",
      &hyperscsi::store::backend_version, &hyperscsi::store::open_entry};
  return &m;
}

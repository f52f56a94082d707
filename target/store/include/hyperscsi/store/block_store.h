// BlockStore: the narrow, asynchronous backing-store interface the SCSI layer
// drives (in the spirit of LIO's backend ops: read, write, flush, unmap,
// capacity). All CDB handling lives in the SCSI layer; a store only moves bytes.
//
// Threading: a store is owned by one thread (the event-loop thread of a port).
// Every method must be called from that thread. Completion callbacks never run
// inside a submit_* call; they run only inside poll() or drain(), on the owner
// thread. completion_fd() may be watched by an event loop (readable when poll()
// has work); the fd itself is safe to poll from any thread.
//
// Ownership: buffers passed to submit_read/submit_write are owned by the caller
// and must stay valid and unmodified until that request's callback has run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "hyperscsi/base/result.h"
#include "hyperscsi/store/identity.h"

namespace hyperscsi::store {

// Outcome of one data-path request (the data path never throws).
enum class IoStatus : std::uint8_t {
  kOk,
  kMediumError,  // EIO and other device failures
  kNoSpace,      // ENOSPC / EDQUOT: thin-provisioning space exhausted
  kReadOnly,     // write/unmap on a read-only store, or EROFS
  kOutOfRange,   // request beyond capacity or not block aligned
  kUnsupported,  // e.g. unmap on a store without discard support
  kMiscompare,   // compare-and-write: the data on the medium differs (nothing written)
  kTimedOut,     // the backend gave up waiting (a Ceph OSD blocked past the op timeout)
  kUnavailable,  // the backend refused service until an operator acts (gateway blocklisted)
};

const char* to_string(IoStatus s);
// Maps an errno from a failed syscall or CQE to an IoStatus.
IoStatus io_status_from_errno(int err);

using IoCallback = std::function<void(IoStatus)>;
// Compare-and-write: on kMiscompare, the byte offset of the first difference
// within the compared range.
using CompareCallback = std::function<void(IoStatus, std::uint64_t miscompare_offset)>;

// Monotonic counters, read from the owner thread.
struct StoreCounters {
  std::uint64_t reads = 0;       // read requests accepted
  std::uint64_t writes = 0;      // write requests accepted
  std::uint64_t fua_writes = 0;  // of which with FUA
  std::uint64_t flushes = 0;     // flush requests that reached the device (fsync issued)
  std::uint64_t unmaps = 0;      // unmap requests accepted
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t batches = 0;          // io_uring_submit calls (or poll rounds for RAM)
  std::uint64_t ops_submitted = 0;    // kernel operations after merging
  std::uint64_t merged = 0;           // requests folded into a neighbour's vectored op
  std::uint64_t bounced = 0;          // requests copied through an aligned bounce buffer
  std::uint64_t errors = 0;           // requests completed with a status other than kOk
  std::uint64_t inline_ops = 0;       // reads/writes done by one synchronous copy, no io_uring
  std::uint64_t inline_misses = 0;    // tried that way, then handed to io_uring (EAGAIN, short)
  std::uint64_t offloaded_reads = 0;  // large memory-file reads copied on the store's read thread
  std::uint64_t write_sames = 0;      // write-same requests done by the store itself
  std::uint64_t compare_and_writes = 0;  // compare-and-write requests done by the store itself
  std::uint64_t capacity_changes = 0;    // size changes noticed (take_capacity_change)
};

class BlockStore {
 public:
  virtual ~BlockStore() = default;
  BlockStore() = default;
  BlockStore(const BlockStore&) = delete;
  BlockStore& operator=(const BlockStore&) = delete;

  virtual std::uint32_t block_size() const = 0;
  virtual std::uint64_t num_blocks() const = 0;
  std::uint64_t size_bytes() const { return num_blocks() * block_size(); }
  virtual bool read_only() const = 0;
  virtual bool supports_unmap() const = 0;
  // After unmap, reads return zeros (files, RAM; not guaranteed by every disk).
  virtual bool unmapped_reads_zero() const { return supports_unmap(); }
  // Logical block provisioning (GET LBA STATUS): whether the bytes at
  // `offset` (block aligned, inside the store) are backed by storage, and how
  // many bytes from `offset` (> 0, a multiple of the block size, possibly
  // fewer than the whole run) share that state. Answered at once from the
  // store's thread, without waiting for requests in flight. nullopt: the
  // store cannot tell (GET LBA STATUS then reports the blocks as mapped).
  struct Allocation {
    bool allocated = true;
    std::uint64_t length = 0;
  };
  virtual std::optional<Allocation> allocation_at(std::uint64_t /*offset*/) const {
    return std::nullopt;
  }
  // Human readable description ("file:/srv/disk.img", "ram:1073741824").
  virtual std::string describe() const = 0;
  // Who the data is (identity.h): persistent for files and block devices,
  // fresh for RAM. A store without one returns an unknown identity.
  virtual StoreIdentity identity() const { return {}; }

  // Byte offsets and lengths; both must be multiples of block_size() and within
  // capacity, else the callback gets kOutOfRange. Requests are queued and handed
  // to the kernel in one batch by submit() or the next poll(); queuing work makes
  // completion_fd() readable, so an event loop that polls on readability makes
  // progress without calling submit() itself. A read completes kOk only when
  // every byte of `buf` was written (the target sends read buffers that were
  // never zero-filled: a short read must be an error).
  virtual void submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) = 0;
  virtual void submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                            IoCallback cb) = 0;
  // Completes only after every write that completed before the flush was
  // submitted, and every write submitted before it, is on stable storage.
  virtual void submit_flush(IoCallback cb) = 0;
  // Deallocates the range; later reads return zeros.
  virtual void submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) = 0;

  // Optional offloads (as LIO's backend write_same and compare-and-write):
  // a store that does one in a single request says so, and the SCSI layer
  // then hands it over instead of emulating it with reads and writes. Call
  // the submit_ functions only when the matching offloads_ is true (the
  // defaults answer kUnsupported at once). Buffers as for submit_write.
  virtual bool offloads_write_same() const { return false; }
  // Writes `block` (one block) repeatedly over [offset, offset + length).
  virtual void submit_write_same(std::uint64_t /*offset*/, std::uint64_t /*length*/,
                                 std::span<const std::byte> /*block*/, bool /*fua*/,
                                 IoCallback cb) {
    cb(IoStatus::kUnsupported);
  }
  // For ranges of `length` bytes (librbd 16 compares at most one 512-byte sector).
  virtual bool offloads_compare_and_write(std::uint64_t /*length*/) const { return false; }
  // Atomically: if the range holds `compare`, writes `data` there; else
  // writes nothing and completes with kMiscompare and the first difference.
  virtual void submit_compare_and_write(std::uint64_t /*offset*/,
                                        std::span<const std::byte> /*compare*/,
                                        std::span<const std::byte> /*data*/, bool /*fua*/,
                                        CompareCallback cb) {
    cb(IoStatus::kUnsupported, 0);
  }

  // A store whose size can change under it (a Ceph image resized elsewhere)
  // returns true once per change, from the owner thread; num_blocks() gives
  // the new size from that call on. Others never change size.
  virtual bool take_capacity_change() { return false; }

  // A hint for the reads submitted next, until it is set again: true when
  // the owner thread has other work meanwhile (a send backlog), so a store
  // may finish a read on a thread of its own instead of copying it inline
  // (UringStore does for large reads of memory files); false when the caller
  // waits for the data (a lone read: a hand-off only adds latency).
  virtual void set_read_offload(bool /*prefer*/) {}

  // Hands queued requests to the device (one batch). Cheap when nothing queued.
  virtual void submit() = 0;
  // Event-loop integration: readable when completions may be waiting.
  virtual int completion_fd() const = 0;
  // Submits queued requests, reaps finished ones and runs their callbacks on
  // the calling thread without blocking. Returns the number of callbacks run.
  virtual std::size_t poll() = 0;
  // Blocks until every request accepted so far has completed (callbacks run).
  virtual void drain() = 0;
  // Requests accepted whose callbacks have not run yet.
  virtual std::size_t in_flight() const = 0;

  virtual StoreCounters counters() const = 0;
};

struct StoreError {
  enum class Kind : std::uint8_t {
    kBadSpec,          // unparsable spec or size string
    kNotFound,         // path does not exist and no size was given to create it
    kOpenFailed,       // open/stat failed (permission, ...)
    kBadSize,          // size not a multiple of the block size, zero, or too large
    kBadBlockSize,     // block size not 512/4096 or incompatible with the device
    kUnsupportedType,  // neither regular file nor block device
    kIoSetupFailed,    // io_uring or eventfd setup failed
    kBusy,             // exported (locked) by another store or process, or mounted
    kUnreachable,      // a network backend (Ceph) could not be reached in time
    kAccessDenied,     // a network backend refused our credentials
    kModuleMissing,    // the backend's run-time module (or its library) is not installed
  };
  Kind kind = Kind::kBadSpec;
  std::string message;  // names the path and the reason
};

// Ceph settings for rbd: stores (docs/operations.md, "Targets in front of a Ceph pool").
struct RbdOptions {
  std::string conf_file;  // empty: librados' default search (/etc/ceph/ceph.conf, ...)
  std::string client_id;  // the cephx user without "client." (empty: "admin")
  std::string keyring;    // empty: as the configuration file says
  // Bounds in seconds; 0 leaves Ceph's own setting (ceph.conf, or forever).
  std::uint32_t connect_timeout_s = 10;  // client_mount_timeout, rados_mon_op_timeout
  std::uint32_t op_timeout_s = 30;       // rados_osd_op_timeout: a blocked OSD fails I/O after it
  bool operator==(const RbdOptions&) const = default;
};

struct StoreOptions {
  std::uint32_t block_size = 512;  // 512 or 4096
  // False: block_size is only a default, a store that keeps its own (an rbd
  // image's "hyperscsi.block_size" metadata) uses that. True: a store whose
  // own differs refuses to open.
  bool block_size_set = true;
  bool read_only = false;
  bool direct_io = false;         // O_DIRECT for file and block stores
  std::uint64_t create_size = 0;  // create a missing file of this size (bytes); 0 = don't
  unsigned queue_depth = 256;     // io_uring SQ entries
  RbdOptions rbd;                 // for "rbd:" specs only
};

// Parses "512", "64K", "1M", "1G", "2T" (binary multiples). Bounded and overflow checked.
Result<std::uint64_t, StoreError> parse_size(std::string_view text);

// spec: a path (regular file or block device, auto-detected), "ram:SIZE", or
// "rbd:POOL/IMAGE" ("rbd:POOL/NAMESPACE/IMAGE"): a Ceph RBD image through
// librbd, from a module loaded at run time only then (store_module.h).
Result<std::unique_ptr<BlockStore>, StoreError> open_store(std::string_view spec,
                                                           const StoreOptions& options);

}  // namespace hyperscsi::store

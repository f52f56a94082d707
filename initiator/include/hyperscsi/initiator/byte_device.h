// ByteDevice: byte-addressed I/O on a Lun, for the FUSE export and the
// nbdkit plugin.
//
// The asynchronous calls are the fast path: a block-aligned read or write is
// one READ or WRITE (split at the negotiated maximum) and completes on the
// initiator's loop thread; a read lands straight in the caller's buffer. An
// unaligned read reads the covering blocks into a scratch buffer and copies
// the slice. An unaligned write is a read-modify-write of the edge blocks,
// done synchronously in the calling thread while it holds the device's
// write gate exclusively: it waits for every aligned write in flight and
// holds new ones back, so it never races another write of the same block.
// Discard unmaps the whole blocks inside the range and zeroes partial edge
// blocks by writing, so a punched range always reads as zeros (on a LUN
// whose unmapped blocks do not read as zeros, LBPME and LBPRZ not both set,
// it zeroes the whole blocks as write_zeroes does).
// write_zeroes zeroes a range and keeps it allocated: WRITE SAME of a zero
// block for the whole blocks (writes of zeros where the target has no WRITE
// SAME), the partial edge blocks by writing.
//
// Thread-safety: every member is safe from many threads at once. The
// synchronous calls and every call that may take the slow path (write,
// discard, write_zeroes) must not be made from the initiator's loop thread (a completion
// callback or a poller): they may wait for commands. read(), flush() and
// write_nowait() may.
// Errors: Status<Error>; errno_of() maps one to an errno for the callers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "hyperscsi/initiator/initiator.h"

namespace hyperscsi::initiator {

class ByteDevice {
 public:
  // Runs once: on the initiator's loop thread when the request went to the
  // target, or on the calling thread before the call returns when it failed
  // early (range) or took a synchronous path (unaligned write, edges of a
  // discard). It must not block.
  using Done = std::function<void(Status<Error>)>;

  explicit ByteDevice(Lun lun) : lun_(lun) {}

  uint64_t size() const { return lun_.size_bytes(); }
  uint32_t block_size() const { return lun_.capacity().block_size; }
  bool read_only() const { return lun_.read_only(); }
  Lun& lun() { return lun_; }

  // `out` is owned by the caller and must stay valid until `done` ran.
  void read(std::span<uint8_t> out, uint64_t offset, Done done);
  // `in` is copied before the call returns. `fua`: WRITE with FUA.
  // `borrowed`: `in` is not copied but framed from where it lies
  // (Lun::write_borrowed); the caller keeps it valid and unchanged until
  // `done` ran.
  void write(std::span<const uint8_t> in, uint64_t offset, bool fua, Done done,
             bool borrowed = false);
  // write() if it neither waits nor takes the synchronous path: false (and
  // `done` not called) for an unaligned write or while a read-modify-write
  // holds the gate; then call write() from a thread that may block. Safe on
  // the initiator's loop thread.
  bool write_nowait(std::span<const uint8_t> in, uint64_t offset, bool fua, const Done& done,
                    bool borrowed = false);
  void flush(Done done);
  void discard(uint64_t offset, uint64_t length, Done done);
  // Completes before it returns (it waits for its commands).
  void write_zeroes(uint64_t offset, uint64_t length, Done done);

  // Synchronous forms: the above, waited for. pwrite borrows `in` (it
  // returns only after the completion ran): no copy.
  Status<Error> pread(std::span<uint8_t> out, uint64_t offset);
  Status<Error> pwrite(std::span<const uint8_t> in, uint64_t offset, bool fua = false);
  Status<Error> flush();
  Status<Error> discard(uint64_t offset, uint64_t length);
  Status<Error> write_zeroes(uint64_t offset, uint64_t length);

  static int errno_of(const Error& e);

 private:
  // Aligned writes and unmaps enter shared (counted while in flight, so the
  // count drops on the loop thread); a read-modify-write enters exclusive.
  void enter_shared();
  void leave_shared();
  // An aligned WRITE, entered shared already.
  void submit_write(std::span<const uint8_t> in, uint64_t offset, bool fua, Done done,
                    bool borrowed);
  Status<Error> read_modify_write(std::span<const uint8_t> in, uint64_t offset, bool fua);
  void unmap_blocks(uint64_t first, uint64_t count, Done done);
  // Writes zeros to the bytes of [offset, offset + length) outside the whole
  // blocks [first, end): the partial edges of a discard or write_zeroes.
  Status<Error> zero_edges(uint64_t offset, uint64_t length, uint64_t first, uint64_t end);
  Status<Error> zero_blocks(uint64_t first, uint64_t count);

  Lun lun_;
  std::mutex gate_mutex_;
  std::condition_variable gate_cv_;
  uint64_t shared_in_flight_ = 0;
  bool exclusive_ = false;
  std::atomic<bool> no_write_same_{false};  // the target refused WRITE SAME: write zeros
};

}  // namespace hyperscsi::initiator

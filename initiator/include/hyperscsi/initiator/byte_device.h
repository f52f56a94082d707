// ByteDevice: byte-addressed synchronous I/O on a Lun, for FUSE and nbdkit.
// Aligned requests go straight to READ/WRITE (split at the negotiated
// maximum); an unaligned write reads the partial edge blocks, merges and
// writes back (read-modify-write). Unaligned writes hold an exclusive lock and
// aligned writes a shared one, so a read-modify-write never races another
// write of the same block.
// Thread-safety: every member is safe from many threads at once.
// Errors: Status<Error>; errno_of() maps one to an errno for the callers.
#pragma once

#include <cstdint>
#include <shared_mutex>
#include <span>

#include "hyperscsi/initiator/initiator.h"

namespace hyperscsi::initiator {

class ByteDevice {
 public:
  explicit ByteDevice(Lun lun) : lun_(lun) {}

  uint64_t size() const { return lun_.size_bytes(); }
  uint32_t block_size() const { return lun_.capacity().block_size; }
  Lun& lun() { return lun_; }

  Status<Error> pread(std::span<uint8_t> out, uint64_t offset);
  Status<Error> pwrite(std::span<const uint8_t> in, uint64_t offset, bool fua = false);
  Status<Error> flush() { return lun_.flush_sync(); }
  // Unmaps the whole blocks inside [offset, offset+length); partial edge
  // blocks are zeroed by writing (so a punched range always reads as zeros).
  Status<Error> discard(uint64_t offset, uint64_t length);

  static int errno_of(const Error& e);

 private:
  Lun lun_;
  std::shared_mutex rmw_;
};

}  // namespace hyperscsi::initiator

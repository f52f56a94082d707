// io_uring-backed stores for regular files and block devices.
//
// Requests queued with submit_* are handed to the kernel in batches (one
// io_uring_submit per batch). Within a batch, reads and writes between two
// barriers (flush, unmap) are sorted by offset and adjacent requests of the
// same kind (and same FUA flag) are merged into one readv/writev. FUA writes
// use RWF_DSYNC; flush is IORING_OP_FSYNC (datasync) issued with IO_DRAIN so it
// covers every write submitted before it. Unmap: fallocate(PUNCH_HOLE |
// KEEP_SIZE) through io_uring for files, BLKDISCARD (synchronous, completed in
// the next poll()) for block devices. With O_DIRECT, requests whose buffer is
// not aligned for direct I/O are copied through an aligned bounce buffer.
// Requests that cannot wait for a device are done when accepted, by one
// preadv2/pwritev2, and completed in the next poll() (no io_uring round trip):
// every buffered read and write on tmpfs/ramfs (where io_uring would punt to
// an io-wq thread), and buffered reads that hit the page cache elsewhere
// (RWF_NOWAIT). The rest, and O_DIRECT, go through io_uring. On tmpfs/ramfs,
// reads of 128 KiB or more submitted under set_read_offload(true) are copied
// on the store's own thread instead (read_thread.h; one thread per store,
// started at the first such read), finished in order and completed in poll().
// Threading: as BlockStore (one owner thread).
#pragma once

#include <memory>
#include <string_view>

#include "hyperscsi/store/block_store.h"

namespace hyperscsi::store {

// Opens a regular file (creating it when options.create_size > 0 and it does
// not exist) or a block device, auto-detected from the path.
Result<std::unique_ptr<BlockStore>, StoreError> open_uring_store(std::string_view path,
                                                                 const StoreOptions& options);

}  // namespace hyperscsi::store

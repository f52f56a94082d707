// FUSE export of one LUN: a single regular file of the LUN's size in the
// mount directory, on libfuse3's low-level API with asynchronous replies. A
// read or write request is handed to ByteDevice and answered from its
// completion (on the initiator's loop thread), so the requests in flight are
// bounded by the session's tags and the kernel's max_background, not by
// threads. Requests are up to 1 MiB (max_write, hence max_pages 256). fsync
// becomes SYNCHRONIZE CACHE, O_DSYNC writes carry FUA, fallocate(PUNCH_HOLE)
// becomes UNMAP and fallocate(ZERO_RANGE) WRITE SAME of zeros (the loop
// device's discard and write-zeroes); the file cannot change size. A write-protected LUN gives a
// 0400 file whose writes fail with EROFS. Optionally bound to a loop device.
#pragma once

#include <functional>
#include <string>

#include "hyperscsi/initiator/byte_device.h"

namespace hyperscsi::attach {

struct FuseExport {
  initiator::ByteDevice* device = nullptr;
  std::string file_name;  // inside the mount directory, e.g. "lun0"
  // Threads reading /dev/fuse (each request returns at once); 0: read on
  // the initiator's loop thread itself, one thread hop less per request.
  unsigned readers = 0;
  // The kernel's cap on asynchronous requests (direct I/O from the loop
  // device is asynchronous): the session's command tags.
  unsigned max_background = 512;
};

// Mounts at `dir` and serves until SIGTERM, SIGINT or SIGHUP, or until the
// file system is unmounted. `on_ready` runs on the calling thread once
// requests are served (it may open the file); a non-empty return is an error
// message that ends serving. Requests still in flight are answered before it
// returns. Returns 0 on a clean end (a signal or an unmount), else 1 with
// the message in `error`.
int serve_fuse(const std::string& dir, FuseExport& exp,
               const std::function<std::string()>& on_ready, std::string& error);

// Loop devices (LOOP_CONFIGURE) with the logical block size `block_size`
// (when the kernel takes it) and, with `read_only`, LO_FLAGS_READ_ONLY on a
// file opened O_RDONLY. Returns "/dev/loopN" or an error message starting
// with "error: ". `direct_io` reports whether LO_FLAGS_DIRECT_IO took.
std::string attach_loop(const std::string& file, uint32_t block_size, bool read_only,
                        bool& direct_io);
// LOOP_CLR_FD; empty on success, else the reason.
std::string detach_loop(const std::string& loop_dev);
// Where `dev` is mounted, or empty.
std::string mount_point_of(const std::string& dev);

}  // namespace hyperscsi::attach

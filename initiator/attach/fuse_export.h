// FUSE export of one LUN: a single regular file of the LUN's size in the
// mount directory, served by libfuse3's multithreaded loop; read/write go
// through ByteDevice, fsync becomes SYNCHRONIZE CACHE and
// fallocate(PUNCH_HOLE) becomes UNMAP. Optionally bound to a loop device.
#pragma once

#include <functional>
#include <string>

#include "hyperscsi/initiator/byte_device.h"

namespace hyperscsi::attach {

struct FuseExport {
  initiator::ByteDevice* device = nullptr;
  std::string file_name;  // inside the mount directory, e.g. "lun0"
};

// Mounts at `dir` and serves until unmounted or signalled. `on_ready` runs on
// a helper thread once requests are served (it may open the file); a
// non-empty return is an error message that ends the loop. Returns 0 on a
// clean end, else an error (message in `error`).
int serve_fuse(const std::string& dir, FuseExport& exp,
               const std::function<std::string()>& on_ready, std::string& error);

// Loop devices (LOOP_CONFIGURE). Returns "/dev/loopN" or an error message
// starting with "error: ". `direct_io` reports whether LO_FLAGS_DIRECT_IO took.
std::string attach_loop(const std::string& file, bool& direct_io);
// LOOP_CLR_FD; empty on success, else the reason.
std::string detach_loop(const std::string& loop_dev);
// Where `dev` is mounted, or empty.
std::string mount_point_of(const std::string& dev);

}  // namespace hyperscsi::attach

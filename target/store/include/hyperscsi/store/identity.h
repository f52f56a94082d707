// Store identity and exclusive use of backing files and devices.
//
// Identity: a 16-byte UUID that belongs to a store's data, not to the LUN
// number or the target, so that an initiator can tell "the same disk again"
// from "another disk behind the same LUN number" (it is what the LUN reports
// in VPD page 0x83). How it is found, in order:
//   - a regular file: the extended attribute user.hyperscsi.id (the UUID as
//     text), created on first export; it stays with the file across restarts,
//     renames and hosts (copies made with xattrs preserved keep it too).
//     Where xattrs cannot be stored (a file system without user xattrs, a
//     read-only mount, no permission), a UUID derived from the file's device,
//     inode and birth time: stable across restarts on this host only
//     (persistent = false, and `source` says why).
//   - a block device: derived from what the device says about itself (its
//     wwid, serial, device-mapper or md UUID; a loop device: its backing
//     file's identity; a partition: its disk's identity and number); else
//     from its device number (persistent = false).
//   - RAM: random at every start (a restarted RAM store is another disk).
//
// Locking: a backing file or device is locked while a store has it open
// (flock, exclusive for read-write, shared for read-only; a block device
// opened read-write is also opened O_EXCL, which refuses a mounted device).
// A second export fails with StoreError::Kind::kBusy naming the holder.
// Thread-safety: free functions, no shared state.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hyperscsi::store {

struct StoreIdentity {
  std::array<std::uint8_t, 16> uuid{};  // all zero: unknown
  std::string source;                   // how it was obtained, for logs
  bool persistent = false;  // the same data gets the same uuid after a restart elsewhere

  bool known() const;
  std::string text() const;  // 8-4-4-4-12 lower-case hex
  friend bool operator==(const StoreIdentity& a, const StoreIdentity& b) {
    return a.uuid == b.uuid;
  }
};

inline constexpr const char* kIdentityXattr = "user.hyperscsi.id";

// Parses the 8-4-4-4-12 text form (either case); nullopt if malformed.
std::optional<std::array<std::uint8_t, 16>> parse_uuid(std::string_view text);

// A fresh random identity (RFC 9562 version 4).
StoreIdentity random_identity(std::string source);

// A persistent identity derived from a name that belongs to the data (SHA-256
// of `name`, RFC 9562 version 8): e.g. a Ceph image's cluster fsid, pool and
// image id, so every gateway exporting the image reports the same identity.
StoreIdentity name_identity(std::string_view name, std::string source);

// The identity of the regular file open on `fd` (see above). `create`:
// store a new one as the xattr when there is none. Fails (message set) only
// when the xattr exists but is not a UUID.
std::optional<StoreIdentity> file_identity(int fd, const std::string& path, bool create,
                                           std::string& error);

// The identity of block device `rdev` (see above); never fails.
StoreIdentity block_device_identity(dev_t rdev);

// Who holds a lock on the file with device `dev` and inode `ino`, from
// /proc/locks: "pid 123 (hyperscsi-target --lun 0=/x ...)", or empty.
std::string lock_holder(dev_t dev, ino_t ino);

// Where block device `rdev` is mounted or who holds it (device-mapper, md),
// for the message of a refused O_EXCL open; empty if nothing is known.
std::string block_device_user(dev_t rdev);

}  // namespace hyperscsi::store

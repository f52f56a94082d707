#include "lun_factory.h"

#include <sys/stat.h>

#include "hyperscsi/proto/messages.h"
#include "hyperscsi/store/block_store.h"

namespace hyperscsi::daemon {

Result<std::unique_ptr<scsi::LogicalUnit>, ConfigError> open_lun(const std::string& target_name,
                                                                 const LunSetting& lun) {
  const std::string name = "LUN " + std::to_string(lun.number);
  store::StoreOptions o;
  o.block_size = lun.block_size;
  o.read_only = lun.read_only;
  o.direct_io = lun.direct_io;
  o.block_size_set = lun.block_size_set;
  o.rbd = lun.ceph;
  // RAM and Ceph images are never files to create.
  const bool not_a_path = lun.store.rfind("ram:", 0) == 0 || lun.is_rbd();
  if (!not_a_path && lun.size != 0) {
    struct stat sb {};
    if (::stat(lun.store.c_str(), &sb) != 0) {
      o.create_size = lun.size;  // missing file: create it with that size
    } else if (S_ISREG(sb.st_mode) && static_cast<uint64_t>(sb.st_size) < lun.size) {
      return Unexpected(ConfigError{name + ": size " + std::to_string(lun.size) +
                                    " does not fit in '" + lun.store + "' (" +
                                    std::to_string(sb.st_size) + " bytes)"});
    }
  }
  auto s = store::open_store(lun.store, o);
  if (!s) return Unexpected(ConfigError{name + ": " + s.error().message});
  if (lun.size != 0 && s.value()->size_bytes() < lun.size) {
    return Unexpected(ConfigError{name + ": size " + std::to_string(lun.size) +
                                  " does not fit in " + s.value()->describe() + " (" +
                                  std::to_string(s.value()->size_bytes()) + " bytes)"});
  }
  scsi::LuConfig c;
  c.target_name = target_name;
  c.lun = lun.number;
  c.exclusive = lun.exclusive;
  c.reply_headroom =
      static_cast<std::uint32_t>(proto::kReplyHeaderFixedSize);  // READ data not copied again
  // The unit serial number (VPD 0x80) follows the data, as the identity does.
  const store::StoreIdentity id = s.value()->identity();
  if (id.known()) {
    c.serial.clear();
    for (char ch : id.text())
      if (ch != '-') c.serial.push_back(ch);
  } else {
    c.serial = std::to_string(lun.number);
  }
  return std::make_unique<scsi::LogicalUnit>(c, std::move(s).value());
}

}  // namespace hyperscsi::daemon

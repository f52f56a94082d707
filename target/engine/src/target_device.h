// The engine's SCSI device: scsi::Device with the engine's access lists as
// each LUN's rule (access.h), shared by every port loop; see
// hyperscsi/scsi/device.h for its threading.
#pragma once

#include "hyperscsi/engine/access.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/scsi/device.h"

namespace hyperscsi::engine {

using TargetDevice = scsi::Device<AccessList>;
using scsi::LunEntry;

// A LUN as discovery replies describe it.
inline proto::LunInfo lun_info(const LunEntry& e) {
  proto::LunInfo i;
  i.lun = static_cast<uint16_t>(e.lun);
  i.read_only = e.read_only;
  i.block_size = e.block_size;
  i.num_blocks = e.num_blocks;
  return i;
}

}  // namespace hyperscsi::engine

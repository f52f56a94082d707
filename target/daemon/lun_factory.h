// Opens a LUN's backing store and wraps it in a scsi::LogicalUnit, with the
// daemon's checks (size fits, block size) and messages naming the LUN.
// Thread-safety: free function; the unit it returns belongs to the caller.
#pragma once

#include <memory>
#include <string>

#include "config.h"
#include "hyperscsi/proto/result.h"
#include "hyperscsi/scsi/logical_unit.h"

namespace hyperscsi::daemon {

Result<std::unique_ptr<scsi::LogicalUnit>, ConfigError> open_lun(const std::string& target_name,
                                                                 const LunSetting& lun);

}  // namespace hyperscsi::daemon

// REPORT SUPPORTED OPERATION CODES from the opcode table
// (hyperscsi/scsi/opcodes.h). Internal.
#pragma once

#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "hyperscsi/scsi/opcodes.h"
#include "hyperscsi/scsi/sense.h"

namespace hyperscsi::scsi {

// Full (untruncated) REPORT SUPPORTED OPERATION CODES data for `cdb`.
std::variant<std::vector<std::uint8_t>, Sense> report_supported_opcodes(
    std::span<const std::uint8_t> cdb);

}  // namespace hyperscsi::scsi

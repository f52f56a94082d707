// The table of supported commands with CDB usage maps, and REPORT SUPPORTED
// OPERATION CODES. Internal.
#pragma once

#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "hyperscsi/scsi/sense.h"

namespace hyperscsi::scsi {

struct OpcodeInfo {
  std::uint8_t opcode;
  bool has_sa;
  std::uint16_t sa;
  std::vector<std::uint8_t> usage;  // CDB usage map; size is the CDB length
};

const std::vector<OpcodeInfo>& supported_opcodes();

// Full (untruncated) REPORT SUPPORTED OPERATION CODES data for `cdb`.
std::variant<std::vector<std::uint8_t>, Sense> report_supported_opcodes(
    std::span<const std::uint8_t> cdb);

}  // namespace hyperscsi::scsi

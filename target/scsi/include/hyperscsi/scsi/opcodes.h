// The one table of the commands this SCSI layer implements: for each
// operation code (and service action) its CDB usage map, which REPORT
// SUPPORTED OPERATION CODES reports, and whether re-running it gives the same
// answer and changes nothing, which the engine's reply cache asks. The
// opcode numbers themselves: hyperscsi/base/scsi_opcodes.h (scsi::op).
// Thread-safety: the table is built once, then read only.
#pragma once

#include <cstdint>
#include <vector>

#include "hyperscsi/base/scsi_opcodes.h"

namespace hyperscsi::scsi {

struct OpcodeInfo {
  std::uint8_t opcode;
  bool has_sa;
  std::uint16_t sa;
  std::vector<std::uint8_t> usage;  // CDB usage map; size is the CDB length
  // Re-execution gives the same answer and changes nothing (reads, inquiries).
  bool reexecutable = false;
};

const std::vector<OpcodeInfo>& supported_opcodes();

// True if every service action of `opcode` in the table is re-executable, so
// a reply cache may drop such a command's data-in and run it again; false for
// commands not in the table.
bool is_reexecutable(std::uint8_t opcode);

}  // namespace hyperscsi::scsi

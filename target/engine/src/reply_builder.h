// Turning SCSI results into HyperSCSI reply PDUs, and the commands the engine
// answers itself (REPORT LUNS filtered by access list, built by
// scsi::report_luns).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "hyperscsi/scsi/command.h"

namespace hyperscsi::engine {

// ReplyHeader (status, sense, residual flags and count) followed by data-in.
// Takes the result's buffer over: when a READ left exactly the header's room
// in front of its data (scsi::LuConfig::reply_headroom), the header is
// written there and the data is not copied.
std::vector<uint8_t> build_reply_pdu(uint32_t cmd_sn, scsi::CommandResult&& result);

// REPORT LUNS (SPC-4 6.33) listing `luns` (ascending), clipped to the CDB's
// allocation length and `expected_data_in`.
scsi::CommandResult build_report_luns(std::span<const uint8_t> cdb,
                                      const std::vector<uint16_t>& luns, uint32_t expected_data_in);

// Commands whose re-execution gives the same answer and changes nothing, so
// the reply cache may drop their data-in and run them again (the SCSI
// layer's opcode table decides: scsi::is_reexecutable).
bool is_reexecutable(uint8_t opcode);

}  // namespace hyperscsi::engine

// Turning SCSI results into HyperSCSI reply PDUs. (REPORT LUNS as each
// initiator sees it and the reply cache's re-executable commands: the SCSI
// layer, scsi::Device and scsi::is_reexecutable.)
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "hyperscsi/proto/shared_bytes.h"
#include "hyperscsi/scsi/command.h"

namespace hyperscsi::engine {

// ReplyHeader (status, sense, residual flags and count) followed by data-in.
// Takes the result's buffer over: when a READ left exactly the header's room
// in front of its data (scsi::LuConfig::reply_headroom), the header is
// written there and the data is neither copied nor zero-filled first
// (CommandResult::read_buffer becomes the PDU's owner).
proto::SharedBytes build_reply_pdu(uint32_t cmd_sn, scsi::CommandResult&& result);

}  // namespace hyperscsi::engine

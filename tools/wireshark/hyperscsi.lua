-- HyperSCSI v2 dissector for Wireshark / tshark (4.0 and later).
--
-- Load:  tshark -X lua_script:tools/wireshark/hyperscsi.lua -r capture.pcap
-- or copy this file into ~/.local/lib/wireshark/plugins/.
--
-- docs/protocol.md is the normative wire format; its section "Wireshark"
-- lists the fields. How it coexists with Wireshark's built-in `hyperscsi`
-- dissector: this script takes over EtherType 0x889A in the "ethertype"
-- table and first hands the frame to the built-in dissector, so the
-- `hyperscsi.*` fields of the 5-byte common header keep their values and
-- filters; it then adds the protocol `hyperscsi2` (common header again with
-- opcode 0x30 named, extended header, SACK blocks and every body).
--
-- Every read is bounds-checked before it happens: a malformed or truncated
-- frame gets expert info (group Malformed, severity Error), never a Lua error.

local hs = Proto("hyperscsi2", "HyperSCSI v2")
hs.prefs.protected_cleartext = Pref.bool(
    "Dissect protected payloads", false,
    "Payloads of PROTECTED frames are in clear text (integrity-only sessions)")

local HEADER = 40        -- common (5) + extended (35) header
local EXT_MIN = 35       -- smallest valid ext_len
local MAX_SACK = 8
local MAX_NAME = 223
local MAX_AUTH = 512
local MAX_LUNS = 256
local MAX_SENSE = 252
local MAX_PATH_ID = 15
local MAX_PORTS = 16
local FEATURE_MULTIPATH = 0x10

----------------------------------------------------------------------------
-- Value names
----------------------------------------------------------------------------

local opcode_names = {
  [0x00] = "Command Request", [0x01] = "Command Reply",
  [0x10] = "Discovery Reply", [0x11] = "Login Request",
  [0x12] = "Login Reply", [0x13] = "Disconnect",
  [0x20] = "Keepalive", [0x21] = "Ack",
  [0x30] = "Discovery Request",
  [0x31] = "Path Request", [0x32] = "Path Reply",
}

local login_status_names = {
  [0] = "OK", [1] = "Unknown target", [2] = "Access denied",
  [3] = "Authentication failed", [4] = "MTU mismatch",
  [5] = "Parameter rejected", [6] = "Too many sessions", [7] = "Resume failed",
  [8] = "Authentication continues",
}

local disconnect_reason_names = {
  [0] = "Normal", [1] = "Unknown session", [2] = "Dead peer",
  [3] = "Shutdown", [4] = "Protocol error", [5] = "Stale epoch",
}

local path_action_names = { [0] = "Join", [1] = "Activate", [2] = "Leave" }

local path_status_names = {
  [0] = "OK", [1] = "Not multipath", [2] = "Access denied", [3] = "Authentication failed",
  [4] = "Stale generation", [5] = "Too many paths", [6] = "Duplicate path",
  [7] = "MTU rejected", [8] = "Unknown path",
}

local task_attribute_names = { [0] = "Simple", [1] = "Ordered", [2] = "Head of queue" }

local response_names = { [0] = "Completed", [1] = "Target failure", [2] = "Rejected" }

local crc_status_names = { [0] = "Not present", [1] = "Good", [2] = "Bad" }

local scsi_status_names = {
  [0x00] = "GOOD", [0x02] = "CHECK CONDITION", [0x04] = "CONDITION MET",
  [0x08] = "BUSY", [0x18] = "RESERVATION CONFLICT", [0x28] = "TASK SET FULL",
  [0x30] = "ACA ACTIVE", [0x40] = "TASK ABORTED",
}

-- SPC/SBC operation codes: every one the target implements
-- (target/scsi/include/hyperscsi/scsi/opcodes.h) and other common ones.
local scsi_opcode_names = {
  [0x00] = "TEST UNIT READY", [0x01] = "REZERO UNIT", [0x03] = "REQUEST SENSE",
  [0x04] = "FORMAT UNIT", [0x07] = "REASSIGN BLOCKS", [0x08] = "READ(6)",
  [0x0A] = "WRITE(6)", [0x0B] = "SEEK(6)", [0x12] = "INQUIRY",
  [0x15] = "MODE SELECT(6)", [0x16] = "RESERVE(6)", [0x17] = "RELEASE(6)",
  [0x1A] = "MODE SENSE(6)", [0x1B] = "START STOP UNIT",
  [0x1C] = "RECEIVE DIAGNOSTIC RESULTS", [0x1D] = "SEND DIAGNOSTIC",
  [0x1E] = "PREVENT ALLOW MEDIUM REMOVAL", [0x25] = "READ CAPACITY(10)",
  [0x28] = "READ(10)", [0x2A] = "WRITE(10)", [0x2B] = "SEEK(10)",
  [0x2E] = "WRITE AND VERIFY(10)", [0x2F] = "VERIFY(10)",
  [0x34] = "PRE-FETCH(10)", [0x35] = "SYNCHRONIZE CACHE(10)",
  [0x37] = "READ DEFECT DATA(10)", [0x3B] = "WRITE BUFFER",
  [0x3C] = "READ BUFFER", [0x41] = "WRITE SAME(10)", [0x42] = "UNMAP",
  [0x48] = "SANITIZE", [0x4C] = "LOG SELECT", [0x4D] = "LOG SENSE",
  [0x55] = "MODE SELECT(10)", [0x56] = "RESERVE(10)", [0x57] = "RELEASE(10)",
  [0x5A] = "MODE SENSE(10)", [0x5E] = "PERSISTENT RESERVE IN",
  [0x5F] = "PERSISTENT RESERVE OUT", [0x7F] = "VARIABLE LENGTH CDB",
  [0x83] = "EXTENDED COPY", [0x84] = "RECEIVE COPY RESULTS",
  [0x88] = "READ(16)", [0x89] = "COMPARE AND WRITE", [0x8A] = "WRITE(16)",
  [0x8E] = "WRITE AND VERIFY(16)", [0x8F] = "VERIFY(16)",
  [0x90] = "PRE-FETCH(16)", [0x91] = "SYNCHRONIZE CACHE(16)",
  [0x93] = "WRITE SAME(16)", [0x9E] = "SERVICE ACTION IN(16)",
  [0x9F] = "SERVICE ACTION OUT(16)", [0xA0] = "REPORT LUNS",
  [0xA2] = "SECURITY PROTOCOL IN", [0xA3] = "MAINTENANCE IN",
  [0xA4] = "MAINTENANCE OUT", [0xA8] = "READ(12)", [0xAA] = "WRITE(12)",
  [0xAE] = "WRITE AND VERIFY(12)", [0xAF] = "VERIFY(12)",
  [0xB5] = "SECURITY PROTOCOL OUT",
}

-- Service actions, keyed by opcode * 256 + service action.
local service_action_names = {
  [0x9E * 256 + 0x10] = "READ CAPACITY(16)",
  [0x9E * 256 + 0x12] = "GET LBA STATUS",
  [0xA3 * 256 + 0x0A] = "REPORT TARGET PORT GROUPS",
  [0xA3 * 256 + 0x0C] = "REPORT SUPPORTED OPERATION CODES",
  [0xA3 * 256 + 0x0D] = "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
}

local sense_key_names = {
  [0x0] = "NO SENSE", [0x1] = "RECOVERED ERROR", [0x2] = "NOT READY",
  [0x3] = "MEDIUM ERROR", [0x4] = "HARDWARE ERROR", [0x5] = "ILLEGAL REQUEST",
  [0x6] = "UNIT ATTENTION", [0x7] = "DATA PROTECT", [0x8] = "BLANK CHECK",
  [0x9] = "VENDOR SPECIFIC", [0xA] = "COPY ABORTED", [0xB] = "ABORTED COMMAND",
  [0xC] = "EQUAL (obsolete)", [0xD] = "VOLUME OVERFLOW", [0xE] = "MISCOMPARE",
  [0xF] = "COMPLETED",
}

-- Common additional sense codes, keyed by ASC * 256 + ASCQ (SPC-4 Annex D).
local asc_ascq_names = {
  [0x0000] = "No additional sense information",
  [0x0400] = "Logical unit not ready, cause not reportable",
  [0x0401] = "Logical unit is in process of becoming ready",
  [0x0402] = "Logical unit not ready, initializing command required",
  [0x0403] = "Logical unit not ready, manual intervention required",
  [0x0C00] = "Write error",
  [0x1100] = "Unrecovered read error",
  [0x1A00] = "Parameter list length error",
  [0x1D00] = "Miscompare during verify operation",
  [0x2000] = "Invalid command operation code",
  [0x2100] = "Logical block address out of range",
  [0x2400] = "Invalid field in CDB",
  [0x2500] = "Logical unit not supported",
  [0x2600] = "Invalid field in parameter list",
  [0x2604] = "Invalid release of persistent reservation",
  [0x2700] = "Write protected",
  [0x2707] = "Space allocation failed write protect",
  [0x2800] = "Not ready to ready change, medium may have changed",
  [0x2900] = "Power on, reset, or bus device reset occurred",
  [0x2901] = "Power on occurred",
  [0x2902] = "SCSI bus reset occurred",
  [0x2903] = "Bus device reset function occurred",
  [0x2A01] = "Mode parameters changed",
  [0x2A03] = "Reservations preempted",
  [0x2A04] = "Reservations released",
  [0x2A05] = "Registrations preempted",
  [0x2A09] = "Capacity data has changed",
  [0x3100] = "Medium format corrupted",
  [0x3900] = "Saving parameters not supported",
  [0x3A00] = "Medium not present",
  [0x3F0E] = "Reported LUNs data has changed",
  [0x4400] = "Internal target failure",
  [0x4B00] = "Data phase error",
  [0x5500] = "System resource failure",
  [0x5D00] = "Failure prediction threshold exceeded",
}

----------------------------------------------------------------------------
-- Fields
----------------------------------------------------------------------------

local f = {}
local function field(key, ctor, abbr, ...)
  f[key] = ctor("hyperscsi2." .. abbr, ...)
end

-- Common header (the same values as hyperscsi.*; 0x30 named here).
field("reserved", ProtoField.uint8, "reserved", "Reserved", base.HEX, nil, 0xF0)
field("tag", ProtoField.uint16, "tag", "Tag", base.DEC)
field("lastfrag", ProtoField.bool, "last_fragment", "Last fragment")
field("fragment", ProtoField.uint16, "fragment", "Fragment number", base.DEC)
field("version", ProtoField.uint8, "version", "Version", base.HEX)
field("opcode", ProtoField.uint8, "opcode", "Opcode", base.HEX, opcode_names)

-- Extended header.
field("ext_len", ProtoField.uint8, "ext_len", "Extended header length", base.DEC)
field("flags", ProtoField.uint8, "flags", "Flags", base.HEX)
field("flag_ack", ProtoField.bool, "flags.ack", "ACK", 8, nil, 0x01)
field("flag_checksum", ProtoField.bool, "flags.checksum", "CHECKSUM", 8, nil, 0x02)
field("flag_retransmit", ProtoField.bool, "flags.retransmit", "RETRANSMIT", 8, nil, 0x04)
field("flag_ack_now", ProtoField.bool, "flags.ack_now", "ACK_NOW", 8, nil, 0x08)
field("flag_response", ProtoField.bool, "flags.response", "RESPONSE", 8, nil, 0x10)
field("flag_protected", ProtoField.bool, "flags.protected", "PROTECTED", 8, nil, 0x20)
field("flag_reserved", ProtoField.uint8, "flags.reserved", "Reserved flag bits", base.HEX, nil, 0xC0)
-- Per-frame protection trailer (docs/protocol.md 10.13).
field("protection", ProtoField.bytes, "protection", "Protection trailer")
field("protection_counter", ProtoField.uint64, "protection.counter", "Counter", base.DEC)
field("protection_tag", ProtoField.bytes, "protection.tag", "AES-GCM tag")
field("sack_count", ProtoField.uint8, "sack_count", "SACK block count", base.DEC)
field("session_id", ProtoField.uint32, "session_id", "Session ID", base.HEX)
field("epoch", ProtoField.uint16, "epoch", "Epoch", base.DEC)
field("window", ProtoField.uint16, "window", "Window", base.DEC)
field("seq", ProtoField.uint32, "seq", "Sequence number", base.DEC)
field("ack", ProtoField.uint32, "ack", "Acknowledgement number", base.DEC)
field("pdu_length", ProtoField.uint32, "pdu_length", "PDU length", base.DEC)
field("pdu_offset", ProtoField.uint32, "pdu_offset", "PDU offset", base.DEC)
field("payload_length", ProtoField.uint16, "payload_length", "Payload length", base.DEC)
-- Bytes 34-35: the path of a multipath session (reserved, 0, otherwise).
field("path_id", ProtoField.uint8, "path_id", "Path ID", base.DEC)
field("path_gen", ProtoField.uint8, "path_gen", "Path generation", base.DEC)
field("path", ProtoField.string, "path", "Path (id.generation)")
field("crc32", ProtoField.uint32, "crc32", "CRC-32", base.HEX)
field("crc_status", ProtoField.uint8, "crc32.status", "CRC-32 status", base.DEC, crc_status_names)
field("crc_computed", ProtoField.uint32, "crc32.computed", "CRC-32 computed", base.HEX)
field("ext_extra", ProtoField.bytes, "ext_extra", "Extended header bytes of a later revision")

-- SACK blocks.
field("sack", ProtoField.none, "sack", "SACK block")
field("sack_start", ProtoField.uint32, "sack.start", "Start", base.DEC)
field("sack_end", ProtoField.uint32, "sack.end", "End", base.DEC)

-- Retransmission analysis.
field("retransmission", ProtoField.bool, "retransmission", "Retransmission")
field("retransmitted_frame", ProtoField.framenum, "retransmission.original",
      "Sequence number first seen in frame")

-- Payload and bodies.
field("payload", ProtoField.bytes, "payload", "Payload")
field("nonce", ProtoField.uint32, "nonce", "Nonce", base.HEX)
field("initiator_name", ProtoField.string, "initiator_name", "Initiator name")
field("target_filter", ProtoField.string, "target_filter", "Target filter")
field("target_name", ProtoField.string, "target_name", "Target name")
field("mtu", ProtoField.uint16, "mtu", "MTU", base.DEC)
field("features", ProtoField.uint32, "features", "Features", base.HEX)
field("feat_checksum", ProtoField.bool, "features.checksum", "CHECKSUM", 32, nil, 0x1)
field("feat_sack", ProtoField.bool, "features.sack", "SACK", 32, nil, 0x2)
field("feat_delayed_ack", ProtoField.bool, "features.delayed_ack", "DELAYED_ACK", 32, nil, 0x4)
field("feat_resume", ProtoField.bool, "features.session_resume", "SESSION_RESUME", 32, nil, 0x8)
field("feat_multipath", ProtoField.bool, "features.multipath", "MULTIPATH", 32, nil, 0x10)
-- Multipath: the login reply's port list, path requests and replies (section 14).
field("port_count", ProtoField.uint8, "port_count", "Target port count", base.DEC)
field("port", ProtoField.none, "port", "Target port")
field("port_mac", ProtoField.ether, "port.mac", "MAC")
field("port_mtu", ProtoField.uint16, "port.mtu", "MTU", base.DEC)
field("path_action", ProtoField.uint8, "path.action", "Action", base.DEC, path_action_names)
field("path_status", ProtoField.uint8, "path.status", "Status", base.DEC, path_status_names)
field("path_subject_id", ProtoField.uint8, "path.subject_id", "Subject path ID", base.DEC)
field("path_subject_gen", ProtoField.uint8, "path.subject_gen", "Subject path generation",
      base.DEC)
field("path_proof_length", ProtoField.uint8, "path.proof_length", "Proof length", base.DEC)
field("path_proof", ProtoField.bytes, "path.proof", "Proof (HMAC-SHA256)")
field("lun_count", ProtoField.uint16, "lun_count", "LUN count", base.DEC)
field("lun_entry", ProtoField.none, "lun_entry", "LUN")
field("lun", ProtoField.uint16, "lun", "LUN", base.DEC)
field("lun_flags", ProtoField.uint8, "lun.flags", "LUN flags", base.HEX)
field("lun_read_only", ProtoField.bool, "lun.read_only", "Read-only", 8, nil, 0x01)
field("lun_reserved", ProtoField.uint8, "lun.reserved", "Reserved", base.HEX)
field("block_size", ProtoField.uint32, "lun.block_size", "Block size", base.DEC)
field("num_blocks", ProtoField.uint64, "lun.num_blocks", "Number of blocks", base.DEC)
field("max_transfer", ProtoField.uint32, "max_transfer", "Max transfer", base.DEC)
field("resume_session_id", ProtoField.uint32, "resume_session_id", "Resume session ID", base.HEX)
field("resume_epoch", ProtoField.uint16, "resume_epoch", "Resume epoch", base.DEC)
field("auth_length", ProtoField.uint16, "auth_length", "Authentication length", base.DEC)
field("auth", ProtoField.bytes, "auth", "Authentication data")
field("login_status", ProtoField.uint8, "login.status", "Login status", base.DEC, login_status_names)
field("body_reserved", ProtoField.uint8, "body_reserved", "Reserved", base.HEX)
field("login_session_id", ProtoField.uint32, "login.session_id", "Session ID", base.HEX)
field("login_epoch", ProtoField.uint16, "login.epoch", "Epoch", base.DEC)
field("keepalive_ms", ProtoField.uint32, "login.keepalive_ms", "Keepalive (ms)", base.DEC)
field("dead_time_ms", ProtoField.uint32, "login.dead_time_ms", "Dead time (ms)", base.DEC)
field("disconnect_reason", ProtoField.uint8, "disconnect.reason", "Reason", base.DEC,
      disconnect_reason_names)
field("probe_id", ProtoField.uint32, "keepalive.probe_id", "Probe ID", base.DEC)
field("padding", ProtoField.bytes, "keepalive.padding", "Padding")

-- Command PDU.
field("cmd", ProtoField.none, "cmd", "Command PDU header")
field("cmd_sn", ProtoField.uint32, "cmd.cmd_sn", "CmdSN", base.DEC)
field("reply_ack_sn", ProtoField.uint32, "cmd.reply_ack_sn", "Reply ack SN", base.DEC)
field("cmd_lun", ProtoField.uint16, "cmd.lun", "LUN", base.DEC)
field("cmd_flags", ProtoField.uint8, "cmd.flags", "Flags", base.HEX)
field("cmd_data_in", ProtoField.bool, "cmd.flags.data_in", "Data-in expected", 8, nil, 0x01)
field("cmd_data_out", ProtoField.bool, "cmd.flags.data_out", "Data-out follows", 8, nil, 0x02)
field("task_attribute", ProtoField.uint8, "cmd.task_attribute", "Task attribute", base.DEC,
      task_attribute_names)
field("expected_data_in", ProtoField.uint32, "cmd.expected_data_in", "Expected data-in", base.DEC)
field("data_out_length", ProtoField.uint32, "cmd.data_out_length", "Data-out length", base.DEC)
field("cdb_length", ProtoField.uint8, "cmd.cdb_length", "CDB length", base.DEC)
field("cmd_reserved", ProtoField.bytes, "cmd.reserved", "Reserved")
field("cdb", ProtoField.bytes, "cdb", "CDB")
field("cdb_opcode", ProtoField.uint8, "cdb.opcode", "SCSI opcode", base.HEX, scsi_opcode_names)
field("cdb_service_action", ProtoField.uint8, "cdb.service_action", "Service action", base.HEX)
field("cdb_service_action_name", ProtoField.string, "cdb.service_action_name", "Service action name")
field("cdb_lba", ProtoField.uint64, "cdb.lba", "Logical block address", base.DEC)
field("cdb_transfer_length", ProtoField.uint32, "cdb.transfer_length", "Transfer length", base.DEC)
field("cdb_alloc_length", ProtoField.uint32, "cdb.alloc_length", "Allocation length", base.DEC)
field("cdb_evpd", ProtoField.bool, "cdb.evpd", "EVPD", 8, nil, 0x01)
field("cdb_page_code", ProtoField.uint8, "cdb.page_code", "Page code", base.HEX)
field("data_out", ProtoField.bytes, "data_out", "Data-out")

-- Reply PDU.
field("reply", ProtoField.none, "reply", "Reply PDU header")
field("reply_cmd_sn", ProtoField.uint32, "reply.cmd_sn", "CmdSN", base.DEC)
field("scsi_status", ProtoField.uint8, "reply.status", "SCSI status", base.HEX, scsi_status_names)
field("response", ProtoField.uint8, "reply.response", "Response", base.DEC, response_names)
field("sense_length", ProtoField.uint8, "reply.sense_length", "Sense length", base.DEC)
field("reply_flags", ProtoField.uint8, "reply.flags", "Flags", base.HEX)
field("reply_overflow", ProtoField.bool, "reply.flags.overflow", "Overflow", 8, nil, 0x01)
field("reply_underflow", ProtoField.bool, "reply.flags.underflow", "Underflow", 8, nil, 0x02)
field("residual", ProtoField.uint32, "reply.residual", "Residual", base.DEC)
field("data_in_length", ProtoField.uint32, "reply.data_in_length", "Data-in length", base.DEC)
field("sense", ProtoField.bytes, "sense", "Sense data")
field("sense_response_code", ProtoField.uint8, "sense.response_code", "Response code", base.HEX)
field("sense_key", ProtoField.uint8, "sense.key", "Sense key", base.HEX, sense_key_names)
field("sense_information", ProtoField.uint32, "sense.information", "Information", base.DEC)
field("sense_asc", ProtoField.uint8, "sense.asc", "ASC", base.HEX)
field("sense_ascq", ProtoField.uint8, "sense.ascq", "ASCQ", base.HEX)
field("sense_asc_ascq", ProtoField.uint16, "sense.asc_ascq", "ASC/ASCQ", base.HEX, asc_ascq_names)
field("data_in", ProtoField.bytes, "data_in", "Data-in")
field("continuation", ProtoField.bytes, "continuation", "PDU continuation bytes")

local field_list = {}
for _, v in pairs(f) do field_list[#field_list + 1] = v end
hs.fields = field_list

local ef = {
  malformed = ProtoExpert.new("hyperscsi2.malformed", "Malformed HyperSCSI frame",
                              expert.group.MALFORMED, expert.severity.ERROR),
  bad_crc = ProtoExpert.new("hyperscsi2.crc32.bad", "Bad CRC-32",
                            expert.group.CHECKSUM, expert.severity.ERROR),
  retransmission = ProtoExpert.new("hyperscsi2.retransmission.expert", "Retransmission",
                                   expert.group.SEQUENCE, expert.severity.NOTE),
  scsi_error = ProtoExpert.new("hyperscsi2.scsi_error", "SCSI command did not complete with GOOD",
                               expert.group.RESPONSE_CODE, expert.severity.NOTE),
  login_failed = ProtoExpert.new("hyperscsi2.login_failed", "Login refused",
                                 expert.group.RESPONSE_CODE, expert.severity.WARN),
  path_refused = ProtoExpert.new("hyperscsi2.path_refused", "Path request refused",
                                 expert.group.RESPONSE_CODE, expert.severity.WARN),
}
hs.experts = { ef.malformed, ef.bad_crc, ef.retransmission, ef.scsi_error, ef.login_failed,
               ef.path_refused }

----------------------------------------------------------------------------
-- Helpers
----------------------------------------------------------------------------

local band, bor, bxor, rshift, lshift = bit32.band, bit32.bor, bit32.bxor, bit32.rshift, bit32.lshift

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if band(c, 1) ~= 0 then c = bxor(0xEDB88320, rshift(c, 1)) else c = rshift(c, 1) end
  end
  crc_table[i] = c
end

-- zlib crc32 continuation over bytes [from, to) of a ByteArray.
local function crc_update(crc, bytes, from, to)
  for i = from, to - 1 do
    crc = bxor(crc_table[band(bxor(crc, bytes:get_index(i)), 0xFF)], rshift(crc, 8))
  end
  return crc
end

local function name_of(tbl, v, unknown)
  return tbl[v] or string.format("%s 0x%02x", unknown or "Unknown", v)
end

-- Adds malformed-frame expert info to `item` and notes it in the Info column.
local function malformed(pinfo, item, text)
  item:add_proto_expert_info(ef.malformed, text)
  pinfo.cols.info:append(" [Malformed: " .. text .. "]")
end

-- A bounded reader over the body bytes [off, stop) of `tvb`. Each read checks
-- the bounds first; a short body is reported once and stops further reads.
local Reader = {}
Reader.__index = Reader

local function reader(tvb, pinfo, tree, off, stop)
  return setmetatable({ tvb = tvb, pinfo = pinfo, tree = tree, off = off, stop = stop,
                        ok = true }, Reader)
end

function Reader:have(n, what)
  if not self.ok then return false end
  if self.off + n > self.stop then
    malformed(self.pinfo, self.tree, "truncated body: " .. what .. " needs " .. n ..
              " bytes, " .. (self.stop - self.off) .. " left")
    self.ok = false
    return false
  end
  return true
end

function Reader:fail(item, text)
  malformed(self.pinfo, item or self.tree, text)
  self.ok = false
end

-- Reads an unsigned big-endian field of 1, 2 or 4 bytes; returns value, item.
function Reader:uint(fld, n, what, tree)
  if not self:have(n, what) then return nil end
  local r = self.tvb(self.off, n)
  local item = (tree or self.tree):add(fld, r)
  self.off = self.off + n
  return r:uint(), item
end

function Reader:uint64(fld, what, tree)
  if not self:have(8, what) then return nil end
  local r = self.tvb(self.off, 8)
  local item = (tree or self.tree):add(fld, r)
  self.off = self.off + 8
  return r:uint64(), item
end

-- u8 length + UTF-8 bytes, at most MAX_NAME.
function Reader:str(fld, what)
  if not self:have(1, what .. " length") then return nil end
  local n = self.tvb(self.off, 1):uint()
  if n > MAX_NAME then
    self:fail(self.tree:add(fld, self.tvb(self.off, 1), "<too long>"),
              what .. " length " .. n .. " exceeds " .. MAX_NAME)
    return nil
  end
  if not self:have(1 + n, what) then return nil end
  local s = ""
  if n > 0 then
    s = self.tvb(self.off + 1, n):string(ENC_UTF_8)
  end
  self.tree:add(fld, self.tvb(self.off, 1 + n), s)
  self.off = self.off + 1 + n
  return s
end

-- u16 length + opaque bytes, at most MAX_AUTH.
function Reader:auth()
  local n, item = self:uint(f.auth_length, 2, "auth length")
  if n == nil then return nil end
  if n > MAX_AUTH then
    self:fail(item, "auth length " .. n .. " exceeds " .. MAX_AUTH)
    return nil
  end
  if not self:have(n, "auth data") then return nil end
  if n > 0 then self.tree:add(f.auth, self.tvb(self.off, n)) end
  self.off = self.off + n
  return n
end

function Reader:features(what)
  if not self:have(4, what) then return nil end
  local r = self.tvb(self.off, 4)
  local item = self.tree:add(f.features, r)
  item:add(f.feat_checksum, r)
  item:add(f.feat_sack, r)
  item:add(f.feat_delayed_ack, r)
  item:add(f.feat_resume, r)
  item:add(f.feat_multipath, r)
  self.off = self.off + 4
  return r:uint()
end

-- Bytes after the last field of a body are kBadLength.
function Reader:finish(what)
  if self.ok and self.off < self.stop then
    self:fail(nil, (self.stop - self.off) .. " bytes left over after the " .. what .. " body")
  end
end

----------------------------------------------------------------------------
-- Bodies of control frames
----------------------------------------------------------------------------

local function dissect_discovery_request(r, pinfo)
  local nonce = r:uint(f.nonce, 4, "nonce")
  local init = r:str(f.initiator_name, "initiator name")
  local filt = r:str(f.target_filter, "target filter")
  r:finish("discovery request")
  if nonce then pinfo.cols.info:append(string.format(" nonce=0x%x", nonce)) end
  if init then pinfo.cols.info:append(" from " .. init) end
  if filt and filt ~= "" then pinfo.cols.info:append(" for " .. filt) end
end

local function dissect_discovery_reply(r, pinfo)
  local nonce = r:uint(f.nonce, 4, "nonce")
  r:uint(f.mtu, 2, "mtu")
  r:features("features")
  local name = r:str(f.target_name, "target name")
  local count, count_item = r:uint(f.lun_count, 2, "lun count")
  if count ~= nil and count > MAX_LUNS then
    r:fail(count_item, "lun count " .. count .. " exceeds " .. MAX_LUNS)
  end
  if r.ok and count ~= nil then
    for _ = 1, count do
      if not r:have(16, "LUN entry") then break end
      local entry = r.tree:add(f.lun_entry, r.tvb(r.off, 16))
      local lun = r:uint(f.lun, 2, "lun", entry)
      local lflags, litem = r:uint(f.lun_flags, 1, "lun flags", entry)
      litem:add(f.lun_read_only, r.tvb(r.off - 1, 1))
      if band(lflags, 0xFE) ~= 0 then malformed(pinfo, litem, "unknown LUN flag bits") end
      r:uint(f.lun_reserved, 1, "lun reserved", entry)
      local bs, bitem = r:uint(f.block_size, 4, "block size", entry)
      if bs == 0 then malformed(pinfo, bitem, "block size 0") end
      local nb = r:uint64(f.num_blocks, "number of blocks", entry)
      entry:append_text(string.format(" %d: %s x %d bytes%s", lun, tostring(nb), bs,
                                      band(lflags, 1) ~= 0 and ", read-only" or ""))
    end
  end
  r:finish("discovery reply")
  if name then pinfo.cols.info:append(" target " .. name) end
  if count then pinfo.cols.info:append(" luns=" .. count) end
  if nonce then pinfo.cols.info:append(string.format(" nonce=0x%x", nonce)) end
end

local function dissect_login_request(r, pinfo)
  local nonce = r:uint(f.nonce, 4, "nonce")
  r:uint(f.mtu, 2, "mtu")
  r:uint(f.window, 2, "window")
  r:uint(f.max_transfer, 4, "max transfer")
  r:features("features")
  local resume = r:uint(f.resume_session_id, 4, "resume session id")
  r:uint(f.resume_epoch, 2, "resume epoch")
  local init = r:str(f.initiator_name, "initiator name")
  local tgt = r:str(f.target_name, "target name")
  r:auth()
  r:finish("login request")
  if init and tgt then pinfo.cols.info:append(" " .. init .. " -> " .. tgt) end
  if resume and resume ~= 0 then
    pinfo.cols.info:append(string.format(" resume 0x%08x", resume))
  end
  if nonce then pinfo.cols.info:append(string.format(" nonce=0x%x", nonce)) end
end

local function dissect_login_reply(r, pinfo)
  local nonce = r:uint(f.nonce, 4, "nonce")
  local st, st_item = r:uint(f.login_status, 1, "status")
  if st ~= nil then
    if login_status_names[st] == nil then
      malformed(pinfo, st_item, "unknown login status " .. st)
    elseif st ~= 0 then
      st_item:add_proto_expert_info(ef.login_failed, "Login refused: " .. login_status_names[st])
    end
  end
  r:uint(f.body_reserved, 1, "reserved")
  r:uint(f.mtu, 2, "mtu")
  r:uint(f.window, 2, "window")
  r:uint(f.max_transfer, 4, "max transfer")
  local features = r:features("features")
  local sid = r:uint(f.login_session_id, 4, "session id")
  local ep = r:uint(f.login_epoch, 2, "epoch")
  r:uint(f.keepalive_ms, 4, "keepalive ms")
  r:uint(f.dead_time_ms, 4, "dead time ms")
  r:auth()
  -- A multipath session's OK reply ends with the target's ports (14.3).
  if r.ok and st == 0 and features ~= nil and band(features, FEATURE_MULTIPATH) ~= 0 then
    local count, citem = r:uint(f.port_count, 1, "port count")
    if count ~= nil and (count == 0 or count > MAX_PORTS) then
      r:fail(citem, "port count " .. count .. " outside 1-" .. MAX_PORTS)
    end
    if r.ok and count ~= nil then
      for _ = 1, count do
        if not r:have(8, "port entry") then break end
        local entry = r.tree:add(f.port, r.tvb(r.off, 8))
        entry:add(f.port_mac, r.tvb(r.off, 6))
        local mac = tostring(r.tvb(r.off, 6):ether())
        r.off = r.off + 6
        local mtu, mitem = r:uint(f.port_mtu, 2, "port mtu", entry)
        if mtu == 0 then malformed(pinfo, mitem, "port MTU 0") end
        entry:append_text(string.format(" %s MTU %d", mac, mtu))
      end
      pinfo.cols.info:append(" ports=" .. count)
    end
  end
  r:finish("login reply")
  if st then pinfo.cols.info:append(" " .. name_of(login_status_names, st, "status")) end
  if sid and ep then pinfo.cols.info:append(string.format(" session 0x%08x/%d", sid, ep)) end
  if nonce then pinfo.cols.info:append(string.format(" nonce=0x%x", nonce)) end
end

local function dissect_disconnect(r, pinfo)
  local reason, item = r:uint(f.disconnect_reason, 1, "reason")
  if reason ~= nil and disconnect_reason_names[reason] == nil then
    r:fail(item, "unknown disconnect reason " .. reason)
  end
  r:finish("disconnect")
  if reason then pinfo.cols.info:append(" " .. name_of(disconnect_reason_names, reason, "reason")) end
end

local function dissect_keepalive(r, pinfo)
  local probe = r:uint(f.probe_id, 4, "probe id")
  if r.ok and r.off < r.stop then
    r.tree:add(f.padding, r.tvb(r.off, r.stop - r.off))
    r.off = r.stop
  end
  if probe then pinfo.cols.info:append(" probe_id=" .. probe) end
end

-- Path Request (0x31) / Path Reply (0x32): the same 12 fixed bytes, then a
-- proof of 0 or 32 bytes (docs/protocol.md 14.5).
local function dissect_path(r, pinfo, reply)
  local nonce = r:uint(f.nonce, 4, "nonce")
  local action, status, aitem, sitem
  if reply then
    status, sitem = r:uint(f.path_status, 1, "status")
    action, aitem = r:uint(f.path_action, 1, "action")
  else
    action, aitem = r:uint(f.path_action, 1, "action")
    r:uint(f.body_reserved, 1, "reserved")
  end
  if status ~= nil then
    if path_status_names[status] == nil then
      malformed(pinfo, sitem, "unknown path status " .. status)
    elseif status ~= 0 then
      sitem:add_proto_expert_info(ef.path_refused, "Path refused: " .. path_status_names[status])
    end
  end
  if action ~= nil and path_action_names[action] == nil then
    malformed(pinfo, aitem, "unknown path action " .. action)
  end
  local id, iditem = r:uint(f.path_subject_id, 1, "path id")
  if id ~= nil and id > MAX_PATH_ID then malformed(pinfo, iditem, "path id " .. id .. " above 15") end
  local gen = r:uint(f.path_subject_gen, 1, "path generation")
  r:uint(f.mtu, 2, "mtu")
  r:uint(f.window, 2, "window")
  local plen, pitem = r:uint(f.path_proof_length, 1, "proof length")
  if plen ~= nil then
    if plen ~= 0 and plen ~= 32 then
      r:fail(pitem, "proof length " .. plen .. " (0 or 32)")
    elseif plen > 0 and r:have(plen, "proof") then
      r.tree:add(f.path_proof, r.tvb(r.off, plen))
      r.off = r.off + plen
    end
  end
  r:finish(reply and "path reply" or "path request")
  if action ~= nil then
    pinfo.cols.info:append(" " .. name_of(path_action_names, action, "action"))
  end
  if id ~= nil and gen ~= nil then pinfo.cols.info:append(string.format(" of path %d.%d", id, gen)) end
  if status ~= nil then pinfo.cols.info:append(" " .. name_of(path_status_names, status, "status")) end
  if nonce then pinfo.cols.info:append(string.format(" nonce=0x%x", nonce)) end
end

----------------------------------------------------------------------------
-- SCSI: CDB, status, sense
----------------------------------------------------------------------------

-- Reads big-endian bytes [i, i+n) of a ByteArray as a number (n <= 4).
local function be(bytes, i, n)
  local v = 0
  for k = 0, n - 1 do v = v * 256 + bytes:get_index(i + k) end
  return v
end

local lba_layouts = {
  -- opcode = { lba offset, lba bytes, length offset, length bytes }
  [0x28] = { 2, 4, 7, 2 }, [0x2A] = { 2, 4, 7, 2 }, [0x2E] = { 2, 4, 7, 2 },
  [0x2F] = { 2, 4, 7, 2 }, [0x34] = { 2, 4, 7, 2 }, [0x35] = { 2, 4, 7, 2 },
  [0x41] = { 2, 4, 7, 2 },
  [0xA8] = { 2, 4, 6, 4 }, [0xAA] = { 2, 4, 6, 4 }, [0xAE] = { 2, 4, 6, 4 },
  [0xAF] = { 2, 4, 6, 4 },
  [0x88] = { 2, 8, 10, 4 }, [0x8A] = { 2, 8, 10, 4 }, [0x8E] = { 2, 8, 10, 4 },
  [0x8F] = { 2, 8, 10, 4 }, [0x90] = { 2, 8, 10, 4 }, [0x91] = { 2, 8, 10, 4 },
  [0x93] = { 2, 8, 10, 4 }, [0x89] = { 2, 8, 13, 1 },
}

-- Decodes the CDB in `range` (its full length is known to be present).
-- Returns a short summary for the Info column.
local function dissect_cdb(range, tree)
  local n = range:len()
  local bytes = range:bytes()
  local op = bytes:get_index(0)
  local cdb_tree = tree:add(f.cdb, range)
  cdb_tree:add(f.cdb_opcode, range(0, 1))
  local name = name_of(scsi_opcode_names, op, "SCSI opcode")
  local summary = name
  local layout = lba_layouts[op]
  if (op == 0x08 or op == 0x0A) and n >= 6 then
    local lba = band(bytes:get_index(1), 0x1F) * 65536 + be(bytes, 2, 2)
    local len = bytes:get_index(4)
    if len == 0 then len = 256 end
    cdb_tree:add(f.cdb_lba, range(1, 3), UInt64.new(lba, 0))
    cdb_tree:add(f.cdb_transfer_length, range(4, 1), len)
    summary = string.format("%s LBA=%d len=%d", name, lba, len)
  elseif layout ~= nil and n >= layout[3] + layout[4] then
    local lba
    if layout[2] == 8 then
      lba = range(layout[1], 8):uint64()
    else
      lba = UInt64.new(be(bytes, layout[1], 4), 0)
    end
    local len = be(bytes, layout[3], layout[4])
    cdb_tree:add(f.cdb_lba, range(layout[1], layout[2]), lba)
    cdb_tree:add(f.cdb_transfer_length, range(layout[3], layout[4]), len)
    summary = string.format("%s LBA=%s len=%d", name, tostring(lba), len)
  elseif op == 0x12 and n >= 5 then
    cdb_tree:add(f.cdb_evpd, range(1, 1))
    cdb_tree:add(f.cdb_page_code, range(2, 1))
    cdb_tree:add(f.cdb_alloc_length, range(3, 2), be(bytes, 3, 2))
  elseif (op == 0x1A or op == 0x03) and n >= 5 then
    if op == 0x1A then cdb_tree:add(f.cdb_page_code, range(2, 1), band(bytes:get_index(2), 0x3F)) end
    cdb_tree:add(f.cdb_alloc_length, range(4, 1), bytes:get_index(4))
  elseif op == 0x5A and n >= 9 then
    cdb_tree:add(f.cdb_page_code, range(2, 1), band(bytes:get_index(2), 0x3F))
    cdb_tree:add(f.cdb_alloc_length, range(7, 2), be(bytes, 7, 2))
  elseif op == 0xA0 and n >= 10 then
    cdb_tree:add(f.cdb_alloc_length, range(6, 4), be(bytes, 6, 4))
  elseif (op == 0x9E or op == 0xA3) and n >= 10 then
    local sa = band(bytes:get_index(1), 0x1F)
    cdb_tree:add(f.cdb_service_action, range(1, 1), sa)
    local sa_name = service_action_names[op * 256 + sa]
    if sa_name then
      cdb_tree:add(f.cdb_service_action_name, range(1, 1), sa_name)
      summary = sa_name
    end
    local alloc_off = (op == 0x9E) and 10 or 6
    if n >= alloc_off + 4 then
      cdb_tree:add(f.cdb_alloc_length, range(alloc_off, 4), be(bytes, alloc_off, 4))
    end
  end
  cdb_tree:append_text(": " .. summary)
  return summary
end

local function dissect_sense(range, tree)
  local n = range:len()
  local sense_tree = tree:add(f.sense, range)
  local bytes = range:bytes()
  local code = band(bytes:get_index(0), 0x7F)
  sense_tree:add(f.sense_response_code, range(0, 1), code)
  local key, asc, ascq, key_off, asc_off
  if (code == 0x70 or code == 0x71) and n >= 3 then
    key, key_off, asc_off = band(bytes:get_index(2), 0x0F), 2, 12
    if band(bytes:get_index(0), 0x80) ~= 0 and n >= 7 then
      sense_tree:add(f.sense_information, range(3, 4))
    end
  elseif (code == 0x72 or code == 0x73) and n >= 2 then
    key, key_off, asc_off = band(bytes:get_index(1), 0x0F), 1, 2
  else
    sense_tree:append_text(" (unknown format)")
    return nil
  end
  sense_tree:add(f.sense_key, range(key_off, 1), key)
  local summary = sense_key_names[key]
  if n >= asc_off + 2 then
    asc, ascq = bytes:get_index(asc_off), bytes:get_index(asc_off + 1)
    sense_tree:add(f.sense_asc, range(asc_off, 1))
    sense_tree:add(f.sense_ascq, range(asc_off + 1, 1))
    sense_tree:add(f.sense_asc_ascq, range(asc_off, 2))
    local text = asc_ascq_names[asc * 256 + ascq] or
                 string.format("ASC 0x%02x ASCQ 0x%02x", asc, ascq)
    summary = summary .. ", " .. text
  end
  sense_tree:append_text(": " .. summary)
  return summary
end

----------------------------------------------------------------------------
-- Command and reply PDUs (fragment at PDU offset 0 carries the header)
----------------------------------------------------------------------------

local function dissect_command_header(r, pinfo, pdu_length)
  if r.stop - r.off < 24 then
    -- The header continues in the next fragment: legal for tiny fragments.
    r.tree:add(f.continuation, r.tvb(r.off, r.stop - r.off))
    return
  end
  local sub = r.tree:add(f.cmd, r.tvb(r.off, 24))
  local start = r.off
  local cmd_sn = r:uint(f.cmd_sn, 4, "cmd_sn", sub)
  r:uint(f.reply_ack_sn, 4, "reply_ack_sn", sub)
  local lun = r:uint(f.cmd_lun, 2, "lun", sub)
  local flags, fitem = r:uint(f.cmd_flags, 1, "flags", sub)
  fitem:add(f.cmd_data_in, r.tvb(r.off - 1, 1))
  fitem:add(f.cmd_data_out, r.tvb(r.off - 1, 1))
  if band(flags, 0xFC) ~= 0 then malformed(pinfo, fitem, "unknown command flag bits") end
  local ta, titem = r:uint(f.task_attribute, 1, "task attribute", sub)
  if ta > 2 then malformed(pinfo, titem, "unknown task attribute " .. ta) end
  r:uint(f.expected_data_in, 4, "expected data-in", sub)
  local dout, ditem = r:uint(f.data_out_length, 4, "data-out length", sub)
  local cdb_len, citem = r:uint(f.cdb_length, 1, "cdb length", sub)
  sub:add(f.cmd_reserved, r.tvb(r.off, 3))
  r.off = r.off + 3
  pinfo.cols.info:append(string.format(" cmd_sn=%d lun=%d", cmd_sn, lun))
  if cdb_len < 6 or cdb_len > 32 then
    malformed(pinfo, citem, "CDB length " .. cdb_len .. " outside 6-32")
    return
  end
  if 24 + cdb_len + dout ~= pdu_length then
    malformed(pinfo, ditem, string.format("header, CDB and data-out (%d bytes) do not add up to "
                                          .. "pdu_length %d", 24 + cdb_len + dout, pdu_length))
  end
  if r.off + cdb_len > r.stop then
    r.tree:add(f.continuation, r.tvb(r.off, r.stop - r.off))
    r.off = r.stop
    return
  end
  local summary = dissect_cdb(r.tvb(r.off, cdb_len), r.tree)
  pinfo.cols.info:append(" " .. summary)
  r.off = r.off + cdb_len
  sub:set_len(r.off - start)
  if r.off < r.stop then
    r.tree:add(f.data_out, r.tvb(r.off, r.stop - r.off))
    r.off = r.stop
  end
end

local function dissect_reply_header(r, pinfo, pdu_length)
  if r.stop - r.off < 16 then
    r.tree:add(f.continuation, r.tvb(r.off, r.stop - r.off))
    return
  end
  local sub = r.tree:add(f.reply, r.tvb(r.off, 16))
  local cmd_sn = r:uint(f.reply_cmd_sn, 4, "cmd_sn", sub)
  local status, sitem = r:uint(f.scsi_status, 1, "status", sub)
  local resp, ritem = r:uint(f.response, 1, "response", sub)
  if response_names[resp] == nil then malformed(pinfo, ritem, "unknown response " .. resp) end
  local slen, litem = r:uint(f.sense_length, 1, "sense length", sub)
  if slen > MAX_SENSE then malformed(pinfo, litem, "sense length " .. slen .. " exceeds 252") end
  local flags, fitem = r:uint(f.reply_flags, 1, "flags", sub)
  fitem:add(f.reply_overflow, r.tvb(r.off - 1, 1))
  fitem:add(f.reply_underflow, r.tvb(r.off - 1, 1))
  if band(flags, 0xFC) ~= 0 or flags == 3 then
    malformed(pinfo, fitem, "invalid reply flags 0x" .. string.format("%02x", flags))
  end
  r:uint(f.residual, 4, "residual", sub)
  local din, ditem = r:uint(f.data_in_length, 4, "data-in length", sub)
  if 16 + slen + din ~= pdu_length then
    malformed(pinfo, ditem, string.format("header, sense and data-in (%d bytes) do not add up to "
                                          .. "pdu_length %d", 16 + slen + din, pdu_length))
  end
  pinfo.cols.info:append(string.format(" cmd_sn=%d %s", cmd_sn,
                                       name_of(scsi_status_names, status, "status")))
  if resp ~= 0 then
    pinfo.cols.info:append(" " .. name_of(response_names, resp, "response"))
    ritem:add_proto_expert_info(ef.scsi_error, "Response: " .. name_of(response_names, resp))
  elseif status ~= 0 then
    sitem:add_proto_expert_info(ef.scsi_error,
                                "SCSI status " .. name_of(scsi_status_names, status, "status"))
  end
  if slen > 0 and slen <= MAX_SENSE then
    local avail = math.min(slen, r.stop - r.off)
    if avail > 0 then
      local summary = dissect_sense(r.tvb(r.off, avail), r.tree)
      if summary then pinfo.cols.info:append(" (" .. summary .. ")") end
      r.off = r.off + avail
    end
  end
  if r.off < r.stop then
    r.tree:add(f.data_in, r.tvb(r.off, r.stop - r.off))
    r.off = r.stop
  end
end

----------------------------------------------------------------------------
-- Retransmission analysis
----------------------------------------------------------------------------

-- (direction, session, epoch, seq) -> first frame number; frame -> original.
local first_seen = {}
local retransmission_of = {}

function hs.init()
  first_seen = {}
  retransmission_of = {}
end

local function check_retransmission(pinfo, session, epoch, path_id, path_gen, seq)
  if not pinfo.visited then
    -- Each path generation of a multipath session numbers its own frames.
    local key = table.concat({ tostring(pinfo.dl_src), tostring(pinfo.dl_dst),
                               session, epoch, path_id, path_gen, seq }, "|")
    local first = first_seen[key]
    if first == nil then
      first_seen[key] = pinfo.number
    elseif first ~= pinfo.number then
      retransmission_of[pinfo.number] = first
    end
  end
  return retransmission_of[pinfo.number]
end

----------------------------------------------------------------------------
-- The frame
----------------------------------------------------------------------------

local builtin = DissectorTable.get("ethertype"):get_dissector(0x889A)

local function dissect(tvb, pinfo, root)
  local len = tvb:len()
  local tree = root:add(hs, tvb())
  pinfo.cols.protocol = "HyperSCSIv2"
  pinfo.cols.info = "HyperSCSI"

  if len < 5 then
    malformed(pinfo, tree, "common header truncated (" .. len .. " of 5 bytes)")
    return len
  end
  local b0, b1, b2 = tvb(0, 1):uint(), tvb(1, 1):uint(), tvb(2, 1):uint()
  local tag = band(b0, 0x0F) * 32 + rshift(b1, 3)
  local last = band(b1, 0x04) ~= 0
  local frag = band(b1, 0x03) * 256 + b2
  local version = tvb(3, 1):uint()
  local opcode = tvb(4, 1):uint()
  local reserved_item = tree:add(f.reserved, tvb(0, 1))
  tree:add(f.tag, tvb(0, 2), tag)
  tree:add(f.lastfrag, tvb(1, 1), last)
  tree:add(f.fragment, tvb(1, 2), frag)
  local version_item = tree:add(f.version, tvb(3, 1))
  local opcode_item = tree:add(f.opcode, tvb(4, 1))
  local op_name = name_of(opcode_names, opcode, "opcode")
  pinfo.cols.info = string.format("%s tag=%d", op_name, tag)
  tree:append_text(", " .. op_name)

  if version ~= 2 then
    malformed(pinfo, version_item, "unknown version " .. version)
    return len
  end
  if opcode_names[opcode] == nil then
    malformed(pinfo, opcode_item, string.format("unknown opcode 0x%02x", opcode))
    return len
  end
  if len < 6 then
    malformed(pinfo, tree, "extended header truncated: no ext_len byte")
    return len
  end
  local ext_len = tvb(5, 1):uint()
  local ext_item = tree:add(f.ext_len, tvb(5, 1))
  if ext_len < EXT_MIN then
    malformed(pinfo, ext_item, "ext_len " .. ext_len .. " below " .. EXT_MIN)
    return len
  end
  local hdr_len = 5 + ext_len
  if len < hdr_len then
    malformed(pinfo, ext_item, "extended header truncated (" .. len .. " of " .. hdr_len ..
              " bytes)")
    return len
  end

  local flags = tvb(6, 1):uint()
  local flags_item = tree:add(f.flags, tvb(6, 1))
  flags_item:add(f.flag_ack, tvb(6, 1))
  flags_item:add(f.flag_checksum, tvb(6, 1))
  flags_item:add(f.flag_retransmit, tvb(6, 1))
  flags_item:add(f.flag_ack_now, tvb(6, 1))
  flags_item:add(f.flag_response, tvb(6, 1))
  flags_item:add(f.flag_protected, tvb(6, 1))
  flags_item:add(f.flag_reserved, tvb(6, 1))
  local sack_count = tvb(7, 1):uint()
  local sack_item = tree:add(f.sack_count, tvb(7, 1))
  local session = tvb(8, 4):uint()
  local epoch = tvb(12, 2):uint()
  local seq = tvb(16, 4):uint()
  local ack = tvb(20, 4):uint()
  local pdu_length = tvb(24, 4):uint()
  local pdu_offset = tvb(28, 4):uint()
  local payload_length = tvb(32, 2):uint()
  local path_id = tvb(34, 1):uint()
  local path_gen = tvb(35, 1):uint()
  local crc = tvb(36, 4):uint()
  tree:add(f.session_id, tvb(8, 4))
  tree:add(f.epoch, tvb(12, 2))
  tree:add(f.window, tvb(14, 2))
  tree:add(f.seq, tvb(16, 4))
  tree:add(f.ack, tvb(20, 4))
  local pdu_length_item = tree:add(f.pdu_length, tvb(24, 4))
  local pdu_offset_item = tree:add(f.pdu_offset, tvb(28, 4))
  local payload_item = tree:add(f.payload_length, tvb(32, 2))
  tree:add(f.path_id, tvb(34, 1))
  tree:add(f.path_gen, tvb(35, 1))
  tree:add(f.path, tvb(34, 2), string.format("%d.%d", path_id, path_gen)):set_generated()
  local crc_item = tree:add(f.crc32, tvb(36, 4))
  if hdr_len > HEADER then tree:add(f.ext_extra, tvb(HEADER, hdr_len - HEADER)) end

  local sequenced = opcode == 0x00 or opcode == 0x01
  local info = pinfo.cols.info
  if sequenced then info:append(" seq=" .. seq) end
  if band(flags, 0x01) ~= 0 then info:append(" ack=" .. ack) end
  if sequenced then
    info:append(string.format(" frag=%d%s off=%d/%d", frag, last and "(last)" or "",
                              pdu_offset, pdu_length))
  end
  if session ~= 0 then info:append(string.format(" session=0x%08x/%d", session, epoch)) end
  if path_id ~= 0 or path_gen ~= 0 then
    info:append(string.format(" path=%d.%d", path_id, path_gen))
    tree:append_text(string.format(", path %d.%d", path_id, path_gen))
  end
  if band(flags, 0x10) ~= 0 then info:append(" [RESPONSE]") end
  local protected = band(flags, 0x20) ~= 0
  if protected then info:append(" [PROTECTED]") end

  if sack_count > MAX_SACK then
    malformed(pinfo, sack_item, sack_count .. " SACK blocks exceed " .. MAX_SACK)
    return len
  end
  local sack_end = hdr_len + 8 * sack_count
  if len < sack_end then
    malformed(pinfo, sack_item, "SACK blocks truncated")
    return len
  end
  for i = 0, sack_count - 1 do
    local o = hdr_len + 8 * i
    local s, e = tvb(o, 4):uint(), tvb(o + 4, 4):uint()
    local block = tree:add(f.sack, tvb(o, 8))
    block:add(f.sack_start, tvb(o, 4))
    block:add(f.sack_end, tvb(o + 4, 4))
    block:append_text(string.format(" [%d, %d)", s, e))
    info:append(string.format(" SACK[%d,%d)", s, e))
  end
  local frame_end = sack_end + payload_length
  if frame_end > len then
    malformed(pinfo, payload_item, "payload of " .. payload_length .. " bytes runs past the " ..
              "frame (" .. (len - sack_end) .. " bytes left)")
    return len
  end

  -- CRC: header with the crc field as zero, SACK blocks, payload.
  if band(flags, 0x02) ~= 0 then
    local bytes = tvb(0, frame_end):bytes()
    local c = crc_update(0xFFFFFFFF, bytes, 0, 36)
    for _ = 1, 4 do c = bxor(crc_table[band(c, 0xFF)], rshift(c, 8)) end
    c = crc_update(c, bytes, 40, frame_end)
    c = bxor(c, 0xFFFFFFFF)
    local good = c == crc
    crc_item:add(f.crc_status, tvb(36, 4), good and 1 or 2):set_generated()
    crc_item:add(f.crc_computed, tvb(36, 4), c):set_generated()
    if good then
      crc_item:append_text(" [correct]")
    else
      crc_item:append_text(string.format(" [incorrect, should be 0x%08x]", c))
      crc_item:add_proto_expert_info(ef.bad_crc,
                                     string.format("Bad CRC-32: 0x%08x, computed 0x%08x", crc, c))
      info:append(" [BAD CRC]")
    end
  else
    crc_item:add(f.crc_status, tvb(36, 4), 0):set_generated()
  end

  -- Field rules of section 6 (7 and 8); decoding goes on after them.
  if band(b0, 0xF0) ~= 0 then malformed(pinfo, reserved_item, "reserved bits of byte 0 set") end
  if band(flags, 0xC0) ~= 0 then malformed(pinfo, flags_item, "unknown flag bits set") end
  local frag_end = pdu_offset + payload_length  -- Lua numbers: no 32-bit overflow
  if frag_end > pdu_length then
    malformed(pinfo, pdu_offset_item, "pdu_offset + payload_length exceeds pdu_length")
  elseif last and frag_end ~= pdu_length then
    malformed(pinfo, pdu_length_item, "last fragment does not end the PDU")
  end
  if not sequenced then
    if frag ~= 0 or not last or pdu_offset ~= 0 or pdu_length ~= payload_length then
      malformed(pinfo, pdu_length_item, "control frame is not one whole fragment")
    end
  else
    if payload_length == 0 and pdu_length ~= 0 then
      malformed(pinfo, payload_item, "empty fragment of a non-empty PDU")
    end
    if (frag == 0) ~= (pdu_offset == 0) then
      malformed(pinfo, pdu_offset_item, "fragment 0 must be exactly the one at pdu_offset 0")
    end
  end

  -- Retransmissions: the RETRANSMIT flag, or a seq already seen in this
  -- direction of this session and epoch.
  if sequenced then
    local original = check_retransmission(pinfo, session, epoch, path_id, path_gen, seq)
    if original ~= nil or band(flags, 0x04) ~= 0 then
      local item = tree:add(f.retransmission, tvb(16, 4), true)
      item:set_generated()
      local text
      if original ~= nil then
        tree:add(f.retransmitted_frame, tvb(16, 4), original):set_generated()
        text = string.format("Retransmission: seq %d already seen in frame %d", seq, original)
      else
        text = "Retransmission (RETRANSMIT flag)"
      end
      item:add_proto_expert_info(ef.retransmission, text)
      info:prepend("[Retransmission] ")
    end
  end

  -- Protection trailer: u64 counter, 16-byte tag, right after the payload.
  if protected then
    if frame_end + 24 > len then
      malformed(pinfo, flags_item, "PROTECTED frame without room for its 24-byte trailer")
      return len
    end
    local t = tree:add(f.protection, tvb(frame_end, 24))
    t:add(f.protection_counter, tvb(frame_end, 8))
    t:add(f.protection_tag, tvb(frame_end + 8, 16))
    info:append(" ctr=" .. tostring(tvb(frame_end, 8):uint64()))
  end

  -- Body. A protected payload may be encrypted: dissected only when the
  -- user says the session is integrity-only (preference).
  if protected and payload_length > 0 and not hs.prefs.protected_cleartext then
    tree:add(f.payload, tvb(sack_end, payload_length)):append_text(
        " (protected: encrypted, or set the integrity-only preference to dissect it)")
  elseif payload_length > 0 then
    local payload_tree = tree:add(f.payload, tvb(sack_end, payload_length))
    local r = reader(tvb, pinfo, payload_tree, sack_end, frame_end)
    if opcode == 0x30 then
      dissect_discovery_request(r, pinfo)
    elseif opcode == 0x10 then
      dissect_discovery_reply(r, pinfo)
    elseif opcode == 0x11 then
      dissect_login_request(r, pinfo)
    elseif opcode == 0x12 then
      dissect_login_reply(r, pinfo)
    elseif opcode == 0x13 then
      dissect_disconnect(r, pinfo)
    elseif opcode == 0x31 or opcode == 0x32 then
      dissect_path(r, pinfo, opcode == 0x32)
    elseif opcode == 0x20 or (opcode == 0x21 and band(flags, 0x10) ~= 0) then
      dissect_keepalive(r, pinfo)
    elseif opcode == 0x21 then
      malformed(pinfo, payload_tree, "standalone ack carries a body")
    elseif opcode == 0x00 and pdu_offset == 0 then
      dissect_command_header(r, pinfo, pdu_length)
    elseif opcode == 0x01 and pdu_offset == 0 then
      dissect_reply_header(r, pinfo, pdu_length)
    else
      payload_tree:append_text(" (continuation of the PDU)")
    end
  elseif opcode == 0x30 or opcode == 0x10 or opcode == 0x11 or opcode == 0x12 or
         opcode == 0x13 or opcode == 0x20 or opcode == 0x31 or opcode == 0x32 or
         (opcode == 0x21 and band(flags, 0x10) ~= 0) then
    malformed(pinfo, tree, "empty body")
  end
  return protected and frame_end + 24 or frame_end
end

function hs.dissector(tvb, pinfo, root)
  -- The built-in dissector keeps the hyperscsi.* common-header fields.
  if builtin ~= nil then
    pcall(function() builtin:call(tvb, pinfo, root) end)
  end
  return dissect(tvb, pinfo, root)
end

DissectorTable.get("ethertype"):add(0x889A, hs)

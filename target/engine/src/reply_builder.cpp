#include "reply_builder.h"

#include <algorithm>

#include "hyperscsi/proto/messages.h"
#include "hyperscsi/scsi/lun_map.h"
#include "hyperscsi/scsi/sense.h"

namespace hyperscsi::engine {

std::vector<uint8_t> build_reply_pdu(uint32_t cmd_sn, scsi::CommandResult&& result) {
  proto::ReplyHeader h;
  h.cmd_sn = cmd_sn;
  h.status = result.status;
  h.response = proto::CommandResponse::kCompleted;
  switch (result.residual) {
    case scsi::Residual::kNone:
      break;
    case scsi::Residual::kUnderflow:
      h.flags |= proto::kReplyFlagUnderflow;
      h.residual = result.residual_count;
      break;
    case scsi::Residual::kOverflow:
      h.flags |= proto::kReplyFlagOverflow;
      h.residual = result.residual_count;
      break;
  }
  const size_t sense_len = std::min(result.sense.size(), proto::kMaxSenseLength);
  h.sense.assign(result.sense.begin(), result.sense.begin() + static_cast<ptrdiff_t>(sense_len));
  const std::span<const uint8_t> data = result.data();
  h.data_in_length = static_cast<uint32_t>(data.size());
  std::vector<uint8_t> header;
  header.reserve(proto::kReplyHeaderFixedSize + sense_len);
  proto::encode(h, header);
  if (result.data_in_offset == header.size()) {
    std::copy(header.begin(), header.end(), result.data_in.begin());
    return std::move(result.data_in);
  }
  std::vector<uint8_t> pdu;
  pdu.reserve(header.size() + data.size());
  pdu.insert(pdu.end(), header.begin(), header.end());
  pdu.insert(pdu.end(), data.begin(), data.end());
  return pdu;
}

namespace {
scsi::CommandResult check(const scsi::Sense& s, uint32_t expected_data_in) {
  scsi::CommandResult r;
  r.status = scsi::status::kCheckCondition;
  r.sense = scsi::encode_fixed_sense(s);
  if (expected_data_in > 0) {
    r.residual = scsi::Residual::kUnderflow;
    r.residual_count = expected_data_in;
  }
  return r;
}
}  // namespace

scsi::CommandResult build_report_luns(std::span<const uint8_t> cdb,
                                      const std::vector<uint16_t>& luns,
                                      uint32_t expected_data_in) {
  if (cdb.size() < 12)
    return check(scsi::sense::invalid_field_in_cdb(static_cast<uint16_t>(cdb.size())),
                 expected_data_in);
  if (cdb[2] > 0x02) return check(scsi::sense::invalid_field_in_cdb(2), expected_data_in);
  const uint32_t alloc = (uint32_t{cdb[6]} << 24) | (uint32_t{cdb[7]} << 16) |
                         (uint32_t{cdb[8]} << 8) | uint32_t{cdb[9]};
  const uint32_t list_len = static_cast<uint32_t>(8 * luns.size());
  std::vector<uint8_t> d;
  d.reserve(8 + list_len);
  for (int shift = 24; shift >= 0; shift -= 8) d.push_back(static_cast<uint8_t>(list_len >> shift));
  d.insert(d.end(), 4, 0);  // reserved
  for (uint16_t lun : luns) {
    const auto l = scsi::encode_lun(lun);
    d.insert(d.end(), l.begin(), l.end());
  }
  if (d.size() > alloc) d.resize(alloc);
  scsi::CommandResult r;
  r.status = scsi::status::kGood;
  if (d.size() > expected_data_in) {
    r.residual = scsi::Residual::kOverflow;
    r.residual_count = static_cast<uint32_t>(d.size() - expected_data_in);
    d.resize(expected_data_in);
  } else if (d.size() < expected_data_in) {
    r.residual = scsi::Residual::kUnderflow;
    r.residual_count = static_cast<uint32_t>(expected_data_in - d.size());
  }
  r.data_in = std::move(d);
  return r;
}

bool is_reexecutable(uint8_t opcode) {
  switch (opcode) {
    case 0x00:  // TEST UNIT READY
    case 0x08:  // READ(6)
    case 0x12:  // INQUIRY
    case 0x1A:  // MODE SENSE(6)
    case 0x25:  // READ CAPACITY(10)
    case 0x28:  // READ(10)
    case 0x5A:  // MODE SENSE(10)
    case 0x88:  // READ(16)
    case 0x9E:  // SERVICE ACTION IN(16): READ CAPACITY(16)
    case 0xA0:  // REPORT LUNS
    case 0xA8:  // READ(12)
      return true;
    default:
      return false;
  }
}

}  // namespace hyperscsi::engine

#include "reply_builder.h"

#include <algorithm>

#include "hyperscsi/proto/messages.h"
#include "hyperscsi/scsi/sense.h"

namespace hyperscsi::engine {

proto::SharedBytes build_reply_pdu(uint32_t cmd_sn, scsi::CommandResult&& result) {
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
    // The whole headroom is the header: every byte of the buffer is set.
    if (result.read_buffer) {
      std::copy(header.begin(), header.end(), result.read_buffer.get());
      const std::span<const uint8_t> pdu(result.read_buffer.get(), result.read_size);
      return proto::SharedBytes(std::move(result.read_buffer), pdu);
    }
    std::copy(header.begin(), header.end(), result.data_in.begin());
    return proto::share_bytes(std::move(result.data_in));
  }
  std::vector<uint8_t> pdu;
  pdu.reserve(header.size() + data.size());
  pdu.insert(pdu.end(), header.begin(), header.end());
  pdu.insert(pdu.end(), data.begin(), data.end());
  return proto::share_bytes(std::move(pdu));
}

}  // namespace hyperscsi::engine

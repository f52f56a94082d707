#include "session_util.h"

#include <utility>

namespace hyperscsi::proto::detail {

FrameHeader raw_control_header(const MacAddress& src, const MacAddress& dst, Opcode opcode,
                               uint8_t flags, uint32_t session_id, uint16_t epoch) {
  FrameHeader h;
  h.dst = dst;
  h.src = src;
  h.common.opcode = opcode;
  h.common.tag = 0;
  h.common.fragment = 0;
  h.common.last_fragment = true;
  h.ext.flags = flags;
  h.ext.session_id = session_id;
  h.ext.epoch = epoch;
  return h;
}

size_t l3_size(const FrameView& frame) {
  return kHeaderSize + frame.header.sacks.count * kSackBlockSize + frame.payload.size();
}

void Outbox::push(const FrameHeader& header, std::vector<uint8_t> body) {
  if (frames_.size() >= limit_) {
    ++dropped_;
    return;
  }
  frames_.push_back(Pending{header, std::move(body)});
}

void Outbox::flush(FrameSink& sink) {
  size_t sent = 0;
  for (; sent < frames_.size(); ++sent) {
    Pending& p = frames_[sent];
    // Control frames are not sequenced: their payload is the whole body.
    p.header.ext.pdu_length = static_cast<uint32_t>(p.body.size());
    p.header.ext.pdu_offset = 0;
    const size_t size = encoded_size(p.header, p.body.size());
    std::span<uint8_t> buf = sink.acquire(size);
    if (buf.empty()) break;
    const size_t n = encode_frame(buf, p.header, p.body);
    if (n == 0) {
      ++dropped_;  // a field out of range: nothing was written
      continue;
    }
    sink.commit(n);
  }
  frames_.erase(frames_.begin(), frames_.begin() + static_cast<std::ptrdiff_t>(sent));
}

}  // namespace hyperscsi::proto::detail

// Private helpers shared by the session state machines: a bounded queue of
// control frames waiting for the next poll(), and raw control headers for
// frames sent outside any Connection (discovery, login, rejections).
// Thread-safety: none; used by the owning session object only.
#pragma once

#include <cstdint>
#include <vector>

#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"

namespace hyperscsi::proto::detail {

// Header of an unsequenced control frame not tied to a Connection.
FrameHeader raw_control_header(const MacAddress& src, const MacAddress& dst, Opcode opcode,
                               uint8_t flags = 0, uint32_t session_id = 0, uint16_t epoch = 0);

// L3 size (headers + body) of a received frame: what a padded answer must match.
size_t l3_size(const FrameView& frame);

class Outbox {
 public:
  explicit Outbox(size_t limit = 256) : limit_(limit) {}
  // Queues a frame; drops it (counted) when the queue is full.
  void push(const FrameHeader& header, std::vector<uint8_t> body);
  // Writes queued frames into the sink until it runs out of buffers.
  void flush(FrameSink& sink);
  bool empty() const { return frames_.empty(); }
  uint64_t dropped() const { return dropped_; }

 private:
  struct Pending {
    FrameHeader header;
    std::vector<uint8_t> body;
  };
  std::vector<Pending> frames_;
  size_t limit_;
  uint64_t dropped_ = 0;
};

// Earliest of two deadlines.
inline TimePoint earliest(TimePoint a, TimePoint b) {
  return a < b ? a : b;
}

}  // namespace hyperscsi::proto::detail

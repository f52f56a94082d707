// PortSink: a proto::FrameSink that builds frames directly in a Port's packet
// buffers and sends them in bursts. Frames the port does not take stay queued
// and are retried on the next flush().
//
// Ownership: the sink holds the packets it has not yet handed to the port.
// Thread-safety: none; used by the thread that owns the port.
#pragma once

#include <cstddef>
#include <deque>
#include <span>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/connection.h"

namespace hyperscsi::io {

class PortSink final : public proto::FrameSink {
 public:
  // `max_pending`: frames queued before acquire() refuses (backpressure).
  explicit PortSink(Port& port, size_t max_pending = 256);

  std::span<uint8_t> acquire(size_t size) override;
  void commit(size_t length) override;

  // Sends queued frames in bursts; returns how many the port took.
  size_t flush();
  size_t pending() const { return queued_.size(); }

 private:
  Port& port_;
  size_t max_pending_;
  Packet current_;
  std::vector<Packet> queued_;
};

}  // namespace hyperscsi::io

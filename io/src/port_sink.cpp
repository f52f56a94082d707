#include "hyperscsi/io/port_sink.h"

#include <algorithm>
#include <utility>

namespace hyperscsi::io {

PortSink::PortSink(Port& port, size_t max_pending) : port_(port), max_pending_(max_pending) {
  queued_.reserve(max_pending);
}

std::span<uint8_t> PortSink::acquire(size_t size) {
  if (queued_.size() >= max_pending_) flush();
  if (queued_.size() >= max_pending_) return {};
  if (!current_) current_ = port_.alloc();
  if (!current_) return {};
  std::span<uint8_t> room = current_.writable();
  if (room.size() < size) return {};
  return room.first(size);
}

void PortSink::commit(size_t length) {
  if (!current_ || !current_.resize(length)) return;
  queued_.push_back(std::move(current_));
}

size_t PortSink::flush() {
  size_t sent = 0;
  while (!queued_.empty()) {
    const size_t n = port_.tx_burst(std::span<Packet>(queued_));
    if (n == 0) break;
    queued_.erase(queued_.begin(), queued_.begin() + static_cast<ptrdiff_t>(n));
    sent += n;
  }
  return sent;
}

}  // namespace hyperscsi::io

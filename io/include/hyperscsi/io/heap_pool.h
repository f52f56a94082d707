// HeapPacketPool: a bounded pool of fixed-size heap buffers for the portable
// backends (AF_PACKET, libpcap, in-memory).
//
// Each buffer holds kHeadroom bytes in front of the data (room for an 802.1Q
// tag and any header a caller prepends) and mtu + 14 (Ethernet header) + 4
// (one VLAN tag) bytes of frame.
//
// Ownership: the pool owns the buffers; a Packet borrows one until it is
// destroyed or reset(). Packets may outlive the HeapPacketPool object: the
// storage is freed when the pool is gone AND the last packet came back.
// Thread-safety: alloc() and release may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "hyperscsi/io/packet.h"

namespace hyperscsi::io {

class HeapPacketPool final : public PacketPool {
 public:
  static constexpr size_t kHeadroom = 64;
  static constexpr size_t kFrameOverhead = 14 + 4;  // Ethernet header + one VLAN tag

  // `count` buffers able to hold a frame of an L3 `mtu` (plus headroom).
  HeapPacketPool(size_t count, size_t mtu);
  ~HeapPacketPool() override;
  HeapPacketPool(const HeapPacketPool&) = delete;
  HeapPacketPool& operator=(const HeapPacketPool&) = delete;

  Packet alloc() override;  // empty handle when all buffers are out
  void release(void* cookie, uint8_t* buffer) noexcept override;

  size_t capacity() const;     // number of buffers
  size_t available() const;    // buffers not currently lent out
  size_t buffer_size() const;  // bytes per buffer, headroom included

 private:
  class Core;
  Core* core_;  // self-deleting once detached and all buffers are back
};

}  // namespace hyperscsi::io

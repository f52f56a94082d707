// Packet: a move-only handle to one frame buffer, returned to its pool when
// the handle is destroyed. Buffers keep headroom at the front so a port can
// prepend an 802.1Q tag without copying. A packet may end with a tail: bytes
// it does not own, sent after its buffer's (gather; only to a port whose
// tx_gather() says it sends them).
//
// Ownership: whoever holds the handle owns the buffer. Thread-safety: a Packet
// is used by one thread at a time; pools accept releases from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace hyperscsi::io {

class PacketPool;

class Packet {
 public:
  Packet() = default;
  // For pools: `buffer` of `capacity` bytes, data starting at `headroom`.
  Packet(PacketPool* pool, void* cookie, uint8_t* buffer, uint32_t capacity, uint32_t headroom);
  Packet(Packet&& other) noexcept;
  Packet& operator=(Packet&& other) noexcept;
  Packet(const Packet&) = delete;
  Packet& operator=(const Packet&) = delete;
  ~Packet();

  explicit operator bool() const { return buffer_ != nullptr; }

  uint8_t* data() { return buffer_ + offset_; }
  const uint8_t* data() const { return buffer_ + offset_; }
  size_t size() const { return length_; }
  std::span<uint8_t> bytes() { return {data(), length_}; }
  std::span<const uint8_t> bytes() const { return {data(), length_}; }
  size_t headroom() const { return offset_; }
  size_t tailroom() const { return capacity_ - offset_ - length_; }
  // Writable space from data() to the end of the buffer.
  std::span<uint8_t> writable() { return {data(), capacity_ - offset_}; }

  bool resize(size_t length);  // false (unchanged) if beyond the buffer
  uint8_t* prepend(size_t n);  // grows at the front; nullptr without headroom
  bool trim_front(size_t n);   // drops n leading bytes; false if n > size()

  void* cookie() const { return cookie_; }  // pool-private (e.g. an rte_mbuf*)
  void reset();  // returns the buffer to its pool now (and drops the tail)

  // The frame continues with `tail` after bytes(); the packet holds `owner`
  // (which keeps `tail` valid) until it is reset or destroyed.
  void set_tail(std::span<const uint8_t> tail, std::shared_ptr<const void> owner);
  std::span<const uint8_t> tail() const { return tail_; }
  // The whole frame's length: size() plus the tail.
  size_t frame_size() const { return length_ + tail_.size(); }

 private:
  PacketPool* pool_ = nullptr;
  void* cookie_ = nullptr;
  uint8_t* buffer_ = nullptr;
  uint32_t capacity_ = 0;
  uint32_t offset_ = 0;
  uint32_t length_ = 0;
  std::span<const uint8_t> tail_;
  std::shared_ptr<const void> tail_owner_;
};

class PacketPool {
 public:
  virtual ~PacketPool() = default;
  virtual Packet alloc() = 0;  // empty handle when exhausted
  // Called by Packet; must accept calls from any thread.
  virtual void release(void* cookie, uint8_t* buffer) noexcept = 0;
};

}  // namespace hyperscsi::io

#include "hyperscsi/io/packet.h"

#include <cstring>
#include <utility>

namespace hyperscsi::io {

Packet::Packet(PacketPool* pool, void* cookie, uint8_t* buffer, uint32_t capacity,
               uint32_t headroom)
    : pool_(pool), cookie_(cookie), buffer_(buffer), capacity_(capacity), offset_(headroom) {}

Packet::Packet(Packet&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      cookie_(std::exchange(other.cookie_, nullptr)),
      buffer_(std::exchange(other.buffer_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)),
      offset_(std::exchange(other.offset_, 0)),
      length_(std::exchange(other.length_, 0)),
      tail_(std::exchange(other.tail_, {})),
      tail_owner_(std::move(other.tail_owner_)) {}

Packet& Packet::operator=(Packet&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    cookie_ = std::exchange(other.cookie_, nullptr);
    buffer_ = std::exchange(other.buffer_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
    offset_ = std::exchange(other.offset_, 0);
    length_ = std::exchange(other.length_, 0);
    tail_ = std::exchange(other.tail_, {});
    tail_owner_ = std::move(other.tail_owner_);
  }
  return *this;
}

Packet::~Packet() {
  reset();
}

void Packet::reset() {
  if (buffer_ != nullptr && pool_ != nullptr) pool_->release(cookie_, buffer_);
  pool_ = nullptr;
  cookie_ = nullptr;
  buffer_ = nullptr;
  capacity_ = offset_ = length_ = 0;
  tail_ = {};
  tail_owner_.reset();
}

void Packet::set_tail(std::span<const uint8_t> tail, std::shared_ptr<const void> owner) {
  tail_ = tail;
  tail_owner_ = std::move(owner);
}

bool Packet::resize(size_t length) {
  if (length > capacity_ - offset_) return false;
  length_ = static_cast<uint32_t>(length);
  return true;
}

uint8_t* Packet::prepend(size_t n) {
  if (n > offset_) return nullptr;
  offset_ -= static_cast<uint32_t>(n);
  length_ += static_cast<uint32_t>(n);
  return data();
}

bool Packet::trim_front(size_t n) {
  if (n > length_) return false;
  offset_ += static_cast<uint32_t>(n);
  length_ -= static_cast<uint32_t>(n);
  return true;
}

}  // namespace hyperscsi::io

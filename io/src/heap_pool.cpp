#include "hyperscsi/io/heap_pool.h"

#include <memory>
#include <mutex>
#include <vector>

namespace hyperscsi::io {

// The real pool. Packets point at the Core (not at the HeapPacketPool) so
// that the storage can outlive the owning object until the last packet is
// released.
class HeapPacketPool::Core final : public PacketPool {
 public:
  Core(size_t count, size_t mtu)
      : count_(count),
        buffer_size_(kHeadroom + mtu + kFrameOverhead),
        storage_(new uint8_t[count * buffer_size_]) {  // not zeroed: untouched pages stay free
    free_.reserve(count);
    for (size_t i = count; i-- > 0;) free_.push_back(storage_.get() + i * buffer_size_);
  }

  Packet alloc() override {
    uint8_t* buf = nullptr;
    {
      std::lock_guard lock(mu_);
      if (free_.empty()) return {};
      buf = free_.back();
      free_.pop_back();
    }
    return Packet(this, nullptr, buf, static_cast<uint32_t>(buffer_size_),
                  static_cast<uint32_t>(kHeadroom));
  }

  void release(void* /*cookie*/, uint8_t* buffer) noexcept override {
    bool destroy = false;
    {
      std::lock_guard lock(mu_);
      free_.push_back(buffer);  // capacity reserved up front: cannot throw
      destroy = detached_ && free_.size() == count_;
    }
    if (destroy) delete this;
  }

  // The owner is going away; free now if nothing is lent out.
  void detach() {
    bool destroy = false;
    {
      std::lock_guard lock(mu_);
      detached_ = true;
      destroy = free_.size() == count_;
    }
    if (destroy) delete this;
  }

  size_t available() const {
    std::lock_guard lock(mu_);
    return free_.size();
  }

  const size_t count_;
  const size_t buffer_size_;

 private:
  std::unique_ptr<uint8_t[]> storage_;
  mutable std::mutex mu_;
  std::vector<uint8_t*> free_;
  bool detached_ = false;
};

HeapPacketPool::HeapPacketPool(size_t count, size_t mtu) : core_(new Core(count, mtu)) {}
HeapPacketPool::~HeapPacketPool() {
  core_->detach();
}

Packet HeapPacketPool::alloc() {
  return core_->alloc();
}
void HeapPacketPool::release(void* cookie, uint8_t* buffer) noexcept {
  core_->release(cookie, buffer);
}
size_t HeapPacketPool::capacity() const {
  return core_->count_;
}
size_t HeapPacketPool::available() const {
  return core_->available();
}
size_t HeapPacketPool::buffer_size() const {
  return core_->buffer_size_;
}

}  // namespace hyperscsi::io

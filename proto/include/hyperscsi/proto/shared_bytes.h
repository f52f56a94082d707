// SharedBytes: an immutable byte range kept alive by a shared owner, so that a
// reply PDU is built once and then held by both the reply cache (for a
// replay) and the connection (until every fragment is acknowledged) without
// a copy for each (issue 16: a 128 KiB read reply was copied for the cache).
//
// The owner is type-erased (shared_ptr<const void>): a std::vector taken over
// by share_bytes(), or a buffer that was never zero-filled (a READ's data,
// written whole by the store: issue 20, the memset of every read cost as much
// CPU as a third of the store's own copy). A slice shares the owner, so a
// port may hold one frame's payload until the kernel has taken it.
//
// Thread-safety: the bytes never change once shared; the count is atomic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace hyperscsi::proto {

class SharedBytes {
 public:
  SharedBytes() = default;
  // `bytes` must stay valid while `owner` lives.
  SharedBytes(std::shared_ptr<const void> owner, std::span<const uint8_t> bytes)
      : owner_(std::move(owner)), bytes_(bytes) {}

  // Null: no owner (a default-constructed value). Empty but not null: a
  // shared empty PDU.
  explicit operator bool() const { return owner_ != nullptr; }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  std::span<const uint8_t> span() const { return bytes_; }
  std::span<const uint8_t>::iterator begin() const { return bytes_.begin(); }
  std::span<const uint8_t>::iterator end() const { return bytes_.end(); }
  // [offset, offset + length) of these bytes, keeping the same owner.
  SharedBytes slice(size_t offset, size_t length) const {
    return SharedBytes(owner_, bytes_.subspan(offset, length));
  }
  const std::shared_ptr<const void>& owner() const { return owner_; }
  void reset() {
    owner_.reset();
    bytes_ = {};
  }

 private:
  std::shared_ptr<const void> owner_;
  std::span<const uint8_t> bytes_;
};

// Takes `bytes` over (no copy).
inline SharedBytes share_bytes(std::vector<uint8_t>&& bytes) {
  auto owner = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  const std::span<const uint8_t> view(*owner);
  return SharedBytes(std::move(owner), view);
}

}  // namespace hyperscsi::proto

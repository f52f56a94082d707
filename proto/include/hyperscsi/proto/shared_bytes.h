// SharedBytes: an immutable byte buffer shared by reference count, so that a
// reply PDU is built once and then held by both the reply cache (for a
// replay) and the connection (until every fragment is acknowledged) without
// a copy for each (issue 16: a 128 KiB read reply was copied for the cache).
// Thread-safety: the bytes never change once shared; the count is atomic.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace hyperscsi::proto {

using SharedBytes = std::shared_ptr<const std::vector<uint8_t>>;

// Takes `bytes` over (no copy).
inline SharedBytes share_bytes(std::vector<uint8_t>&& bytes) {
  return std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
}

}  // namespace hyperscsi::proto

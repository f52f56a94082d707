// 32-bit sequence-number arithmetic (RFC 1982 serial numbers): comparisons stay
// correct across wraparound as long as the two numbers are less than 2^31 apart,
// which the receive window (at most 65535 frames) guarantees.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace hyperscsi::proto {

// Signed distance a - b, modulo 2^32: negative when a is "before" b.
constexpr int32_t seq_diff(uint32_t a, uint32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a - b));
}
constexpr bool seq_lt(uint32_t a, uint32_t b) {
  return seq_diff(a, b) < 0;
}
constexpr bool seq_leq(uint32_t a, uint32_t b) {
  return seq_diff(a, b) <= 0;
}
constexpr bool seq_gt(uint32_t a, uint32_t b) {
  return seq_diff(a, b) > 0;
}
constexpr bool seq_geq(uint32_t a, uint32_t b) {
  return seq_diff(a, b) >= 0;
}
// The later of two sequence numbers.
constexpr uint32_t seq_max(uint32_t a, uint32_t b) {
  return seq_lt(a, b) ? b : a;
}

}  // namespace hyperscsi::proto

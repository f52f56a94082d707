// Self-checking test frames shared by the DPDK peer and the tests:
// dst(6) src(6) type(2) "HSDK" seq(4, BE) length(4, BE) pattern...
// Byte k of the pattern (k counted from the frame start) is (seq * 7 + k) & 0xFF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace hyperscsi::dpdk::testing {

inline constexpr size_t kTestHeader = 26;
inline constexpr size_t kMinTestFrame = 60;

inline void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
inline uint32_t get_be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}

// Writes an untagged test frame of `len` (>= kTestHeader) bytes into out.
inline void build_frame(uint8_t* out, size_t len, const uint8_t dst[6], const uint8_t src[6],
                        uint16_t ethertype, uint32_t seq) {
  std::memcpy(out, dst, 6);
  std::memcpy(out + 6, src, 6);
  out[12] = static_cast<uint8_t>(ethertype >> 8);
  out[13] = static_cast<uint8_t>(ethertype);
  std::memcpy(out + 14, "HSDK", 4);
  put_be32(out + 18, seq);
  put_be32(out + 22, static_cast<uint32_t>(len));
  for (size_t k = kTestHeader; k < len; ++k) out[k] = static_cast<uint8_t>(seq * 7 + k);
}

// Checks an untagged frame; returns its seq or -1 when malformed.
inline int64_t check_frame(std::span<const uint8_t> f) {
  if (f.size() < kTestHeader || std::memcmp(f.data() + 14, "HSDK", 4) != 0) return -1;
  const uint32_t seq = get_be32(f.data() + 18);
  if (get_be32(f.data() + 22) != f.size()) return -1;
  for (size_t k = kTestHeader; k < f.size(); ++k)
    if (f[k] != static_cast<uint8_t>(seq * 7 + k)) return -1;
  return seq;
}

}  // namespace hyperscsi::dpdk::testing

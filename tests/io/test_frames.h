// Test helpers: build and inspect HyperSCSI-typed Ethernet frames by hand.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

#include "hyperscsi/io/port.h"

namespace hyperscsi::io::testing {

inline constexpr uint16_t kHsEtherType = 0x889A;

// Fills `pkt` with a frame of `size` bytes (>= 24): dst, src, EtherType, the
// 5-byte HyperSCSI common header (version 2, opcode 0x21 ack) and a 32-bit
// sequence number at byte 19; the rest is a pattern derived from `seq`.
inline bool fill_frame(Packet& pkt, const MacAddress& dst, const MacAddress& src, uint32_t seq,
                       size_t size, uint16_t ether_type = kHsEtherType) {
  if (size < 24 || !pkt.resize(size)) return false;
  uint8_t* p = pkt.data();
  std::memcpy(p, dst.data(), 6);
  std::memcpy(p + 6, src.data(), 6);
  p[12] = static_cast<uint8_t>(ether_type >> 8);
  p[13] = static_cast<uint8_t>(ether_type);
  p[14] = 0x00;  // reserved + tag high bits
  p[15] = 0x04;  // last fragment
  p[16] = 0x00;  // fragment
  p[17] = 0x02;  // version
  p[18] = 0x21;  // opcode: ack
  p[19] = static_cast<uint8_t>(seq >> 24);
  p[20] = static_cast<uint8_t>(seq >> 16);
  p[21] = static_cast<uint8_t>(seq >> 8);
  p[22] = static_cast<uint8_t>(seq);
  for (size_t i = 23; i < size; ++i) p[i] = static_cast<uint8_t>(seq * 31 + i);
  return true;
}

inline uint32_t frame_seq(const Packet& pkt) {
  const uint8_t* p = pkt.data();
  return (uint32_t{p[19]} << 24) | (uint32_t{p[20]} << 16) | (uint32_t{p[21]} << 8) | p[22];
}

// True if the payload pattern matches what fill_frame wrote for this seq.
inline bool frame_intact(const Packet& pkt) {
  if (pkt.size() < 24) return false;
  const uint32_t seq = frame_seq(pkt);
  for (size_t i = 23; i < pkt.size(); ++i)
    if (pkt.data()[i] != static_cast<uint8_t>(seq * 31 + i)) return false;
  return pkt.data()[12] == 0x88 && pkt.data()[13] == 0x9A;
}

}  // namespace hyperscsi::io::testing

// Internal: Ethernet/802.1Q helpers shared by the backends. Explicit byte
// loads and stores only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "hyperscsi/io/packet.h"

namespace hyperscsi::io::detail {

inline constexpr uint16_t kEtherTypeHyperScsi = 0x889A;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;
inline constexpr size_t kEthHeader = 14;
inline constexpr size_t kVlanTag = 4;

inline uint16_t load_be16(const uint8_t* p) {
  return static_cast<uint16_t>((static_cast<uint16_t>(p[0]) << 8) | p[1]);
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

// EtherType of an untagged frame, 0 if too short.
inline uint16_t ether_type(const uint8_t* frame, size_t len) {
  return len >= kEthHeader ? load_be16(frame + 12) : 0;
}

// Inserts an 802.1Q tag (TCI = pcp<<13 | vid) after the MAC addresses, using
// the packet's headroom. False if there is no headroom or the frame is short.
inline bool insert_vlan(Packet& pkt, uint16_t vid, uint8_t pcp) {
  if (pkt.size() < 12) return false;
  uint8_t* p = pkt.prepend(kVlanTag);
  if (p == nullptr) return false;
  std::memmove(p, p + kVlanTag, 12);
  store_be16(p + 12, kEtherTypeVlan);
  store_be16(p + 14, static_cast<uint16_t>((static_cast<uint16_t>(pcp & 7) << 13) | (vid & 0xfff)));
  return true;
}

// Removes an 802.1Q tag in place (MACs move forward by 4 bytes).
inline bool strip_vlan(Packet& pkt) {
  if (pkt.size() < kEthHeader + kVlanTag) return false;
  uint8_t* p = pkt.data();
  std::memmove(p + kVlanTag, p, 12);
  return pkt.trim_front(kVlanTag);
}

}  // namespace hyperscsi::io::detail

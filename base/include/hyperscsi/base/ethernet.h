// Ethernet and 802.1Q header helpers shared by the packet backends (io/'s
// AF_PACKET, libpcap and in-memory ports, dpdk/'s poll-mode port): the
// EtherTypes and sizes, and the byte moves that insert or remove a VLAN tag.
// Explicit byte loads and stores only; header-only, no state, so safe from
// any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace hyperscsi::base::eth {

inline constexpr uint16_t kEtherTypeHyperScsi = 0x889A;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;
inline constexpr size_t kHeaderSize = 14;   // destination, source, EtherType
inline constexpr size_t kVlanTagSize = 4;   // TPID 0x8100 + TCI
inline constexpr size_t kMacPairSize = 12;  // destination + source

inline uint16_t load_be16(const uint8_t* p) {
  return static_cast<uint16_t>((static_cast<uint16_t>(p[0]) << 8) | p[1]);
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

// EtherType of an untagged frame, 0 if too short.
inline uint16_t ether_type(const uint8_t* frame, size_t len) {
  return len >= kHeaderSize ? load_be16(frame + 12) : 0;
}

enum class Verdict { kDeliverUntagged, kDeliverTagged, kDrop };

// Classifies a received frame: HyperSCSI untagged, HyperSCSI tagged with
// `vlan_id` (0 = priority tag only), or anything else (drop). Bounded by len.
inline Verdict classify(const uint8_t* frame, size_t len, uint16_t vlan_id) {
  if (len < kHeaderSize) return Verdict::kDrop;
  const uint16_t type = load_be16(frame + 12);
  if (type == kEtherTypeHyperScsi) return Verdict::kDeliverUntagged;
  if (type != kEtherTypeVlan || len < kHeaderSize + kVlanTagSize) return Verdict::kDrop;
  const uint16_t vid = load_be16(frame + 14) & 0x0FFF;
  if (vid != vlan_id || load_be16(frame + 16) != kEtherTypeHyperScsi) return Verdict::kDrop;
  return Verdict::kDeliverTagged;
}

// Writes the 802.1Q tag (TCI = priority<<13 | vlan_id) into a frame whose
// MAC pair starts 4 bytes later than `frame` (room was prepended): the MACs
// are moved down to `frame` and the tag goes after them.
inline void insert_tag_after_prepend(uint8_t* frame, uint16_t vlan_id, uint8_t priority) {
  std::memmove(frame, frame + kVlanTagSize, kMacPairSize);
  store_be16(frame + 12, kEtherTypeVlan);
  store_be16(frame + 14, static_cast<uint16_t>((static_cast<uint16_t>(priority & 0x7) << 13) |
                                               (vlan_id & 0x0FFF)));
}

// Moves the MAC pair over the tag; the untagged frame then starts at frame + 4.
inline void remove_tag(uint8_t* frame) {
  std::memmove(frame + kVlanTagSize, frame, kMacPairSize);
}

}  // namespace hyperscsi::base::eth

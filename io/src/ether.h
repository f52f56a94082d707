// Internal: the Ethernet/802.1Q helpers of io's backends. The header
// layout and the tag moves are base's (hyperscsi/base/ethernet.h, shared
// with dpdk/); what is here works on an io::Packet (its headroom).
#pragma once

#include <cstddef>
#include <cstdint>

#include "hyperscsi/base/ethernet.h"
#include "hyperscsi/io/packet.h"

namespace hyperscsi::io::detail {

using base::eth::ether_type;
using base::eth::kEtherTypeHyperScsi;
using base::eth::kEtherTypeVlan;
using base::eth::load_be16;
using base::eth::store_be16;
inline constexpr size_t kEthHeader = base::eth::kHeaderSize;
inline constexpr size_t kVlanTag = base::eth::kVlanTagSize;

// Inserts an 802.1Q tag (TCI = pcp<<13 | vid) after the MAC addresses, using
// the packet's headroom. False if there is no headroom or the frame is short.
inline bool insert_vlan(Packet& pkt, uint16_t vid, uint8_t pcp) {
  if (pkt.size() < base::eth::kMacPairSize) return false;
  uint8_t* p = pkt.prepend(kVlanTag);
  if (p == nullptr) return false;
  base::eth::insert_tag_after_prepend(p, vid, pcp);
  return true;
}

// Removes an 802.1Q tag in place (MACs move forward by 4 bytes).
inline bool strip_vlan(Packet& pkt) {
  if (pkt.size() < kEthHeader + kVlanTag) return false;
  base::eth::remove_tag(pkt.data());
  return pkt.trim_front(kVlanTag);
}

}  // namespace hyperscsi::io::detail

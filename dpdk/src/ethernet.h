// Ethernet/802.1Q header helpers of the DPDK port: base's (shared with io/'s
// backends, hyperscsi/base/ethernet.h) under the names dpdk_port.cpp uses.
#pragma once

#include "hyperscsi/base/ethernet.h"

namespace hyperscsi::dpdk::eth {

using base::eth::classify;
using base::eth::insert_tag_after_prepend;
using base::eth::kEtherTypeHyperScsi;
using base::eth::kEtherTypeVlan;
using base::eth::kHeaderSize;
using base::eth::kMacPairSize;
using base::eth::kVlanTagSize;
using base::eth::load_be16;
using base::eth::remove_tag;
using base::eth::store_be16;
using base::eth::Verdict;

}  // namespace hyperscsi::dpdk::eth

// Access lists: which initiators may see a LUN, by initiator name and MAC.
//
// A list is a set of entries; an initiator matches an entry when every field
// the entry sets matches (name only, MAC only, or both). An empty list admits
// everyone. The engine hides a LUN an initiator may not see: it is left out of
// discovery replies and REPORT LUNS, and commands to it get CHECK CONDITION
// ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED (05/25/00), exactly as for a LUN
// that does not exist, so a denied initiator learns nothing about it.
// Thread-safety: plain values and pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hyperscsi/proto/frame.h"

namespace hyperscsi::engine {

using proto::MacAddress;

struct AccessEntry {
  std::string initiator;          // empty: any initiator name
  std::optional<MacAddress> mac;  // empty: any MAC
  bool operator==(const AccessEntry&) const = default;
};

struct AccessList {
  std::vector<AccessEntry> entries;  // empty: open to every initiator
  bool allows(std::string_view initiator, const MacAddress& mac) const;
  bool open() const { return entries.empty(); }
  bool operator==(const AccessList&) const = default;
};

// "02:00:5e:10:00:01" (also '-' separated); nullopt if malformed.
std::optional<MacAddress> parse_mac(std::string_view text);
std::string format_mac(const MacAddress& mac);

}  // namespace hyperscsi::engine

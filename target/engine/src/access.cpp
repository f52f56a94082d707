#include "hyperscsi/engine/access.h"

namespace hyperscsi::engine {

bool AccessList::allows(std::string_view initiator, const MacAddress& mac) const {
  if (entries.empty()) return true;
  for (const AccessEntry& e : entries) {
    if (!e.initiator.empty() && e.initiator != initiator) continue;
    if (e.mac && *e.mac != mac) continue;
    return true;
  }
  return false;
}

}  // namespace hyperscsi::engine

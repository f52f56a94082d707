// Access lists: which initiators may see a LUN, by initiator name and MAC.
//
// A list is a set of entries; an initiator matches an entry when every field
// the entry sets matches (name only, MAC only, or both). An empty list admits
// everyone. The engine hides a LUN an initiator may not see: it is left out of
// discovery replies and REPORT LUNS, and commands to it get CHECK CONDITION
// ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED (05/25/00), exactly as for a LUN
// that does not exist, so a denied initiator learns nothing about it. The
// engine's scsi::Device<AccessList> asks admission() per command.
// Thread-safety: plain values and pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hyperscsi/base/mac.h"
#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/scsi/device.h"

namespace hyperscsi::engine {

using proto::MacAddress;

// An initiator as the access lists see it: its session's name, MAC and security.
struct Initiator {
  std::string name;
  MacAddress mac{};
  bool authenticated = false;
  proto::Protection protection = proto::Protection::kOff;
};

struct AccessEntry {
  std::string initiator;          // empty: any initiator name
  std::optional<MacAddress> mac;  // empty: any MAC
  bool operator==(const AccessEntry&) const = default;
};

// Who may see a LUN: the name/MAC entries (spoofable by anyone on the
// segment) and, stronger, whether the session must have authenticated with a
// shared secret and which per-frame protection it must use (auth.h).
struct AccessList {
  std::vector<AccessEntry> entries;  // empty: open to every initiator
  bool auth_required = false;        // hidden from sessions that did not authenticate
  proto::Protection protection = proto::Protection::kOff;  // weakest level a session needs
  bool allows(std::string_view initiator, const MacAddress& mac) const;
  // Authentication is needed (explicitly, or implied by a protection level).
  bool needs_auth() const { return auth_required || protection != proto::Protection::kOff; }
  // What scsi::Device asks: admitted, hidden by name/MAC, or allowed by
  // name/MAC but the session's security does not suffice.
  scsi::Admission admission(const Initiator& who) const {
    return admission(who.name, who.mac, who.authenticated, who.protection);
  }
  scsi::Admission admission(std::string_view initiator, const MacAddress& mac, bool authenticated,
                            proto::Protection session_protection) const {
    if (!allows(initiator, mac)) return scsi::Admission::kHidden;
    if ((!authenticated && needs_auth()) || session_protection < protection)
      return scsi::Admission::kNeedsAuth;
    return scsi::Admission::kAdmitted;
  }
  // allows() and the session's security suffices.
  bool admits(std::string_view initiator, const MacAddress& mac, bool authenticated,
              proto::Protection session_protection) const {
    return admission(initiator, mac, authenticated, session_protection) ==
           scsi::Admission::kAdmitted;
  }
  bool open() const { return entries.empty() && !needs_auth(); }
  bool operator==(const AccessList&) const = default;
};

// MAC text ("02:00:5e:10:00:01", also '-' separated): base/mac.h.
using base::format_mac;
using base::parse_mac;

}  // namespace hyperscsi::engine

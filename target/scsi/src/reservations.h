// Persistent reservations (SPC-4 5.13) and RESERVE(6)/RELEASE(6) for one
// logical unit. Registrations and reservations belong to initiator ports
// (initiator names). Single-threaded (the LU's owner thread). Not persisted
// across restarts (APTPL is not supported).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hyperscsi/scsi/sense.h"

namespace hyperscsi::scsi {

// How a command touches the logical unit, for conflict checks.
enum class AccessClass : std::uint8_t {
  kAlways,  // INQUIRY, REPORT LUNS, REQUEST SENSE, REPORT SUPPORTED OPCODES
  kInfo,    // TEST UNIT READY, READ CAPACITY, PERSISTENT RESERVE IN/OUT
  kRead,    // reads of the medium or of mode data
  kWrite,   // writes, unmap, cache sync, mode select, start/stop
  kLegacy,  // RESERVE(6) / RELEASE(6)
};

namespace pr_type {
inline constexpr std::uint8_t kWriteExclusive = 1;
inline constexpr std::uint8_t kExclusiveAccess = 3;
inline constexpr std::uint8_t kWriteExclusiveRegistrantsOnly = 5;
inline constexpr std::uint8_t kExclusiveAccessRegistrantsOnly = 6;
}  // namespace pr_type

class Reservations {
 public:
  // True if a command of class `access` from `initiator` must get RESERVATION CONFLICT.
  bool conflicts(const std::string& initiator, AccessClass access, std::uint8_t opcode) const;

  struct OutcomeOut {
    std::uint8_t status = 0;             // GOOD, CHECK CONDITION or RESERVATION CONFLICT
    std::optional<Sense> sense;          // with CHECK CONDITION
    std::vector<std::string> preempted;  // initiators whose registration was removed
    std::vector<std::string> released;   // registrants told the reservation went away
  };
  // PERSISTENT RESERVE OUT. `params` is the parameter list (exactly as sent).
  OutcomeOut persistent_out(const std::string& initiator, std::uint8_t service_action,
                            std::uint8_t scope, std::uint8_t type,
                            std::span<const std::uint8_t> params);
  // PERSISTENT RESERVE IN data (untruncated) or a sense for a bad service action.
  std::optional<std::vector<std::uint8_t>> persistent_in(std::uint8_t service_action) const;

  // RESERVE(6)/RELEASE(6); return false for a reservation conflict.
  bool reserve6(const std::string& initiator);
  bool release6(const std::string& initiator);
  // LU reset: releases RESERVE(6) reservations (persistent ones survive).
  void reset_legacy() { legacy_holder_.reset(); }

  std::uint32_t generation() const { return generation_; }

 private:
  std::optional<std::uint64_t> key_of(const std::string& initiator) const;
  bool registered(const std::string& initiator) const { return key_of(initiator).has_value(); }
  bool registrants_only() const {
    return type_ == pr_type::kWriteExclusiveRegistrantsOnly ||
           type_ == pr_type::kExclusiveAccessRegistrantsOnly;
  }
  // Access rights of a reservation holder (all registrants for *RO types).
  bool has_holder_rights(const std::string& initiator) const;
  void unregister(const std::string& initiator, OutcomeOut& out);

  std::vector<std::pair<std::string, std::uint64_t>> registrations_;  // registration order
  std::optional<std::string> holder_;
  std::uint8_t type_ = 0;
  std::uint32_t generation_ = 0;
  std::optional<std::string> legacy_holder_;
};

}  // namespace hyperscsi::scsi

#include "reservations.h"

#include <algorithm>

#include "cdb.h"
#include "hyperscsi/scsi/opcodes.h"

namespace hyperscsi::scsi {
namespace {
constexpr std::uint8_t kSaRegister = 0x00;
constexpr std::uint8_t kSaReserve = 0x01;
constexpr std::uint8_t kSaRelease = 0x02;
constexpr std::uint8_t kSaClear = 0x03;
constexpr std::uint8_t kSaPreempt = 0x04;
constexpr std::uint8_t kSaPreemptAndAbort = 0x05;
constexpr std::uint8_t kSaRegisterAndIgnore = 0x06;

constexpr std::uint8_t kSaReadKeys = 0x00;
constexpr std::uint8_t kSaReadReservation = 0x01;
constexpr std::uint8_t kSaReportCapabilities = 0x02;

bool valid_type(std::uint8_t t) {
  return t == pr_type::kWriteExclusive || t == pr_type::kExclusiveAccess ||
         t == pr_type::kWriteExclusiveRegistrantsOnly ||
         t == pr_type::kExclusiveAccessRegistrantsOnly;
}

Reservations::OutcomeOut conflict() {
  Reservations::OutcomeOut o;
  o.status = status::kReservationConflict;
  return o;
}
Reservations::OutcomeOut check(Sense s) {
  Reservations::OutcomeOut o;
  o.status = status::kCheckCondition;
  o.sense = s;
  return o;
}
}  // namespace

std::optional<std::uint64_t> Reservations::key_of(const std::string& initiator) const {
  for (const auto& [name, key] : registrations_) {
    if (name == initiator) return key;
  }
  return std::nullopt;
}

bool Reservations::has_holder_rights(const std::string& initiator) const {
  if (!holder_) return false;
  if (registrants_only()) return registered(initiator);
  return *holder_ == initiator;
}

bool Reservations::conflicts(const std::string& initiator, AccessClass access,
                             std::uint8_t opcode) const {
  if (access == AccessClass::kAlways) return false;
  if (access == AccessClass::kLegacy) {
    // RESERVE(6)/RELEASE(6) do not mix with persistent reservations.
    if (!registrations_.empty() || holder_) return true;
    if (legacy_holder_ && *legacy_holder_ != initiator) return opcode != op::kRelease6;
    return false;
  }
  if (legacy_holder_ && *legacy_holder_ != initiator) return true;
  if (!holder_ || access == AccessClass::kInfo) return false;
  if (has_holder_rights(initiator)) return false;
  switch (type_) {
    case pr_type::kWriteExclusive:
    case pr_type::kWriteExclusiveRegistrantsOnly:
      return access == AccessClass::kWrite;
    case pr_type::kExclusiveAccess:
    case pr_type::kExclusiveAccessRegistrantsOnly:
      return access == AccessClass::kWrite || access == AccessClass::kRead;
    default:
      return true;
  }
}

void Reservations::unregister(const std::string& initiator, OutcomeOut& out) {
  registrations_.erase(std::remove_if(registrations_.begin(), registrations_.end(),
                                      [&](const auto& r) { return r.first == initiator; }),
                       registrations_.end());
  // Unregistering the holder releases the reservation (SPC-4 5.13.11.2.3).
  if (holder_ && *holder_ == initiator) {
    if (registrants_only()) {
      for (const auto& r : registrations_) out.released.push_back(r.first);
    }
    holder_.reset();
    type_ = 0;
  }
}

Reservations::OutcomeOut Reservations::persistent_out(const std::string& initiator, std::uint8_t sa,
                                                      std::uint8_t scope, std::uint8_t type,
                                                      std::span<const std::uint8_t> p) {
  if (sa > kSaRegisterAndIgnore) return check(sense::invalid_field_in_cdb(1, 4));
  if (p.size() != 24) return check(sense::parameter_list_length_error());
  const std::uint64_t res_key = be64(p, 0);
  const std::uint64_t sa_key = be64(p, 8);
  const std::uint8_t flags = p[20];
  if (flags & 0x08) return check(sense::invalid_field_in_parameter_list(20, 3));  // SPEC_I_PT
  if (flags & 0x01) return check(sense::invalid_field_in_parameter_list(20, 0));  // APTPL
  const auto my_key = key_of(initiator);

  OutcomeOut out;
  if (sa == kSaRegister || sa == kSaRegisterAndIgnore) {
    if (!my_key) {
      if (sa == kSaRegister && res_key != 0) return conflict();
      if (sa_key != 0) {
        registrations_.emplace_back(initiator, sa_key);
        ++generation_;
      }
      return out;
    }
    if (sa == kSaRegister && res_key != *my_key) return conflict();
    if (sa_key == 0) {
      unregister(initiator, out);
    } else {
      for (auto& r : registrations_) {
        if (r.first == initiator) r.second = sa_key;
      }
    }
    ++generation_;
    return out;
  }

  // Every other service action needs a registration with the matching key.
  if (!my_key || *my_key != res_key) return conflict();
  if (sa == kSaReserve || sa == kSaPreempt || sa == kSaPreemptAndAbort || sa == kSaRelease) {
    if (scope != 0) return check(sense::invalid_field_in_cdb(2, 7));
  }
  const bool needs_type = sa == kSaReserve || sa == kSaRelease ||
                          ((sa == kSaPreempt || sa == kSaPreemptAndAbort) && holder_);
  if (needs_type && !valid_type(type)) return check(sense::invalid_field_in_cdb(2, 3));

  switch (sa) {
    case kSaReserve:
      if (!holder_) {
        holder_ = initiator;
        type_ = type;
        return out;
      }
      if (has_holder_rights(initiator) && type_ == type) return out;
      return conflict();
    case kSaRelease:
      if (!holder_ || !has_holder_rights(initiator)) return out;
      if (type_ != type) return check(sense::invalid_release_of_persistent_reservation());
      if (registrants_only()) {
        for (const auto& r : registrations_) {
          if (r.first != initiator) out.released.push_back(r.first);
        }
      }
      holder_.reset();
      type_ = 0;
      return out;
    case kSaClear:
      for (const auto& r : registrations_) {
        if (r.first != initiator) out.preempted.push_back(r.first);
      }
      registrations_.clear();
      holder_.reset();
      type_ = 0;
      ++generation_;
      return out;
    case kSaPreempt:
    case kSaPreemptAndAbort: {
      // SPC-4 5.13.11.4; sa_key 0 only means something for all-registrants
      // types, which are not offered.
      if (sa_key == 0) return check(sense::invalid_field_in_parameter_list(8));
      const bool takes_reservation = holder_ && key_of(*holder_) == sa_key;
      bool removed_any = false;
      for (auto it = registrations_.begin(); it != registrations_.end();) {
        if (it->second == sa_key && it->first != initiator) {
          out.preempted.push_back(it->first);
          it = registrations_.erase(it);
          removed_any = true;
        } else {
          ++it;
        }
      }
      if (!removed_any && !takes_reservation) return conflict();
      if (takes_reservation) {
        holder_ = initiator;
        type_ = type;
      }
      ++generation_;
      return out;
    }
    default:
      return check(sense::invalid_field_in_cdb(1, 4));
  }
}

std::optional<std::vector<std::uint8_t>> Reservations::persistent_in(std::uint8_t sa) const {
  switch (sa) {
    case kSaReadKeys: {
      std::vector<std::uint8_t> d(8 + 8 * registrations_.size(), 0);
      put32(d, 0, generation_);
      put32(d, 4, static_cast<std::uint32_t>(8 * registrations_.size()));
      for (std::size_t i = 0; i < registrations_.size(); ++i) {
        put64(d, 8 + 8 * i, registrations_[i].second);
      }
      return d;
    }
    case kSaReadReservation: {
      std::vector<std::uint8_t> d(holder_ ? 24 : 8, 0);
      put32(d, 0, generation_);
      if (holder_) {
        put32(d, 4, 16);
        // For RO types the key shown is the holder's (0 would mean all registrants).
        put64(d, 8, key_of(*holder_).value_or(0));
        d[21] = type_ & 0x0F;  // scope 0 (LU)
      }
      return d;
    }
    case kSaReportCapabilities: {
      std::vector<std::uint8_t> d(8, 0);
      put16(d, 0, 8);
      d[2] = 0x10;                       // CRH: RESERVE(6)/RELEASE(6) handled per SPC-4 5.13.3
      d[3] = 0x80;                       // TMV: the type mask is valid
      d[4] = 0x40 | 0x20 | 0x08 | 0x02;  // EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
      d[5] = 0x00;
      return d;
    }
    default:
      return std::nullopt;
  }
}

bool Reservations::reserve6(const std::string& initiator) {
  if (legacy_holder_ && *legacy_holder_ != initiator) return false;
  legacy_holder_ = initiator;
  return true;
}

bool Reservations::release6(const std::string& initiator) {
  // Releasing someone else's (or no) reservation is GOOD and changes nothing.
  if (legacy_holder_ && *legacy_holder_ == initiator) legacy_holder_.reset();
  return true;
}

}  // namespace hyperscsi::scsi

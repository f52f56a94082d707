// SCSI status codes and fixed-format sense data (SPC-4 4.5.3).
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace hyperscsi::scsi {

namespace status {
inline constexpr std::uint8_t kGood = 0x00;
inline constexpr std::uint8_t kCheckCondition = 0x02;
inline constexpr std::uint8_t kBusy = 0x08;
inline constexpr std::uint8_t kReservationConflict = 0x18;
inline constexpr std::uint8_t kTaskSetFull = 0x28;
}  // namespace status

enum class SenseKey : std::uint8_t {
  kNoSense = 0x0,
  kRecoveredError = 0x1,
  kNotReady = 0x2,
  kMediumError = 0x3,
  kHardwareError = 0x4,
  kIllegalRequest = 0x5,
  kUnitAttention = 0x6,
  kDataProtect = 0x7,
  kAbortedCommand = 0xB,
  kMiscompare = 0xE,
};

struct Sense {
  SenseKey key = SenseKey::kNoSense;
  std::uint8_t asc = 0;
  std::uint8_t ascq = 0;
  std::optional<std::uint64_t> information;  // low 32 bits go in the INFORMATION field
  // Sense-key specific field pointer (ILLEGAL REQUEST): byte and optional bit
  // of the CDB (in_cdb) or parameter list that is invalid.
  std::optional<std::uint16_t> field_byte;
  std::optional<std::uint8_t> field_bit;
  bool in_cdb = true;

  bool operator==(const Sense&) const = default;
};

inline constexpr std::size_t kFixedSenseLength = 18;

// 18 bytes of fixed-format, current-error sense data.
std::vector<std::uint8_t> encode_fixed_sense(const Sense& s);
// Parses fixed-format sense (0x70/0x71); nullopt if too short or not fixed format.
std::optional<Sense> decode_fixed_sense(std::span<const std::uint8_t> bytes);

// The sense conditions the SCSI layer reports (key, ASC, ASCQ per SPC-4/SBC-3).
namespace sense {
Sense invalid_opcode();                                                   // 05 20/00
Sense invalid_field_in_cdb(std::uint16_t byte, int bit = -1);             // 05 24/00
Sense invalid_field_in_parameter_list(std::uint16_t byte, int bit = -1);  // 05 26/00
Sense parameter_list_length_error();                                      // 05 1A/00
Sense lba_out_of_range();                                                 // 05 21/00
Sense lun_not_supported();                                                // 05 25/00
Sense saving_parameters_not_supported();                                  // 05 39/00
Sense invalid_release_of_persistent_reservation();                        // 05 26/04
Sense write_protected();                                                  // 07 27/00
Sense space_allocation_failed();                                          // 07 27/07
Sense unrecovered_read_error();                                           // 03 11/00
Sense write_error();                                                      // 03 0C/00
Sense internal_target_failure();                                          // 04 44/00
Sense not_ready_stopped();                                                // 02 04/02
Sense not_ready_manual_intervention();                                    // 02 04/03
Sense command_timeout();                                                  // 0B 2E/02
Sense miscompare(std::uint64_t offset);                                   // 0E 1D/00, INFORMATION
Sense power_on_or_reset();                                                // 06 29/00
Sense lu_reset_occurred();                                                // 06 29/03
Sense capacity_changed();                                                 // 06 2A/09
Sense mode_parameters_changed();                                          // 06 2A/01
Sense reservations_preempted();                                           // 06 2A/03
Sense reservations_released();                                            // 06 2A/04
Sense registrations_preempted();                                          // 06 2A/05
}  // namespace sense

}  // namespace hyperscsi::scsi

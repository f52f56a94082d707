#include "hyperscsi/scsi/sense.h"

namespace hyperscsi::scsi {

std::vector<std::uint8_t> encode_fixed_sense(const Sense& s) {
  std::vector<std::uint8_t> b(kFixedSenseLength, 0);
  b[0] = 0x70;  // current error, fixed format
  if (s.information) {
    b[0] |= 0x80;  // VALID
    const auto v = static_cast<std::uint32_t>(*s.information);
    b[3] = static_cast<std::uint8_t>(v >> 24);
    b[4] = static_cast<std::uint8_t>(v >> 16);
    b[5] = static_cast<std::uint8_t>(v >> 8);
    b[6] = static_cast<std::uint8_t>(v);
  }
  b[2] = static_cast<std::uint8_t>(s.key) & 0x0F;
  b[7] = kFixedSenseLength - 8;  // additional sense length
  b[12] = s.asc;
  b[13] = s.ascq;
  if (s.field_byte) {
    std::uint8_t f = 0x80;  // SKSV
    if (s.in_cdb) f |= 0x40;
    if (s.field_bit) f |= 0x08 | (*s.field_bit & 0x07);  // BPV + bit pointer
    b[15] = f;
    b[16] = static_cast<std::uint8_t>(*s.field_byte >> 8);
    b[17] = static_cast<std::uint8_t>(*s.field_byte);
  }
  return b;
}

std::optional<Sense> decode_fixed_sense(std::span<const std::uint8_t> b) {
  if (b.size() < 14) return std::nullopt;
  const std::uint8_t code = b[0] & 0x7F;
  if (code != 0x70 && code != 0x71) return std::nullopt;
  Sense s;
  s.key = static_cast<SenseKey>(b[2] & 0x0F);
  s.asc = b[12];
  s.ascq = b[13];
  if (b[0] & 0x80) {
    s.information = (std::uint64_t{b[3]} << 24) | (std::uint64_t{b[4]} << 16) |
                    (std::uint64_t{b[5]} << 8) | b[6];
  }
  if (b.size() >= 18 && (b[15] & 0x80)) {
    s.in_cdb = (b[15] & 0x40) != 0;
    if (b[15] & 0x08) s.field_bit = b[15] & 0x07;
    s.field_byte = static_cast<std::uint16_t>((b[16] << 8) | b[17]);
  }
  return s;
}

namespace sense {
namespace {
Sense make(SenseKey k, std::uint8_t asc, std::uint8_t ascq) {
  Sense s;
  s.key = k;
  s.asc = asc;
  s.ascq = ascq;
  return s;
}
Sense with_field(Sense s, std::uint16_t byte, int bit, bool in_cdb) {
  s.field_byte = byte;
  if (bit >= 0) s.field_bit = static_cast<std::uint8_t>(bit);
  s.in_cdb = in_cdb;
  return s;
}
}  // namespace

Sense invalid_opcode() {
  return make(SenseKey::kIllegalRequest, 0x20, 0x00);
}
Sense invalid_field_in_cdb(std::uint16_t byte, int bit) {
  return with_field(make(SenseKey::kIllegalRequest, 0x24, 0x00), byte, bit, true);
}
Sense invalid_field_in_parameter_list(std::uint16_t byte, int bit) {
  return with_field(make(SenseKey::kIllegalRequest, 0x26, 0x00), byte, bit, false);
}
Sense parameter_list_length_error() {
  return make(SenseKey::kIllegalRequest, 0x1A, 0x00);
}
Sense lba_out_of_range() {
  return make(SenseKey::kIllegalRequest, 0x21, 0x00);
}
Sense lun_not_supported() {
  return make(SenseKey::kIllegalRequest, 0x25, 0x00);
}
Sense saving_parameters_not_supported() {
  return make(SenseKey::kIllegalRequest, 0x39, 0x00);
}
Sense invalid_release_of_persistent_reservation() {
  return make(SenseKey::kIllegalRequest, 0x26, 0x04);
}
Sense write_protected() {
  return make(SenseKey::kDataProtect, 0x27, 0x00);
}
Sense space_allocation_failed() {
  return make(SenseKey::kDataProtect, 0x27, 0x07);
}
Sense unrecovered_read_error() {
  return make(SenseKey::kMediumError, 0x11, 0x00);
}
Sense write_error() {
  return make(SenseKey::kMediumError, 0x0C, 0x00);
}
Sense internal_target_failure() {
  return make(SenseKey::kHardwareError, 0x44, 0x00);
}
Sense not_ready_stopped() {
  return make(SenseKey::kNotReady, 0x04, 0x02);
}
Sense not_ready_manual_intervention() {
  return make(SenseKey::kNotReady, 0x04, 0x03);
}
Sense command_timeout() {
  return make(SenseKey::kAbortedCommand, 0x2E, 0x02);
}
Sense miscompare(std::uint64_t offset) {
  Sense s = make(SenseKey::kMiscompare, 0x1D, 0x00);
  s.information = offset;
  return s;
}
Sense power_on_or_reset() {
  return make(SenseKey::kUnitAttention, 0x29, 0x00);
}
Sense lu_reset_occurred() {
  return make(SenseKey::kUnitAttention, 0x29, 0x03);
}
Sense capacity_changed() {
  return make(SenseKey::kUnitAttention, 0x2A, 0x09);
}
Sense mode_parameters_changed() {
  return make(SenseKey::kUnitAttention, 0x2A, 0x01);
}
Sense reservations_preempted() {
  return make(SenseKey::kUnitAttention, 0x2A, 0x03);
}
Sense reservations_released() {
  return make(SenseKey::kUnitAttention, 0x2A, 0x04);
}
Sense registrations_preempted() {
  return make(SenseKey::kUnitAttention, 0x2A, 0x05);
}
}  // namespace sense

}  // namespace hyperscsi::scsi

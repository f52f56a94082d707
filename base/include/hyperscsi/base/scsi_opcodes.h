// SCSI operation codes and service actions (SPC-4, SBC-3) by name: the
// numbers of the standard, shared by the target's SCSI layer (which keeps the
// table of what it implements, hyperscsi/scsi/opcodes.h) and the initiator's
// CDB builders. Here rather than in target/scsi because the initiator must not
// depend on a target library, and not in proto because the HyperSCSI protocol
// carries CDBs as opaque bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hyperscsi::scsi::op {
inline constexpr std::uint8_t kTestUnitReady = 0x00;
inline constexpr std::uint8_t kRequestSense = 0x03;
inline constexpr std::uint8_t kRead6 = 0x08;
inline constexpr std::uint8_t kWrite6 = 0x0A;
inline constexpr std::uint8_t kInquiry = 0x12;
inline constexpr std::uint8_t kModeSelect6 = 0x15;
inline constexpr std::uint8_t kReserve6 = 0x16;
inline constexpr std::uint8_t kRelease6 = 0x17;
inline constexpr std::uint8_t kModeSense6 = 0x1A;
inline constexpr std::uint8_t kStartStopUnit = 0x1B;
inline constexpr std::uint8_t kPreventAllowMediumRemoval = 0x1E;
inline constexpr std::uint8_t kReadCapacity10 = 0x25;
inline constexpr std::uint8_t kRead10 = 0x28;
inline constexpr std::uint8_t kWrite10 = 0x2A;
inline constexpr std::uint8_t kVerify10 = 0x2F;
inline constexpr std::uint8_t kSynchronizeCache10 = 0x35;
inline constexpr std::uint8_t kWriteSame10 = 0x41;
inline constexpr std::uint8_t kUnmap = 0x42;
inline constexpr std::uint8_t kModeSelect10 = 0x55;
inline constexpr std::uint8_t kModeSense10 = 0x5A;
inline constexpr std::uint8_t kPersistentReserveIn = 0x5E;
inline constexpr std::uint8_t kPersistentReserveOut = 0x5F;
inline constexpr std::uint8_t kRead16 = 0x88;
inline constexpr std::uint8_t kCompareAndWrite = 0x89;
inline constexpr std::uint8_t kWrite16 = 0x8A;
inline constexpr std::uint8_t kVerify16 = 0x8F;
inline constexpr std::uint8_t kSynchronizeCache16 = 0x91;
inline constexpr std::uint8_t kWriteSame16 = 0x93;
inline constexpr std::uint8_t kServiceActionIn16 = 0x9E;
inline constexpr std::uint8_t kReportLuns = 0xA0;
inline constexpr std::uint8_t kMaintenanceIn = 0xA3;
inline constexpr std::uint8_t kRead12 = 0xA8;
inline constexpr std::uint8_t kWrite12 = 0xAA;

// Service actions.
inline constexpr std::uint8_t kSaReadCapacity16 = 0x10;          // SERVICE ACTION IN(16)
inline constexpr std::uint8_t kSaGetLbaStatus = 0x12;            // SERVICE ACTION IN(16)
inline constexpr std::uint8_t kSaReportSupportedOpcodes = 0x0C;  // MAINTENANCE IN

// The CDB length an operation code's group implies (SPC-4 4.2.5.1: the top
// three bits): 6, 10, 12 or 16 bytes; 0 for the reserved, vendor-specific and
// variable-length groups. The target's opcode table agrees for every entry
// (tested); the initiator's CDB builders size their CDBs with it.
constexpr std::size_t cdb_length(std::uint8_t opcode) {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}
}  // namespace hyperscsi::scsi::op

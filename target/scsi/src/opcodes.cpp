#include "opcodes.h"

#include "cdb.h"

namespace hyperscsi::scsi {
namespace {

std::vector<OpcodeInfo> build_table() {
  using V = std::vector<std::uint8_t>;
  const V rw10{0xFF, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0x00};
  const V rw12{0xFF, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
  const V rw16{0xFF, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
               0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
  auto with1 = [](V v, std::uint8_t b1) {
    v[1] = b1;
    return v;
  };
  std::vector<OpcodeInfo> t = {
      {op::kTestUnitReady, false, 0, {0xFF, 0, 0, 0, 0, 0}, true},
      {op::kRequestSense, false, 0, {0xFF, 0x01, 0, 0, 0xFF, 0}},
      {op::kRead6, false, 0, {0xFF, 0x1F, 0xFF, 0xFF, 0xFF, 0}, true},
      {op::kWrite6, false, 0, {0xFF, 0x1F, 0xFF, 0xFF, 0xFF, 0}},
      {op::kInquiry, false, 0, {0xFF, 0x01, 0xFF, 0xFF, 0xFF, 0}, true},
      {op::kModeSelect6, false, 0, {0xFF, 0x11, 0, 0, 0xFF, 0}},
      {op::kReserve6, false, 0, {0xFF, 0, 0, 0, 0, 0}},
      {op::kRelease6, false, 0, {0xFF, 0, 0, 0, 0, 0}},
      {op::kModeSense6, false, 0, {0xFF, 0x08, 0xFF, 0xFF, 0xFF, 0}, true},
      {op::kStartStopUnit, false, 0, {0xFF, 0x01, 0, 0, 0x03, 0}},
      {op::kPreventAllowMediumRemoval, false, 0, {0xFF, 0, 0, 0, 0x03, 0}},
      {op::kReadCapacity10, false, 0, {0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0}, true},
      {op::kRead10, false, 0, rw10, true},
      {op::kWrite10, false, 0, rw10},
      {op::kVerify10, false, 0, with1(rw10, 0x16)},
      {op::kSynchronizeCache10, false, 0, with1(rw10, 0x02)},
      {op::kWriteSame10, false, 0, with1(rw10, 0x08)},
      {op::kUnmap, false, 0, {0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0}},
      {op::kModeSelect10, false, 0, {0xFF, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0}},
      {op::kModeSense10, false, 0, {0xFF, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0}, true},
      {op::kRead16, false, 0, rw16, true},
      {op::kCompareAndWrite,
       false,
       0,
       {0xFF, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0, 0}},
      {op::kWrite16, false, 0, rw16},
      {op::kVerify16, false, 0, with1(rw16, 0x16)},
      {op::kSynchronizeCache16, false, 0, with1(rw16, 0x02)},
      {op::kWriteSame16, false, 0, with1(rw16, 0x09)},
      {op::kServiceActionIn16,
       true,
       op::kSaReadCapacity16,
       {0xFF, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0},
       true},
      {op::kServiceActionIn16,
       true,
       op::kSaGetLbaStatus,
       {0xFF, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0},
       true},
      {op::kReportLuns, false, 0, {0xFF, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0}, true},
      {op::kMaintenanceIn,
       true,
       op::kSaReportSupportedOpcodes,
       {0xFF, 0x1F, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0}},
      {op::kRead12, false, 0, rw12, true},
      {op::kWrite12, false, 0, rw12},
  };
  for (std::uint8_t sa = 0; sa <= 2; ++sa) {
    t.push_back({op::kPersistentReserveIn, true, sa, {0xFF, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0}});
  }
  for (std::uint8_t sa = 0; sa <= 6; ++sa) {
    t.push_back(
        {op::kPersistentReserveOut, true, sa, {0xFF, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0}});
  }
  return t;
}

std::vector<std::uint8_t> one_command(const OpcodeInfo& info) {
  const auto n = static_cast<std::uint16_t>(info.usage.size());
  // reserved, SUPPORT = 011b (supported, standard), CDB SIZE, usage map
  std::vector<std::uint8_t> d{0x00, 0x03, static_cast<std::uint8_t>(n >> 8),
                              static_cast<std::uint8_t>(n)};
  d.insert(d.end(), info.usage.begin(), info.usage.end());
  d[4] = info.opcode;  // the map's first byte is the operation code itself
  // For service-action commands the SA field of the map holds the SA value.
  if (info.has_sa && d.size() > 5) d[5] = static_cast<std::uint8_t>(info.sa & 0x1F);
  return d;
}

}  // namespace

const std::vector<OpcodeInfo>& supported_opcodes() {
  static const std::vector<OpcodeInfo> table = build_table();
  return table;
}

bool is_reexecutable(std::uint8_t opcode) {
  bool any = false;
  for (const auto& e : supported_opcodes()) {
    if (e.opcode != opcode) continue;
    if (!e.reexecutable) return false;
    any = true;
  }
  return any;
}

std::variant<std::vector<std::uint8_t>, Sense> report_supported_opcodes(
    std::span<const std::uint8_t> cdb) {
  if (cdb[2] & 0x80) return sense::invalid_field_in_cdb(2, 7);  // RCTD: no timeout descriptors
  const std::uint8_t options = cdb[2] & 0x07;
  const std::uint8_t req_op = cdb[3];
  const std::uint16_t req_sa = be16(cdb, 4);
  const auto& table = supported_opcodes();
  if (options == 0) {
    std::vector<std::uint8_t> d(4, 0);
    for (const auto& e : table) {
      const std::size_t at = d.size();
      d.resize(at + 8, 0);
      d[at] = e.opcode;
      put16(d, at + 2, e.has_sa ? e.sa : 0);
      d[at + 5] = e.has_sa ? 0x01 : 0x00;  // SERVACTV
      put16(d, at + 6, static_cast<std::uint16_t>(e.usage.size()));
    }
    put32(d, 0, static_cast<std::uint32_t>(d.size() - 4));
    return d;
  }
  if (options > 3) return sense::invalid_field_in_cdb(2, 2);
  bool opcode_has_sa = false;
  for (const auto& e : table) {
    if (e.opcode == req_op && e.has_sa) opcode_has_sa = true;
  }
  if (options == 1 && opcode_has_sa) return sense::invalid_field_in_cdb(3);
  if (options == 2 && !opcode_has_sa) {
    // Unknown opcodes report "not supported"; known ones without SAs are an error.
    for (const auto& e : table) {
      if (e.opcode == req_op) return sense::invalid_field_in_cdb(3);
    }
  }
  const bool want_sa = options == 2 || (options == 3 && opcode_has_sa);
  for (const auto& e : table) {
    if (e.opcode != req_op) continue;
    if (want_sa && e.sa != req_sa) continue;
    return one_command(e);
  }
  std::vector<std::uint8_t> d(4, 0);
  d[1] = 0x01;  // not supported
  return d;
}

}  // namespace hyperscsi::scsi

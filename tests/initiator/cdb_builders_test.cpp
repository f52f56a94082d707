// The initiator's CDB builders against the target's opcode table (one table,
// base/scsi_opcodes.h names and lengths): every CDB they build names an
// implemented opcode and service action, has the table's length, and sets no
// bit the table's CDB usage map says the target ignores.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/scsi/opcodes.h"

namespace hyperscsi {
namespace {

const scsi::OpcodeInfo* entry_for(const std::vector<uint8_t>& cdb) {
  for (const auto& e : scsi::supported_opcodes()) {
    if (e.opcode != cdb[0]) continue;
    if (e.has_sa && cdb.size() > 1 && e.sa != (cdb[1] & 0x1F)) continue;
    return &e;
  }
  return nullptr;
}

TEST(CdbBuilders, EveryCdbFitsTheTargetsOpcodeTable) {
  namespace b = initiator::scsi;
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> built = {
      {"read10", b::read_cdb(100, 8)},
      {"read16", b::read_cdb(1ull << 33, 8)},
      {"write10", b::write_cdb(100, 8, false)},
      {"write10 fua", b::write_cdb(100, 8, true)},
      {"write16 fua", b::write_cdb(1ull << 33, 70000, true)},
      {"inquiry", b::inquiry_cdb(96)},
      {"inquiry vpd", b::inquiry_vpd_cdb(0x83, 255)},
      {"read capacity 10", b::read_capacity10_cdb()},
      {"read capacity 16", b::read_capacity16_cdb(32)},
      {"mode sense 6", b::mode_sense6_cdb(255)},
      {"synchronize cache", b::synchronize_cache_cdb()},
      {"write same 16", b::write_same16_cdb(8, 16)},
      {"unmap", b::unmap_cdb(24)},
  };
  for (const auto& [name, cdb] : built) {
    SCOPED_TRACE(name);
    ASSERT_FALSE(cdb.empty());
    EXPECT_EQ(cdb.size(), scsi::op::cdb_length(cdb[0]));
    const scsi::OpcodeInfo* e = entry_for(cdb);
    ASSERT_NE(e, nullptr) << "opcode " << int(cdb[0]) << " not implemented by the target";
    ASSERT_EQ(cdb.size(), e->usage.size());
    for (size_t i = 1; i < cdb.size(); ++i) {
      const uint8_t allowed = (e->has_sa && i == 1) ? uint8_t(e->usage[i] | 0x1F) : e->usage[i];
      EXPECT_EQ(cdb[i] & ~allowed, 0) << "byte " << i;
    }
  }
}

}  // namespace
}  // namespace hyperscsi

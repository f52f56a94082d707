// Helpers for driving a LogicalUnit with hand-built CDBs in tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "hyperscsi/scsi/logical_unit.h"
#include "hyperscsi/scsi/lun_map.h"
#include "hyperscsi/store/block_store.h"

namespace hyperscsi::scsi::testing {

using Bytes = std::vector<std::uint8_t>;

inline const Nexus kNexusA{"iqn.test:a", 1};
inline const Nexus kNexusB{"iqn.test:b", 2};
inline const Nexus kNexusC{"iqn.test:c", 3};

// A temp directory removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string file(const std::string& name) const;

 private:
  std::string path_;
};

// Runs one command to completion (draining the store), bounded.
CommandResult run(LogicalUnit& lu, const Bytes& cdb, std::span<const std::uint8_t> data_out = {},
                  std::uint32_t expected_in = 0, const Nexus& nexus = kNexusA);
CommandResult run(LunMap& map, std::uint64_t lun, const Bytes& cdb,
                  std::span<const std::uint8_t> data_out = {}, std::uint32_t expected_in = 0,
                  const Nexus& nexus = kNexusA);
// Consumes the power-on unit attention of `nexus` with a TEST UNIT READY.
void clear_power_on_ua(LogicalUnit& lu, const Nexus& nexus = kNexusA);

std::optional<Sense> sense_of(const CommandResult& r);

// CDB builders (big-endian fields).
Bytes cdb_rw6(std::uint8_t opcode, std::uint32_t lba, std::uint8_t blocks);
Bytes cdb_rw10(std::uint8_t opcode, std::uint32_t lba, std::uint16_t blocks,
               std::uint8_t byte1 = 0);
Bytes cdb_rw12(std::uint8_t opcode, std::uint32_t lba, std::uint32_t blocks,
               std::uint8_t byte1 = 0);
Bytes cdb_rw16(std::uint8_t opcode, std::uint64_t lba, std::uint32_t blocks,
               std::uint8_t byte1 = 0);
Bytes cdb_inquiry(bool evpd, std::uint8_t page, std::uint16_t alloc);
Bytes cdb_pr_out(std::uint8_t sa, std::uint8_t type, std::uint32_t len = 24);
Bytes pr_out_params(std::uint64_t key, std::uint64_t sa_key);
Bytes cdb_pr_in(std::uint8_t sa, std::uint16_t alloc = 1024);

Bytes pattern(std::size_t n, std::uint32_t seed);
std::uint64_t load_be(std::span<const std::uint8_t> b, std::size_t at, std::size_t width);

}  // namespace hyperscsi::scsi::testing

#define EXPECT_GOOD(r)                                                                           \
  do {                                                                                           \
    const auto& r_ = (r);                                                                        \
    EXPECT_EQ(r_.status, ::hyperscsi::scsi::status::kGood)                                       \
        << "sense key/asc/ascq: "                                                                \
        << (r_.sense.size() >= 14                                                                \
                ? std::to_string(r_.sense[2] & 0xF) + "/" + std::to_string(r_.sense[12]) + "/" + \
                      std::to_string(r_.sense[13])                                               \
                : std::string("none"));                                                          \
  } while (0)

#define EXPECT_SENSE(r, KEY_, ASC_, ASCQ_)                            \
  do {                                                                \
    const auto& r_ = (r);                                             \
    EXPECT_EQ(r_.status, ::hyperscsi::scsi::status::kCheckCondition); \
    auto s_ = ::hyperscsi::scsi::testing::sense_of(r_);               \
    ASSERT_TRUE(s_.has_value());                                      \
    EXPECT_EQ(static_cast<int>(s_->key), static_cast<int>(KEY_));     \
    EXPECT_EQ(s_->asc, (ASC_));                                       \
    EXPECT_EQ(s_->ascq, (ASCQ_));                                     \
  } while (0)

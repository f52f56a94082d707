// Seeded random-CDB fuzzing: whatever arrives, the SCSI layer answers with a
// valid status and bounded data, and never crashes or hangs.
#include <chrono>
#include <random>

#include "hyperscsi/scsi/opcodes.h"
#include "scsi_test_util.h"

namespace hyperscsi::scsi::testing {
namespace {

const std::uint8_t kInteresting[] = {op::kTestUnitReady,
                                     op::kRequestSense,
                                     op::kRead6,
                                     op::kWrite6,
                                     op::kInquiry,
                                     op::kModeSelect6,
                                     op::kReserve6,
                                     op::kRelease6,
                                     op::kModeSense6,
                                     op::kStartStopUnit,
                                     op::kReadCapacity10,
                                     op::kRead10,
                                     op::kWrite10,
                                     op::kVerify10,
                                     op::kSynchronizeCache10,
                                     op::kWriteSame10,
                                     op::kUnmap,
                                     op::kModeSelect10,
                                     op::kModeSense10,
                                     op::kPersistentReserveIn,
                                     op::kPersistentReserveOut,
                                     op::kRead16,
                                     op::kCompareAndWrite,
                                     op::kWrite16,
                                     op::kVerify16,
                                     op::kSynchronizeCache16,
                                     op::kWriteSame16,
                                     op::kServiceActionIn16,
                                     op::kReportLuns,
                                     op::kMaintenanceIn,
                                     op::kRead12,
                                     op::kWrite12};

void fuzz(std::uint32_t seed, int iterations, bool file_store) {
  TempDir dir;
  store::StoreOptions o;
  std::string spec = "ram:1M";
  if (file_store) {
    spec = dir.file("fuzz.img");
    o.create_size = 1 << 20;
  }
  LuConfig cfg;
  cfg.max_transfer_bytes = 256 * 1024;
  cfg.max_write_same_blocks = 4096;
  LunMap map;
  ASSERT_TRUE(
      map.add(0, std::make_unique<LogicalUnit>(cfg, std::move(store::open_store(spec, o)).value()))
          .ok());
  std::mt19937 rng(seed);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int good = 0, check = 0, conflict = 0;
  for (int i = 0; i < iterations && std::chrono::steady_clock::now() < deadline; ++i) {
    Bytes cdb(rng() % 20);
    for (auto& b : cdb) b = static_cast<std::uint8_t>(rng());
    if (!cdb.empty() && rng() % 4 != 0) cdb[0] = kInteresting[rng() % std::size(kInteresting)];
    // Often keep lengths small so commands get past validation and do I/O.
    if (cdb.size() > 9 && rng() % 2) {
      cdb[7] = 0;
      cdb[8] = static_cast<std::uint8_t>(rng() % 8);
      if (cdb.size() > 13) cdb[10] = cdb[11] = cdb[12] = 0;
      for (std::size_t k = 2; k < 6 && k < cdb.size(); ++k) cdb[k] = rng() % 3 ? 0 : cdb[k];
    }
    if (!cdb.empty() && cdb.size() > 1 && rng() % 2) cdb.back() = 0;  // control byte
    Bytes data(rng() % 3 == 0 ? rng() % 9000 : rng() % 64);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng() % 4 == 0 ? rng() : 0);
    const std::uint32_t expected = rng() % 3 == 0 ? rng() % 70000 : rng() % 600;
    const Nexus n{rng() % 2 ? "iqn.fuzz:a" : "iqn.fuzz:b", rng() % 3};
    const std::uint64_t lun = rng() % 8 == 0 ? 1 : 0;
    auto r = run(map, lun, cdb, data, expected, n);
    ASSERT_LE(r.data_in.size(), expected) << "iteration " << i;
    switch (r.status) {
      case status::kGood:
        ++good;
        break;
      case status::kCheckCondition:
        ++check;
        ASSERT_TRUE(sense_of(r).has_value()) << "iteration " << i;
        break;
      case status::kReservationConflict:
        ++conflict;
        break;
      default:
        FAIL() << "unexpected status " << int(r.status) << " at iteration " << i;
    }
  }
  EXPECT_EQ(map.find(0)->commands_in_flight(), 0u);
  EXPECT_GT(good, 0);
  EXPECT_GT(check, 0);
  std::printf("seed %u: %d good, %d check condition, %d conflict\n", seed, good, check, conflict);
}

TEST(ScsiFuzz, RandomCdbsRam) {
  fuzz(0x5C51, 20000, false);
}
TEST(ScsiFuzz, RandomCdbsFile) {
  fuzz(0xF11E, 5000, true);
}

}  // namespace
}  // namespace hyperscsi::scsi::testing

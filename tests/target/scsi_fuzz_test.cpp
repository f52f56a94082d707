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

namespace hyperscsi::scsi::testing {
namespace {

// Mostly well-formed commands with random fields, several nexuses, many in
// flight at once: exercises reservations, range locks and I/O fan-out.
Bytes structured_cdb(std::mt19937& rng, std::uint64_t blocks, Bytes& data,
                     std::uint32_t& expected) {
  auto lba_near_end = [&]() -> std::uint64_t {
    switch (rng() % 4) {
      case 0:
        return rng() % blocks;
      case 1:
        return blocks - 1 - rng() % 4;
      case 2:
        return blocks + rng() % 4;
      default:
        return UINT64_MAX - rng() % 4;
    }
  };
  const std::uint32_t n = rng() % 9;
  expected = rng() % 2 ? n * 512 : rng() % 9000;
  data.assign(rng() % 2 ? n * 512 : rng() % 5000, static_cast<std::uint8_t>(rng()));
  switch (rng() % 9) {
    case 0:
      return cdb_rw16(op::kRead16, lba_near_end(), n,
                      static_cast<std::uint8_t>(rng() % 2 ? 0 : rng()));
    case 1:
      return cdb_rw16(op::kWrite16, lba_near_end(), n, rng() % 2 ? 0x08 : 0);
    case 2:
      return cdb_rw16(op::kWriteSame16, lba_near_end(), n,
                      static_cast<std::uint8_t>(rng() % 2 ? 0x08 : rng() & 0x09));
    case 3: {
      Bytes c = cdb_rw16(op::kCompareAndWrite, lba_near_end(), 0);
      c[13] = static_cast<std::uint8_t>(rng() % 3);
      data.assign(c[13] * 1024u, static_cast<std::uint8_t>(rng() % 2));
      return c;
    }
    case 4: {
      const std::uint8_t sa = rng() % 8;
      Bytes c = cdb_pr_out(sa, static_cast<std::uint8_t>(rng() % 8), rng() % 8 ? 24 : rng() % 40);
      data = pr_out_params(rng() % 4, rng() % 4);
      return c;
    }
    case 5:
      expected = 1024;
      return cdb_pr_in(static_cast<std::uint8_t>(rng() % 4), 1024);
    case 6: {
      data.assign(8 + 16 * (rng() % 4), 0);
      for (auto& b : data) b = rng() % 5 == 0 ? static_cast<std::uint8_t>(rng()) : 0;
      if (data.size() > 3) data[3] = static_cast<std::uint8_t>(data.size() - 8);
      return {op::kUnmap, 0, 0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(data.size()), 0};
    }
    case 7:
      return cdb_rw10(op::kVerify10, static_cast<std::uint32_t>(lba_near_end()),
                      static_cast<std::uint16_t>(n), static_cast<std::uint8_t>((rng() % 4) << 1));
    default:
      return rng() % 2 ? Bytes{op::kReserve6, 0, 0, 0, 0, 0} : Bytes{op::kRelease6, 0, 0, 0, 0, 0};
  }
}

TEST(ScsiFuzz, StructuredConcurrentCommands) {
  LuConfig cfg;
  cfg.max_compare_and_write_blocks = 2;
  LogicalUnit lu(cfg, std::move(store::open_store("ram:256K", {})).value());
  const std::uint64_t blocks = lu.store().num_blocks();
  std::mt19937 rng(0xC0FFEE);
  int statuses[256] = {};
  int completions = 0, issued = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int round = 0; round < 400 && std::chrono::steady_clock::now() < deadline; ++round) {
    const int batch = 1 + static_cast<int>(rng() % 16);
    std::vector<Bytes> cdbs(static_cast<std::size_t>(batch)),
        datas(static_cast<std::size_t>(batch));
    for (int i = 0; i < batch; ++i) {
      std::uint32_t expected = 0;
      cdbs[static_cast<std::size_t>(i)] =
          structured_cdb(rng, blocks, datas[static_cast<std::size_t>(i)], expected);
      const Nexus n{std::string("iqn.fuzz:") + char('a' + rng() % 3), rng() % 2};
      ++issued;
      lu.execute(
          {cdbs[static_cast<std::size_t>(i)], datas[static_cast<std::size_t>(i)], expected, n},
          [&, expected](CommandResult r) {
            ++completions;
            ++statuses[r.status];
            EXPECT_LE(r.data_in.size(), expected);
            if (r.status == status::kCheckCondition) {
              EXPECT_TRUE(sense_of(r).has_value());
            }
          });
    }
    for (int i = 0; i < 100 && lu.commands_in_flight() > 0; ++i) lu.store().drain();
    ASSERT_EQ(lu.commands_in_flight(), 0u) << "round " << round;
  }
  EXPECT_EQ(completions, issued);
  EXPECT_GT(statuses[status::kGood], 0);
  EXPECT_GT(statuses[status::kCheckCondition], 0);
  EXPECT_GT(statuses[status::kReservationConflict], 0);
  EXPECT_EQ(statuses[status::kGood] + statuses[status::kCheckCondition] +
                statuses[status::kReservationConflict],
            issued);
  std::printf("structured: %d commands: %d good, %d check condition, %d conflict\n", issued,
              statuses[status::kGood], statuses[status::kCheckCondition],
              statuses[status::kReservationConflict]);
}

}  // namespace
}  // namespace hyperscsi::scsi::testing

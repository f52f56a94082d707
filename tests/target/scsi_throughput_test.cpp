// Drives the SCSI layer with a file store at queue depth 32 and prints the
// rates it reaches. Asserts only correctness (every command GOOD), never
// timing: the machine is shared and noisy.
#include <chrono>
#include <cstdio>
#include <random>

#include "hyperscsi/scsi/opcodes.h"
#include "scsi_test_util.h"

namespace hyperscsi::scsi::testing {
namespace {

struct Rate {
  double iops;
  double mb_s;
  std::uint64_t commands;
};

Rate drive(LogicalUnit& lu, bool write, std::uint32_t blocks_per_cmd, bool sequential,
           int max_commands, std::chrono::milliseconds budget) {
  const std::uint32_t bs = lu.store().block_size();
  const std::uint64_t span = lu.store().num_blocks() - blocks_per_cmd;
  std::mt19937_64 rng(1);
  constexpr int kDepth = 32;
  const Bytes payload = pattern(blocks_per_cmd * bs, 3);
  std::vector<Bytes> cdbs(kDepth);
  int issued = 0, completed = 0, bad = 0;
  std::uint64_t next_lba = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + budget;
  std::function<void(int)> issue = [&](int slot) {
    if (issued >= max_commands || std::chrono::steady_clock::now() > deadline) return;
    std::uint64_t lba = sequential ? next_lba : (rng() % span) / blocks_per_cmd * blocks_per_cmd;
    next_lba = (next_lba + blocks_per_cmd) % span;
    cdbs[static_cast<std::size_t>(slot)] =
        cdb_rw16(write ? op::kWrite16 : op::kRead16, lba, blocks_per_cmd);
    ++issued;
    lu.execute({cdbs[static_cast<std::size_t>(slot)],
                write ? std::span<const std::uint8_t>(payload) : std::span<const std::uint8_t>(),
                write ? 0 : blocks_per_cmd * bs, kNexusA},
               [&, slot](CommandResult r) {
                 ++completed;
                 bad += r.status != status::kGood;
                 issue(slot);
               });
  };
  for (int i = 0; i < kDepth; ++i) issue(i);
  for (int guard = 0; guard < 10 * max_commands && completed < issued; ++guard) lu.store().drain();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(completed, issued);
  return {completed / secs, completed * double(blocks_per_cmd * bs) / secs / 1e6,
          static_cast<std::uint64_t>(completed)};
}

void report(bool direct) {
  TempDir dir;
  store::StoreOptions o;
  o.create_size = 256 << 20;
  o.direct_io = direct;
  std::printf("file store%s\n", direct ? " with O_DIRECT" : " (page cache)");
  auto s = store::open_store(dir.file("perf.img"), o);
  ASSERT_TRUE(s.ok());
  LogicalUnit lu({}, std::move(s).value());
  clear_power_on_ua(lu);
  const auto budget = std::chrono::milliseconds(1500);
  // Fill the file so reads hit allocated blocks.
  auto fill = drive(lu, true, 256, true, 2048, std::chrono::seconds(30));
  // Write the fill back first so the random phase is not throttled by its writeback.
  EXPECT_GOOD(run(lu, cdb_rw10(op::kSynchronizeCache10, 0, 0)));
  const auto c0 = lu.store().counters();
  const auto w4 = drive(lu, true, 8, false, 200000, budget);
  const auto c1 = lu.store().counters();
  std::printf("random write phase: %llu writes, %llu fua, %llu kernel ops, %llu batches\n",
              (unsigned long long)(c1.writes - c0.writes),
              (unsigned long long)(c1.fua_writes - c0.fua_writes),
              (unsigned long long)(c1.ops_submitted - c0.ops_submitted),
              (unsigned long long)(c1.batches - c0.batches));
  const auto r4 = drive(lu, false, 8, false, 200000, budget);
  const auto seq = lu.store().counters();
  const auto w128 = drive(lu, true, 256, true, 20000, budget);
  const auto after = lu.store().counters();
  std::printf("fill: %.0f MB/s\n", fill.mb_s);
  std::printf("4 KiB random write QD32: %.0f IOPS\n", w4.iops);
  std::printf("4 KiB random read  QD32: %.0f IOPS\n", r4.iops);
  std::printf("128 KiB sequential write QD32: %.0f MB/s, %.2f requests per kernel op\n", w128.mb_s,
              double(after.writes - seq.writes) /
                  double(std::max<std::uint64_t>(1, after.ops_submitted - seq.ops_submitted)));
  EXPECT_GT(w4.commands, 0u);
  EXPECT_GT(r4.commands, 0u);
}

TEST(ScsiThroughput, FileStoreQd32) {
  report(false);
}
TEST(ScsiThroughput, FileStoreDirectQd32) {
  report(true);
}

}  // namespace
}  // namespace hyperscsi::scsi::testing

// bench/floor.sh end to end, small (issue 20's floor): raw frames over a veth
// pair shaped to 100 Mbit/s with the sender paced, and fio on a 64 MiB store
// in /dev/shm. Asserts the table it prints is whole and consistent (the pacing
// held the frames near the shaped rate and never above it, every cost is
// positive, each floor is frames + store), that bad options are refused with a
// clear message, and that the script left no store file behind. Needs root,
// io_bench, fio, jq and tc. And bench/fuse-floor.sh (issue 13's floor): a
// loop device over fuse_floor's RAM file, two tiny cells, every figure
// present and the mount, loop device, process and work directory gone; with
// --nbd, nbdkit's memory plugin the same way. And bench/blockdev-bound.sh
// (issue 13's CPU bound): the bound is the CPUs over the sum of the library's
// and each path's CPU per I/O, the figures it prints agree with that, nothing
// is left.
#include <gtest/gtest.h>

#include <filesystem>
#include <initializer_list>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace {

namespace fs = std::filesystem;
using hyperscsi::test_support::have_command;
using hyperscsi::test_support::run_command;

const std::string kScript =
    "bash '" HYPERSCSI_SOURCE_DIR "/bench/floor.sh' --build '" HYPERSCSI_BUILD_DIR "'";

bool store_files_left() {
  for (const auto& e : fs::directory_iterator("/dev/shm"))
    if (e.path().filename().string().rfind("hsfloor", 0) == 0) return true;
  return false;
}

// Each ARGS makes SCRIPT exit non-zero with MESSAGE in what it prints.
void expect_refused(const std::string& script,
                    std::initializer_list<std::pair<const char*, const char*>> cases) {
  for (const auto& [args, message] : cases) {
    auto [out, status] = run_command(script + " " + args + " 2>&1");
    EXPECT_NE(status, 0) << args;
    EXPECT_NE(out.find(message), std::string::npos) << args << ": " << out;
  }
}

TEST(FloorScript, RefusesBadOptionsWithAClearMessage) {
  expect_refused(kScript, {{"--mtu 99", "--mtu takes 576..9000"},
                           {"--shape-mbit fast", "--shape-mbit takes"},
                           {"--runs 0", "--runs and --seconds take whole numbers"},
                           {"--bogus", "unknown option --bogus"}});
}

TEST(FloorScript, ShapedTinyRunPrintsAConsistentFloorAndCleansUp) {
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";
  for (const char* c : {"fio", "jq", "tc", "timeout"})
    if (!have_command(c)) GTEST_SKIP() << c << " not installed (scripts/setup.sh installs it)";
  if (!fs::exists(HYPERSCSI_BUILD_DIR "/bench/io_bench")) GTEST_SKIP() << "io_bench is not built";

  auto [log, status] = run_command("timeout -k 5 100 " + kScript +
                                   " --mtu 1500 --shape-mbit 100 --runs 1 --seconds 1"
                                   " --store-mib 64 2>&1");
  SCOPED_TRACE(log);
  EXPECT_FALSE(store_files_left()) << "store file left in /dev/shm";
  ASSERT_EQ(status, 0);
  EXPECT_NE(log.find("Floor, MTU 1500, tbf 100 Mbit/s, paced at 99%"), std::string::npos);

  // | frames MB/s | sender / receiver | frames sum | store read | store write | read | write |
  const std::string num = "([0-9.]+)";
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      log, m,
      std::regex("\\| " + num + " \\| " + num + " / " + num + " \\| " + num + " \\| " + num +
                 " \\| " + num + " \\| " + num + " \\| " + num + " \\|")));
  const auto v = [&](int i) { return std::stod(m[i]); };
  // 99 Mbit/s of frames is 12.4 MB/s; the shaper allows 12.5.
  EXPECT_GT(v(1), 6.0) << "the paced sender fell far below its rate";
  EXPECT_LT(v(1), 13.2) << "frames faster than the shaper allows";
  for (int i = 2; i <= 8; ++i) EXPECT_GT(v(i), 0.0) << "column " << i;
  EXPECT_NEAR(v(4), v(2) + v(3), 0.02);  // frames sum = sender + receiver
  EXPECT_NEAR(v(7), v(4) + v(5), 0.02);  // floor read = frames + store read
  EXPECT_NEAR(v(8), v(4) + v(6), 0.02);  // floor write = frames + store write
}

const std::string kFuseScript =
    "bash '" HYPERSCSI_SOURCE_DIR "/bench/fuse-floor.sh' --build '" HYPERSCSI_BUILD_DIR "'";

TEST(FuseFloorScript, RefusesABadCell) {
  auto [out, status] = run_command(kFuseScript + " --cells 'randread 4k zero' 2>&1");
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("bad cell 'randread 4k zero'"), std::string::npos) << out;
}

// The work directories that PREFIX ("fuse-floor", "blockdev-bound") said it
// made, in LOG's order. Each test checks only its own: another test's script
// may be running beside it.
std::vector<std::string> work_dirs(const std::string& log, const std::string& prefix) {
  std::vector<std::string> out;
  const std::regex re(prefix + ": work directory (/tmp/[A-Za-z0-9._]+)");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
       ++it)
    out.push_back((*it)[1]);
  return out;
}

// Nothing of the fuse-floor.sh run with work directory DIR is left: the
// directory, a mount under it, a loop device on its file, a server on it.
void expect_fuse_floor_gone(const std::string& dir) {
  EXPECT_FALSE(fs::exists(dir)) << "left: " << dir;
  EXPECT_EQ(run_command("cat /proc/mounts").first.find(dir), std::string::npos)
      << "mount left under " << dir;
  EXPECT_EQ(run_command("losetup -a").first.find(dir), std::string::npos)
      << "loop device left on " << dir;
  EXPECT_NE(run_command("pgrep -f '[f]use_floor " + dir + "'").second, 0)
      << "fuse_floor left running on " << dir;
  EXPECT_NE(run_command("pgrep -f '[n]bdkit.*" + dir + "'").second, 0)
      << "nbdkit left running on " << dir;
}

// fuse-floor.sh's two test cells are in LOG, every figure positive:
// | cell | IOPS | MB/s | p50 us | CPU server | CPU fio | machine us/IO |
void expect_whole_rows(const std::string& log) {
  for (const char* cell : {"randread 4k 4", "write 128k 2"}) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(
        log, m,
        std::regex("\\| " + std::string(cell) +
                   " \\| ([0-9.]+) \\| ([0-9.]+) \\| ([0-9.]+) \\| ([0-9.]+) \\| ([0-9.]+) "
                   "\\| ([0-9.]+) \\|")))
        << cell;
    for (int i = 1; i <= 6; ++i) EXPECT_GT(std::stod(m[i]), 0.0) << cell << " column " << i;
  }
}

TEST(FuseFloorScript, LoopOverRamFuseFileMeasuresAndCleansUp) {
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (mount, loop)";
  for (const char* c : {"fio", "jq", "losetup", "timeout"})
    if (!have_command(c)) GTEST_SKIP() << c << " not installed (scripts/setup.sh installs it)";
  if (!fs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
  if (!fs::exists(HYPERSCSI_BUILD_DIR "/bench/fuse_floor")) GTEST_SKIP() << "fuse_floor not built";

  auto [log, status] = run_command("timeout -k 5 100 " + kFuseScript +
                                   " --runs 1 --seconds 1 --size-mib 64"
                                   " --cells 'randread 4k 4;write 128k 2' 2>&1");
  SCOPED_TRACE(log);
  const auto dirs = work_dirs(log, "fuse-floor");
  ASSERT_EQ(dirs.size(), 1u) << "the script names its work directory";
  expect_fuse_floor_gone(dirs[0]);
  ASSERT_EQ(status, 0);
  expect_whole_rows(log);
}

TEST(FuseFloorScript, NbdFloorMeasuresAndCleansUp) {
  for (const char* c : {"fio", "jq", "nbdkit", "nbdinfo", "timeout"})
    if (!have_command(c)) GTEST_SKIP() << c << " not installed (scripts/setup.sh installs it)";
  EXPECT_NE(run_command(kFuseScript + " --nbd --poll 2>&1").first.find("--poll is for the loop"),
            std::string::npos);

  auto [log, status] = run_command("timeout -k 5 100 " + kFuseScript +
                                   " --nbd --runs 1 --seconds 1 --size-mib 64"
                                   " --cells 'randread 4k 4;write 128k 2' 2>&1");
  SCOPED_TRACE(log);
  const auto dirs = work_dirs(log, "fuse-floor");
  ASSERT_EQ(dirs.size(), 1u) << "the script names its work directory";
  expect_fuse_floor_gone(dirs[0]);
  ASSERT_EQ(status, 0);
  EXPECT_NE(log.find("CPU s/GiB nbdkit"), std::string::npos);
  expect_whole_rows(log);
}

const std::string kBoundScript =
    "bash '" HYPERSCSI_SOURCE_DIR "/bench/blockdev-bound.sh' --build '" HYPERSCSI_BUILD_DIR "'";

TEST(BlockdevBoundScript, RefusesBadOptionsWithAClearMessage) {
  expect_refused(kBoundScript, {{"--mtu 99", "--mtu takes 576..9000"},
                                {"--cell 'randread 4k'", "bad cell 'randread 4k'"},
                                {"--cell 'randread 4k 32 9'", "bad cell"},
                                {"--runs x", "--runs and --seconds take whole numbers"},
                                {"--bogus", "unknown option --bogus"}});
}

TEST(BlockdevBoundScript, TinyRunPrintsTheCpusOverTheSummedCost) {
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";
  for (const char* c : {"fio", "jq", "losetup", "nbdkit", "nbdinfo", "timeout"})
    if (!have_command(c)) GTEST_SKIP() << c << " not installed (scripts/setup.sh installs it)";
  if (!fs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
  for (const char* b :
       {"/bench/fuse_floor", "/bench/hyperscsi-bench", "/target/daemon/hyperscsi-target"})
    if (!fs::exists(std::string(HYPERSCSI_BUILD_DIR) + b)) GTEST_SKIP() << b << " not built";

  auto [log, status] = run_command("timeout -k 5 150 " + kBoundScript +
                                   " --runs 1 --seconds 1 --cell 'randread 4k 4' 2>&1");
  SCOPED_TRACE(log);
  const auto own = work_dirs(log, "blockdev-bound");
  ASSERT_EQ(own.size(), 1u) << "the script names its work directory";
  EXPECT_FALSE(fs::exists(own[0])) << "left: " << own[0];
  for (const std::string& dir : work_dirs(log, "fuse-floor")) expect_fuse_floor_gone(dir);
  // The lab's namespaces, by name (another test's lab may be running).
  std::smatch ns;
  ASSERT_TRUE(std::regex_search(log, ns, std::regex("lab: namespaces (hsl[0-9]+s)/(hsl[0-9]+c)")));
  const std::string netns = run_command("ip netns list").first;
  for (int i : {1, 2})
    EXPECT_FALSE(std::regex_search(netns, std::regex("(^|\n)" + ns[i].str() + "( |\n|$)")))
        << "namespace left: " << ns[i];
  ASSERT_EQ(status, 0);
  const auto cpus = std::stod(run_command("nproc").first);
  // | path | library IOPS | library us/IO | path us/IO | bound IOPS | bound / library |
  for (const char* path : {"loop", "nbd"}) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(log, m,
                                  std::regex("\\| " + std::string(path) +
                                             " \\| ([0-9.]+) \\| ([0-9.]+) \\| ([0-9.]+) "
                                             "\\| ([0-9.]+) \\| ([0-9.]+) \\|")))
        << path;
    const auto v = [&](int i) { return std::stod(m[i]); };
    for (int i = 1; i <= 5; ++i) EXPECT_GT(v(i), 0.0) << path << " column " << i;
    const double bound = cpus * 1e6 / (v(2) + v(3));
    EXPECT_NEAR(v(4), bound, bound * 0.02 + 1) << path;  // the printed cost rounds to 0.1 us
    EXPECT_NEAR(v(5), v(4) / v(1), 0.01 + v(5) * 0.01) << path;
  }
}

}  // namespace

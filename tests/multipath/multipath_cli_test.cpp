// Multipath through the programs (issue 17): the real hyperscsi-target with
// two ports and hyperscsi-bench --port A --port B --verify over two veth
// pairs. A verified random read/write stream while the second link goes
// down and comes back, with the target's stats showing the session's two
// paths; a kill -9 and restart of the target under a two-path stream; the
// same port given twice is refused with a clear error. Root only; about 12 s.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace hyperscsi {
namespace {

using namespace std::chrono_literals;
using test_support::BackgroundProcess;
using test_support::NetnsPair;
using test_support::read_text_file;
using test_support::run_bounded;
using test_support::TempDir;
namespace fs = std::filesystem;

#define SKIP_UNLESS_READY()                                                               \
  do {                                                                                    \
    if (!test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";      \
    if (std::string(HYPERSCSI_TARGET_BIN).empty()) GTEST_SKIP() << "no hyperscsi-target"; \
  } while (0)

class Lab {
 public:
  Lab() : net(test_support::NetnsConfig{.mtu = 1500, .extra_links = {0}}) {
    config_ = dir_.path() / "target.toml";
    std::ofstream c(config_);
    c << "[target]\nname = \"mp\"\nports = [\"afpacket:" << net.iface_b(0)
      << "\", \"afpacket:" << net.iface_b(1) << "\"]\ncontrol = \"" << control().string()
      << "\"\nkeepalive_ms = 300\ndead_time_ms = 1500\n\n"
      << "[[lun]]\nnumber = 0\nstore = \"" << (dir_.path() / "lun0.img").string()
      << "\"\nsize = \"16M\"\nblock_size = 512\n";
  }
  fs::path control() const { return dir_.path() / "target.sock"; }
  bool start_target() {
    log_ = dir_.path() / ("target" + std::to_string(++starts_) + ".log");
    if (!target_.start("ip netns exec " + net.ns_b() + " " HYPERSCSI_TARGET_BIN " --config " +
                           config_.string(),
                       log_.string()))
      return false;
    for (int i = 0; i < 100; ++i) {
      const std::string log = read_text_file(log_);
      // Both ports' loops.
      size_t n = 0;
      for (size_t at = log.find("serving target"); at != std::string::npos;
           at = log.find("serving target", at + 1))
        ++n;
      if (n >= 2) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  void kill_target() { target_.kill9(); }
  std::string target_log() const { return read_text_file(log_); }
  // A bench run in the background (A's side), its JSON record to `out`.
  std::string bench_cmd(const std::string& extra, const fs::path& out) const {
    return "timeout -k 2 40 ip netns exec " + net.ns_a() +
           " " HYPERSCSI_BENCH_BIN " --transport hyperscsi --port afpacket:" + net.iface_a(0) +
           " --port afpacket:" + net.iface_a(1) +
           " --target mp --lun 0 --workload randrw --verify --bs 64k --qd 8 --size 8M --quiet "
           "--json " +
           extra + " >" + out.string() + " 2>&1; echo $? >" + out.string() + ".rc";
  }

  NetnsPair net;
  TempDir dir_{"hs_multipath"};

 private:
  fs::path config_, log_;
  BackgroundProcess target_;
  int starts_ = 0;
};

void expect_clean(const std::string& rec, const std::string& rc) {
  EXPECT_EQ(rc, "0\n") << rec;
  EXPECT_NE(rec.find("\"verify_mismatches\": 0"), std::string::npos) << rec;
  EXPECT_NE(rec.find("\"errors\": 0"), std::string::npos) << rec;
}

TEST(MultipathCli, BenchOverTwoPortsSurvivesALinkDownAndBack) {
  SKIP_UNLESS_READY();
  Lab lab;
  ASSERT_TRUE(lab.net.ok()) << lab.net.error();
  ASSERT_TRUE(lab.start_target()) << lab.target_log();
  const fs::path out = lab.dir_.path() / "bench.json";
  BackgroundProcess bench;
  ASSERT_TRUE(bench.start("sh -c '" + lab.bench_cmd("--time 4", out) + "'",
                          (lab.dir_.path() / "bench.sh.log").string()));
  std::this_thread::sleep_for(1200ms);
  // The session runs on two paths (the target's stats list them).
  const auto stats =
      run_bounded("ip netns exec " + lab.net.ns_b() +
                      " " HYPERSCSI_TARGET_BIN " stats --json --control " + lab.control().string(),
                  10);
  EXPECT_EQ(stats.status, 0) << stats.out;
  size_t active = 0;
  for (size_t at = stats.out.find("\"state\":\"active\""); at != std::string::npos;
       at = stats.out.find("\"state\":\"active\"", at + 1))
    ++active;
  EXPECT_GE(active, 2u) << stats.out;
  ASSERT_TRUE(lab.net.set_link_up(1, false));
  std::this_thread::sleep_for(1000ms);
  ASSERT_TRUE(lab.net.set_link_up(1, true));
  for (int i = 0; i < 150 && !fs::exists(out.string() + ".rc"); ++i)
    std::this_thread::sleep_for(100ms);
  std::this_thread::sleep_for(100ms);
  expect_clean(read_text_file(out), read_text_file(out.string() + ".rc"));
  const std::string log = lab.target_log();
  EXPECT_NE(log.find("is multipath over 2 target ports"), std::string::npos) << log;
}

TEST(MultipathCli, TargetKill9AndRestartUnderATwoPathStreamRecovers) {
  SKIP_UNLESS_READY();
  Lab lab;
  ASSERT_TRUE(lab.net.ok()) << lab.net.error();
  ASSERT_TRUE(lab.start_target()) << lab.target_log();
  const fs::path out = lab.dir_.path() / "bench.json";
  BackgroundProcess bench;
  ASSERT_TRUE(bench.start("sh -c '" + lab.bench_cmd("--time 5", out) + "'",
                          (lab.dir_.path() / "bench.sh.log").string()));
  std::this_thread::sleep_for(1500ms);
  lab.kill_target();
  ASSERT_TRUE(lab.start_target()) << lab.target_log();
  for (int i = 0; i < 200 && !fs::exists(out.string() + ".rc"); ++i)
    std::this_thread::sleep_for(100ms);
  std::this_thread::sleep_for(100ms);
  expect_clean(read_text_file(out), read_text_file(out.string() + ".rc"));
  // The restarted target saw the session log in again and go multipath.
  const std::string log = lab.target_log();
  EXPECT_NE(log.find("is multipath over 2 target ports"), std::string::npos) << log;
}

TEST(MultipathCli, TheSamePortTwiceIsRefusedClearly) {
  SKIP_UNLESS_READY();
  Lab lab;
  ASSERT_TRUE(lab.net.ok()) << lab.net.error();
  const auto r = run_bounded(
      "ip netns exec " + lab.net.ns_a() +
          " " HYPERSCSI_BENCH_BIN " --transport hyperscsi --port afpacket:" + lab.net.iface_a(0) +
          " --port afpacket:" + lab.net.iface_a(0) + " --target mp --lun 0 --time 1 --quiet",
      10);
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("the same port given twice"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace hyperscsi

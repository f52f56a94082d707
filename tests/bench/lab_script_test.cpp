// bench/lab.sh end to end with a tiny matrix: one cell ("randread 4k 1"), one
// 1 s run per transport, and a 3 s memory step with 16 sessions. Checks that
// results.json carries every field issue 6 requires for all three transports
// and the memory record, that report.md and the PNG plots exist, and that the
// script left nothing behind: namespaces, store file in /dev/shm, work
// directory, tgtd control socket, and processes (found by the tag the script
// prints). Needs root, the built target and bench, tgtd, jq and gnuplot.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace {

namespace fs = std::filesystem;
using hyperscsi::test_support::have_command;
using hyperscsi::test_support::mentions_tag;
using hyperscsi::test_support::run_command;
using hyperscsi::test_support::TempDir;

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

// The whole file (empty if unreadable).
std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string text;
  char buf[4096];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) text.append(buf, size_t(in.gcount()));
  return text;
}

// jq -e over results.json: true when the filter's last output is truthy.
bool jq_true(const fs::path& file, const std::string& args, const std::string& filter) {
  return run_command("jq -e " + args + " " + quote(filter) + " " + quote(file.string()) +
                     " >/dev/null 2>&1")
             .second == 0;
}

std::string jq_value(const fs::path& file, const std::string& filter) {
  auto [out, status] = run_command("jq -r " + quote(filter) + " " + quote(file.string()));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return status == 0 ? out : "<jq failed>";
}

// Every process whose command line names `needle` (mentions_tag; not this
// test's own).
std::vector<std::string> processes_with(const std::string& needle) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = read_all(e.path() / "cmdline");
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (mentions_tag(cmd, needle)) found.push_back(pid + ": " + cmd);
  }
  return found;
}

// The leftover checks below find this run's tag, not a neighbour's.
TEST(LabScript, LeftoverChecksTellThisRunsTagFromALongerOne) {
  EXPECT_TRUE(mentions_tag("hsl4711s (id: 3)\n", "hsl4711"));
  EXPECT_TRUE(mentions_tag("x\nhsl4711c", "hsl4711"));
  EXPECT_TRUE(mentions_tag("hsl4711.img", "hsl4711"));
  EXPECT_FALSE(mentions_tag("hsl47110s (id: 3)\nhsl47112c\n", "hsl4711"));
  EXPECT_TRUE(mentions_tag("hsl47110s hsl4711c", "hsl4711"));
  EXPECT_FALSE(mentions_tag("", "hsl4711"));
  EXPECT_FALSE(mentions_tag("hsl4711s", ""));
}

TEST(LabScript, TinyMatrixWritesEveryFieldAndCleansUp) {
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";
  for (const char* c : {"tgtd", "tgtadm", "jq", "gnuplot", "tc", "timeout"})
    if (!have_command(c)) GTEST_SKIP() << c << " not installed (scripts/setup.sh installs it)";
  if (!fs::exists(HYPERSCSI_TARGET_BIN) || std::string(HYPERSCSI_TARGET_BIN).empty())
    GTEST_SKIP() << "hyperscsi-target is not built";

  TempDir tmp("hs_lab_test");
  ASSERT_FALSE(tmp.path().empty());
  const fs::path out = tmp.path() / "out";
  const std::string cmd = "timeout -k 5 50 bash " + quote(HYPERSCSI_SOURCE_DIR "/bench/lab.sh") +
                          " --build " + quote(HYPERSCSI_BUILD_DIR) + " --out " +
                          quote(out.string()) +
                          " --quick --runs 1 --seconds 1 --cells 'randread 4k 1'"
                          " --memory-seconds 3 2>&1";
  auto [log, status] = run_command(cmd);
  SCOPED_TRACE(log);

  // What the script made, from its first line; checked even if it failed.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("lab: tag (\\S+) control (\\d+) work (\\S+)")));
  const std::string tag = m[1], control = m[2], work = m[3];
  auto [netns, ns_status] = run_command("ip netns list");
  EXPECT_FALSE(mentions_tag(netns, tag)) << "namespace left: " << netns;
  for (const auto& e : fs::directory_iterator("/dev/shm"))
    EXPECT_FALSE(mentions_tag(e.path().filename().string(), tag))
        << "left in /dev/shm: " << e.path();
  EXPECT_FALSE(fs::exists(work)) << "work directory left: " << work;
  EXPECT_FALSE(fs::exists("/var/run/tgtd/socket." + control)) << "tgtd socket left";
  EXPECT_TRUE(processes_with(tag).empty()) << "process left: " << processes_with(tag)[0];
  const auto tgtd = processes_with("tgtd -f -C " + control);
  EXPECT_TRUE(tgtd.empty()) << "tgtd left: " << tgtd[0];

  ASSERT_EQ(status, 0) << "lab.sh failed";
  const fs::path results = out / "results.json";
  ASSERT_TRUE(fs::exists(results));
  EXPECT_TRUE(fs::file_size(out / "report.md") > 0);
  for (const char* png : {"mb_s.png", "iops.png", "latency.png"}) {
    ASSERT_TRUE(fs::exists(out / png)) << png;
    EXPECT_EQ(read_all(out / png).substr(1, 3), "PNG") << png;
  }

  const std::vector<std::string> fields = {"transport",
                                           "backend",
                                           "workload",
                                           "bs",
                                           "qd",
                                           "mtu",
                                           "shaped",
                                           "iops",
                                           "mb_s",
                                           "lat_p50_us",
                                           "lat_p99_us",
                                           "cpu_s_per_gib_client",
                                           "cpu_s_per_gib_target",
                                           "run"};
  const std::vector<std::pair<std::string, std::string>> transports = {
      {"hyperscsi", "afpacket"}, {"iscsi", "libiscsi"}, {"local", "pread"}};
  EXPECT_EQ(jq_value(results, "[.[] | select(.record == \"cell\")] | length"), "3");
  for (const auto& [t, backend] : transports) {
    const std::string sel = "[.[] | select(.record == \"cell\" and .transport == $t)]";
    const std::string args = "--arg t " + t;
    ASSERT_TRUE(jq_true(results, args, sel + " | length == 1")) << t << ": no record";
    for (const auto& f : fields) {
      // Local has no target process: its target CPU is null, but present.
      const bool may_be_null = t == "local" && f == "cpu_s_per_gib_target";
      EXPECT_TRUE(
          jq_true(results, args + " --arg f " + f,
                  sel + "[0] | has($f) and (" + (may_be_null ? "true" : ".[$f] != null") + ")"))
          << t << ": field " << f << " missing or null";
    }
    EXPECT_TRUE(jq_true(results, args + " --arg b " + backend,
                        sel + "[0] | .backend == $b and .workload == \"randread\" and .bs == 4096"
                              " and .qd == 1 and .mtu == \"1500\" and .shaped == \"no\""
                              " and .run == 1 and .errors == 0"))
        << t << ": labels wrong";
    EXPECT_TRUE(jq_true(results, args,
                        sel + "[0] | .iops > 0 and .mb_s > 0 and .lat_p50_us > 0"
                              " and .lat_p99_us >= .lat_p50_us and .cpu_s_per_gib_client > 0"))
        << t << ": implausible figures";
  }
  EXPECT_TRUE(jq_true(results, "",
                      "[.[] | select(.record == \"cell\" and .transport != \"local\")]"
                      " | all(.cpu_s_per_gib_target > 0)"))
      << "target CPU not measured";

  // The memory record: 16 clients, all ran, the target held several sessions
  // at once, and the figures are consistent.
  const std::string mem = "[.[] | select(.record == \"memory\")]";
  ASSERT_TRUE(jq_true(results, "", mem + " | length == 1")) << "no memory record";
  EXPECT_EQ(jq_value(results, mem + "[0].sessions"), "16");
  EXPECT_EQ(jq_value(results, mem + "[0].clients_ok"), "16");
  EXPECT_TRUE(jq_true(results, "", mem + "[0].sessions_seen >= 8"))
      << "sessions seen at once: " << jq_value(results, mem + "[0].sessions_seen");
  EXPECT_TRUE(jq_true(results, "",
                      mem + "[0] | .rss_peak_kib > 0 and .hwm_kib > 0"
                            " and .limit_bytes > 64 * 1048576 and (.met | type == \"boolean\")"));

  const std::string report = read_all(out / "report.md");
  for (const char* heading : {"## Medians", "## Issue 6 targets", "## Target memory"})
    EXPECT_NE(report.find(heading), std::string::npos) << heading;
}

// --paths 2 --fail-path-at 2 (issue 17): a 4 s read+write stream over two
// links (the second joins within 1-2 s under the stream), the second taken
// down at 2 s; the failover record has the stall,
// the MB/s before and after and both paths' figures; nothing left behind.
TEST(LabScript, FailPathAtTakesTheSecondLinkDownMidStream) {
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";
  for (const char* c : {"tgtd", "tgtadm", "jq", "tc", "timeout"})
    if (!have_command(c)) GTEST_SKIP() << c << " not installed (scripts/setup.sh installs it)";
  if (!fs::exists(HYPERSCSI_TARGET_BIN) || std::string(HYPERSCSI_TARGET_BIN).empty())
    GTEST_SKIP() << "hyperscsi-target is not built";
  TempDir tmp("hs_lab_fail");
  ASSERT_FALSE(tmp.path().empty());
  const fs::path out = tmp.path() / "out";
  const std::string cmd = "timeout -k 5 60 bash " + quote(HYPERSCSI_SOURCE_DIR "/bench/lab.sh") +
                          " --build " + quote(HYPERSCSI_BUILD_DIR) + " --out " +
                          quote(out.string()) +
                          " --quick --paths 2 --no-cells --no-memory --fail-path-at 2 2>&1";
  auto [log, status] = run_command(cmd);
  SCOPED_TRACE(log);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("lab: tag (\\S+) control (\\d+) work (\\S+)")));
  const std::string tag = m[1];
  auto [netns, ns_status] = run_command("ip netns list");
  EXPECT_FALSE(mentions_tag(netns, tag)) << "namespace left: " << netns;
  EXPECT_TRUE(processes_with(tag).empty()) << "process left: " << processes_with(tag)[0];
  ASSERT_EQ(status, 0) << "lab.sh failed";
  const fs::path results = out / "results.json";
  const std::string rec = "[.[] | select(.record == \"failover\")]";
  ASSERT_TRUE(jq_true(results, "", rec + " | length == 1")) << read_all(results);
  EXPECT_TRUE(jq_true(results, "",
                      rec + "[0] | .errors == 0 and .verify_mismatches == 0 and .verify"
                            " and .fail_at_s == 2 and .longest_gap_ms > 0"
                            " and .mb_s_before_mark > 0 and .mb_s_after_mark > 0"))
      << read_all(results);
  // Both links carried the stream; the one taken down failed over.
  EXPECT_TRUE(jq_true(results, "",
                      rec + "[0].paths | map(select(.state != \"unreachable\")) | length == 2"
                            " and all(.frames_sent > 0) and (map(.failovers) | add) >= 1"))
      << read_all(results);
  const std::string report = read_all(out / "report.md");
  EXPECT_NE(report.find("## A path taken down mid-stream"), std::string::npos) << report;
}

// --blockdev (issue 13): the library, the attached loop device and the NBD
// export in one tiny run; every record complete, the goals table written,
// and no namespace, loop device, FUSE mount or process left behind.
TEST(LabScript, BlockdevTinyMatrixComparesLoopAndNbdWithTheLibrary) {
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";
  for (const char* c : {"jq", "fio", "nbdkit", "nbdinfo", "nsenter", "timeout"})
    if (!have_command(c)) GTEST_SKIP() << c << " not installed (scripts/setup.sh installs it)";
  if (!fs::exists(HYPERSCSI_TARGET_BIN) || std::string(HYPERSCSI_TARGET_BIN).empty())
    GTEST_SKIP() << "hyperscsi-target is not built";
  if (!fs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";

  TempDir tmp("hs_lab_bd_test");
  ASSERT_FALSE(tmp.path().empty());
  const fs::path out = tmp.path() / "out";
  const std::string cmd = "HYPERSCSI_NBDKIT_ENV='" LAB_NBDKIT_ENV "' timeout -k 5 90 bash " +
                          quote(HYPERSCSI_SOURCE_DIR "/bench/lab.sh") + " --build " +
                          quote(HYPERSCSI_BUILD_DIR) + " --out " + quote(out.string()) +
                          " --blockdev --quick --runs 1 --seconds 1 --cells 'randread 4k 1' 2>&1";
  auto [log, status] = run_command(cmd);
  SCOPED_TRACE(log);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("lab: tag (\\S+) control (\\d+) work (\\S+)")));
  const std::string tag = m[1], work = m[3];
  auto [netns, ns_status] = run_command("ip netns list");
  EXPECT_FALSE(mentions_tag(netns, tag)) << "namespace left: " << netns;
  EXPECT_FALSE(fs::exists(work)) << "work directory left: " << work;
  EXPECT_TRUE(processes_with(tag).empty()) << "process left: " << processes_with(tag)[0];
  EXPECT_EQ(read_all("/proc/mounts").find(work), std::string::npos) << "FUSE mount left";
  auto [loops, loop_status] = run_command("losetup -a");
  EXPECT_EQ(loops.find(work), std::string::npos) << "loop device left: " << loops;

  ASSERT_EQ(status, 0) << "lab.sh --blockdev failed";
  const fs::path results = out / "results.json";
  for (const std::string t : {"hyperscsi", "loop", "nbd"}) {
    const std::string sel = "[.[] | select(.record == \"cell\" and .transport == $t)]";
    EXPECT_TRUE(jq_true(results, "--arg t " + t,
                        sel + " | length == 1 and (.[0] | .iops > 0 and .mb_s > 0"
                              " and .lat_p50_us > 0 and .cpu_s_per_gib_client > 0"
                              " and .cpu_s_per_gib_target > 0 and .errors == 0"
                              " and .workload == \"randread\" and .bs == 4096 and .qd == 1)"))
        << t << ": record missing or implausible";
  }
  EXPECT_TRUE(jq_true(results, "",
                      "[.[] | select(.transport == \"loop\" or .transport == \"nbd\")]"
                      " | all(.cpu_s_per_gib_fio > 0)"))
      << "fio CPU not measured";
  const std::string report = read_all(out / "report.md");
  EXPECT_NE(report.find("### Issue 13 goals"), std::string::npos) << report;
  EXPECT_NE(report.find("loop <= library + 25 us"), std::string::npos) << report;
}

}  // namespace

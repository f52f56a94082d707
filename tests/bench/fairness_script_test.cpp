// bench/fairness.sh end to end, small (issue 21): 4 clients in their own
// namespaces on a bridge, the target's link shaped to 1 Gbit/s, one 2 s run
// of 128 KiB QD32 reads and one of writes against hyperscsi-target. Asserts
// that no session starves (a generous bound: every client at least a quarter
// of the mean, the machine may be busy with other tests), that the link
// carried a fair part of its rate, that the target's per-session counters
// were sampled, and that the script left nothing behind. Needs root, the
// built target and bench, tgtd (the script starts it), jq and tc.
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

bool jq_true(const fs::path& file, const std::string& filter) {
  return run_command("jq -e " + quote(filter) + " " + quote(file.string()) + " >/dev/null 2>&1")
             .second == 0;
}

std::string jq_value(const fs::path& file, const std::string& filter) {
  auto [out, status] = run_command("jq -c " + quote(filter) + " " + quote(file.string()));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return status == 0 ? out : "<jq failed>";
}

// Every process whose command line names `needle` (mentions_tag).
std::vector<std::string> processes_with(const std::string& needle) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    std::string cmd;
    char buf[4096];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) cmd.append(buf, size_t(in.gcount()));
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (mentions_tag(cmd, needle)) found.push_back(pid + ": " + cmd);
  }
  return found;
}

TEST(FairnessScript, FourClientsOnAShapedBridgeNoneStarvesAndNothingIsLeft) {
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";
  for (const char* c : {"tgtd", "tgtadm", "jq", "tc", "timeout"})
    if (!have_command(c)) GTEST_SKIP() << c << " not installed (scripts/setup.sh installs it)";
  if (!fs::exists(HYPERSCSI_TARGET_BIN) || std::string(HYPERSCSI_TARGET_BIN).empty())
    GTEST_SKIP() << "hyperscsi-target is not built";

  TempDir tmp("hs_fairness_test");
  ASSERT_FALSE(tmp.path().empty());
  const fs::path out = tmp.path() / "out";
  const std::string cmd =
      "timeout -k 5 100 bash " + quote(HYPERSCSI_SOURCE_DIR "/bench/fairness.sh") + " --build " +
      quote(HYPERSCSI_BUILD_DIR) + " --out " + quote(out.string()) +
      " --clients 4 --workloads 'read write' --transports hyperscsi --runs 1 --seconds 2"
      " --warmup 1 --no-edge 2>&1";
  auto [log, status] = run_command(cmd);
  SCOPED_TRACE(log);

  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(log, m, std::regex("fairness: tag (\\S+) control \\d+ work (\\S+)")));
  const std::string tag = m[1], work = m[2];
  auto [netns, ns_status] = run_command("ip netns list");
  EXPECT_FALSE(mentions_tag(netns, tag)) << "namespace left: " << netns;
  for (const auto& e : fs::directory_iterator("/dev/shm"))
    EXPECT_FALSE(mentions_tag(e.path().filename().string(), tag))
        << "left in /dev/shm: " << e.path();
  EXPECT_FALSE(fs::exists(work)) << "work directory left: " << work;
  const auto left = processes_with(tag);
  EXPECT_TRUE(left.empty()) << "process left: " << left[0];

  ASSERT_EQ(status, 0) << "fairness.sh failed";
  const fs::path results = out / "results.json";
  ASSERT_TRUE(fs::exists(results));
  const std::string runs = "[.[] | select(.record == \"run\")]";
  ASSERT_EQ(jq_value(results, runs + " | length"), "2");
  for (const char* w : {"read", "write"}) {
    const std::string r = runs + " | map(select(.workload == \"" + std::string(w) + "\"))[0]";
    SCOPED_TRACE(std::string(w) + ": " +
                 jq_value(results, r + " | {aggregate_mb_s, pct_of_line, jain, slowest_over_mean,"
                                       " clients_failed, per: [.per_client[].mb_s]}"));
    EXPECT_TRUE(jq_true(results, r + " | .clients == 4 and .clients_failed == 0"));
    EXPECT_TRUE(jq_true(results, r + " | .per_client | length == 4 and all(.mb_s > 0)"));
    EXPECT_TRUE(jq_true(results, r + " | .slowest_over_mean >= 0.25")) << "a session starved";
    EXPECT_TRUE(jq_true(results, r + " | .pct_of_line >= 40")) << "the link was far from full";
    EXPECT_TRUE(jq_true(results, r + " | .target_stats | length > 0 and"
                                     " (.[-1].sessions | length >= 4)"))
        << "the target's per-session counters were not sampled";
  }
  EXPECT_GT(fs::file_size(out / "report.md"), 0u);
}

}  // namespace

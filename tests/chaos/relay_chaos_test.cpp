// Chaos test: client <-veth-> relay <-veth-> server, each in its own network
// namespace. The real target daemon serves a RAM LUN; hyperscsi-relay drops,
// reorders and duplicates frames in both directions; hyperscsi-bench runs a
// verified random read/write workload through it. Every byte must come back
// right, and the relay's statistics must show the faults really happened.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "chaos_support.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace {

namespace fs = std::filesystem;
using hyperscsi::chaos::json_int;
using hyperscsi::chaos::Proc;
using hyperscsi::chaos::relay_stats;
using hyperscsi::chaos::slurp;
using hyperscsi::chaos::ThreeNs;
using hyperscsi::test_support::run_command;

TEST(ChaosRelay, VerifiedWorkloadSurvivesLossReorderAndDuplication) {
  if (!hyperscsi::test_support::running_as_root())
    GTEST_SKIP() << "needs root (network namespaces and AF_PACKET)";
  for (const char* bin : {HYPERSCSI_RELAY_BIN, HYPERSCSI_TARGET_BIN, HYPERSCSI_BENCH_BIN})
    if (!fs::exists(bin)) GTEST_SKIP() << "not built: " << bin;

  ThreeNs net;
  if (!net.ok) GTEST_SKIP() << "cannot create namespaces: " << net.error;
  hyperscsi::test_support::TempDir dir("hs_chaos");
  ASSERT_FALSE(dir.path().empty());
  ::setenv("HYPERSCSI_RUN_DIR", dir.path().c_str(), 1);

  Proc target, relay;
  ASSERT_TRUE(target.start(
      "ip netns exec " + net.server + " " HYPERSCSI_TARGET_BIN " --port afpacket:" + net.srv_if +
          " --lun 0=ram:64M --control " + (dir.path() / "target.sock").string(),
      dir.path() / "target.log"));
  ASSERT_TRUE(relay.start("ip netns exec " + net.relay + " " HYPERSCSI_RELAY_BIN " --a afpacket:" +
                              net.relay_a + " --b afpacket:" + net.relay_b +
                              " --loss 0.05 --reorder 0.05 --dup 0.02 --seed 7 --duration 50",
                          dir.path() / "relay.log"));
  // Let both open their sockets before the client starts (bounded wait).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(target.alive()) << slurp(dir.path() / "target.log");
  ASSERT_TRUE(relay.alive()) << slurp(dir.path() / "relay.log");

  const auto [json, status] = run_command(
      "timeout 40 ip netns exec " + net.client +
      " " HYPERSCSI_BENCH_BIN " --transport hyperscsi --port afpacket:" + net.cli_if +
      " --lun 0 --workload randrw --verify --size 16M --bs 16k --qd 8 --time 5 --json --quiet 2>" +
      (dir.path() / "bench.err").string());
  const int relay_status = relay.stop();
  const std::string relay_out = slurp(dir.path() / "relay.log");
  target.stop();
  ::unsetenv("HYPERSCSI_RUN_DIR");

  EXPECT_EQ(status, 0) << json << slurp(dir.path() / "bench.err");
  EXPECT_EQ(json_int(json, "errors"), 0) << json;
  EXPECT_EQ(json_int(json, "verify_mismatches"), 0) << json;
  EXPECT_GT(json_int(json, "writes"), 0) << json;
  EXPECT_GT(json_int(json, "reads"), 0) << json;

  EXPECT_EQ(relay_status, 0) << relay_out;
  const auto ab = relay_stats(relay_out, "a->b");
  const auto ba = relay_stats(relay_out, "b->a");
  ASSERT_FALSE(ab.empty()) << relay_out;
  ASSERT_FALSE(ba.empty()) << relay_out;
  std::printf("bench: %s\nrelay:\n%s", json.c_str(), relay_out.c_str());
  for (const auto* m : {&ab, &ba}) {
    EXPECT_GT(m->at("offered"), 100u) << relay_out;
    EXPECT_GT(m->at("lost"), 0u) << relay_out;
    EXPECT_GT(m->at("reordered"), 0u) << relay_out;
    EXPECT_GT(m->at("duplicated"), 0u) << relay_out;
  }
}

}  // namespace

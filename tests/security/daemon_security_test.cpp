// The real hyperscsi-target daemon in namespace B of a veth pair with a TOML
// config holding a per-initiator secret and a LUN that requires
// authentication and encryption; hyperscsi-bench in namespace A:
//  - with the right secret file: a verified write and read pass, and the
//    daemon reports the session authenticated with protection "encrypt";
//  - with a wrong secret: the login fails clearly (exit 1, an
//    authentication message) and the daemon counts the failure;
//  - without a secret: the LUN that requires authentication is absent for
//    the session, while an open LUN next to it still serves it.
// Needs root (namespaces) and skips with a reason otherwise. Every process,
// namespace and file it creates is removed, also on failure.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace {

using hyperscsi::test_support::NetnsPair;
using hyperscsi::test_support::TempDir;
namespace fs = std::filesystem;

using hyperscsi::test_support::read_text_file;
using hyperscsi::test_support::RunResult;
RunResult run(const std::string& cmd, int limit_s = 30) {
  return hyperscsi::test_support::run_bounded(cmd, limit_s);
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
}

using Daemon = hyperscsi::test_support::BackgroundProcess;

TEST(DaemonSecurity, SecretAndEncryptionOverVethWithTheRealDaemon) {
  const std::string target_bin = HYPERSCSI_TARGET_BIN;
  const std::string bench_bin = HYPERSCSI_BENCH_BIN;
  if (!fs::exists(target_bin) || !fs::exists(bench_bin))
    GTEST_SKIP() << "hyperscsi-target or hyperscsi-bench is not built";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
  TempDir dir("hs-security-");
  ASSERT_FALSE(dir.path().empty());
  NetnsPair net({.mtu = 1500});
  if (!net.ok()) GTEST_SKIP() << "cannot create namespaces: " << net.error();

  const fs::path key = dir.path() / "bench.key";
  const fs::path wrong = dir.path() / "wrong.key";
  write_file(key, "3f9c2a7be41d08c56a7712fe90b3d4c1e8a5f6072b9d3c4e\n");
  write_file(wrong, "00000000000000000000000000000000\n");
  const std::string name = "hss" + std::to_string(::getpid());
  const fs::path control = dir.path() / "target.sock";
  const fs::path config = dir.path() / "target.toml";
  write_file(config, "[target]\nname = \"" + name + "\"\nports = [\"afpacket:" + net.iface_b() +
                         "\"]\ncontrol = \"" + control.string() +
                         "\"\n\n[[initiator]]\nname = \"hyperscsi-bench\"\nsecret_file = \"" +
                         key.string() +
                         "\"\n\n[[lun]]\nnumber = 0\nstore = \"ram\"\nsize = \"32M\"\n"
                         "auth = \"required\"\nprotection = \"encrypt\"\n"
                         "\n[[lun]]\nnumber = 1\nstore = \"ram\"\nsize = \"8M\"\n");
  Daemon target;
  ASSERT_TRUE(target.start(
      "ip netns exec " + net.ns_b() + " " + target_bin + " --config " + config.string(),
      (dir.path() / "target.log").string()));
  const std::string base = "ip netns exec " + net.ns_a() + " " + bench_bin +
                           " --transport hyperscsi --port afpacket:" + net.iface_a() +
                           " --target " + name + " --lun 0 --quiet --size 16M";

  // The daemon may still be starting: retry setup failures (exit 1), bounded.
  RunResult w;
  for (int i = 0; i < 20; ++i) {
    w = run(base + " --secret-file " + key.string() +
            " --protection integrity --workload write --bs 64k --qd 8 --bytes 16M --verify");
    if (w.status != 1 || !target.alive()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_EQ(w.status, 0) << w.out << "\ntarget log:\n" << read_text_file(dir.path() / "target.log");
  auto r = run(base + " --secret-file " + key.string() +
               " --workload randread --bs 16k --qd 16 --time 1 --verify");
  ASSERT_EQ(r.status, 0) << r.out;

  // A session open during stats shows the negotiated level.
  Daemon holder;
  ASSERT_TRUE(holder.start(
      base + " --secret-file " + key.string() + " --workload randread --bs 4k --qd 1 --time 3",
      (dir.path() / "holder.log").string()));
  std::string stats;
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stats = run(target_bin + " stats --control " + control.string()).out;
    if (stats.find("protection encrypt") != std::string::npos) break;
  }
  EXPECT_NE(stats.find("authenticated protection encrypt"), std::string::npos) << stats;
  holder.stop();

  // Wrong secret: refused with a clear message, counted by the daemon.
  auto bad = run(base + " --secret-file " + wrong.string() + " --workload read --bs 4k --time 1");
  EXPECT_EQ(bad.status, 1) << bad.out;
  EXPECT_NE(bad.out.find("authentication"), std::string::npos) << bad.out;
  // No secret: LUN 0 requires authentication and is absent for such a
  // session; the open LUN 1 still works for it.
  auto none = run(base + " --workload read --bs 4k --time 1");
  EXPECT_EQ(none.status, 1) << none.out;
  EXPECT_NE(none.out.find("LUN 0"), std::string::npos) << none.out;
  const std::string open_lun = "ip netns exec " + net.ns_a() + " " + bench_bin +
                               " --transport hyperscsi --port afpacket:" + net.iface_a() +
                               " --target " + name + " --lun 1 --quiet --size 8M";
  auto other = run(open_lun + " --workload write --bs 64k --qd 4 --bytes 8M --verify");
  EXPECT_EQ(other.status, 0) << other.out;

  const std::string json = run(target_bin + " stats --json --control " + control.string()).out;
  EXPECT_NE(json.find("\"auth_failures\":1"), std::string::npos) << json;
  EXPECT_EQ(json.find("\"auth_successes\":0"), std::string::npos) << json;
  EXPECT_TRUE(target.alive()) << read_text_file(dir.path() / "target.log");
  const std::string log = read_text_file(dir.path() / "target.log");
  EXPECT_EQ(log.find("3f9c2a7b"), std::string::npos) << "the secret must never be logged";
  target.stop();
}

}  // namespace

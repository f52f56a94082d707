// Chaos test: client <-veth-> relay <-veth-> server, each in its own network
// namespace. The real target daemon serves a RAM LUN; hyperscsi-relay drops,
// reorders and duplicates frames in both directions; hyperscsi-bench runs a
// verified random read/write workload through it. Every byte must come back
// right, and the relay's statistics must show the faults really happened.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace {

namespace fs = std::filesystem;
using hyperscsi::test_support::run_command;

bool sh(const std::string& cmd) {
  return run_command(cmd + " >/dev/null 2>&1").second == 0;
}

// Three namespaces in a line: client (c0) -- (r0) relay (r1) -- (s0) server.
// The destructor deletes the namespaces, and with them the veths.
class ThreeNs {
 public:
  ThreeNs() {
    const std::string p = "hs" + std::to_string(::getpid());
    client = p + "c";
    relay = p + "r";
    server = p + "s";
    cli_if = p + "c0";
    relay_a = p + "r0";
    relay_b = p + "r1";
    srv_if = p + "s0";
    for (const auto* ns : {&client, &relay, &server}) {
      if (!sh("ip netns add " + *ns)) {
        fail("ip netns add " + *ns);
        return;
      }
      created_ = true;
    }
    if (!sh("ip link add " + cli_if + " netns " + client + " type veth peer name " + relay_a +
            " netns " + relay) ||
        !sh("ip link add " + relay_b + " netns " + relay + " type veth peer name " + srv_if +
            " netns " + server)) {
      fail("ip link add veth");
      return;
    }
    const std::pair<const std::string*, const std::string*> ifs[] = {
        {&client, &cli_if}, {&relay, &relay_a}, {&relay, &relay_b}, {&server, &srv_if}};
    for (const auto& [ns, dev] : ifs)
      if (!sh("ip -n " + *ns + " link set " + *dev + " mtu 9000 up")) {
        fail("ip link set " + *dev + " up");
        return;
      }
    ok = true;
  }
  ~ThreeNs() {
    if (!created_) return;
    for (const auto* ns : {&client, &relay, &server}) sh("ip netns del " + *ns);
  }
  ThreeNs(const ThreeNs&) = delete;
  ThreeNs& operator=(const ThreeNs&) = delete;

  bool ok = false;
  std::string error;
  std::string client, relay, server, cli_if, relay_a, relay_b, srv_if;

 private:
  void fail(const std::string& what) { error = what + " failed"; }
  bool created_ = false;
};

// A program run in its own process group; SIGTERM then SIGKILL on stop().
class Proc {
 public:
  bool start(const std::string& cmd, const fs::path& log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const std::string full = "exec " + cmd + " >" + log.string() + " 2>&1";
      ::execl("/bin/sh", "sh", "-c", full.c_str(), nullptr);
      _exit(127);
    }
    return pid_ > 0;
  }
  bool alive() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  // Returns the exit status (-1 if killed or not running).
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(-pid_, SIGTERM);
    int status = 0;
    pid_t r = 0;
    for (int i = 0; i < 100 && (r = ::waitpid(pid_, &status, WNOHANG)) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (r == 0) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  Proc() = default;
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;
  ~Proc() { stop(); }

 private:
  pid_t pid_ = -1;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Parses the relay's "a->b key=value ..." line for `dir`.
std::map<std::string, uint64_t> relay_stats(const std::string& out, const std::string& dir) {
  std::map<std::string, uint64_t> m;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(dir + " ", 0) != 0) continue;
    std::istringstream words(line.substr(dir.size() + 1));
    std::string w;
    while (words >> w) {
      const size_t eq = w.find('=');
      if (eq == std::string::npos) continue;
      m[w.substr(0, eq)] = std::stoull(w.substr(eq + 1));
    }
  }
  return m;
}

// The value of a numeric JSON field (the bench prints one flat record).
int64_t json_int(const std::string& json, const std::string& key) {
  const size_t k = json.find("\"" + key + "\":");
  if (k == std::string::npos) return -1;
  return std::stoll(json.substr(k + key.size() + 3));
}

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

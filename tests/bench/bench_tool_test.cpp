// hyperscsi-bench as a user runs it: a subprocess per run (each bounded with
// timeout(1)), its --json record parsed and checked.
//  - local: a verify write pass, verified reads and a mixed run pass; a
//    corrupted region makes --verify fail with exit status 2.
//  - hyperscsi: the real hyperscsi-target daemon in namespace B of a veth
//    pair, the bench in namespace A, with --verify and --target-pid.
//  - iscsi: tgtd in namespace B (own control port), a file LUN, the bench in
//    namespace A through libiscsi with --verify.
// The network tests need root and skip with a reason otherwise. Everything
// created (files, namespaces, processes) is removed also on failure.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace {

using hyperscsi::test_support::NetnsPair;
namespace fs = std::filesystem;

using hyperscsi::test_support::read_text_file;
using hyperscsi::test_support::RunResult;
RunResult run(const std::string& cmd, int limit_s = 30) {
  return hyperscsi::test_support::run_bounded(cmd, limit_s);
}

// A flat JSON object of strings, numbers, booleans and null: enough for the
// bench's record. Returns false on anything else (so a malformed record fails).
bool parse_flat_json(const std::string& text, std::map<std::string, std::string>& out) {
  size_t i = text.find('{');
  if (i == std::string::npos) return false;
  auto skip = [&] {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  };
  auto string_at = [&](std::string& s) {
    if (i >= text.size() || text[i] != '"') return false;
    for (++i; i < text.size() && text[i] != '"'; ++i) {
      if (text[i] == '\\' && i + 1 < text.size()) ++i;
      s += text[i];
    }
    if (i >= text.size()) return false;
    ++i;
    return true;
  };
  ++i;
  for (;;) {
    skip();
    if (i < text.size() && text[i] == '}') return true;
    std::string key, value;
    if (!string_at(key)) return false;
    skip();
    if (i >= text.size() || text[i] != ':') return false;
    ++i;
    skip();
    if (i < text.size() && text[i] == '"') {
      if (!string_at(value)) return false;
    } else {
      while (i < text.size() && text[i] != ',' && text[i] != '}' && !std::isspace(text[i]))
        value += text[i++];
      if (value.empty()) return false;
      if (value != "null" && value != "true" && value != "false") {
        size_t used = 0;
        try {
          std::stod(value, &used);
        } catch (...) {
          return false;
        }
        if (used != value.size()) return false;
      }
    }
    out[key] = value;
    skip();
    if (i < text.size() && text[i] == ',')
      ++i;
    else if (i < text.size() && text[i] == '}')
      return true;
    else
      return false;
  }
}

// The record's line in the output (stderr warnings may surround it).
std::map<std::string, std::string> record_of(const std::string& out) {
  std::map<std::string, std::string> rec;
  const auto start = out.find("{\"transport\"");
  if (start == std::string::npos) return rec;
  if (!parse_flat_json(out.substr(start, out.find('\n', start) - start), rec)) rec.clear();
  return rec;
}

double num(const std::map<std::string, std::string>& rec, const std::string& key) {
  const auto it = rec.find(key);
  if (it == rec.end() || it->second == "null") return -1;
  return std::stod(it->second);
}

void expect_record(const std::map<std::string, std::string>& rec, const std::string& transport) {
  for (const char* key :
       {"transport", "backend", "workload", "bs", "qd", "mtu", "shaped", "iops", "mb_s",
        "lat_p50_us", "lat_p99_us", "lat_p999_us", "cpu_s_per_gib_client", "cpu_s_per_gib_target",
        "ctx_per_io_client", "ctx_per_io_target", "frames_per_io", "verify_mismatches"})
    EXPECT_TRUE(rec.count(key)) << "missing field " << key;
  EXPECT_EQ(rec.count("transport") ? rec.at("transport") : "", transport);
  EXPECT_GT(num(rec, "iops"), 0);
  EXPECT_GT(num(rec, "mb_s"), 0);
  EXPECT_GT(num(rec, "lat_p50_us"), 0);
  EXPECT_LE(num(rec, "lat_p50_us"), num(rec, "lat_p99_us"));
  EXPECT_LE(num(rec, "lat_p99_us"), num(rec, "lat_p999_us"));
  EXPECT_EQ(num(rec, "verify_mismatches"), 0);
}

const std::string kBench = HYPERSCSI_BENCH_BIN;

class TempDir {
 public:
  explicit TempDir(const std::string& tag)
      : path_(fs::temp_directory_path() / (tag + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void make_file(const fs::path& p, uintmax_t size) {
  { std::ofstream(p.string()); }
  fs::resize_file(p, size);
}

TEST(BenchTool, LocalVerifyPassesAndCatchesCorruption) {
  TempDir dir("hs-bench-local-");
  const auto file = dir.path() / "disk.img";
  make_file(file, 8 << 20);
  const std::string base =
      kBench + " --transport local --path " + file.string() + " --quiet --json";

  // A sequential verify write over the whole file, then verified reads.
  auto w = run(base +
               " --workload write --bs 64k --qd 4 --bytes 8M --verify --mtu 1500 "
               "--shaped no");
  ASSERT_EQ(w.status, 0) << w.out;
  auto rec = record_of(w.out);
  expect_record(rec, "local");
  EXPECT_EQ(rec["workload"], "write");
  EXPECT_EQ(rec["mtu"], "1500");
  EXPECT_EQ(num(rec, "bytes"), 8 << 20);
  EXPECT_EQ(rec["cpu_s_per_gib_target"], "null");  // no --target-pid
  EXPECT_EQ(rec["client_timeouts"], "null");       // only HyperSCSI counts its recovery
  EXPECT_EQ(run(base + " --checksum maybe").status, 1);
  EXPECT_EQ(run(base + " --busy-poll-us 20000").status, 1);  // above 10000

  auto r = run(base + " --workload randread --bs 4k --qd 8 --time 1 --verify");
  ASSERT_EQ(r.status, 0) << r.out;
  expect_record(record_of(r.out), "local");

  // Mixed: reads only chunks written in this run, each checked against its generation.
  auto m = run(base + " --workload randrw --read-pct 70 --bs 8k --qd 16 --time 1 --verify");
  ASSERT_EQ(m.status, 0) << m.out;
  rec = record_of(m.out);
  expect_record(rec, "local");
  EXPECT_GT(num(rec, "reads"), 0);
  EXPECT_GT(num(rec, "writes"), 0);

  // QD1 keeps going for its whole --time (the in-flight count never touches zero mid-run).
  auto q1 = run(base + " --workload randrw --bs 4k --qd 1 --time 1 --verify");
  ASSERT_EQ(q1.status, 0) << q1.out;
  rec = record_of(q1.out);
  expect_record(rec, "local");
  EXPECT_GE(num(rec, "seconds"), 0.9) << q1.out;
  EXPECT_GT(num(rec, "ios"), 10) << q1.out;

  // Corrupt 100 bytes at 3 MiB + 1000: a full verified read must fail and say where.
  {
    std::fstream f(file.string(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp((3 << 20) + 1000);
    const std::string junk(100, 'X');
    f.write(junk.data(), std::streamsize(junk.size()));
  }
  auto bad = run(base + " --workload read --bs 64k --qd 4 --bytes 8M --verify");
  EXPECT_EQ(bad.status, 2) << bad.out;
  rec = record_of(bad.out);
  EXPECT_GE(num(rec, "verify_mismatches"), 1) << bad.out;
  EXPECT_NE(bad.out.find("verify FAILED"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("sector 6145"), std::string::npos) << bad.out;  // (3 MiB + 1000) / 512

  // A file that never held patterns fails verification too; bad input is a clear error.
  const auto blank = dir.path() / "blank.img";
  make_file(blank, 1 << 20);
  auto b = run(kBench + " --transport local --quiet --path " + blank.string() +
               " --workload read --bytes 1M --verify");
  EXPECT_EQ(b.status, 2) << b.out;
  auto e = run(kBench + " --transport local --quiet --path " + blank.string() + " --bs 1000");
  EXPECT_EQ(e.status, 1) << e.out;
  EXPECT_NE(e.out.find("--bs"), std::string::npos) << e.out;
  auto missing =
      run(kBench + " --transport local --quiet --path " + (dir.path() / "none").string());
  EXPECT_EQ(missing.status, 1) << missing.out;
  EXPECT_NE(missing.out.find("cannot open"), std::string::npos) << missing.out;
}

using Background = hyperscsi::test_support::BackgroundProcess;

TEST(BenchTool, HyperscsiOverVethWithRealDaemonVerifies) {
  const std::string target_bin = HYPERSCSI_TARGET_BIN;
  if (target_bin.empty() || !fs::exists(target_bin))
    GTEST_SKIP() << "the target daemon hyperscsi-target is not built";
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";
  TempDir dir("hs-bench-hs-");
  ::setenv("HYPERSCSI_RUN_DIR", dir.path().c_str(), 1);
  NetnsPair net({.mtu = 9000});
  if (!net.ok()) GTEST_SKIP() << "cannot create namespaces: " << net.error();
  const std::string name = "hsb" + std::to_string(::getpid());
  Background target;
  ASSERT_TRUE(target.start("ip netns exec " + net.ns_b() + " " + target_bin +
                               " --port afpacket:" + net.iface_b() + " --lun 0=ram:32M --name " +
                               name + " --control " + (dir.path() / "target.sock").string(),
                           (dir.path() / "target.log").string()));
  const std::string base = "ip netns exec " + net.ns_a() + " " + kBench +
                           " --transport hyperscsi --port afpacket:" + net.iface_a() +
                           " --target " + name + " --lun 0 --quiet --json --target-pid " +
                           std::to_string(target.pid()) + " --mtu 9000 --shaped no";

  // The daemon may still be starting: retry setup failures (exit 1), bounded.
  RunResult w;
  for (int i = 0; i < 20; ++i) {
    w = run(base + " --workload write --bs 64k --qd 8 --size 16M --bytes 16M --verify");
    if (w.status != 1 || !target.alive()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_EQ(w.status, 0) << w.out << "\ntarget log:\n" << read_text_file(dir.path() / "target.log");
  auto rec = record_of(w.out);
  expect_record(rec, "hyperscsi");
  EXPECT_EQ(rec["backend"], "afpacket");
  EXPECT_EQ(num(rec, "bytes"), 16 << 20);
  EXPECT_GT(num(rec, "frames_per_io"), 1);  // at least a command and its reply
  EXPECT_GE(num(rec, "cpu_s_per_gib_target"), 0) << "target /proc figures missing: " << w.out;
  EXPECT_GE(num(rec, "ctx_per_io_target"), 0);
  // The client's recovery counters are numbers (0 on a clean veth, but present).
  EXPECT_GE(num(rec, "client_retransmits"), 0);
  EXPECT_GE(num(rec, "client_timeouts"), num(rec, "client_spurious_timeouts"));

  // The initiator polling for replies before it sleeps: same verified data.
  auto r = run(base + " --workload randread --bs 4k --qd 32 --size 16M --time 1 --verify" +
               " --busy-poll-us 50");
  ASSERT_EQ(r.status, 0) << r.out;
  rec = record_of(r.out);
  expect_record(rec, "hyperscsi");
  EXPECT_GT(num(rec, "reads"), 0);
  // How the client's I/O thread waited: numbers for HyperSCSI.
  EXPECT_GE(num(rec, "client_poll_s"), 0) << r.out;
  EXPECT_GE(num(rec, "client_wakeups_per_io"), 0);
  EXPECT_GE(num(rec, "client_holds_per_io"), 0);

  // Without the crc32 feature the session still moves verified data.
  auto m = run(base + " --workload randrw --bs 16k --qd 16 --size 16M --time 1 --verify" +
               " --checksum off");
  ASSERT_EQ(m.status, 0) << m.out;
  expect_record(record_of(m.out), "hyperscsi");
  EXPECT_TRUE(target.alive());
  target.stop();
  ::unsetenv("HYPERSCSI_RUN_DIR");
}

TEST(BenchTool, IscsiAgainstTgtdOverVethVerifies) {
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root (namespaces)";
  if (run("sh -c 'command -v tgtd && command -v tgtadm'").status != 0)
    GTEST_SKIP() << "tgtd/tgtadm (package tgt) not installed";
  TempDir dir("hs-bench-iscsi-");
  const auto lun_file = dir.path() / "lun.img";
  make_file(lun_file, 16 << 20);
  NetnsPair net({.mtu = 1500, .assign_ips = true});
  if (!net.ok()) GTEST_SKIP() << "cannot create namespaces: " << net.error();
  // tgtd's control socket is /var/run/tgtd/socket.N: a per-process N keeps
  // this instance apart from any other tgtd on the machine.
  const std::string control = std::to_string(1000 + ::getpid() % 30000);
  const std::string iqn = "iqn.2026-01.org.hyperscsi:bench" + std::to_string(::getpid());
  struct SocketFiles {  // left behind by a killed tgtd
    std::string base;
    ~SocketFiles() {
      std::error_code ec;
      fs::remove(base, ec);
      fs::remove(base + ".lock", ec);
    }
  } socket_files{"/var/run/tgtd/socket." + control};
  Background tgtd;
  ASSERT_TRUE(tgtd.start("ip netns exec " + net.ns_b() + " tgtd -f -C " + control,
                         (dir.path() / "tgtd.log").string()));
  const std::string adm = "tgtadm -C " + control + " --lld iscsi ";
  RunResult a;
  for (int i = 0; i < 40; ++i) {  // until tgtd listens on its control socket
    a = run(adm + "--op new --mode target --tid 1 -T " + iqn);
    if (a.status == 0 || !tgtd.alive()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(a.status, 0) << a.out << "\ntgtd log:\n" << read_text_file(dir.path() / "tgtd.log");
  a = run(adm + "--op new --mode logicalunit --tid 1 --lun 1 -b " + lun_file.string());
  ASSERT_EQ(a.status, 0) << a.out;
  a = run(adm + "--op bind --mode target --tid 1 -I ALL");
  ASSERT_EQ(a.status, 0) << a.out;

  const std::string base = "ip netns exec " + net.ns_a() + " " + kBench +
                           " --transport iscsi --url iscsi://" + net.ip_b() + "/" + iqn +
                           "/1 --quiet --json --iface " + net.iface_a() + " --target-pid " +
                           std::to_string(tgtd.pid());
  RunResult w;
  for (int i = 0; i < 20; ++i) {  // the portal may open a little after the target exists
    w = run(base + " --workload write --bs 64k --qd 8 --bytes 16M --verify");
    if (w.status != 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_EQ(w.status, 0) << w.out << "\ntgtd log:\n" << read_text_file(dir.path() / "tgtd.log");
  auto rec = record_of(w.out);
  expect_record(rec, "iscsi");
  EXPECT_EQ(num(rec, "bytes"), 16 << 20);
  EXPECT_GT(num(rec, "frames_per_io"), 1);
  EXPECT_GE(num(rec, "cpu_s_per_gib_target"), 0) << w.out;

  auto r = run(base + " --workload randread --bs 4k --qd 16 --time 1 --verify");
  ASSERT_EQ(r.status, 0) << r.out;
  expect_record(record_of(r.out), "iscsi");
  auto m = run(base + " --workload randrw --bs 8k --qd 8 --time 1 --verify");
  ASSERT_EQ(m.status, 0) << m.out;
  expect_record(record_of(m.out), "iscsi");

  // The LUN file holds what the bench wrote: a local verified read agrees.
  auto local = run(kBench + " --transport local --quiet --json --path " + lun_file.string() +
                   " --workload read --bs 64k --bytes 16M --verify");
  EXPECT_EQ(local.status, 0) << local.out;

  run(adm + "--op delete --mode system --force");
  tgtd.stop();
}

}  // namespace

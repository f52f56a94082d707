// The attached disk end to end (issue 13): the real target daemon in one
// namespace, hyperscsi-attach (FUSE on the low-level API + loop) or the
// nbdkit plugin in another, joined by a veth pair or through hyperscsi-relay.
//   - the FUSE file's semantics: unaligned I/O, truncate rules, punch hole,
//     zero range, fsync, O_DSYNC, the end of the LUN, errors;
//   - the loop device's write-zeroes and discard, the NBD export's zeroing;
//   - fio --verify=crc32c (write, then verify; 4 KiB-1 MiB, QD32) on the loop
//     device through the relay's loss, reordering and duplication;
//   - kill -9 of the target under a fio write+verify job on the loop device
//     and on the NBD export, target restarted on the same file: no I/O error;
//   - a write-protected LUN: read-only loop device, 0400 file, EROFS, mkfs
//     fails with a clear message; the NBD export is read-only;
//   - bad input keeps clear errors, and a normal detach logs no error.
// The initiator programs join namespace A's network only (nsenter --net) so
// their FUSE mount and loop device are visible to the test. Needs root; skips
// with a reason otherwise. Everything made is removed, also on failure.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"

namespace {

using hyperscsi::test_support::NetnsPair;
using Background = hyperscsi::test_support::BackgroundProcess;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool run(const std::string& cmd, std::string* out = nullptr) {
  std::string output;
  const bool ok = NetnsPair::shell(cmd + " 2>&1", &output);
  if (out) *out = output;
  if (!ok) std::fprintf(stderr, "command failed: %s\n%s\n", cmd.c_str(), output.c_str());
  return ok;
}

bool have(const std::string& tool) {
  return NetnsPair::shell("command -v " + tool + " >/dev/null 2>&1");
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::string text;
  char buf[4096];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) text.append(buf, size_t(in.gcount()));
  return text;
}

// Three namespaces in a line for the relay: client -- relay -- server.
struct ThreeHosts {
  std::string client, relay, server, cli_if, relay_a, relay_b, srv_if;
  bool ok = false;
  ThreeHosts() {
    const std::string p = "hb" + std::to_string(::getpid());
    client = p + "c", relay = p + "r", server = p + "s";
    cli_if = p + "c0", relay_a = p + "r0", relay_b = p + "r1", srv_if = p + "s0";
    ok = run("ip netns add " + client) && run("ip netns add " + relay) &&
         run("ip netns add " + server) &&
         run("ip link add " + cli_if + " netns " + client + " type veth peer name " + relay_a +
             " netns " + relay) &&
         run("ip link add " + relay_b + " netns " + relay + " type veth peer name " + srv_if +
             " netns " + server) &&
         run("ip -n " + client + " link set " + cli_if + " mtu 9000 up") &&
         run("ip -n " + relay + " link set " + relay_a + " mtu 9000 up") &&
         run("ip -n " + relay + " link set " + relay_b + " mtu 9000 up") &&
         run("ip -n " + server + " link set " + srv_if + " mtu 9000 up");
  }
  ~ThreeHosts() {
    for (const auto* ns : {&client, &relay, &server})
      NetnsPair::shell("ip netns del " + *ns + " 2>/dev/null");
  }
};

class BlockdevE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env = std::getenv("HYPERSCSI_TARGET_BIN");
    target_bin_ = env && *env ? env : HYPERSCSI_TARGET_BIN;
    if (target_bin_.empty() || !fs::exists(target_bin_))
      GTEST_SKIP() << "the target daemon hyperscsi-target is not built";
    if (!hyperscsi::test_support::running_as_root())
      GTEST_SKIP() << "needs root (network namespaces, FUSE, loop devices, mount)";
    if (!fs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
    for (const char* t : {"nsenter", "fio", "mkfs.ext4", "unshare", "losetup"})
      if (!have(t)) GTEST_SKIP() << "missing tool " << t;
    work_ = fs::temp_directory_path() / ("hs-blockdev-e2e-" + std::to_string(::getpid()));
    fs::create_directories(work_ / "fuse");
    fs::create_directories(work_ / "mnt");
    fs::create_directories(work_ / "run");
    ::setenv("HYPERSCSI_RUN_DIR", (work_ / "run").c_str(), 1);
    disk_ = (work_ / "disk.img").string();
    name_ = "hsb" + std::to_string(::getpid());
  }

  void TearDown() override {
    if (!work_.empty()) {
      NetnsPair::shell("umount -l " + (work_ / "mnt").string() + " 2>/dev/null");
      NetnsPair::shell(HYPERSCSI_ATTACH_BIN " detach " + fuse() + " >/dev/null 2>&1");
      NetnsPair::shell("fusermount3 -u -z " + fuse() + " 2>/dev/null");
    }
    nbdkit_.stop();
    relay_.stop();
    target_.stop();
    hosts_.reset();
    net_.reset();
    if (!work_.empty()) {
      std::error_code ec;
      fs::remove_all(work_, ec);
    }
    ::unsetenv("HYPERSCSI_RUN_DIR");
  }

  // Two namespaces joined directly (or three through the relay with `relay_args`).
  bool make_hosts(const std::string& relay_args = {}) {
    if (relay_args.empty()) {
      net_ = std::make_unique<NetnsPair>(hyperscsi::test_support::NetnsConfig{.mtu = 9000});
      return use_pair();
    }
    hosts_ = std::make_unique<ThreeHosts>();
    if (!hosts_->ok) return false;
    client_ns_ = hosts_->client, server_ns_ = hosts_->server;
    client_if_ = hosts_->cli_if, server_if_ = hosts_->srv_if;
    return relay_.start("ip netns exec " + hosts_->relay +
                            " " HYPERSCSI_RELAY_BIN " --a afpacket:" + hosts_->relay_a +
                            " --b afpacket:" + hosts_->relay_b + " " + relay_args,
                        (work_ / "relay.log").string());
  }

  // Two namespaces joined by two veth pairs (the paths of a multipath session).
  bool make_two_path_hosts() {
    net_ = std::make_unique<NetnsPair>(
        hyperscsi::test_support::NetnsConfig{.mtu = 9000, .extra_links = {9000}});
    return use_pair();
  }

  bool use_pair() {
    if (!net_->ok()) return false;
    client_ns_ = net_->ns_a(), server_ns_ = net_->ns_b();
    client_if_ = net_->iface_a(), server_if_ = net_->iface_b();
    return true;
  }

  bool start_target(const std::string& size = "64M", const std::string& extra = {}) {
    if (!fs::exists(disk_) && !run("truncate -s " + size + " " + disk_)) return false;
    return target_.start("ip netns exec " + server_ns_ + " " + target_bin_ +
                             " --port afpacket:" + server_if_ + " --lun 0=" + disk_ + " " + extra +
                             " --name " + name_ + " --control " + (work_ / "target.sock").string(),
                         (work_ / ("target" + std::to_string(++starts_) + ".log")).string());
  }

  std::string in_client(const std::string& cmd) const {
    return "nsenter --net=/run/netns/" + client_ns_ + " " + cmd;
  }
  std::string port() const { return "afpacket:" + client_if_; }
  std::string fuse() const { return (work_ / "fuse").string(); }
  std::string attach_cmd(const std::string& extra = " --loop") const {
    return in_client(HYPERSCSI_ATTACH_BIN " attach --port " + port() + " --target " + name_ +
                     " --lun 0 --fuse " + fuse() + extra);
  }

  // Attaches (retrying while the target starts); the loop device or "" (no --loop).
  bool attach(std::string& loop, const std::string& extra = " --loop") {
    std::string out;
    for (int i = 0; i < 20; ++i) {
      if (NetnsPair::shell(attach_cmd(extra) + " 2>&1", &out)) {
        std::smatch m;
        loop = std::regex_search(out, m, std::regex("loop (/dev/loop[0-9]+)")) ? m[1].str() : "";
        return true;
      }
      std::this_thread::sleep_for(250ms);
    }
    std::fprintf(stderr, "attach failed: %s\n", out.c_str());
    return false;
  }

  // Starts nbdkit and waits until it serves. The plugin logs in before it
  // serves, so while the target is still starting nbdkit exits: start again.
  bool start_nbdkit(const std::string& ports = {}) {
    if (!have("nbdkit") || !have("nbdinfo")) return false;
    sock_ = (work_ / "nbd.sock").string();
    for (int attempt = 0; attempt < 20; ++attempt) {
      if (!nbdkit_.start(in_client(NBDKIT_ENV "nbdkit -f --threads 32 --unix " + sock_ +
                                   " " NBDKIT_PLUGIN " port=" + (ports.empty() ? port() : ports) +
                                   " target=" + name_ + " lun=0 dead_time=60"),
                         (work_ / "nbdkit.log").string()))
        return false;
      for (int i = 0; i < 100 && nbdkit_.alive(); ++i) {
        if (NetnsPair::shell("nbdinfo --size 'nbd+unix:///?socket=" + sock_ + "' >/dev/null 2>&1"))
          return true;
        std::this_thread::sleep_for(100ms);
      }
      std::this_thread::sleep_for(250ms);
    }
    return false;
  }

  // A verified fio job: written at random in sizes of 4 KiB to 1 MiB at QD32,
  // then read back and checked (crc32c in every block's header).
  static std::string fio_verify(const std::string& target_opts, const std::string& size,
                                const std::string& extra = {}) {
    return "timeout -k 5 150 fio --name=verify " + target_opts +
           " --rw=randwrite --bsrange=4k-1m --iodepth=32 --size=" + size +
           " --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --randrepeat=0 " +
           extra;
  }

  fs::path work_;
  std::string target_bin_, disk_, name_, sock_;
  std::unique_ptr<NetnsPair> net_;
  std::unique_ptr<ThreeHosts> hosts_;
  std::string client_ns_, server_ns_, client_if_, server_if_;
  int starts_ = 0;
  Background target_, relay_, nbdkit_;
};

// The FUSE file through system calls: what the loop device and a user see.
TEST_F(BlockdevE2eTest, FuseFileKeepsItsSemantics) {
  ASSERT_TRUE(make_hosts());
  ASSERT_TRUE(start_target("16M"));
  std::string loop;
  ASSERT_TRUE(attach(loop, ""));
  const std::string file = fuse() + "/lun0";
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 16 << 20);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const int fd = ::open(file.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::mt19937 rng(5);
  std::vector<char> a(200000);
  for (auto& c : a) c = static_cast<char>(rng());
  // Unaligned write and read (a read-modify-write of the edges).
  ASSERT_EQ(::pwrite(fd, a.data(), a.size(), 777), static_cast<ssize_t>(a.size()));
  std::vector<char> back(a.size() + 1000);
  ASSERT_EQ(::pread(fd, back.data(), back.size(), 277), static_cast<ssize_t>(back.size()));
  EXPECT_TRUE(std::equal(a.begin(), a.end(), back.begin() + 500));
  // The end of the LUN: short read, then 0; a write at the end fails with ENOSPC.
  EXPECT_EQ(::pread(fd, back.data(), 4096, (16 << 20) - 1000), 1000);
  EXPECT_EQ(::pread(fd, back.data(), 4096, 16 << 20), 0);
  errno = 0;
  EXPECT_EQ(::pwrite(fd, a.data(), 512, 16 << 20), -1);
  EXPECT_EQ(errno, ENOSPC);
  // Truncate: to the size is a no-op, to any other size EPERM.
  EXPECT_EQ(::ftruncate(fd, 16 << 20), 0);
  errno = 0;
  EXPECT_EQ(::ftruncate(fd, 1 << 20), -1);
  EXPECT_EQ(errno, EPERM);
  // Punch hole: reads as zeros, neighbours intact; plain allocation is a
  // no-op; other modes are refused.
  ASSERT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 70000), 0);
  ASSERT_EQ(::pread(fd, back.data(), 80000, 0), 80000);
  for (size_t i = 777; i < 80000; ++i) {
    const bool punched = i >= 1000 && i < 71000;
    ASSERT_EQ(back[i], punched ? 0 : a[i - 777]) << "byte " << i;
  }
  // Zero range (WRITE SAME): zeros, unaligned edges included, neighbours intact.
  ASSERT_EQ(::pwrite(fd, a.data(), a.size(), 777), static_cast<ssize_t>(a.size()));
  ASSERT_EQ(::fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 5000, 150001), 0);
  ASSERT_EQ(::pread(fd, back.data(), 200000, 777), 200000);
  for (size_t i = 777; i < 200777; ++i) {
    const bool zeroed = i >= 5000 && i < 155001;
    ASSERT_EQ(back[i - 777], zeroed ? 0 : a[i - 777]) << "byte " << i;
  }
  EXPECT_EQ(::fallocate(fd, 0, 0, 4096), 0);
  errno = 0;
  EXPECT_EQ(::fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_EQ(::fsync(fd), 0);  // SYNCHRONIZE CACHE
  ::close(fd);
  // O_DSYNC (FUA) writes.
  const int dfd = ::open(file.c_str(), O_WRONLY | O_DSYNC);
  ASSERT_GE(dfd, 0);
  EXPECT_EQ(::pwrite(dfd, a.data(), 65536, 1 << 20), 65536);
  ::close(dfd);
  ASSERT_EQ(::truncate(file.c_str(), 16 << 20), 0);
  std::string out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse(), &out)) << out;
  // The target's file holds what was written.
  std::vector<char> disk(a.size());
  std::ifstream in(disk_, std::ios::binary);
  in.seekg(160000);
  in.read(disk.data(), 10000);
  EXPECT_TRUE(std::equal(disk.begin(), disk.begin() + 10000, a.begin() + (160000 - 777)));
}

// The loop device's write-zeroes (BLKZEROOUT: FUSE ZERO_RANGE, WRITE SAME)
// and discard (PUNCH_HOLE, UNMAP) reach the LUN without 'operation not
// supported'; the NBD export offers zeroing and nbdcopy zeroes a hole with it.
TEST_F(BlockdevE2eTest, LoopAndNbdZeroAndDiscard) {
  ASSERT_TRUE(make_hosts());
  ASSERT_TRUE(start_target("16M"));
  const std::string data = (work_ / "data.img").string();
  ASSERT_TRUE(run("dd if=/dev/urandom of=" + data + " bs=1M count=16 status=none"));
  std::string loop, out;
  ASSERT_TRUE(attach(loop));
  ASSERT_FALSE(loop.empty());
  ASSERT_TRUE(run("dd if=" + data + " of=" + loop + " bs=1M oflag=direct status=none", &out));
  const std::string queue = "/sys/block/" + loop.substr(5) + "/queue/";
  EXPECT_NE(slurp(queue + "write_zeroes_max_bytes"), "0\n");
  ASSERT_TRUE(run("blkdiscard -z -o 1048576 -l 2097152 " + loop, &out)) << out;  // NOUNMAP
  ASSERT_TRUE(run("blkdiscard -o 4194304 -l 1048576 " + loop, &out)) << out;
  ASSERT_TRUE(run("fallocate --punch-hole -o 6291456 -l 65536 " + loop, &out)) << out;
  EXPECT_NE(slurp(queue + "write_zeroes_max_bytes"), "0\n") << "the kernel turned it off";
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse(), &out)) << out;
  const std::string want = slurp(data), disk = slurp(disk_);
  ASSERT_EQ(disk.size(), want.size());
  auto zero = [](size_t i) {
    return (i >= (1u << 20) && i < (3u << 20)) || (i >= (4u << 20) && i < (5u << 20)) ||
           (i >= (6u << 20) && i < (6u << 20) + 65536);
  };
  for (size_t i = 0; i < disk.size(); ++i)
    ASSERT_EQ(disk[i], zero(i) ? 0 : want[i]) << "byte " << i;

  if (!start_nbdkit() || !have("nbdcopy")) {
    std::printf("NBD part skipped: nbdkit/nbdinfo/nbdcopy missing\n");
    return;
  }
  const std::string uri = "'nbd+unix:///?socket=" + sock_ + "'";
  EXPECT_TRUE(run("nbdinfo --can zero " + uri, &out)) << out;
  // A source with a 2 MiB hole: nbdcopy zeroes it on the export (not trim:
  // --allocated), so what was there reads as zeros.
  const std::string holed = (work_ / "holed.img").string();
  ASSERT_TRUE(run("cp " + data + " " + holed + " && fallocate --punch-hole -o 8388608 -l 2097152 " +
                  holed));
  ASSERT_TRUE(run("nbdcopy --allocated " + holed + " " + uri, &out)) << out;
  nbdkit_.stop();
  const std::string disk2 = slurp(disk_);
  for (size_t i = 0; i < disk2.size(); ++i) {
    const bool hole = i >= (8u << 20) && i < (10u << 20);
    ASSERT_EQ(disk2[i], hole ? 0 : want[i]) << "byte " << i;
  }
}

TEST_F(BlockdevE2eTest, FioVerifyOnLoopThroughLossReorderAndDuplication) {
  if (!fs::exists(HYPERSCSI_RELAY_BIN)) GTEST_SKIP() << "hyperscsi-relay is not built";
  ASSERT_TRUE(make_hosts("--loss 0.02 --reorder 0.03 --dup 0.01 --seed 13"))
      << "cannot create namespaces or start the relay";
  ASSERT_TRUE(start_target("64M"));
  std::string loop;
  ASSERT_TRUE(attach(loop));
  ASSERT_FALSE(loop.empty());
  std::string out;
  const auto t0 = std::chrono::steady_clock::now();
  const bool ok =
      run(fio_verify("--filename=" + loop + " --ioengine=io_uring --direct=1", "48M"), &out);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(ok) << out;
  EXPECT_NE(out.find("err= 0"), std::string::npos) << out;
  std::printf("fio write+verify of 48 MiB through the relay: %.1f s\n", secs);
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " stats " + fuse(), &out));
  std::printf("%s", out.c_str());
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse(), &out)) << out;
  relay_.stop();
  const std::string relay_out = slurp(work_ / "relay.log");
  for (const char* key : {"lost", "reordered", "duplicated"}) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(relay_out, m, std::regex(std::string(key) + "=([0-9]+)")))
        << relay_out;
    EXPECT_GT(std::stoull(m[1]), 0u) << key << ": " << relay_out;
  }
}

// A multipath session under the loop device: a verified fio job (4 KiB-1 MiB,
// QD32) while the second link and then the first (the login link) go down for
// a second and come back: no I/O error, the data verifies, and both paths
// are active and carry frames again afterwards.
TEST_F(BlockdevE2eTest, FioVerifyOnLoopOverTwoPathsWhileEachGoesDownAndBack) {
  ASSERT_TRUE(make_two_path_hosts()) << net_->error();
  ASSERT_TRUE(start_target("64M", "--port afpacket:" + net_->iface_b(1)));
  std::string loop;
  ASSERT_TRUE(attach(loop, " --loop --port afpacket:" + net_->iface_a(1)));
  ASSERT_FALSE(loop.empty());
  const auto paths = [&] {
    std::string out;
    run(HYPERSCSI_ATTACH_BIN " stats " + fuse(), &out);
    return out;
  };
  const auto count_active = [](const std::string& stats) {
    size_t n = 0;
    for (size_t at = stats.find("path_"); at != std::string::npos;
         at = stats.find("path_", at + 1)) {
      const size_t eol = stats.find('\n', at);
      if (stats.substr(at, eol - at).find("active") != std::string::npos) ++n;
    }
    return n;
  };
  for (int i = 0; i < 50 && count_active(paths()) < 2; ++i) std::this_thread::sleep_for(100ms);
  ASSERT_EQ(count_active(paths()), 2u) << paths();
  Background fio;
  ASSERT_TRUE(fio.start("sh -c '" +
                            fio_verify("--filename=" + loop + " --ioengine=io_uring --direct=1",
                                       "48M", "--rate=40m") +
                            " && echo ok > " + (work_ / "fio.ok").string() + "'",
                        (work_ / "fio.log").string()));
  for (size_t link : {size_t{1}, size_t{0}}) {
    std::this_thread::sleep_for(400ms);
    ASSERT_TRUE(net_->set_link_up(link, false));
    std::this_thread::sleep_for(1s);
    ASSERT_TRUE(net_->set_link_up(link, true));
  }
  for (int i = 0; i < 900 && !fs::exists(work_ / "fio.ok") && fio.alive(); ++i)
    std::this_thread::sleep_for(100ms);
  const std::string log = slurp(work_ / "fio.log");
  ASSERT_TRUE(fs::exists(work_ / "fio.ok")) << log << paths();
  EXPECT_NE(log.find("err= 0"), std::string::npos) << log;
  // Both paths come back into use (a failed path is probed, then taken back).
  std::string before = paths(), after;
  for (int i = 0; i < 100; ++i) {
    run("dd if=" + loop + " of=/dev/null bs=1M count=8 iflag=direct skip=" +
        std::to_string(8 * (i % 6)) + " status=none");
    after = paths();
    if (count_active(after) == 2 && after != before) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(count_active(after), 2u) << after;
  EXPECT_NE(after.find("failovers 1"), std::string::npos) << "no path was declared failed:\n"
                                                          << after;
  std::printf("paths after the job:\n%s", after.c_str());
  std::string out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse(), &out)) << out;
}

// kill -9 of the target under a rate-limited write+verify job, restarted on
// the same file a second later: the job finishes without an I/O error.
TEST_F(BlockdevE2eTest, FioVerifyOnLoopSurvivesTargetKill9) {
  ASSERT_TRUE(make_hosts());
  ASSERT_TRUE(start_target("64M"));
  std::string loop;
  ASSERT_TRUE(attach(loop));
  ASSERT_FALSE(loop.empty());
  Background fio;
  ASSERT_TRUE(fio.start("sh -c '" +
                            fio_verify("--filename=" + loop + " --ioengine=io_uring --direct=1",
                                       "64M", "--rate=40m") +
                            " && echo ok > " + (work_ / "fio.ok").string() + "'",
                        (work_ / "fio.log").string()));
  std::this_thread::sleep_for(600ms);
  target_.kill9();
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(start_target());
  for (int i = 0; i < 600 && !fs::exists(work_ / "fio.ok") && fio.alive(); ++i)
    std::this_thread::sleep_for(100ms);
  const std::string log = slurp(work_ / "fio.log");
  ASSERT_TRUE(fs::exists(work_ / "fio.ok")) << log;
  EXPECT_NE(log.find("err= 0"), std::string::npos) << log;
  // The session met the restarted target: it logged in again. The FUSE
  // file's page cache can absorb the I/O of a slow (sanitizer) run around
  // the kill, so read past the caches until a command reaches the target.
  std::string out;
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " stats " + fuse(), &out));
    if (out.find("relogins               0") == std::string::npos) break;
    run("sync; echo 3 > /proc/sys/vm/drop_caches; dd if=" + loop +
        " of=/dev/null bs=1M count=1 iflag=direct skip=" + std::to_string(i % 64));
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(out.find("relogins               0"), std::string::npos) << "no re-login: " << out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse(), &out)) << out;
}

TEST_F(BlockdevE2eTest, FioVerifyOnNbdSurvivesTargetKill9) {
  if (!have("nbdkit") || !have("nbdinfo")) GTEST_SKIP() << "nbdkit/nbdinfo missing";
  ASSERT_TRUE(make_hosts());
  ASSERT_TRUE(start_target("64M"));
  ASSERT_TRUE(start_nbdkit()) << slurp(work_ / "nbdkit.log");
  Background fio;
  ASSERT_TRUE(fio.start(
      "sh -c '" +
          fio_verify("--ioengine=nbd --uri=nbd+unix:///?socket=" + sock_, "64M", "--rate=40m") +
          " && echo ok > " + (work_ / "fio.ok").string() + "'",
      (work_ / "fio.log").string()));
  std::this_thread::sleep_for(600ms);
  target_.kill9();
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(start_target());
  for (int i = 0; i < 600 && !fs::exists(work_ / "fio.ok") && fio.alive(); ++i)
    std::this_thread::sleep_for(100ms);
  const std::string log = slurp(work_ / "fio.log");
  ASSERT_TRUE(fs::exists(work_ / "fio.ok")) << log << slurp(work_ / "nbdkit.log");
  EXPECT_NE(log.find("err= 0"), std::string::npos) << log;
}

// The NBD export over two ports (port=A,B: one multipath session): a verified
// fio job while the second link goes down for a second and back; the
// target's stats show one session with two paths, both active again.
TEST_F(BlockdevE2eTest, FioVerifyOnNbdOverTwoPortsWhileALinkGoesDownAndBack) {
  if (!have("nbdkit") || !have("nbdinfo")) GTEST_SKIP() << "nbdkit/nbdinfo missing";
  ASSERT_TRUE(make_two_path_hosts()) << net_->error();
  ASSERT_TRUE(start_target("64M", "--port afpacket:" + net_->iface_b(1)));
  ASSERT_TRUE(start_nbdkit(port() + ",afpacket:" + net_->iface_a(1)))
      << slurp(work_ / "nbdkit.log");
  Background fio;
  ASSERT_TRUE(fio.start(
      "sh -c '" +
          fio_verify("--ioengine=nbd --uri=nbd+unix:///?socket=" + sock_, "48M", "--rate=40m") +
          " && echo ok > " + (work_ / "fio.ok").string() + "'",
      (work_ / "fio.log").string()));
  std::this_thread::sleep_for(800ms);
  ASSERT_TRUE(net_->set_link_up(1, false));
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(net_->set_link_up(1, true));
  for (int i = 0; i < 900 && !fs::exists(work_ / "fio.ok") && fio.alive(); ++i)
    std::this_thread::sleep_for(100ms);
  const std::string log = slurp(work_ / "fio.log");
  ASSERT_TRUE(fs::exists(work_ / "fio.ok")) << log << slurp(work_ / "nbdkit.log");
  EXPECT_NE(log.find("err= 0"), std::string::npos) << log;
  // One session with two paths; the one taken down is probed and back in use
  // (active) within a few seconds. (Which path carries the frames is the
  // scheduler's choice: at this light load it keeps most on one.)
  std::string stats;
  size_t paths = 0, active = 0;
  for (int i = 0; i < 100; ++i) {
    run(target_bin_ + " stats --control " + (work_ / "target.sock").string(), &stats);
    paths = active = 0;
    for (size_t at = stats.find("  path "); at != std::string::npos;
         at = stats.find("  path ", at + 1)) {
      ++paths;
      if (stats.substr(at, stats.find('\n', at) - at).find(" active ") != std::string::npos)
        ++active;
    }
    if (active == 2) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(paths, 2u) << stats;
  EXPECT_EQ(active, 2u) << stats;
  std::printf("%s", stats.c_str());
}

TEST_F(BlockdevE2eTest, WriteProtectedLunAttachesReadOnly) {
  ASSERT_TRUE(make_hosts());
  ASSERT_TRUE(run("truncate -s 16M " + disk_));
  ASSERT_TRUE(run("mkfs.ext4 -q -F " + disk_));  // something to read
  ASSERT_TRUE(start_target("16M", "--read-only-lun 0"));
  std::string loop, out;
  ASSERT_TRUE(run(attach_cmd(), &out)) << out;
  EXPECT_NE(out.find("read-only: LUN 0 is write-protected"), std::string::npos) << out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("loop (/dev/loop[0-9]+)"))) << out;
  loop = m[1];
  const std::string file = fuse() + "/lun0";
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  errno = 0;
  EXPECT_EQ(::open(file.c_str(), O_WRONLY), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(slurp("/sys/block/" + loop.substr(5) + "/ro"), "1\n");
  ASSERT_TRUE(run("losetup --list --noheadings --output RO " + loop, &out));
  EXPECT_NE(out.find('1'), std::string::npos) << out;
  // Reads work (the ext4 made above); writes fail cleanly, with the kernel's
  // error for a read-only block device (EPERM), and change nothing.
  ASSERT_TRUE(run("dumpe2fs -h " + loop + " 2>/dev/null | grep -q 'Filesystem magic'"));
  EXPECT_FALSE(run("mkfs.ext4 -q -F -L changed " + loop, &out));
  EXPECT_NE(out.find("Operation not permitted while setting up superblock"), std::string::npos)
      << out;
  EXPECT_FALSE(run("dd if=/dev/zero of=" + loop + " bs=4k count=1 oflag=direct", &out));
  EXPECT_NE(out.find("Operation not permitted"), std::string::npos) << out;
  ASSERT_TRUE(run("dumpe2fs -h " + loop + " 2>/dev/null", &out));
  EXPECT_EQ(out.find("changed"), std::string::npos) << out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse(), &out)) << out;
  // The NBD export of the same LUN is read-only too.
  if (!start_nbdkit()) {
    std::printf("nbdkit part skipped: nbdkit/nbdinfo missing\n");
    return;
  }
  ASSERT_TRUE(run("nbdinfo --json 'nbd+unix:///?socket=" + sock_ + "'", &out));
  EXPECT_NE(out.find("\"is_read_only\": true"), std::string::npos) << out;
}

TEST_F(BlockdevE2eTest, BadInputKeepsClearErrorsAndDetachIsQuiet) {
  ASSERT_TRUE(make_hosts());
  ASSERT_TRUE(start_target("16M"));
  std::string out;
  // Missing mount point.
  EXPECT_FALSE(run(in_client(HYPERSCSI_ATTACH_BIN " attach --port " + port() + " --lun 0 --fuse " +
                             (work_ / "nope").string()),
                   &out));
  EXPECT_NE(out.find("does not exist"), std::string::npos) << out;
  // LUN absent.
  std::string loop;
  for (int i = 0; i < 20; ++i) {  // the target may still be starting
    run(in_client(HYPERSCSI_ATTACH_BIN " attach --port " + port() + " --lun 7 --fuse " + fuse()),
        &out);
    if (out.find("no target answered") == std::string::npos) break;
    std::this_thread::sleep_for(250ms);
  }
  EXPECT_NE(out.find("LUN absent"), std::string::npos) << out;
  // FUSE unavailable: /dev/fuse hidden in a private mount namespace.
  EXPECT_FALSE(run(
      "unshare -m sh -c 'mount --bind /dev/null /dev/fuse && " +
          in_client(HYPERSCSI_ATTACH_BIN " attach --port " + port() + " --lun 0 --fuse " + fuse()) +
          "'",
      &out));
  EXPECT_NE(out.find("FUSE unavailable"), std::string::npos) << out;
  // The NBD export started in the background (no -f) with a LUN that is absent
  // or a port that does not exist: nbdkit exits non-zero with the reason before
  // it forks (the plugin logs in once in get_ready), instead of exiting 0 and
  // failing later in the background. A pid file catches a daemon that stayed.
  if (have("nbdkit")) {
    const std::string pid = (work_ / "nbdkit.pid").string();
    const auto nbdkit_bg = [&](const std::string& params) {
      std::string o;
      const bool ok = NetnsPair::shell(
          in_client(NBDKIT_ENV "nbdkit -P " + pid + " --unix " + (work_ / "bg.sock").string() +
                    " " NBDKIT_PLUGIN " " + params + " 2>&1"),
          &o);
      NetnsPair::shell("[ -s " + pid + " ] && kill $(cat " + pid + "); rm -f " + pid);
      return std::make_pair(ok, o);
    };
    auto [ok, o] = nbdkit_bg("port=" + port() + " target=" + name_ + " lun=7");
    EXPECT_FALSE(ok) << "nbdkit started in the background with an absent LUN";
    EXPECT_NE(o.find("LUN absent"), std::string::npos) << o;
    std::tie(ok, o) = nbdkit_bg("port=afpacket:hsnosuch0 lun=0");
    EXPECT_FALSE(ok) << "nbdkit started in the background on a missing interface";
    EXPECT_NE(o.find("hsnosuch0"), std::string::npos) << o;
  } else {
    std::printf("nbdkit part skipped: nbdkit missing\n");
  }
  // Mount point busy: attached already.
  ASSERT_TRUE(attach(loop));
  EXPECT_FALSE(run(attach_cmd(), &out));
  EXPECT_NE(out.find("already attached"), std::string::npos) << out;
  // Detach of a device that is mounted.
  ASSERT_TRUE(run("mkfs.ext4 -q -F " + loop));
  ASSERT_TRUE(run("mount " + loop + " " + (work_ / "mnt").string()));
  EXPECT_FALSE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse(), &out));
  EXPECT_NE(out.find("unmount it first"), std::string::npos) << out;
  ASSERT_TRUE(run("umount " + (work_ / "mnt").string()));
  // A normal detach: the daemon ends cleanly and logs no error. The shared
  // attach.log also holds the refused attaches above (logged as errors, as
  // they should be): look from the successful attach on.
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse(), &out)) << out;
  int logs_of_the_attach = 0;
  for (const auto& e : fs::directory_iterator(work_ / "run")) {
    if (e.path().extension() != ".log") continue;
    const std::string log = slurp(e.path());
    const size_t attached = log.rfind("info: attached LUN 0");
    if (attached == std::string::npos) continue;
    ++logs_of_the_attach;
    const std::string tail = log.substr(attached);
    EXPECT_EQ(tail.find("error"), std::string::npos) << e.path() << ":\n" << log;
    EXPECT_NE(tail.find("info: detached"), std::string::npos) << e.path() << ":\n" << log;
  }
  EXPECT_EQ(logs_of_the_attach, 1);
  EXPECT_FALSE(fs::exists(fuse() + "/lun0"));
}

}  // namespace

// End to end over a veth pair between two namespaces with the real target
// daemon: discover; attach with FUSE and --loop; mkfs.ext4; mount; write
// files; unmount; fsck -n; detach; attach again and read the files back; the
// same LUN through the nbdkit plugin with nbdinfo and nbdcopy.
//
// The target runs in namespace B (ip netns exec). The initiator programs join
// only namespace A's network (nsenter --net) so their FUSE mount and loop
// device are visible to this test in its own mount namespace.
// Needs root; skips with a reason otherwise. Everything it creates (processes,
// mounts, loop devices, namespaces, files) is removed also on failure.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>

#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"

namespace {

using hyperscsi::test_support::NetnsPair;
namespace fs = std::filesystem;

std::string sh_quote(const std::string& s) {
  return "'" + s + "'";
}

bool run(const std::string& cmd, std::string* out = nullptr) {
  std::string output;
  const bool ok = NetnsPair::shell(cmd + " 2>&1", &output);
  if (out) *out = output;
  if (!ok) std::fprintf(stderr, "command failed: %s\n%s\n", cmd.c_str(), output.c_str());
  return ok;
}

bool have(const std::string& tool) {
  return run("command -v " + tool + " >/dev/null");
}

using Background = hyperscsi::test_support::BackgroundProcess;

class AttachE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // $HYPERSCSI_TARGET_BIN overrides the daemon built alongside.
    const char* env = std::getenv("HYPERSCSI_TARGET_BIN");
    target_bin_ = env && *env ? env : HYPERSCSI_TARGET_BIN;
    if (target_bin_.empty() || !fs::exists(target_bin_))
      GTEST_SKIP() << "the target daemon hyperscsi-target is not built ('" << target_bin_
                   << "'); set HYPERSCSI_TARGET_BIN";
    if (!hyperscsi::test_support::running_as_root())
      GTEST_SKIP() << "needs root (network namespaces, FUSE, loop devices, mount)";
    if (!fs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
    for (const char* t : {"nsenter", "mkfs.ext4", "fsck.ext4", "mount", "umount"})
      if (!have(t)) GTEST_SKIP() << "missing tool " << t;
    work_ = fs::temp_directory_path() / ("hs-attach-e2e-" + std::to_string(::getpid()));
    fs::create_directories(work_ / "fuse");
    fs::create_directories(work_ / "mnt");
    fs::create_directories(work_ / "run");
    ::setenv("HYPERSCSI_RUN_DIR", (work_ / "run").c_str(), 1);
    net_ = std::make_unique<NetnsPair>(hyperscsi::test_support::NetnsConfig{.mtu = 9000});
    if (!net_->ok()) GTEST_SKIP() << "cannot create namespaces: " << net_->error();
    name_ = "hst" + std::to_string(::getpid());
    ASSERT_TRUE(start_target("ram:64M"));
  }

  bool start_target(const std::string& lun_spec) {
    return target_.start("ip netns exec " + net_->ns_b() + " " + target_bin_ +
                             " --port afpacket:" + net_->iface_b() + " --lun 0=" + lun_spec +
                             " --name " + name_ + " --control " + (work_ / "target.sock").string(),
                         (work_ / ("target" + std::to_string(++starts_) + ".log")).string());
  }

  void TearDown() override {
    // Reverse order of creation; each step tolerates an earlier failure.
    if (!work_.empty()) {
      NetnsPair::shell("umount -l " + sh_quote((work_ / "mnt").string()) + " 2>/dev/null");
      NetnsPair::shell(HYPERSCSI_ATTACH_BIN " detach " + sh_quote((work_ / "fuse").string()) +
                       " >/dev/null 2>&1");
      NetnsPair::shell("fusermount3 -u -z " + sh_quote((work_ / "fuse").string()) + " 2>/dev/null");
    }
    nbdkit_.stop();
    target_.stop();
    net_.reset();
    if (!work_.empty()) {
      std::error_code ec;
      fs::remove_all(work_, ec);
    }
    ::unsetenv("HYPERSCSI_RUN_DIR");
  }

  std::string in_a(const std::string& cmd) const {
    return "nsenter --net=/run/netns/" + net_->ns_a() + " " + cmd;
  }
  std::string port_a() const { return "afpacket:" + net_->iface_a(); }

  // Discovery until the target answers (it may still be starting).
  bool discover(std::string& out) {
    for (int i = 0; i < 20; ++i) {
      if (NetnsPair::shell(in_a(HYPERSCSI_ATTACH_BIN " discover --port " + port_a()) + " 2>&1",
                           &out) &&
          out.find(name_) != std::string::npos)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return false;
  }

  fs::path work_;
  std::string target_bin_;
  std::unique_ptr<NetnsPair> net_;
  std::string name_;
  int starts_ = 0;
  Background target_;
  Background nbdkit_;
};

std::string attach_cmd_loop_dev(const std::string& out) {
  const auto pos = out.find("loop /dev/loop");
  if (pos == std::string::npos) return {};
  const auto end = out.find('\n', pos);
  return out.substr(pos + 5, end - pos - 5);
}

TEST_F(AttachE2eTest, FuseLoopExt4SurvivesDetachAndReattachThenNbdkit) {
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  EXPECT_NE(out.find("64.0 MiB"), std::string::npos) << out;
  ASSERT_TRUE(run(in_a(HYPERSCSI_ATTACH_BIN " discover --json --port " + port_a()), &out));
  EXPECT_NE(out.find("\"capacity\": 67108864"), std::string::npos) << out;

  // Raw CDB: INQUIRY with 96 bytes of data-in, printed like sg_raw.
  ASSERT_TRUE(run(in_a(HYPERSCSI_ATTACH_BIN " cdb --port " + port_a() + " --lun 0 --data-in 96 " +
                       "120000006000"),
                  &out))
      << out;
  EXPECT_NE(out.find("SCSI status: GOOD"), std::string::npos) << out;
  EXPECT_NE(out.find("HYPERSCS"), std::string::npos) << out;  // vendor in the hex dump
  // An unknown opcode: CHECK CONDITION decoded in words, exit status 3.
  EXPECT_FALSE(
      run(in_a(HYPERSCSI_ATTACH_BIN " cdb --port " + port_a() + " --lun 0 d90000000000"), &out));
  EXPECT_NE(out.find("ILLEGAL REQUEST"), std::string::npos) << out;
  // Clear errors: LUN absent, interface absent.
  EXPECT_FALSE(run(in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() +
                        " --lun 7 --foreground --fuse " + (work_ / "fuse").string()),
                   &out));
  EXPECT_NE(out.find("LUN absent"), std::string::npos) << out;
  EXPECT_FALSE(run(in_a(HYPERSCSI_ATTACH_BIN " discover --port afpacket:hsnone0"), &out));
  EXPECT_NE(out.find("interface absent"), std::string::npos) << out;
  EXPECT_FALSE(
      run(in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() +
               " --lun 0 --busy-poll-us 20000 --foreground --fuse " + (work_ / "fuse").string()),
          &out));
  EXPECT_NE(out.find("busy-poll-us"), std::string::npos) << out;

  const std::string fuse = (work_ / "fuse").string();
  const std::string mnt = (work_ / "mnt").string();
  const std::string attach = in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() + " --target " +
                                  name_ + " --lun 0 --fuse " + fuse + " --loop");
  ASSERT_TRUE(run(attach, &out)) << out;
  std::string loop = attach_cmd_loop_dev(out);
  ASSERT_FALSE(loop.empty()) << out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " list", &out));
  EXPECT_NE(out.find("established"), std::string::npos) << out;

  // Files with random content.
  std::mt19937 rng(7);
  std::vector<std::string> contents;
  for (int i = 0; i < 3; ++i) {
    std::string s(300000 + i * 77777, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    contents.push_back(std::move(s));
  }
  // Throughput through FUSE + loop (direct I/O, 1 MiB requests); printed, not asserted.
  for (const char* dir : {"write", "read"}) {
    const std::string dd = std::string(dir) == "write"
                               ? "dd if=/dev/zero of=" + loop + " bs=1M count=48 oflag=direct"
                               : "dd if=" + loop + " of=/dev/null bs=1M count=48 iflag=direct";
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(run(dd));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("FUSE+loop sequential %s, 48 MiB in 1 MiB requests: %.1f MB/s\n", dir,
                48.0 * 1048576 / s / 1e6);
  }
  ASSERT_TRUE(run("mkfs.ext4 -q -F " + loop));
  ASSERT_TRUE(run("mount " + loop + " " + mnt));
  for (size_t i = 0; i < contents.size(); ++i) {
    std::ofstream f(mnt + "/file" + std::to_string(i), std::ios::binary);
    f.write(contents[i].data(), static_cast<std::streamsize>(contents[i].size()));
    ASSERT_TRUE(f.good());
  }
  ASSERT_TRUE(run("umount " + mnt));
  ASSERT_TRUE(run("fsck.ext4 -n -f " + loop, &out)) << out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;
  EXPECT_FALSE(fs::exists(fuse + "/lun0"));

  // Attach again: the files read back identical.
  ASSERT_TRUE(run(attach, &out)) << out;
  loop = attach_cmd_loop_dev(out);
  ASSERT_FALSE(loop.empty()) << out;
  ASSERT_TRUE(run("mount -o ro " + loop + " " + mnt));
  for (size_t i = 0; i < contents.size(); ++i) {
    std::ifstream f(mnt + "/file" + std::to_string(i), std::ios::binary);
    std::string back(contents[i].size() + 1, '\0');
    f.read(back.data(), static_cast<std::streamsize>(back.size()));
    back.resize(static_cast<size_t>(f.gcount()));
    EXPECT_TRUE(back == contents[i]) << "file" << i << " differs after re-attach";
  }
  ASSERT_TRUE(run("umount " + mnt));
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;

  // The same LUN through nbdkit.
  if (!have("nbdkit") || !have("nbdinfo") || !have("nbdcopy")) {
    std::printf("nbdkit part skipped: nbdkit/nbdinfo/nbdcopy missing\n");
    return;
  }
  const std::string sock = (work_ / "nbd.sock").string();
  ASSERT_TRUE(
      nbdkit_.start(in_a(NBDKIT_ENV "nbdkit -f -v --unix " + sock + " " NBDKIT_PLUGIN +
                         " port=" + port_a() + " target=" + name_ + " lun=0 busy_poll_us=0"),
                    (work_ / "nbdkit.log").string()));
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = NetnsPair::shell("nbdinfo --size 'nbd+unix:///?socket=" + sock + "' 2>/dev/null", &out);
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << "nbdkit did not serve";
  EXPECT_EQ(std::stoull(out), 64ull << 20);
  const std::string image = (work_ / "image").string();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(run("nbdcopy 'nbd+unix:///?socket=" + sock + "' " + image));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("nbdkit plugin: nbdcopy of the 64 MiB LUN to a file: %.1f MB/s\n",
              64.0 * 1048576 / secs / 1e6);
  ASSERT_TRUE(run("fsck.ext4 -n -f " + image, &out)) << out;
  // Write through NBD, read back through NBD.
  const std::string blob = (work_ / "blob").string();
  ASSERT_TRUE(run("head -c 4194304 /dev/urandom > " + blob));
  ASSERT_TRUE(run("nbdcopy " + blob + " 'nbd+unix:///?socket=" + sock + "'"));
  const std::string back = (work_ / "back").string();
  ASSERT_TRUE(run("nbdcopy 'nbd+unix:///?socket=" + sock + "' " + back));
  ASSERT_TRUE(run("cmp -n 4194304 " + blob + " " + back));
}

// kill -9 the target during a write stream and restart it on the same
// file: the stream completes and everything written reads back.
TEST_F(AttachE2eTest, TargetKill9MidWriteStreamLosesNoAcknowledgedWrite) {
  const std::string disk = (work_ / "disk.img").string();
  ASSERT_TRUE(run("truncate -s 64M " + disk));
  ASSERT_TRUE(start_target(disk));  // replaces the RAM-disk target of SetUp
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  const std::string fuse = (work_ / "fuse").string();
  ASSERT_TRUE(run(in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() + " --target " + name_ +
                       " --lun 0 --fuse " + fuse),
                  &out))
      << out;
  const std::string src = (work_ / "stream").string();
  ASSERT_TRUE(run("head -c 33554432 /dev/urandom > " + src));
  // 32 MiB in 64 KiB direct writes (about half a second): the kill lands mid-stream.
  Background writer;
  ASSERT_TRUE(writer.start("sh -c 'dd if=" + src + " of=" + fuse +
                               "/lun0 bs=64k oflag=direct conv=notrunc,fsync status=none && "
                               "echo done > " +
                               (work_ / "writer.ok").string() + "'",
                           (work_ / "writer.log").string()));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  target_.kill9();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_TRUE(start_target(disk));
  for (int i = 0; i < 1200 && !fs::exists(work_ / "writer.ok"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(fs::exists(work_ / "writer.ok")) << "the write stream did not complete";
  ASSERT_TRUE(run("cmp -n 33554432 " + src + " " + fuse + "/lun0", &out)) << out;
  // The daemon refreshes its state file (what `stats` prints) every second:
  // a stream that ends right after the re-login may not be counted yet.
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " stats " + fuse, &out));
    if (out.find("relogins               0") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::printf("%s", out.c_str());
  EXPECT_EQ(out.find("relogins               0"), std::string::npos) << "no re-login seen";
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;
  // The target's file holds the stream too.
  ASSERT_TRUE(run("cmp -n 33554432 " + src + " " + disk, &out)) << out;
}

// The library directly over the veth (no FUSE): queue depth 32, 4 KiB random
// reads and 128 KiB sequential reads/writes. Prints the figures; asserts only
// that every command succeeded.
TEST_F(AttachE2eTest, LibraryThroughputOverVeth) {
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  auto port = net_->run_in_a([&] { return hyperscsi::ports::open_port(port_a()); });
  ASSERT_TRUE(port.has_value() && port->ok());
  using namespace hyperscsi::initiator;
  auto ini = Initiator::create(std::move(port->value()));
  ASSERT_TRUE(ini.ok()) << ini.error().message;
  ASSERT_TRUE((*ini)->connect(name_).ok());
  auto lun = (*ini)->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  const uint64_t blocks = lun->capacity().num_blocks;
  for (const auto& [label, bytes, write, random] :
       {std::tuple{"4 KiB random read", 4096u, false, true},
        std::tuple{"128 KiB sequential read", 131072u, false, false},
        std::tuple{"128 KiB sequential write", 131072u, true, false}}) {
    const uint32_t n = bytes / 512;
    std::mutex m;
    std::condition_variable cv;
    uint64_t done = 0, failed = 0, issued = 0;
    std::mt19937_64 rng(1);
    const std::vector<uint8_t> data(bytes, 0x5a);
    const auto t0 = std::chrono::steady_clock::now();
    const auto end = t0 + std::chrono::seconds(2);
    std::unique_lock l(m);
    while (std::chrono::steady_clock::now() < end) {
      if (!cv.wait_for(l, std::chrono::seconds(30), [&] { return issued - done < 32; })) break;
      const uint64_t lba = random ? (rng() % (blocks / n)) * n : (issued * n) % (blocks - n);
      ++issued;
      l.unlock();
      auto cb = [&](CommandResult&& r) {
        std::lock_guard g(m);
        ++done;
        if (!r.good()) ++failed;
        cv.notify_all();
      };
      if (write)
        lun->write(lba, data, cb);
      else
        lun->read(lba, n, cb);
      l.lock();
    }
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(60), [&] { return done == issued; }));
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("library over veth (MTU 9000), QD32 %s: %.0f IOPS, %.1f MB/s\n", label,
                static_cast<double>(done) / secs, static_cast<double>(done) * bytes / secs / 1e6);
    EXPECT_EQ(failed, 0u) << label;
  }
  const Stats st = (*ini)->stats();
  std::printf(
      "initiator: port rx_dropped %llu, frames retransmitted by us %llu, srtt %lld us\n",
      static_cast<unsigned long long>(st.port.rx_dropped),
      static_cast<unsigned long long>(st.transport.frames_retransmitted),
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::microseconds>(st.transport.srtt).count()));
  (*ini)->disconnect();
}

// ---- data safety and honest state (issue 15) ----

// Files in the run directory other than the shared log and lock: what an
// attachment leaves behind.
std::vector<std::string> leftovers(const fs::path& run_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name != "attach.log" && name != "attach.log.1" && name != "attach.lock")
      out.push_back(name);
  }
  return out;
}

// `hyperscsi-attach stats DIR` once it shows `want` (the daemon refreshes
// the state file every second); the last output otherwise.
std::string stats_showing(const std::string& dir, const std::string& want) {
  std::string out;
  for (int i = 0; i < 30; ++i) {
    NetnsPair::shell(HYPERSCSI_ATTACH_BIN " stats " + dir + " 2>&1", &out);
    if (out.find(want) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return out;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A RAM target restarts under a mounted ext4: the client finds another
// (blank) disk behind LUN 0 and fails its I/O; nothing reads the zeros as
// the file's data. The attach log and counters say what happened.
TEST_F(AttachE2eTest, RamTargetRestartUnderMountedExt4FailsIoInsteadOfReadingZeros) {
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  const std::string fuse = (work_ / "fuse").string();
  const std::string mnt = (work_ / "mnt").string();
  ASSERT_TRUE(run(in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() + " --target " + name_ +
                       " --lun 0 --fuse " + fuse + " --loop"),
                  &out))
      << out;
  const std::string loop = attach_cmd_loop_dev(out);
  ASSERT_FALSE(loop.empty()) << out;
  ASSERT_TRUE(run("mkfs.ext4 -q -F " + loop));
  ASSERT_TRUE(run("mount " + loop + " " + mnt));
  ASSERT_TRUE(run("head -c 1048576 /dev/urandom > " + mnt + "/data && sync"));
  const std::string copy = (work_ / "copy").string();
  const std::string read_back =
      "dd if=" + mnt + "/data of=" + copy + " iflag=direct bs=64k status=none && md5sum < " + copy;
  std::string sum_before;
  ASSERT_TRUE(run(read_back, &sum_before));

  target_.kill9();
  ASSERT_TRUE(start_target("ram:64M"));  // another, blank RAM disk behind LUN 0
  // Direct reads (no page cache) of the file and of the device fail; none
  // returns the blank disk's zeros as data.
  bool failed = false;
  for (int i = 0; i < 40 && !failed; ++i) {
    std::string sum_after;
    failed = !NetnsPair::shell(read_back + " 2>/dev/null", &sum_after);
    if (!failed) {
      ASSERT_EQ(sum_after, sum_before) << "the file changed silently";
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
  EXPECT_TRUE(failed) << "reads kept working from a blank disk";
  EXPECT_FALSE(run("dd if=" + loop + " of=/dev/null iflag=direct bs=4k count=16 status=none"));
  out = stats_showing(fuse, "identity_mismatches    1");
  EXPECT_NE(out.find("identity_mismatches    1"), std::string::npos) << out;
  EXPECT_EQ(out.find("commands_failed        0"), std::string::npos) << out;
  const std::string log = slurp(work_ / "run" / "attach.log");
  EXPECT_NE(log.find("identity mismatch: LUN 0 of target '" + name_ + "'"), std::string::npos)
      << log;
  EXPECT_NE(log.find("is another disk after the re-login"), std::string::npos) << log;
  if (std::getenv("HS_SHOW_LOG")) std::printf("%s", log.c_str());
  run("umount " + mnt + " || umount -l " + mnt);
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;
  EXPECT_TRUE(leftovers(work_ / "run").empty());
}

// A file target restarted with another file behind LUN 0 is refused the
// same way; restarted on its own file it resumes.
TEST_F(AttachE2eTest, FileTargetRestartedWithAnotherFileIsRefused) {
  const std::string disk = (work_ / "disk.img").string();
  const std::string other = (work_ / "other.img").string();
  ASSERT_TRUE(run("truncate -s 64M " + disk + " " + other));
  ASSERT_TRUE(start_target(disk));
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  const std::string fuse = (work_ / "fuse").string();
  ASSERT_TRUE(run(in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() + " --target " + name_ +
                       " --lun 0 --fuse " + fuse),
                  &out))
      << out;
  ASSERT_TRUE(run("head -c 65536 /dev/urandom > " + (work_ / "blob").string()));
  ASSERT_TRUE(run("dd if=" + (work_ / "blob").string() + " of=" + fuse +
                  "/lun0 oflag=direct bs=64k conv=notrunc status=none"));
  ASSERT_TRUE(start_target(disk));  // the same file again: I/O goes on
  ASSERT_TRUE(run("cmp -n 65536 " + (work_ / "blob").string() + " " + fuse + "/lun0"));
  ASSERT_TRUE(start_target(other));  // another file behind LUN 0
  EXPECT_FALSE(
      run("dd if=" + fuse + "/lun0 of=/dev/null iflag=direct bs=64k count=1 status=none", &out));
  out = stats_showing(fuse, "identity_mismatches    1");
  EXPECT_NE(out.find("identity_mismatches    1"), std::string::npos) << out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;
}

// The same LUN twice on one host: refused, unless --shared; failed and
// finished attachments leave no state files.
TEST_F(AttachE2eTest, DoubleAttachIsRefusedUnlessSharedAndNothingIsLeftBehind) {
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  const std::string fuse = (work_ / "fuse").string();
  const std::string fuse2 = (work_ / "fuse2").string();
  fs::create_directories(fuse2);
  const std::string attach = in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() + " --target " +
                                  name_ + " --lun 0 --fuse ");
  ASSERT_TRUE(run(attach + fuse, &out)) << out;
  EXPECT_FALSE(run(attach + fuse2, &out));
  EXPECT_NE(out.find("is already attached on this host at " + fuse), std::string::npos) << out;
  EXPECT_NE(out.find("--shared"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(fuse2 + "/lun0"));
  ASSERT_TRUE(run(attach + fuse2 + " --shared", &out)) << out;
  EXPECT_TRUE(fs::exists(fuse2 + "/lun0"));
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " list --json", &out));
  EXPECT_NE(out.find("\"dir\": \"" + fuse + "\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"shared\": \"1\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"lun\": 0"), std::string::npos) << out;
  EXPECT_NE(out.find("\"identity\": \"uuid:"), std::string::npos) << out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse2, &out)) << out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;
  // Failed attaches: an absent LUN, a dead daemon detached afterwards.
  EXPECT_FALSE(run(
      in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() + " --lun 7 --fuse " + fuse), &out));
  ASSERT_TRUE(run(attach + fuse, &out)) << out;
  std::string pid;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " list --json | grep -o '\"pid\": [0-9]*' | grep -o "
                                       "'[0-9]*$'",
                  &pid));
  ASSERT_TRUE(run("kill -9 " + pid));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;
  const auto left = leftovers(work_ / "run");
  EXPECT_TRUE(left.empty()) << left.front();
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " list --json", &out));
  EXPECT_EQ(out, "[\n]\n");
}

// discover says which LUNs are read-only (RO column, "read_only" in JSON).
TEST_F(AttachE2eTest, DiscoverShowsReadOnlyLuns) {
  ASSERT_TRUE(start_target("ram:8M --lun 1=ram:8M --read-only-lun 1"));
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  EXPECT_NE(out.find(" RO "), std::string::npos) << out;
  std::istringstream lines(out);
  std::map<std::string, std::string> ro;  // LUN -> RO column
  for (std::string line; std::getline(lines, line);) {
    std::istringstream f(line);
    std::string target, mac, lun, size, unit, block, col;
    if (f >> target >> mac >> lun >> size >> unit >> block >> col && target == name_) ro[lun] = col;
  }
  EXPECT_EQ(ro["0"], "no") << out;
  EXPECT_EQ(ro["1"], "yes") << out;
  ASSERT_TRUE(run(in_a(HYPERSCSI_ATTACH_BIN " discover --json --port " + port_a()), &out));
  EXPECT_NE(out.find("\"lun\": 1, \"capacity\": 8388608, \"block_size\": 512, \"read_only\": true"),
            std::string::npos)
      << out;
}

// Started by systemd (JOURNAL_STREAM names its standard error), the attach
// daemon logs to the journal's stream too, with syslog priorities.
TEST_F(AttachE2eTest, AttachDaemonLogsToTheJournalWhenSystemdRunsIt) {
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  const std::string fuse = (work_ / "fuse").string();
  const std::string journal = (work_ / "journal").string();
  // Our standard error is `journal`, and JOURNAL_STREAM names it, as systemd does.
  ASSERT_TRUE(run("touch " + journal + "; sh -c \"JOURNAL_STREAM=$(stat -c %d:%i " + journal +
                      ") " +
                      in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() + " --target " +
                           name_ + " --lun 0 --fuse " + fuse) +
                      " 2>>" + journal + "\"",
                  &out))
      << out;
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;
  const std::string lines = slurp(journal);
  EXPECT_NE(lines.find("<6>" + fuse + ": attached LUN 0 of target '" + name_ + "'"),
            std::string::npos)
      << lines;
  EXPECT_NE(slurp(work_ / "run" / "attach.log").find("attached LUN 0"), std::string::npos);
}

// A target outage: the attach daemon logs it, each command that failed back
// to the caller is counted, and it logs the way back.
TEST_F(AttachE2eTest, OutageIsLoggedAndCountedByTheAttachDaemon) {
  const std::string disk = (work_ / "disk.img").string();
  ASSERT_TRUE(run("truncate -s 64M " + disk));
  ASSERT_TRUE(start_target(disk));
  std::string out;
  ASSERT_TRUE(discover(out)) << out;
  const std::string fuse = (work_ / "fuse").string();
  ASSERT_TRUE(run(in_a(HYPERSCSI_ATTACH_BIN " attach --port " + port_a() + " --target " + name_ +
                       " --lun 0 --dead-time 2 --fuse " + fuse),
                  &out))
      << out;
  target_.kill9();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(run("dd if=" + fuse + "/lun0 of=/dev/null iflag=direct bs=4k count=1 status=none"));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 1.5);  // --dead-time 2, not the default 60 s
  EXPECT_LT(waited, 10.0);
  out = stats_showing(fuse, "commands_timed_out     1");
  EXPECT_EQ(out.find("commands_failed        0"), std::string::npos) << out;
  EXPECT_EQ(out.find("commands_timed_out     0"), std::string::npos) << out;
  ASSERT_TRUE(start_target(disk));
  bool back = false;
  for (int i = 0; i < 60 && !back; ++i) {
    back = NetnsPair::shell("dd if=" + fuse +
                            "/lun0 of=/dev/null iflag=direct bs=4k count=1 status=none 2>&1");
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_TRUE(back);
  ASSERT_TRUE(run(HYPERSCSI_ATTACH_BIN " detach " + fuse, &out)) << out;
  const std::string log = slurp(work_ / "run" / "attach.log");
  for (const char* line :
       {"attached LUN 0 of target", " lost: ", "re-login started", "command timed out: LUN 0 READ",
        "within 2 s", "logged in again", "is the same disk"})
    EXPECT_NE(log.find(line), std::string::npos) << "no '" << line << "' in\n" << log;
}

}  // namespace

// hyperscsi-target as a gateway in front of a real Ceph pool: the daemon runs
// in a namespace attached to the cluster's bridge, a client in another
// namespace reaches it over a veth (raw HyperSCSI frames) with the initiator
// library.
//   - data written through HyperSCSI reads back with `rbd export` byte for
//     byte; `rbd import`ed data, `rbd bench`-written data, and data another
//     client writes while the target serves the image read back through it;
//   - two targets in two namespaces export one image: what a client writes
//     through one reads back through the other, and COMPARE AND WRITE sent to
//     both at once has exactly one winner;
//   - bad configuration (missing pool or image, wrong key, unreachable
//     monitor, store module missing or broken): the daemon exits 1 at start
//     with a message that says so, in bounded time;
//   - librbd is loaded only by a daemon with an rbd: LUN;
//   - the OSD stopped and started again during a verified write stream: no
//     acknowledged write lost, I/O resumes (a private cluster).
// Each test prints a "figures:" line.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "ceph_support.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

#ifndef HYPERSCSI_TARGET_BIN
#error "HYPERSCSI_TARGET_BIN must be defined"
#endif

namespace {

namespace fs = std::filesystem;
namespace hi = hyperscsi::initiator;
using hyperscsi::ceph_test::Cluster;
using hyperscsi::test_support::BackgroundProcess;
using hyperscsi::test_support::NetnsPair;
using hyperscsi::test_support::read_text_file;
using hyperscsi::test_support::run_bounded;
using hyperscsi::test_support::TempDir;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool wait_until(const std::function<bool()>& pred, milliseconds bound) {
  const auto end = Clock::now() + bound;
  while (!pred()) {
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return true;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  return v;
}

void write_file(const fs::path& p, const std::vector<uint8_t>& d) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(d.data()), static_cast<std::streamsize>(d.size()));
}

#define NEED_CLUSTER(c)                                                          \
  std::string why_;                                                              \
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root"; \
  const Cluster* c = hyperscsi::ceph_test::shared_cluster(why_);                 \
  if (!c) GTEST_SKIP() << why_;                                                  \
  do {                                                                           \
  } while (0)

// One gateway: a client namespace and a target namespace joined by a veth,
// the target's namespace attached to the cluster, hyperscsi-target running
// there, and an initiator in the client namespace.
class Gateway {
 public:
  Gateway(const Cluster& c, const fs::path& dir, const std::string& name)
      : cluster_(c), net_(hyperscsi::test_support::NetnsConfig{.mtu = 9000}) {
    log_ = dir / (name + ".log");
    control_ = dir / (name + ".sock");
    if (!net_.ok()) {
      error_ = net_.error();
      return;
    }
    if (hyperscsi::ceph_test::attach(c, net_.ns_b()).empty()) {
      error_ = "cannot attach " + net_.ns_b() + " to the cluster";
      return;
    }
    ok_ = true;
  }
  ~Gateway() {
    if (ini_) ini_->disconnect();
    ini_.reset();
    target_.stop();
  }

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const NetnsPair& net() const { return net_; }
  const fs::path& log() const { return log_; }
  pid_t pid() const { return target_.pid(); }

  // The daemon command line in the target namespace; `port`: with --port
  // (a --config file names its ports itself).
  std::string command(const std::string& args, bool port = true) const {
    return "ip netns exec " + net_.ns_b() + " " HYPERSCSI_TARGET_BIN +
           (port ? " --port afpacket:" + net_.iface_b() : std::string()) + " --control " +
           control_.string() + " " + args;
  }

  // Starts the daemon and waits (bounded) until it answers on its control socket.
  bool start(const std::string& args, bool port = true) {
    if (!target_.start(command(args, port), log_.string())) return false;
    return wait_until(
               [&] {
                 return run_bounded(std::string(HYPERSCSI_TARGET_BIN) + " stats --control " +
                                        control_.string(),
                                    5)
                                .status == 0 ||
                        !target_.alive();
               },
               milliseconds(30000)) &&
           target_.alive();
  }
  void stop() { target_.stop(); }

  // Logs in from the client namespace; the LUN, or nullopt with `why`.
  std::optional<hi::Lun> connect(uint16_t lun, std::string& why, uint32_t qd = 32) {
    hi::Options o;
    o.initiator_name = "iqn.2026-11.org.hyperscsi:ceph-test";
    o.max_outstanding = qd;
    o.dead_time = std::chrono::seconds(60);
    auto r = net_.run_in_a([&] { return hi::Initiator::open("afpacket:" + net_.iface_a(), o); });
    if (!r || !*r) {
      why = r ? r->error().message : "cannot enter " + net_.ns_a();
      return std::nullopt;
    }
    ini_ = std::move(*r).value();
    auto info = ini_->connect(std::string_view{});
    if (!info) {
      why = info.error().message;
      return std::nullopt;
    }
    return open(lun, why);
  }
  std::optional<hi::Lun> open(uint16_t lun, std::string& why) {
    auto l = ini_->open_lun(lun);
    if (!l) {
      why = l.error().message;
      return std::nullopt;
    }
    return *l;
  }
  hi::Initiator& initiator() { return *ini_; }

 private:
  const Cluster& cluster_;
  NetnsPair net_;
  bool ok_ = false;
  std::string error_;
  fs::path log_, control_;
  BackgroundProcess target_;
  std::unique_ptr<hi::Initiator> ini_;
};

// A command the target failed with ABORTED COMMAND (here: librados' op
// timeout, COMMAND TIMEOUT DURING PROCESSING) is retried, as the kernel's SCSI
// layer retries it: twice in CI (ASan, VM tests beside it on two CPUs) the
// one-node cluster held one op past the timeout. Each retry is printed with the
// cluster's state, so a stall that repeats can be told from a lost op.
constexpr int kAbortedRetries = 2;

bool aborted(const std::string& why) {
  return why.find("ABORTED COMMAND") != std::string::npos;
}

void report_retry(const std::string& what, const std::string& why) {
  std::string health;
  std::string no_cluster;
  if (const Cluster* c = hyperscsi::ceph_test::shared_cluster(no_cluster))
    hyperscsi::ceph_test::ceph(*c, "health detail", &health);
  std::printf("retrying %s after: %s\ncluster health:\n%s\n", what.c_str(), why.c_str(),
              health.c_str());
}

// Writes `data` at block 0 of `lun` in 1 MiB commands, QD 8; a chunk that
// fails with ABORTED COMMAND is written again (at most kAbortedRetries times).
bool write_all(hi::Lun& lun, const std::vector<uint8_t>& data, std::string& why) {
  const uint32_t bs = lun.capacity().block_size;
  const size_t chunk = 1 << 20;
  std::mutex mu;
  std::condition_variable cv;
  size_t outstanding = 0, failed = 0;
  std::vector<size_t> aborted_offsets;
  for (size_t off = 0; off < data.size(); off += chunk) {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return outstanding < 8; });
    ++outstanding;
    lock.unlock();
    const size_t n = std::min(chunk, data.size() - off);
    lun.write(off / bs, std::span(data).subspan(off, n), [&, off](hi::CommandResult&& r) {
      std::lock_guard l(mu);
      if (!r.good()) {
        const std::string d = r.describe();
        if (aborted(d)) {
          aborted_offsets.push_back(off);
        } else {
          ++failed;
          why = d;
        }
      }
      --outstanding;
      cv.notify_all();
    });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return outstanding == 0; });
  lock.unlock();
  for (size_t off : aborted_offsets) {
    const size_t n = std::min(chunk, data.size() - off);
    bool done = false;
    for (int attempt = 1; attempt <= kAbortedRetries && !done; ++attempt) {
      report_retry("a write at byte " + std::to_string(off), "ABORTED COMMAND");
      auto r = lun.write_sync(off / bs, std::span(data).subspan(off, n));
      done = static_cast<bool>(r);
      if (!done) why = r.error().message;
    }
    if (!done) ++failed;
  }
  return failed == 0;
}

// Reads `bytes` from block 0 of `lun` in 1 MiB commands, QD 1.
std::vector<uint8_t> read_all(hi::Lun& lun, uint64_t bytes, std::string& why) {
  std::vector<uint8_t> out;
  const uint32_t bs = lun.capacity().block_size;
  const uint32_t per = (1 << 20) / bs;
  for (uint64_t lba = 0; lba * bs < bytes; lba += per) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(per, bytes / bs - lba));
    auto d = lun.read_sync(lba, n);
    for (int attempt = 1; !d && aborted(d.error().message) && attempt <= kAbortedRetries;
         ++attempt) {
      report_retry("a read at block " + std::to_string(lba), d.error().message);
      d = lun.read_sync(lba, n);
    }
    if (!d) {
      why = d.error().message;
      return {};
    }
    out.insert(out.end(), d->begin(), d->end());
  }
  return out;
}

std::vector<uint8_t> export_image(const Cluster& c, const std::string& image, const fs::path& to) {
  std::string out;
  if (hyperscsi::ceph_test::rbd(
          c, "export --no-progress " + c.pool + "/" + image + " " + to.string(), &out) != 0) {
    ADD_FAILURE() << "rbd export: " << out;
    return {};
  }
  return hyperscsi::ceph_test::read_file(to);
}

TEST(RbdGateway, HyperScsiWritesReadBackWithRbdExportAndTheOtherWay) {
  NEED_CLUSTER(c);
  const auto t0 = Clock::now();
  TempDir dir("hs_rbd_gw");
  namespace ct = hyperscsi::ceph_test;
  const std::string a = ct::unique_image("gw-a"), b = ct::unique_image("gw-b"),
                    d = ct::unique_image("gw-bench");
  constexpr uint64_t kA = 32 << 20, kB = 16 << 20, kD = 16 << 20;
  ASSERT_TRUE(ct::create_image(*c, a, kA));
  // B: rbd import of a random file; D: written by rbd bench.
  const auto imported = random_bytes(kB, 41);
  write_file(dir.path() / "import.raw", imported);
  std::string out;
  ASSERT_EQ(ct::rbd(*c,
                    "import --no-progress " + (dir.path() / "import.raw").string() + " " + c->pool +
                        "/" + b,
                    &out),
            0)
      << out;
  ASSERT_TRUE(ct::create_image(*c, d, kD));
  ASSERT_EQ(ct::rbd(*c,
                    "bench --io-type write --io-size 64K --io-pattern rand --io-total 8M " +
                        c->pool + "/" + d,
                    &out),
            0)
      << out;

  // Configured through the TOML file's [ceph] table. The op timeout is long
  // (45 s, under the initiator's 60 s dead time): with the VM tests beside it
  // on two CPUs, the one-node cluster once stalled a write past 20 s.
  Gateway gw(*c, dir.path(), "gw");
  ASSERT_TRUE(gw.ok()) << gw.error();
  const fs::path conf = dir.path() / "target.toml";
  std::ofstream(conf) << "[target]\nname = \"iqn.2026-11.org.hyperscsi:rbd-gw\"\n"
                      << "ports = [\"afpacket:" << gw.net().iface_b() << "\"]\n"
                      << "[ceph]\nconf = \"" << c->conf << "\"\nid = \"" << c->client_id
                      << "\"\nkeyring = \"" << c->client_keyring << "\"\nop_timeout = 45\n"
                      << "[[lun]]\nnumber = 0\nstore = \"rbd:" << c->pool << "/" << a << "\"\n"
                      << "[[lun]]\nnumber = 1\nstore = \"rbd:" << c->pool << "/" << b
                      << "\"\nblock_size = 4096\n"
                      << "[[lun]]\nnumber = 2\nstore = \"rbd:" << c->pool << "/" << d << "\"\n";
  ASSERT_TRUE(gw.start("--config " + conf.string(), false)) << read_text_file(gw.log());
  std::string why;
  auto lun0 = gw.connect(0, why);
  ASSERT_TRUE(lun0) << why << "\n" << read_text_file(gw.log());
  EXPECT_EQ(lun0->capacity().block_size, 512u);
  EXPECT_EQ(lun0->size_bytes(), kA);
  EXPECT_TRUE(lun0->capacity().thin);

  // HyperSCSI -> rbd export.
  auto data = random_bytes(kA, 42);
  const auto w0 = Clock::now();
  ASSERT_TRUE(write_all(*lun0, data, why)) << why;
  // Overwrite single sectors (one with FUA) at object boundaries.
  for (uint64_t lba : {8191ull, 8192ull, 16384ull, 65535ull}) {
    const auto small = random_bytes(512, static_cast<uint32_t>(lba));
    ASSERT_TRUE(lun0->write_sync(lba, small, lba == 8192));
    std::copy(small.begin(), small.end(), data.begin() + static_cast<ptrdiff_t>(lba * 512));
  }
  ASSERT_TRUE(lun0->flush_sync());
  const double write_s = since(w0);
  EXPECT_TRUE(export_image(*c, a, dir.path() / "a.raw") == data)
      << "rbd export differs from what was written through HyperSCSI";

  // rbd import -> HyperSCSI.
  auto lun1 = gw.open(1, why);
  ASSERT_TRUE(lun1) << why;
  EXPECT_EQ(lun1->capacity().block_size, 4096u);
  EXPECT_TRUE(read_all(*lun1, kB, why) == imported) << why;
  // rbd bench -> HyperSCSI, then another client writes while the target serves it.
  auto lun2 = gw.open(2, why);
  ASSERT_TRUE(lun2) << why;
  EXPECT_TRUE(read_all(*lun2, kD, why) == export_image(*c, d, dir.path() / "d1.raw")) << why;
  ASSERT_EQ(ct::rbd(*c,
                    "bench --io-type write --io-size 4K --io-pattern rand --io-total 2M " +
                        c->pool + "/" + d,
                    &out),
            0)
      << out;
  const auto fresh = export_image(*c, d, dir.path() / "d2.raw");
  EXPECT_TRUE(read_all(*lun2, kD, why) == fresh)
      << "the gateway did not see another client's writes " << why;
  std::printf(
      "figures: %.1f s total; 32 MiB written through HyperSCSI in %.2f s and exported "
      "equal; 16 MiB imported and 16 MiB benched read back equal\n",
      since(t0), write_s);
}

TEST(RbdGateway, TwoTargetsInTwoNamespacesServeOneImage) {
  NEED_CLUSTER(c);
  const auto t0 = Clock::now();
  TempDir dir("hs_rbd_two");
  namespace ct = hyperscsi::ceph_test;
  const std::string image = ct::unique_image("two");
  constexpr uint64_t kSize = 16 << 20;
  ASSERT_TRUE(ct::create_image(*c, image, kSize));
  Gateway g1(*c, dir.path(), "gw1"), g2(*c, dir.path(), "gw2");
  ASSERT_TRUE(g1.ok()) << g1.error();
  ASSERT_TRUE(g2.ok()) << g2.error();
  const std::string args = "--lun 0=rbd:" + c->pool + "/" + image + " " + ct::target_ceph_flags(*c);
  ASSERT_TRUE(g1.start(args + " --name iqn.2026-11.org.hyperscsi:gw1")) << read_text_file(g1.log());
  ASSERT_TRUE(g2.start(args + " --name iqn.2026-11.org.hyperscsi:gw2")) << read_text_file(g2.log());
  std::string why;
  auto l1 = g1.connect(0, why);
  ASSERT_TRUE(l1) << why;
  auto l2 = g2.connect(0, why);
  ASSERT_TRUE(l2) << why;

  // Through gateway 1, back through gateway 2, and the other way.
  auto first = random_bytes(kSize / 2, 51);
  ASSERT_TRUE(write_all(*l1, first, why)) << why;
  ASSERT_TRUE(l1->flush_sync());
  EXPECT_TRUE(read_all(*l2, first.size(), why) == first) << why;
  auto second = random_bytes(kSize / 4, 52);
  const uint64_t at = kSize / 2 / 512;
  for (size_t off = 0; off < second.size(); off += 1 << 20)
    ASSERT_TRUE(l2->write_sync(at + off / 512, std::span(second).subspan(off, 1 << 20)));
  ASSERT_TRUE(l2->flush_sync());
  auto back = l1->read_sync(at, static_cast<uint32_t>(second.size() / 512));
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == second);

  // COMPARE AND WRITE on one block through both gateways at once: one winner.
  const uint64_t lba = 3;
  std::vector<uint8_t> current(512, 0);
  ASSERT_TRUE(l1->write_sync(lba, current));
  int one_winner = 0;
  constexpr int kRounds = 8;
  for (int round = 0; round < kRounds; ++round) {
    auto caw = [&](Gateway& g, uint32_t seed) {
      hi::ScsiCommand cmd;
      cmd.cdb.assign(16, 0);
      cmd.cdb[0] = 0x89;  // COMPARE AND WRITE
      for (int i = 0; i < 8; ++i) cmd.cdb[2 + i] = static_cast<uint8_t>(lba >> (56 - 8 * i));
      cmd.cdb[13] = 1;
      cmd.data_out = current;
      const auto v = random_bytes(512, seed);
      cmd.data_out.insert(cmd.data_out.end(), v.begin(), v.end());
      return std::make_pair(g.initiator().execute(std::move(cmd)), v);
    };
    auto [f1, v1] = caw(g1, 600 + 2 * round);
    auto [f2, v2] = caw(g2, 601 + 2 * round);
    const auto r1 = f1.get(), r2 = f2.get();
    ASSERT_EQ(r1.error, hi::CompletionError::kNone) << r1.describe();
    ASSERT_EQ(r2.error, hi::CompletionError::kNone) << r2.describe();
    if (r1.good() != r2.good()) ++one_winner;
    const auto& loser = r1.good() ? r2 : r1;
    EXPECT_NE(loser.describe().find("MISCOMPARE"), std::string::npos) << loser.describe();
    current = r1.good() ? v1 : v2;
    auto now = l2->read_sync(lba, 1);
    ASSERT_TRUE(now);
    EXPECT_TRUE(*now == current);
  }
  EXPECT_EQ(one_winner, kRounds);
  std::printf(
      "figures: %.1f s total; 8 MiB through gateway 1 read back through gateway 2, 4 MiB "
      "the other way; %d/%d COMPARE AND WRITE races with exactly one winner\n",
      since(t0), one_winner, kRounds);
}

TEST(RbdGateway, BadConfigurationStopsTheDaemonWithAClearError) {
  NEED_CLUSTER(c);
  TempDir dir("hs_rbd_badcfg");
  namespace ct = hyperscsi::ceph_test;
  const std::string image = ct::unique_image("badcfg");
  ASSERT_TRUE(ct::create_image(*c, image, 4 << 20));
  Gateway gw(*c, dir.path(), "gw");
  ASSERT_TRUE(gw.ok()) << gw.error();
  const fs::path wrong = dir.path() / "wrong.keyring";
  std::ofstream(wrong) << "[client." << c->client_id
                       << "]\n\tkey = AQBMjxNlAAAAABAAdXp2b0VvY1JZbEtpRWlDbHBYU0xnPT0=\n";
  const fs::path far = dir.path() / "far.conf";
  std::ofstream(far) << "[global]\nmon_host = 198.18.100.254\n";
  const fs::path empty = dir.path() / "no-modules";
  fs::create_directories(empty);
  const fs::path broken = dir.path() / "broken-modules";
  fs::create_directories(broken);
  std::ofstream(broken / "hyperscsi-store-rbd.so") << "not an ELF file\n";
  const std::string good = "rbd:" + c->pool + "/" + image;
  // The cases that need the monitors' answer allow 30 s to connect: under
  // ASan, beside other Ceph tests, a connect once took over the default 10 s
  // and the daemon then (rightly) reported the cluster unreachable instead.
  const std::string flags = ct::target_ceph_flags(*c) + " --ceph-connect-timeout 30";
  struct Case {
    const char* what;
    std::string env, args, says;
  };
  const Case cases[] = {
      {"missing pool", "", "--lun 0=rbd:nopool/" + image + " " + flags,
       "pool 'nopool' does not exist"},
      {"missing image", "", "--lun 0=rbd:" + c->pool + "/absent " + flags,
       "image 'absent' does not exist"},
      {"wrong key", "",
       "--lun 0=" + good + " --ceph-conf " + c->conf + " --ceph-id " + c->client_id +
           " --ceph-keyring " + wrong.string() + " --ceph-connect-timeout 30",
       "refused client." + c->client_id},
      {"unreachable monitor", "",
       "--lun 0=" + good + " --ceph-conf " + far.string() + " --ceph-keyring " + c->client_keyring +
           " --ceph-connect-timeout 3",
       "no answer from the Ceph monitors (198.18.100.254) within 3 s"},
      {"module not installed", "HYPERSCSI_STORE_MODULE_DIR=" + empty.string(),
       "--lun 0=" + good + " " + flags, "store module is not installed"},
      {"module broken", "HYPERSCSI_STORE_MODULE_DIR=" + broken.string(),
       "--lun 0=" + good + " " + flags, "cannot load the rbd store module"},
  };
  std::string figures;
  for (const Case& k : cases) {
    const auto t0 = Clock::now();
    const auto r =
        run_bounded((k.env.empty() ? "" : "env " + k.env + " ") + gw.command(k.args), 60);
    const double secs = since(t0);
    EXPECT_EQ(r.status, 1) << k.what << ":\n" << r.out;
    EXPECT_NE(r.out.find(k.says), std::string::npos) << k.what << ":\n" << r.out;
    EXPECT_LT(secs, 45.0) << k.what;
    figures += std::string(" ") + k.what + " " + std::to_string(secs).substr(0, 4) + " s;";
  }
  std::printf("figures: daemon exit 1 with the reason:%s\n", figures.c_str());
}

// Mapped files of a process ("" when it is gone).
std::string maps_of(pid_t pid) {
  return read_text_file("/proc/" + std::to_string(pid) + "/maps");
}

TEST(RbdGateway, LibrbdIsLoadedOnlyForRbdLuns) {
  NEED_CLUSTER(c);
  TempDir dir("hs_rbd_load");
  const auto ldd = run_bounded(std::string("ldd ") + HYPERSCSI_TARGET_BIN, 10);
  ASSERT_EQ(ldd.status, 0) << ldd.out;
  EXPECT_EQ(ldd.out.find("librbd"), std::string::npos) << ldd.out;
  EXPECT_EQ(ldd.out.find("librados"), std::string::npos) << ldd.out;
  Gateway gw(*c, dir.path(), "gw");
  ASSERT_TRUE(gw.ok()) << gw.error();
  ASSERT_TRUE(gw.start("--lun 0=ram:8M")) << read_text_file(gw.log());
  std::string maps = maps_of(gw.pid());
  ASSERT_NE(maps.find("hyperscsi-target"), std::string::npos) << "not the daemon's maps";
  EXPECT_EQ(maps.find("librbd"), std::string::npos);
  EXPECT_EQ(maps.find("librados"), std::string::npos);
  EXPECT_EQ(maps.find("hyperscsi-store-rbd"), std::string::npos);
  gw.stop();
  const std::string image = hyperscsi::ceph_test::unique_image("load");
  ASSERT_TRUE(hyperscsi::ceph_test::create_image(*c, image, 4 << 20));
  ASSERT_TRUE(gw.start("--lun 0=ram:8M --lun 1=rbd:" + c->pool + "/" + image + " " +
                       hyperscsi::ceph_test::target_ceph_flags(*c)))
      << read_text_file(gw.log());
  maps = maps_of(gw.pid());
  EXPECT_NE(maps.find("hyperscsi-store-rbd.so"), std::string::npos);
  EXPECT_NE(maps.find("librbd.so"), std::string::npos);
}

// Fills 4 KiB blocks 0..blocks-1 round and round at queue depth `qd`; per
// block, the last generation whose write was acknowledged is what the image
// must hold. A block is never written twice at once (qd < blocks).
class AckedWriter {
 public:
  static constexpr size_t kBytes = 4096;
  AckedWriter(hi::Lun lun, uint32_t blocks, uint32_t qd)
      : lun_(lun), blocks_(blocks), qd_(qd), acked_gen_(blocks, 0) {}
  ~AckedWriter() { stop(milliseconds(60000)); }

  void start() {
    last_ = Clock::now();
    thread_ = std::thread([this] { loop(); });
  }
  bool stop(milliseconds bound) {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound, [&] { return outstanding_ == 0; });
  }
  static void fill(uint8_t* out, uint32_t block, uint32_t gen) {
    uint64_t x = (uint64_t{block} << 32) ^ gen ^ 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i + 8 <= kBytes; i += 8) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      std::memcpy(out + i, &x, 8);
    }
  }
  // What the image must hold.
  std::vector<uint8_t> expected() const {
    std::lock_guard lock(mu_);
    std::vector<uint8_t> out(size_t{blocks_} * kBytes, 0);
    for (uint32_t b = 0; b < blocks_; ++b)
      if (acked_gen_[b]) fill(out.data() + size_t{b} * kBytes, b, acked_gen_[b]);
    return out;
  }
  uint64_t acked() const {
    std::lock_guard lock(mu_);
    return acked_;
  }
  uint64_t failed() const {
    std::lock_guard lock(mu_);
    return failed_;
  }
  std::string first_error() const {
    std::lock_guard lock(mu_);
    return first_error_;
  }
  double max_stall() const {
    std::lock_guard lock(mu_);
    return max_stall_;
  }

 private:
  void loop() {
    const uint32_t sectors = kBytes / lun_.capacity().block_size;
    for (uint64_t i = 0; !stop_;) {
      {
        std::unique_lock lock(mu_);
        if (!cv_.wait_for(lock, milliseconds(50), [&] { return outstanding_ < qd_; })) continue;
        ++outstanding_;
      }
      const uint32_t block = static_cast<uint32_t>(i % blocks_);
      const uint32_t gen = static_cast<uint32_t>(i / blocks_ + 1);
      ++i;
      std::vector<uint8_t> buf(kBytes);
      fill(buf.data(), block, gen);
      lun_.write(uint64_t{block} * sectors, buf, [this, block, gen](hi::CommandResult&& r) {
        std::lock_guard lock(mu_);
        const auto now = Clock::now();
        max_stall_ = std::max(max_stall_, std::chrono::duration<double>(now - last_).count());
        last_ = now;
        if (r.good()) {
          ++acked_;
          acked_gen_[block] = std::max(acked_gen_[block], gen);
        } else {
          ++failed_;
          if (first_error_.empty()) first_error_ = r.describe();
        }
        --outstanding_;
        cv_.notify_all();
      });
    }
  }

  hi::Lun lun_;
  const uint32_t blocks_, qd_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint32_t outstanding_ = 0;
  std::vector<uint32_t> acked_gen_;
  uint64_t acked_ = 0, failed_ = 0;
  std::string first_error_;
  Clock::time_point last_;
  double max_stall_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(RbdGateway, OsdRestartDuringVerifiedWritesLosesNoAcknowledgedWrite) {
  std::string why;
  if (!hyperscsi::test_support::running_as_root()) GTEST_SKIP() << "needs root";
  if (!hyperscsi::ceph_test::shared_cluster(why)) GTEST_SKIP() << why;
  const auto t0 = Clock::now();
  hyperscsi::ceph_test::PrivateCluster pc;
  ASSERT_TRUE(pc.ok()) << pc.error();
  const Cluster& c = pc.cluster();
  TempDir dir("hs_rbd_osd");
  const std::string image = hyperscsi::ceph_test::unique_image("osd");
  constexpr uint32_t kBlocks = 1024;  // 4 MiB
  ASSERT_TRUE(hyperscsi::ceph_test::create_image(c, image, kBlocks * 4096));
  Gateway gw(c, dir.path(), "gw");
  ASSERT_TRUE(gw.ok()) << gw.error();
  ASSERT_TRUE(gw.start("--block-size 4096 --lun 0=rbd:" + c.pool + "/" + image + " " +
                       hyperscsi::ceph_test::target_ceph_flags(c)))
      << read_text_file(gw.log());
  auto lun = gw.connect(0, why, 16);
  ASSERT_TRUE(lun) << why;

  AckedWriter writer(*lun, kBlocks, 8);
  writer.start();
  std::this_thread::sleep_for(milliseconds(1500));
  const auto down_at = Clock::now();
  ASSERT_TRUE(pc.osd_stop());  // SIGTERM; returns when the OSD has exited
  const uint64_t before = writer.acked();
  std::this_thread::sleep_for(milliseconds(3000));
  const uint64_t during = writer.acked();
  ASSERT_TRUE(pc.osd_start());
  const double down_s = since(down_at);
  const uint64_t at_restart = writer.acked();
  const bool resumed =
      wait_until([&] { return writer.acked() >= at_restart + 200; }, milliseconds(30000));
  ASSERT_TRUE(writer.stop(milliseconds(60000))) << "writes still in flight";
  const auto expect = writer.expected();
  const auto through = read_all(*lun, expect.size(), why);
  gw.stop();
  const auto exported = export_image(c, image, dir.path() / "osd.raw");
  std::printf(
      "figures: %.1f s total; %llu writes acknowledged (%llu before the OSD stopped, %llu "
      "while it was down), %llu failed; OSD down %.1f s, longest stall %.1f s\n",
      since(t0), static_cast<unsigned long long>(writer.acked()),
      static_cast<unsigned long long>(before), static_cast<unsigned long long>(during - before),
      static_cast<unsigned long long>(writer.failed()), down_s, writer.max_stall());
  EXPECT_TRUE(resumed) << "I/O did not resume after the OSD came back\n"
                       << read_text_file(gw.log());
  EXPECT_GT(before, 0u);
  EXPECT_EQ(during, before) << "writes acknowledged while no OSD was running";
  EXPECT_EQ(writer.failed(), 0u) << writer.first_error();
  EXPECT_TRUE(through == expect) << "read back through HyperSCSI: an acknowledged write is missing";
  EXPECT_TRUE(exported == expect) << "rbd export: an acknowledged write is missing";
}

}  // namespace

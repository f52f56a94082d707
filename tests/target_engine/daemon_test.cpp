// The hyperscsi-target daemon as a process: bad configurations, and serving
// over a veth pair between two network namespaces (root only) with a test
// initiator on an AF_PACKET port in the other namespace.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>

#include "config.h"
#include "control.h"
#include "hyperscsi/engine/access.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/netns.h"
#include "process.h"
#include "test_initiator.h"

namespace hyperscsi::test {
namespace {

using namespace std::chrono_literals;
using test_support::NetnsPair;

const std::string kBin = HYPERSCSI_TARGET_BIN;

std::string unique(const std::string& what) {
  static int n = 0;
  return "/tmp/hs" + std::to_string(::getpid()) + "_" + what + std::to_string(n++);
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 g(seed);
  for (auto& b : v) b = static_cast<uint8_t>(g());
  return v;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// Runs the daemon with `args` and expects a quick non-zero exit naming `expect`.
void expect_refused(std::vector<std::string> args, const std::string& expect) {
  args.insert(args.begin(), kBin);
  Process p(args);
  auto rc = p.wait(15s);
  ASSERT_TRUE(rc) << "still running: " << args[1];
  EXPECT_NE(*rc, 0);
  EXPECT_NE(p.err().find(expect), std::string::npos) << "stderr: " << p.err();
}

TEST(TargetDaemon, VersionAndBadConfigurations) {
  {
    Process v({kBin, "--version"});
    ASSERT_EQ(v.wait(10s), 0);
    EXPECT_NE(v.out().find("hyperscsi-target "), std::string::npos);
  }
  const std::string ctl = unique("ctl") + ".sock";
  const std::string mem = "mem:hsbad" + std::to_string(::getpid());
  expect_refused({"--config", "/nonexistent/hs.toml"}, "cannot read config file");

  const std::string syntax = unique("syntax") + ".toml";
  write_file(syntax, "[target]\nname = \"t\"\nports = [\"mem:x\"\n[[lun]]\n");
  expect_refused({"--config", syntax}, syntax + ":4");  // the line where the array breaks
  expect_refused({"--config", syntax}, "TOML syntax error");

  const std::string dup = unique("dup") + ".toml";
  write_file(dup, "[target]\nports = [\"" + mem +
                      "\"]\n[[lun]]\nnumber = 3\nstore = \"ram:1M\"\n"
                      "[[lun]]\nnumber = 3\nstore = \"ram:1M\"\n");
  expect_refused({"--config", dup}, "duplicate LUN 3");
  expect_refused({"--port", mem, "--lun", "0=ram:1M", "--lun", "0=ram:2M", "--control", ctl},
                 "duplicate LUN 0");
  expect_refused({"--port", "bogus:eth0", "--lun", "0=ram:1M", "--control", ctl},
                 "unknown port kind 'bogus'");
  expect_refused({"--port", mem, "--lun", "0=ram:1000", "--control", ctl},
                 "multiple of the block size");
  expect_refused({"--port", mem, "--lun", "0=/nonexistent/hs/disk.img", "--control", ctl},
                 "/nonexistent/hs/disk.img");

  // A size that does not fit in the existing file.
  const std::string small = unique("small") + ".img";
  { std::ofstream(small) << std::string(4096, '\0'); }
  const std::string fit = unique("fit") + ".toml";
  write_file(fit, "[target]\nports = [\"" + mem + "\"]\ncontrol = \"" + ctl +
                      "\"\n[[lun]]\nnumber = 0\nstore = \"" + small + "\"\nsize = \"1M\"\n");
  expect_refused({"--config", fit}, "does not fit");
  const std::string badkey = unique("key") + ".toml";
  write_file(badkey, "[target]\nports = [\"" + mem +
                         "\"]\n[[lun]]\nnumber = 0\nstore = \"ram:1M\"\n"
                         "blocksize = 4096\n");
  expect_refused({"--config", badkey}, "unknown key 'blocksize'");
  // Flags the file owns are refused beside --config (they used to be ignored).
  for (const std::vector<std::string>& flag : {std::vector<std::string>{"--name", "other"},
                                               {"--block-size", "4096"},
                                               {"--read-only-lun", "0"},
                                               {"--exclusive-lun", "0"},
                                               {"--keepalive-ms", "500"},
                                               {"--dead-time-ms", "5000"},
                                               {"--drain-timeout-ms", "100"}}) {
    std::vector<std::string> args{"--config", dup};
    args.insert(args.end(), flag.begin(), flag.end());
    args.insert(args.begin(), kBin);
    Process p(args);
    auto rc = p.wait(15s);
    ASSERT_TRUE(rc) << "still running with " << flag[0];
    EXPECT_NE(*rc, 0);
    // CLI11 names the pair in either order ("--config excludes --name").
    EXPECT_NE(p.err().find("excludes"), std::string::npos) << p.err();
    EXPECT_NE(p.err().find(flag[0]), std::string::npos) << p.err();
    EXPECT_NE(p.err().find("--config"), std::string::npos) << p.err();
  }

  if (!test_support::running_as_root())
    GTEST_SKIP() << "interface checks need root (AF_PACKET sockets)";
  expect_refused({"--port", "afpacket:hsno" + std::to_string(::getpid() % 100000), "--lun",
                  "0=ram:1M", "--control", ctl},
                 "no interface");
  for (const auto& f : {syntax, dup, small, fit, badkey}) std::remove(f.c_str());
}

// target.read_thread (as --read-thread): a boolean, off unless set.
TEST(TargetDaemonConfig, ReadThreadIsABooleanOffByDefault) {
  const std::string lun = "[[lun]]\nnumber = 0\nstore = \"ram:1M\"\n";
  const std::string ports = "[target]\nports = [\"afpacket:eth1\"]\n";
  auto plain = daemon::parse_config(ports + lun, "t.toml");
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  EXPECT_FALSE(plain->read_thread);
  auto on = daemon::parse_config(ports + "read_thread = true\n" + lun, "t.toml");
  ASSERT_TRUE(on.ok()) << on.error().message;
  EXPECT_TRUE(on->read_thread);
  auto bad = daemon::parse_config(ports + "read_thread = 1\n" + lun, "t.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("read_thread"), std::string::npos) << bad.error().message;
}

TEST(TargetDaemonConfig, ExampleFileParsesToItsDocumentedMeaning) {
  auto c = daemon::load_config_file(HYPERSCSI_EXAMPLE_TOML);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->target_name, "iqn.2026-11.org.example:storage1");
  EXPECT_EQ(c->ports, std::vector<std::string>{"afpacket:eth1"});
  ASSERT_EQ(c->luns.size(), 3u);
  EXPECT_EQ(c->luns[0].size, 10ull << 30);
  EXPECT_EQ(c->luns[0].block_size, 4096u);
  EXPECT_TRUE(c->luns[0].access.open());
  EXPECT_TRUE(c->luns[1].direct_io);
  ASSERT_EQ(c->luns[1].access.entries.size(), 2u);
  const io::MacAddress host2 = {0x02, 0x00, 0x5e, 0x10, 0x00, 0x02};
  const io::MacAddress other = {0x02, 0x00, 0x5e, 0x10, 0x00, 0x09};
  EXPECT_TRUE(c->luns[1].access.allows("hyperscsi-attach@host1", other));
  EXPECT_TRUE(c->luns[1].access.allows("hyperscsi-attach@host2", host2));
  EXPECT_FALSE(c->luns[1].access.allows("hyperscsi-attach@host2", other));  // name and MAC
  EXPECT_EQ(c->luns[2].store, "ram:1073741824");
  EXPECT_TRUE(c->luns[2].access.auth_required);
  EXPECT_EQ(c->luns[2].access.protection, proto::Protection::kEncrypt);
  EXPECT_FALSE(c->luns[2].access.open());
  ASSERT_EQ(c->initiator_secrets.size(), 1u);
  EXPECT_TRUE(c->initiator_secrets.contains("hyperscsi-attach@host1"));
  EXPECT_EQ(c->dead_time_ms, 10000u);
  EXPECT_FALSE(c->read_thread);  // documented as the default, off

  auto flag = daemon::parse_lun_flag("7=ram:64M", 4096);
  ASSERT_TRUE(flag.ok());
  EXPECT_EQ(flag->number, 7);
  EXPECT_EQ(flag->block_size, 4096u);
  EXPECT_FALSE(daemon::parse_lun_flag("x=ram:1M", 512).ok());
  EXPECT_FALSE(daemon::parse_lun_flag("99999=ram:1M", 512).ok());
  EXPECT_FALSE(daemon::parse_lun_flag("3=", 512).ok());
  EXPECT_FALSE(engine::parse_mac("02:00:5e:10:00").has_value());
  EXPECT_FALSE(engine::parse_mac("02:00:5e:10:00:0g").has_value());

  auto badmac = daemon::parse_config(
      "[target]\nports=[\"mem:x\"]\n[[lun]]\nnumber=0\nstore=\"ram:1M\"\n"
      "[[lun.allow]]\nmac=\"zz\"\n",
      "t.toml");
  ASSERT_FALSE(badmac.ok());
  EXPECT_NE(badmac.error().message.find("t.toml:7"), std::string::npos) << badmac.error().message;
  auto badbs = daemon::parse_config(
      "[target]\nports=[\"mem:x\"]\n[[lun]]\nnumber=0\nstore=\"ram:1M\"\nblock_size=1024\n",
      "t.toml");
  ASSERT_FALSE(badbs.ok());
  EXPECT_NE(badbs.error().message.find("512 or 4096"), std::string::npos);
  // Floats are not sizes or counts: refused by type, never converted (the
  // config fuzzer found toml++'s float->int conversion overflowing on 209e17).
  auto floatsize = daemon::parse_config(
      "[target]\nports=[\"mem:x\"]\n[[lun]]\nnumber=0\nstore=\"ram:1M\"\nsize=209e17\n", "t.toml");
  ASSERT_FALSE(floatsize.ok());
  EXPECT_NE(floatsize.error().message.find("size must be a number"), std::string::npos)
      << floatsize.error().message;
  auto floatnumber = daemon::parse_config(
      "[target]\nports=[\"mem:x\"]\n[[lun]]\nnumber=1.0\nstore=\"ram:1M\"\n", "t.toml");
  ASSERT_FALSE(floatnumber.ok());
  auto noport = daemon::parse_config("[[lun]]\nnumber=0\nstore=\"ram:1M\"\n", "t.toml");
  ASSERT_FALSE(noport.ok());
  EXPECT_NE(noport.error().message.find("no port"), std::string::npos);
  // Security keys: typed values, secrets long enough, no secret twice.
  const std::string base = "[target]\nports=[\"mem:x\"]\n[[lun]]\nnumber=0\nstore=\"ram:1M\"\n";
  auto badprot = daemon::parse_config(base + "protection=\"strong\"\n", "t.toml");
  ASSERT_FALSE(badprot.ok());
  EXPECT_NE(badprot.error().message.find("integrity"), std::string::npos);
  auto badauth = daemon::parse_config(base + "auth=\"maybe\"\n", "t.toml");
  ASSERT_FALSE(badauth.ok());
  auto shortsecret =
      daemon::parse_config(base + "[[initiator]]\nname=\"a\"\nsecret=\"short\"\n", "t.toml");
  ASSERT_FALSE(shortsecret.ok());
  EXPECT_NE(shortsecret.error().message.find("shorter than 16"), std::string::npos);
  EXPECT_EQ(shortsecret.error().message.find("short\""), std::string::npos);  // not echoed
  auto both = daemon::parse_config(
      base + "[[initiator]]\nname=\"a\"\nsecret=\"0123456789abcdef\"\nsecret_file=\"/x\"\n",
      "t.toml");
  ASSERT_FALSE(both.ok());
  auto nofile = daemon::parse_config(
      base + "[[initiator]]\nname=\"a\"\nsecret_file=\"/nonexistent/key\"\n", "t.toml");
  ASSERT_FALSE(nofile.ok());
  EXPECT_NE(nofile.error().message.find("cannot read secret file"), std::string::npos);
  auto good = daemon::parse_config(
      base + "auth=\"required\"\n[[initiator]]\nname=\"a\"\nsecret=\"0123456789abcdef\"\n",
      "t.toml");
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_TRUE(good->luns[0].access.auth_required);
  EXPECT_EQ(good->initiator_secrets.at("a").size(), 16u);
}

// ---- over a veth pair ----

std::optional<io::MacAddress> mac_of(const std::string& ns, const std::string& iface) {
  std::string out;
  if (!NetnsPair::shell("ip -n " + ns + " -br link show " + iface, &out)) return std::nullopt;
  std::istringstream in(out);
  std::string name, state, mac;
  in >> name >> state >> mac;
  return engine::parse_mac(mac);
}

bool wait_ready(const std::string& control, Process& p) {
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (std::chrono::steady_clock::now() < deadline && p.running()) {
    auto r = daemon::control_request(control, "ping", 500ms);
    if (r && r.value() == "pong\n") return true;
    if (p.wait(20ms)) break;
  }
  return false;
}

// Waits for the daemon to exit while the initiator keeps acknowledging, as a
// live host would (the drain waits for its replies to be acknowledged).
std::optional<int> wait_exit(Process& p, TestInitiator& ini, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    ini.pump();
    if (auto rc = p.wait(1ms)) return rc;
  }
  return p.wait(1ms);
}

class DaemonOverVeth : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test_support::running_as_root()) GTEST_SKIP() << "needs root for namespaces and AF_PACKET";
    net_ = std::make_unique<NetnsPair>();
    if (!net_->ok()) GTEST_SKIP() << "cannot create the namespace pair: " << net_->error();
    auto mac = mac_of(net_->ns_a(), net_->iface_a());
    ASSERT_TRUE(mac) << "cannot read the MAC of " << net_->iface_a();
    target_mac_ = *mac;
    control_ = unique("ctl") + ".sock";
    image_ = unique("disk") + ".img";
    std::filesystem::resize_file((std::ofstream(image_).close(), image_), 8u << 20);
    auto port = net_->run_in_b([&] { return ports::open_port("afpacket:" + net_->iface_b()); });
    ASSERT_TRUE(port && port->ok()) << (port && !port->ok() ? port->error().message : "netns");
    port_ = std::move(*port).value();
  }
  void TearDown() override {
    daemon_.reset();  // kills and reaps it if a test failed mid-way
    port_.reset();
    net_.reset();
    std::remove(image_.c_str());
    std::remove(control_.c_str());
  }

  std::unique_ptr<Process> start(std::vector<std::string> args) {
    std::vector<std::string> argv = {"ip", "netns", "exec", net_->ns_a(), kBin};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = std::make_unique<Process>(argv);
    EXPECT_TRUE(wait_ready(control_, *p)) << "daemon not ready: " << p->err();
    return p;
  }
  std::vector<std::string> flags() {
    return {"--port",
            "afpacket:" + net_->iface_a(),
            "--lun",
            "0=" + image_,
            "--lun",
            "1=ram:1M",
            "--name",
            "tgt.veth",
            "--control",
            control_,
            "--log-level",
            "debug",
            "--drain-timeout-ms",
            "5000"};
  }
  std::vector<uint8_t> read_image(uint64_t offset, size_t n) {
    std::vector<uint8_t> d(n);
    const int fd = ::open(image_.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, d.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
    ::close(fd);
    return d;
  }

  std::unique_ptr<NetnsPair> net_;
  io::MacAddress target_mac_{};
  std::string control_, image_;
  std::unique_ptr<io::Port> port_;
  std::unique_ptr<Process> daemon_;
};

TEST_F(DaemonOverVeth, ServesWritesReadsFlushesAndReportsStats) {
  daemon_ = start(flags());
  ASSERT_TRUE(daemon_->running());
  TestInitiator ini(*port_, "ini.veth");
  ASSERT_TRUE(ini.login(target_mac_, "tgt.veth")) << ini.why() << "\n" << daemon_->err();
  auto luns = ini.command(0, cdb_report_luns(), 4096);
  ASSERT_TRUE(luns);
  EXPECT_EQ(be32(luns->data, 0), 16u);

  const auto data = pattern(128 * 512, 77);
  auto w = ini.command(0, cdb_write10(2048, 128), 0, data);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->header.status, 0);
  auto r = ini.command(0, cdb_read10(2048, 128), 128 * 512);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data, data);
  // SYNCHRONIZE CACHE: the data is in the file, seen through another fd.
  auto s = ini.command(0, cdb_sync_cache10(), 0);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->header.status, 0);
  EXPECT_EQ(read_image(2048 * 512, data.size()), data);

  Process stats({kBin, "stats", "--control", control_});
  ASSERT_EQ(stats.wait(10s), 0) << stats.err();
  EXPECT_NE(stats.out().find("initiator 'ini.veth'"), std::string::npos) << stats.out();
  Process json({kBin, "stats", "--control", control_, "--json"});
  ASSERT_EQ(json.wait(10s), 0) << json.err();
  EXPECT_NE(json.out().find("\"initiator\":\"ini.veth\""), std::string::npos) << json.out();
  EXPECT_NE(json.out().find("\"target\":\"tgt.veth\""), std::string::npos);
  // The store's counters: the write and the read above reached LUN 0's store.
  std::smatch m;
  const std::string text = stats.out();
  ASSERT_TRUE(std::regex_search(
      text, m,
      std::regex("lun 0 store: reads ([0-9]+) \\(([0-9]+) bytes\\) writes ([0-9]+) "
                 "\\(([0-9]+) bytes")))
      << text;
  EXPECT_GE(std::stoull(m[1]), 1u);
  EXPECT_GE(std::stoull(m[2]), data.size());
  EXPECT_GE(std::stoull(m[3]), 1u);
  EXPECT_GE(std::stoull(m[4]), data.size());
  EXPECT_NE(text.find("read thread 0"), std::string::npos) << "--read-thread is off";
  const std::string js = json.out();
  ASSERT_TRUE(std::regex_search(js, m,
                                std::regex("\"luns\":\\[\\{\"lun\":0,\"reads\":([0-9]+),"
                                           "\"bytes_read\":([0-9]+)")))
      << js;
  EXPECT_GE(std::stoull(m[2]), data.size());
  EXPECT_NE(js.find("\"offloaded_reads\":0"), std::string::npos) << js;
  // Per-session congestion state (issue 21): window, round trip, timeouts.
  for (const char* key : {"\"cwnd\":", "\"ssthresh\":", "\"srtt_us\":", "\"rttvar_us\":",
                          "\"rto_us\":", "\"timeouts\":", "\"spurious_timeouts\":"})
    EXPECT_NE(json.out().find(key), std::string::npos) << key << " in " << json.out();

  const auto t0 = std::chrono::steady_clock::now();
  daemon_->signal(SIGTERM);
  auto rc = wait_exit(*daemon_, ini, 20s);
  ASSERT_TRUE(rc);
  EXPECT_EQ(*rc, 0) << daemon_->err();
  // With the initiator acknowledging, the drain ends well before its 5 s bound.
  EXPECT_EQ(daemon_->err().find("drain incomplete"), std::string::npos) << daemon_->err();
  RecordProperty("sigterm_to_exit_ms",
                 static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - t0)
                                      .count()));
}

TEST_F(DaemonOverVeth, SigtermDuringWritesLosesNoAcknowledgedWrite) {
  daemon_ = start(flags());
  TestInitiator ini(*port_, "ini.writer", 31);
  ASSERT_TRUE(ini.login(target_mac_, "tgt.veth")) << ini.why();
  ASSERT_TRUE(ini.command(0, cdb_tur(), 0));

  constexpr uint32_t kBlocks = 8;          // 4 KiB per write
  constexpr uint32_t kMaxWrites = 2000;    // 8 MiB image / 4 KiB
  std::map<uint32_t, uint32_t> in_flight;  // cmd_sn -> write index
  std::vector<uint32_t> acked;
  uint32_t next = 0;
  bool signalled = false;
  size_t after_signal_busy = 0;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    // After the signal a real host would back off on BUSY; stop issuing then.
    while (ini.session().established() && in_flight.size() < 8 && next < kMaxWrites &&
           after_signal_busy == 0) {
      const uint32_t sn =
          ini.send(0, cdb_write10(next * kBlocks, kBlocks), 0, pattern(kBlocks * 512, next));
      if (sn == 0) break;
      in_flight[sn] = next++;
    }
    ini.pump();
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      auto rep = ini.take(it->first);
      if (!rep) {
        ++it;
        continue;
      }
      if (rep->header.status == 0)
        acked.push_back(it->second);
      else if (signalled)
        ++after_signal_busy;
      it = in_flight.erase(it);
    }
    if (!signalled && acked.size() >= 100) {
      daemon_->signal(SIGTERM);
      signalled = true;
    }
    if (signalled && (!ini.session().established() || !daemon_->running())) break;
    if (signalled && daemon_->wait(1ms)) break;
    std::this_thread::sleep_for(100us);
  }
  ASSERT_TRUE(signalled) << "only " << acked.size() << " writes acknowledged";
  auto rc = wait_exit(*daemon_, ini, 20s);
  ASSERT_TRUE(rc) << "daemon did not exit after SIGTERM";
  EXPECT_EQ(*rc, 0) << daemon_->err();
  EXPECT_NE(daemon_->err().find("every LUN flushed"), std::string::npos) << daemon_->err();
  RecordProperty("acked_writes", static_cast<int>(acked.size()));
  std::printf("acknowledged writes before exit: %zu, refused after SIGTERM: %zu\n", acked.size(),
              after_signal_busy);

  // Every acknowledged write is in the file ...
  for (uint32_t i : acked)
    ASSERT_EQ(read_image(uint64_t{i} * kBlocks * 512, kBlocks * 512), pattern(kBlocks * 512, i))
        << "write " << i;
  // ... and reads back through a restarted daemon.
  daemon_ = start(flags());
  TestInitiator again(*port_, "ini.reader", 32);
  ASSERT_TRUE(again.login(target_mac_, "tgt.veth")) << again.why();
  for (uint32_t i : acked) {
    auto r = again.command(0, cdb_read10(i * kBlocks, kBlocks), kBlocks * 512);
    ASSERT_TRUE(r) << "read " << i;
    ASSERT_EQ(r->data, pattern(kBlocks * 512, i)) << "write " << i;
  }
  daemon_->signal(SIGTERM);
  EXPECT_EQ(wait_exit(*daemon_, again, 20s), 0);
}

TEST_F(DaemonOverVeth, SighupAddsALunAndAppliesAccessLists) {
  const std::string conf = unique("hup") + ".toml";
  const std::string head = "[target]\nname = \"tgt.hup\"\nports = [\"afpacket:" + net_->iface_a() +
                           "\"]\ncontrol = \"" + control_ + "\"\ndead_time_ms = 5000\n";
  write_file(conf, head + "[[lun]]\nnumber = 0\nstore = \"" + image_ + "\"\n");
  daemon_ = start({"--config", conf});
  TestInitiator ini(*port_, "ini.hup", 41);
  ASSERT_TRUE(ini.login(target_mac_, "tgt.hup")) << ini.why() << daemon_->err();
  auto before = ini.command(0, cdb_report_luns(), 4096);
  ASSERT_TRUE(before);
  EXPECT_EQ(be32(before->data, 0), 8u);

  // Add LUN 1 for this initiator only and LUN 2 for somebody else.
  write_file(conf, head + "[[lun]]\nnumber = 0\nstore = \"" + image_ +
                       "\"\n[[lun]]\nnumber = 1\nstore = \"ram\"\nsize = \"2M\"\n"
                       "  [[lun.allow]]\n  initiator = \"ini.hup\"\n"
                       "[[lun]]\nnumber = 2\nstore = \"ram:1M\"\n"
                       "  [[lun.allow]]\n  initiator = \"ini.other\"\n");
  daemon_->signal(SIGHUP);
  uint32_t listed = 0;
  for (int i = 0; i < 100 && listed != 16; ++i) {
    auto r = ini.command(0, cdb_report_luns(), 4096);
    ASSERT_TRUE(r);
    listed = be32(r->data, 0);
    if (listed != 16) std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(listed, 16u) << daemon_->err();  // LUNs 0 and 1; 2 is hidden
  auto cap = ini.command(1, cdb_read_capacity10(), 8);
  ASSERT_TRUE(cap);
  ASSERT_EQ(cap->data.size(), 8u);
  EXPECT_EQ(be32(cap->data, 0), 4095u);
  auto hidden = ini.command(2, cdb_tur(), 0);
  ASSERT_TRUE(hidden);
  EXPECT_EQ(hidden->asc(), 0x25);

  // A broken file on reload keeps the running configuration.
  write_file(conf, "[target\n");
  daemon_->signal(SIGHUP);
  std::this_thread::sleep_for(200ms);
  auto still = ini.command(1, cdb_tur(), 0);
  ASSERT_TRUE(still);
  EXPECT_EQ(still->header.status, 0);
  EXPECT_TRUE(daemon_->running());
  daemon_->signal(SIGTERM);
  EXPECT_EQ(wait_exit(*daemon_, ini, 20s), 0) << daemon_->err();
  EXPECT_NE(daemon_->err().find("keeping the running configuration"), std::string::npos);
  std::remove(conf.c_str());
}

// Two initiators on one target port at once (two AF_PACKET sockets on the
// same interface: the target tells them apart by session id), each streaming
// 64 KiB writes at queue depth 8 to its own region, then reading it all back.
// Prints the throughput reached (no assertion on speed: shared 2-core box).
TEST_F(DaemonOverVeth, TwoInitiatorsOnOnePortStreamAndVerify) {
  daemon_ = start(flags());
  auto second = net_->run_in_b([&] { return ports::open_port("afpacket:" + net_->iface_b()); });
  ASSERT_TRUE(second && second->ok());
  std::unique_ptr<io::Port> port2 = std::move(*second).value();
  TestInitiator a(*port_, "ini.stream-a", 51);
  TestInitiator b(*port2, "ini.stream-b", 52);
  ASSERT_TRUE(a.login(target_mac_, "tgt.veth")) << a.why();
  ASSERT_TRUE(b.login(target_mac_, "tgt.veth")) << b.why();
  ASSERT_TRUE(a.command(0, cdb_tur(), 0));
  ASSERT_TRUE(b.command(0, cdb_tur(), 0));

  constexpr uint32_t kBlocks = 128;       // 64 KiB
  constexpr uint32_t kPerInitiator = 32;  // 2 MiB each, regions 0-4 MiB and 4-8 MiB
  TestInitiator* inis[2] = {&a, &b};
  std::map<uint32_t, uint32_t> in_flight[2];
  uint32_t next[2] = {0, 0}, done[2] = {0, 0};
  auto lba = [&](int who, uint32_t i) { return who * 8192 + i * kBlocks; };
  const auto t0 = std::chrono::steady_clock::now();
  const auto deadline = t0 + 60s;
  while ((done[0] < kPerInitiator || done[1] < kPerInitiator) &&
         std::chrono::steady_clock::now() < deadline) {
    for (int w = 0; w < 2; ++w) {
      while (in_flight[w].size() < 8 && next[w] < kPerInitiator) {
        const uint32_t sn = inis[w]->send(0, cdb_write10(lba(w, next[w]), kBlocks), 0,
                                          pattern(kBlocks * 512, w * 1000 + next[w]));
        ASSERT_NE(sn, 0u);
        in_flight[w][sn] = next[w]++;
      }
      inis[w]->pump();
      for (auto it = in_flight[w].begin(); it != in_flight[w].end();) {
        auto r = inis[w]->take(it->first);
        if (!r) {
          ++it;
          continue;
        }
        ASSERT_EQ(r->header.status, 0);
        ++done[w];
        it = in_flight[w].erase(it);
      }
    }
  }
  ASSERT_EQ(done[0], kPerInitiator);
  ASSERT_EQ(done[1], kPerInitiator);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("two initiators, 64 KiB writes QD8 each, MTU %zu: %.1f MB/s aggregate\n",
              port_->mtu(), 2.0 * kPerInitiator * kBlocks * 512 / secs / 1e6);
  for (int w = 0; w < 2; ++w)
    for (uint32_t i = 0; i < kPerInitiator; ++i) {
      auto r = inis[1 - w]->command(0, cdb_read10(lba(w, i), kBlocks), kBlocks * 512);
      ASSERT_TRUE(r);
      ASSERT_EQ(r->data, pattern(kBlocks * 512, w * 1000 + i)) << w << "/" << i;
    }
  Process stats({kBin, "stats", "--control", control_});
  ASSERT_EQ(stats.wait(10s), 0);
  EXPECT_NE(stats.out().find("2 session(s)"), std::string::npos) << stats.out();
  daemon_->signal(SIGTERM);
  EXPECT_EQ(wait_exit(*daemon_, a, 20s), 0) << daemon_->err();
}

TEST_F(DaemonOverVeth, InterfaceDownIsRefused) {
  ASSERT_TRUE(net_->set_up(net_->ns_a(), net_->iface_a(), false));
  std::vector<std::string> argv = {"ip", "netns", "exec", net_->ns_a(), kBin};
  for (auto& a : flags()) argv.push_back(a);
  Process p(argv);
  auto rc = p.wait(15s);
  ASSERT_TRUE(rc);
  EXPECT_NE(*rc, 0);
  EXPECT_NE(p.err().find("is down"), std::string::npos) << p.err();
}

// ---- exclusive use, identity and honest logs (issue 15) ----

// Runs the daemon in `ns` and expects it to exit non-zero quickly with
// `expect` in its log.
void expect_refused_in(const std::string& ns, std::vector<std::string> args,
                       const std::string& expect, std::string* log = nullptr) {
  std::vector<std::string> argv = {"ip", "netns", "exec", ns, kBin};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv);
  auto rc = p.wait(15s);
  ASSERT_TRUE(rc) << "still running";
  EXPECT_NE(*rc, 0);
  EXPECT_NE(p.err().find(expect), std::string::npos) << "stderr: " << p.err();
  if (log) *log = p.err();
}

TEST_F(DaemonOverVeth, SecondTargetOnOneInterfaceIsRefusedAndTheFirstKeepsServing) {
  daemon_ = start(flags());
  TestInitiator ini(*port_, "ini.first", 61);
  ASSERT_TRUE(ini.login(target_mac_, "tgt.veth")) << ini.why();
  ASSERT_TRUE(ini.command(1, cdb_tur(), 0));
  std::string log;
  expect_refused_in(net_->ns_a(),
                    {"--port", "afpacket:" + net_->iface_a(), "--lun", "0=ram:1M", "--name",
                     "tgt.second", "--control", unique("ctl2") + ".sock"},
                    "is already served by another hyperscsi-target", &log);
  EXPECT_NE(log.find("pid " + std::to_string(daemon_->pid())), std::string::npos) << log;
  EXPECT_NE(log.find("tgt.veth"), std::string::npos) << log;  // the holder's command line
  // The first target's session was not disturbed.
  auto r = ini.command(1, cdb_tur(), 0);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header.status, 0);
  EXPECT_TRUE(ini.session().established());
  // The claim is per network namespace: the other namespace's interface is free.
  Process other({"ip", "netns", "exec", net_->ns_b(), kBin, "--port", "afpacket:" + net_->iface_b(),
                 "--lun", "0=ram:1M", "--name", "tgt.b", "--control", unique("ctlb") + ".sock"});
  EXPECT_FALSE(other.wait(1500ms)) << other.err();
  other.signal(SIGTERM);
  other.wait(10s);
}

TEST_F(DaemonOverVeth, OneFileExportedTwiceIsRefused) {
  // Two LUNs of one daemon.
  expect_refused_in(net_->ns_a(),
                    {"--port", "afpacket:" + net_->iface_a(), "--lun", "0=" + image_, "--lun",
                     "1=" + image_, "--control", control_},
                    "already exported, locked by this process");
  // A second daemon (on another interface) while the first exports it.
  daemon_ = start(flags());
  std::string log;
  expect_refused_in(net_->ns_b(),
                    {"--port", "afpacket:" + net_->iface_b(), "--lun", "0=" + image_, "--name",
                     "tgt.b", "--control", unique("ctlb") + ".sock"},
                    "already exported, locked by pid " + std::to_string(daemon_->pid()), &log);
  EXPECT_NE(log.find("LUN 0: " + image_), std::string::npos) << log;
}

TEST_F(DaemonOverVeth, ExclusiveLunServesOneSessionAtATime) {
  std::vector<std::string> args = flags();
  args.insert(args.end(), {"--exclusive-lun", "1"});
  daemon_ = start(args);
  auto second = net_->run_in_b([&] { return ports::open_port("afpacket:" + net_->iface_b()); });
  ASSERT_TRUE(second && second->ok());
  std::unique_ptr<io::Port> port2 = std::move(*second).value();
  TestInitiator a(*port_, "ini.owner", 71);
  TestInitiator b(*port2, "ini.other", 72);
  ASSERT_TRUE(a.login(target_mac_, "tgt.veth")) << a.why();
  ASSERT_TRUE(b.login(target_mac_, "tgt.veth")) << b.why();
  auto ra = a.command(1, cdb_tur(), 0);
  ASSERT_TRUE(ra);
  EXPECT_EQ(ra->header.status, 0);
  auto rb = b.command(1, cdb_read10(0, 1), 512);
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->header.status, 0x18);          // RESERVATION CONFLICT
  auto inq = b.command(1, cdb_inquiry(), 96);  // it may still see what the LUN is
  ASSERT_TRUE(inq);
  EXPECT_EQ(inq->header.status, 0);
  auto other_lun = b.command(0, cdb_tur(), 0);  // LUN 0 is not exclusive
  ASSERT_TRUE(other_lun);
  EXPECT_EQ(other_lun->header.status, 0);
  // The owner logs out: the LUN is free for the next session.
  ASSERT_TRUE(a.session().disconnect(proto::Clock::now()));
  for (int i = 0; i < 2000 && a.session().state() != proto::InitiatorState::kClosed; ++i) {
    a.pump();
    std::this_thread::sleep_for(1ms);
  }
  std::optional<Reply> after;
  for (int i = 0; i < 50; ++i) {
    after = b.command(1, cdb_tur(), 0);
    if (!after || after->header.status != 0x18) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(after);
  EXPECT_EQ(after->header.status, 0) << daemon_->err();
}

TEST_F(DaemonOverVeth, SighupLogsRevokedAccessFencesAReplacedDiskAndReportsAResize) {
  const std::string image2 = unique("disk2") + ".img";
  std::filesystem::resize_file((std::ofstream(image2).close(), image2), 4u << 20);
  const std::string conf = unique("rev") + ".toml";
  const std::string head = "[target]\nname = \"tgt.rev\"\nports = [\"afpacket:" + net_->iface_a() +
                           "\"]\ncontrol = \"" + control_ + "\"\n";
  auto lun = [](int n, const std::string& store, const std::string& extra = "") {
    return "[[lun]]\nnumber = " + std::to_string(n) + "\nstore = \"" + store + "\"\n" + extra;
  };
  write_file(conf, head + lun(0, image_) + lun(1, "ram:1M") + lun(2, image2));
  daemon_ = start({"--config", conf});
  TestInitiator ini(*port_, "ini.rev", 81);
  ASSERT_TRUE(ini.login(target_mac_, "tgt.rev")) << ini.why() << daemon_->err();
  for (uint16_t l : {0, 1, 2}) {
    auto r = ini.command(l, cdb_tur(), 0);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->header.status, 0) << "LUN " << l;
  }
  // LUN 0: access taken away. LUN 1: another RAM disk (a new identity).
  // LUN 2: the same file, grown, reopened (direct_io changed).
  std::filesystem::resize_file(image2, 8u << 20);
  write_file(conf, head + lun(0, image_, "  [[lun.allow]]\n  initiator = \"someone.else\"\n") +
                       lun(1, "ram:2M") + lun(2, image2, "direct_io = true\n"));
  daemon_->signal(SIGHUP);
  std::optional<Reply> r0;
  for (int i = 0; i < 100; ++i) {
    r0 = ini.command(0, cdb_tur(), 0);
    if (!r0 || r0->header.status != 0) break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(r0);
  EXPECT_EQ(r0->asc(), 0x25);  // revoked: absent for this initiator
  for (int i = 0; i < 100 && daemon_->err().find("reload: done") == std::string::npos; ++i)
    std::this_thread::sleep_for(50ms);
  const std::string log = daemon_->err();
  if (std::getenv("HS_SHOW_LOG")) std::printf("%s", log.c_str());
  EXPECT_NE(log.find("LUN 0 access revoked for session"), std::string::npos) << log;
  EXPECT_NE(log.find("of 'ini.rev'"), std::string::npos) << log;
  EXPECT_NE(log.find("LUN 1 is another disk now"), std::string::npos) << log;
  EXPECT_NE(log.find("LUN 2 capacity changed from 4194304 to 8388608"), std::string::npos) << log;
  // LUN 1: this session knew the old disk and never reaches the new one.
  auto r1 = ini.command(1, cdb_read10(0, 1), 512);
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->header.status, 0x02);
  EXPECT_EQ(r1->asc(), 0x25);
  // LUN 2: CAPACITY DATA HAS CHANGED once, then the new size.
  const uint32_t sn = ini.send(2, cdb_read_capacity10(), 8);
  ASSERT_NE(sn, 0u);
  auto ua = ini.wait(sn);
  ASSERT_TRUE(ua);
  EXPECT_EQ(ua->sense_key(), 0x06);
  EXPECT_EQ(ua->asc(), 0x2A);
  EXPECT_EQ(ua->ascq(), 0x09);
  auto cap = ini.command(2, cdb_read_capacity10(), 8);
  ASSERT_TRUE(cap);
  ASSERT_EQ(cap->data.size(), 8u);
  EXPECT_EQ(be32(cap->data, 0), (8u << 20) / 512 - 1);
  daemon_->signal(SIGTERM);
  EXPECT_EQ(wait_exit(*daemon_, ini, 20s), 0) << daemon_->err();
  std::remove(conf.c_str());
  std::remove(image2.c_str());
}

// [ceph] reaches every rbd: LUN (and only those); keys and ranges are checked.
TEST(TargetDaemonConfig, CephTableConfiguresRbdLuns) {
  const std::string good = R"(
[target]
ports = ["afpacket:eth1"]
[ceph]
conf = "/etc/ceph/other.conf"
id = "client.gw1"
keyring = "/etc/ceph/gw1.keyring"
connect_timeout = 5
op_timeout = 0
[[lun]]
number = 0
store = "rbd:pool/image"
[[lun]]
number = 1
store = "rbd:pool/ns/image4k"
block_size = 4096
[[lun]]
number = 2
store = "ram"
size = "1M"
)";
  auto c = daemon::parse_config(good, "ceph.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ(c->luns.size(), 3u);
  EXPECT_EQ(c->luns[0].ceph.conf_file, "/etc/ceph/other.conf");
  EXPECT_EQ(c->luns[0].ceph.client_id, "gw1");  // "client." is optional
  EXPECT_EQ(c->luns[0].ceph.keyring, "/etc/ceph/gw1.keyring");
  EXPECT_EQ(c->luns[0].ceph.connect_timeout_s, 5u);
  EXPECT_EQ(c->luns[0].ceph.op_timeout_s, 0u);
  EXPECT_FALSE(c->luns[0].block_size_set);  // the image may keep its own
  EXPECT_TRUE(c->luns[1].block_size_set);
  EXPECT_EQ(c->luns[1].ceph, c->luns[0].ceph);
  EXPECT_EQ(c->luns[2].ceph, store::RbdOptions{});  // not an rbd: LUN
  // A changed [ceph] table reopens the LUN at reload.
  daemon::LunSetting other = c->luns[0];
  other.ceph.keyring = "/etc/ceph/gw2.keyring";
  EXPECT_FALSE(other.same_store(c->luns[0]));

  for (const auto& [text, says] : std::vector<std::pair<std::string, std::string>>{
           {"[ceph]\nkeyrings = \"x\"\n", "ceph: unknown key 'keyrings'"},
           {"[ceph]\nop_timeout = 4000\n", "ceph.op_timeout must be 0..3600"},
           {"[ceph]\nid = 7\n", "ceph.id has the wrong type"},
           {"ceph = 1\n", "[ceph] must be a table"}}) {
    auto bad = daemon::parse_config(text +
                                        "[target]\nports = [\"afpacket:eth1\"]\n"
                                        "[[lun]]\nnumber = 0\nstore = \"rbd:p/i\"\n",
                                    "bad.toml");
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_NE(bad.error().message.find(says), std::string::npos) << bad.error().message;
  }
}

}  // namespace
}  // namespace hyperscsi::test

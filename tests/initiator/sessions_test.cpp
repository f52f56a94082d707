// Several sessions on one client interface (issue 14), against the real
// hyperscsi-target over a veth pair between two namespaces (root):
//   - Initiators on their own sockets (AF_PACKET, then libpcap) discover and
//     log in at the same moment; each gets its own session, and while all of
//     them move data its socket delivers none of the others' session frames
//     (counted by a decorator around each port, independently of the
//     initiator's own counter), although a spy socket on the same interface
//     sees plenty of them;
//   - several hyperscsi-bench processes start at once, each verifies its own
//     I/O, and the target saw one session per process;
//   - a session's filter is never too tight: it still gets its own replies
//     after an epoch change (a one-way outage makes it resume), a re-login
//     and a kill -9 and restart of the target, unprotected and with
//     per-frame encryption, while another session keeps the link busy;
//   - an idle session stops receiving (its socket then costs the kernel
//     nothing per frame), survives longer than the dead time on keepalives,
//     and its next command resumes it.
// Each test takes a few seconds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/io/rx_filter.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace hyperscsi::initiator {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test_support::BackgroundProcess;
using test_support::NetnsPair;
using test_support::read_text_file;
using test_support::run_bounded;
using test_support::TempDir;
using Clock = std::chrono::steady_clock;

constexpr const char* kTarget = "sessions";
constexpr const char* kInitiatorName = "sessions-test";
constexpr uint32_t kLuns = 8;

#define SKIP_UNLESS_READY()                                             \
  do {                                                                  \
    if (!test_support::running_as_root())                               \
      GTEST_SKIP() << "needs root (network namespaces and AF_PACKET)";  \
    for (const char* bin : {HYPERSCSI_TARGET_BIN, HYPERSCSI_BENCH_BIN}) \
      if (!fs::exists(bin)) GTEST_SKIP() << "not built: " << bin;       \
  } while (0)

uint32_t load_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// Wraps an initiator's port: counts the session frames it delivers that
// belong to another session than `own` (while own != 0), and can swallow
// everything it receives (`blackout`: a one-way outage of this session only).
class WatchPort final : public io::Port {
 public:
  explicit WatchPort(std::unique_ptr<io::Port> p) : p_(std::move(p)) {}
  std::string_view spec() const override { return p_->spec(); }
  io::MacAddress mac() const override { return p_->mac(); }
  size_t mtu() const override { return p_->mtu(); }
  io::PortCounters counters() const override { return p_->counters(); }
  int fd() const override { return p_->fd(); }
  io::Packet alloc() override { return p_->alloc(); }
  size_t tx_burst(std::span<io::Packet> pkts) override { return p_->tx_burst(pkts); }
  bool wait_rx(std::chrono::microseconds t) override { return p_->wait_rx(t); }
  Status<io::PortError> set_rx_filter(const io::RxFilter& f) override {
    return p_->set_rx_filter(f);
  }
  Status<io::PortError> set_rx_paused(bool paused) override { return p_->set_rx_paused(paused); }
  size_t rx_burst(std::span<io::Packet> out) override {
    const size_t n = p_->rx_burst(out);
    const uint32_t own_id = own.load();
    for (size_t i = 0; i < n; ++i) {
      const auto b = out[i].bytes();
      if (b.size() < 26) continue;
      const uint8_t op = b[18];
      const bool session_frame = op <= 0x01 || op == 0x13 || op == 0x20 || op == 0x21;
      if (session_frame && own_id != 0 && load_be32(b.data() + 22) != own_id) ++foreign_data;
    }
    if (!blackout) return n;
    for (size_t i = 0; i < n; ++i) out[i].reset();
    return 0;
  }

  std::atomic<uint32_t> own{0};
  std::atomic<uint64_t> foreign_data{0};
  std::atomic<bool> blackout{false};

 private:
  std::unique_ptr<io::Port> p_;
};

// A socket on the client interface that takes every HyperSCSI frame and
// counts those from the target per session id (what the filter spared the
// others).
class Spy {
 public:
  Spy(const NetnsPair& net, const std::string& kind) {
    auto p = net.run_in_b([&] { return ports::open_port(kind + ":" + net.iface_b()); });
    if (p && p->ok()) port_ = std::move(p->value());
    if (port_) thread_ = std::thread([this] { loop(); });
  }
  ~Spy() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return port_ != nullptr; }
  uint64_t frames_of(uint32_t session) {
    std::lock_guard l(mu_);
    return by_session_[session];
  }

 private:
  void loop() {
    std::vector<io::Packet> in(64);
    while (!stop_) {
      const size_t n = port_->rx_burst(in);
      {
        std::lock_guard l(mu_);
        for (size_t i = 0; i < n; ++i) {
          if (in[i].size() >= 26) ++by_session_[load_be32(in[i].data() + 22)];
          in[i].reset();
        }
      }
      if (n == 0) port_->wait_rx(20ms);
    }
  }
  std::unique_ptr<io::Port> port_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<uint32_t, uint64_t> by_session_;
};

struct LabOptions {
  bool protect = false;
};

// The target daemon in namespace A serving kLuns RAM LUNs; clients in B.
class Lab {
 public:
  explicit Lab(LabOptions o = {}) : o_(o) {
    if (!net.ok()) return;
    key_ = dir_.path() / "client.key";
    { std::ofstream(key_) << "9c1f5e2a7b3d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8\n"; }
    fs::permissions(key_, fs::perms::owner_read | fs::perms::owner_write);
    config_ = dir_.path() / "target.toml";
    std::ofstream c(config_);
    c << "[target]\nname = \"" << kTarget << "\"\nports = [\"afpacket:" << net.iface_a()
      << "\"]\ncontrol = \"" << (dir_.path() / "target.sock").string()
      << "\"\nkeepalive_ms = 300\ndead_time_ms = 1500\n\n";
    if (o_.protect)
      c << "[[initiator]]\nname = \"" << kInitiatorName << "\"\nsecret_file = \"" << key_.string()
        << "\"\n\n";
    for (uint32_t l = 0; l < kLuns; ++l) {
      // Files, not RAM: what was written survives the kill -9 and restart.
      c << "[[lun]]\nnumber = " << l << "\nstore = \""
        << (dir_.path() / ("lun" + std::to_string(l) + ".img")).string()
        << "\"\nsize = \"16M\"\nblock_size = 512\n";
      if (o_.protect) c << "auth = \"required\"\nprotection = \"encrypt\"\n";
    }
  }

  bool start_target() {
    const fs::path log = dir_.path() / ("target" + std::to_string(++starts_) + ".log");
    log_ = log;
    if (!target_.start("ip netns exec " + net.ns_a() + " " HYPERSCSI_TARGET_BIN " --config " +
                           config_.string(),
                       log.string()))
      return false;
    for (int i = 0; i < 100; ++i) {
      if (read_text_file(log).find("serving target") != std::string::npos) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  void kill_target() { target_.kill9(); }
  std::string target_log() const { return read_text_file(log_); }

  Options options(Duration rx_pause_after = Options{}.rx_pause_after) const {
    Options o;
    o.rx_pause_after = rx_pause_after;
    o.initiator_name = kInitiatorName;
    o.discovery_window = 300ms;
    o.dead_time = 20s;
    o.reconnect_backoff_max = 500ms;
    if (o_.protect) {
      auto secret = read_secret_file(key_.string());
      EXPECT_TRUE(secret.ok());
      if (secret) o.secret = std::move(secret).value();
      o.protection = proto::Protection::kEncrypt;
    }
    return o;
  }

  struct Client {
    std::unique_ptr<Initiator> ini;
    WatchPort* watch = nullptr;  // owned by ini
  };
  // An initiator on its own socket on the client interface.
  Client client(const std::string& kind, Duration rx_pause_after = Options{}.rx_pause_after) {
    Client c;
    auto made = net.run_in_b([&]() -> std::unique_ptr<Initiator> {
      auto port = ports::open_port(kind + ":" + net.iface_b());
      if (!port) {
        ADD_FAILURE() << port.error().message;
        return nullptr;
      }
      auto w = std::make_unique<WatchPort>(std::move(port).value());
      c.watch = w.get();
      auto ini = Initiator::create(std::move(w), options(rx_pause_after));
      if (!ini) {
        ADD_FAILURE() << ini.error().message;
        return nullptr;
      }
      return std::move(ini).value();
    });
    if (made) c.ini = std::move(*made);
    return c;
  }

  NetnsPair net;

 private:
  LabOptions o_;
  TempDir dir_{"hs_sessions"};
  fs::path key_, config_, log_;
  BackgroundProcess target_;
  int starts_ = 0;
};

std::vector<uint8_t> pattern(size_t bytes, uint32_t seed) {
  std::vector<uint8_t> v(bytes);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Writes and reads back 16 KiB at `lba`; empty on success, else what failed.
std::string write_read(Lun& lun, uint64_t lba, uint32_t seed) {
  const auto data = pattern(16384, seed);
  if (auto st = lun.write_sync(lba, data); !st) return "write: " + st.error().message;
  auto back = lun.read_sync(lba, 32);
  if (!back) return "read: " + back.error().message;
  return *back == data ? std::string() : "read back other data";
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds bound) {
  const auto end = Clock::now() + bound;
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return cond();
}

class SessionsByKind : public ::testing::TestWithParam<std::string> {};

TEST_P(SessionsByKind, ConcurrentLoginsGetOwnSessionsAndOnlyTheirFrames) {
  SKIP_UNLESS_READY();
  Lab lab;
  ASSERT_TRUE(lab.net.ok()) << lab.net.error();
  ASSERT_TRUE(lab.start_target()) << lab.target_log();
  Spy spy(lab.net, "afpacket");
  ASSERT_TRUE(spy.ok());
  constexpr uint32_t kClients = 6;
  std::vector<Lab::Client> clients;
  for (uint32_t i = 0; i < kClients; ++i) {
    clients.push_back(lab.client(GetParam()));
    ASSERT_TRUE(clients.back().ini);
  }
  // Discovery and login at the same moment on one interface.
  std::vector<std::string> errors(kClients);
  {
    std::mutex mu;
    std::condition_variable cv;
    uint32_t ready = 0;
    std::vector<std::thread> threads;
    for (uint32_t i = 0; i < kClients; ++i) {
      threads.emplace_back([&, i] {
        {
          std::unique_lock l(mu);
          ++ready;
          cv.notify_all();
          cv.wait(l, [&] { return ready == kClients; });
        }
        auto r = clients[i].ini->connect(kTarget);
        if (!r) errors[i] = r.error().message;
      });
    }
    for (auto& t : threads) t.join();
  }
  std::set<uint32_t> ids;
  for (uint32_t i = 0; i < kClients; ++i) {
    ASSERT_EQ(errors[i], "") << "client " << i << "\n" << lab.target_log();
    const Stats st = clients[i].ini->stats();
    EXPECT_EQ(st.state, "established");
    EXPECT_NE(st.session_id, 0u);
    ids.insert(st.session_id);
    clients[i].watch->own = st.session_id;
    EXPECT_EQ(st.rx_filter.rfind("session 0x", 0), 0u) << st.rx_filter;
    EXPECT_EQ(st.rx_filter.find("user space"), std::string::npos) << st.rx_filter;
  }
  EXPECT_EQ(ids.size(), kClients) << "two clients share a session";

  // Everyone moves data at once, each on its own LUN, for about a second.
  std::vector<std::string> io_errors(kClients);
  std::vector<uint32_t> rounds(kClients, 0);
  {
    std::vector<std::thread> threads;
    const auto end = Clock::now() + 1s;
    for (uint32_t i = 0; i < kClients; ++i) {
      threads.emplace_back([&, i] {
        auto lun = clients[i].ini->open_lun(static_cast<uint16_t>(i));
        if (!lun) {
          io_errors[i] = lun.error().message;
          return;
        }
        while (Clock::now() < end && io_errors[i].empty()) {
          io_errors[i] = write_read(*lun, 64 * (rounds[i] % 64), i * 1000 + rounds[i]);
          ++rounds[i];
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  for (uint32_t i = 0; i < kClients; ++i) {
    EXPECT_EQ(io_errors[i], "") << "client " << i;
    EXPECT_GT(rounds[i], 2u);
    const Stats st = clients[i].ini->stats();
    EXPECT_EQ(clients[i].watch->foreign_data.load(), 0u)
        << "client " << i << " got other sessions' frames";
    EXPECT_EQ(st.foreign_frames, 0u) << "client " << i;
    // The others' frames were on the interface all along.
    for (uint32_t id : ids) {
      if (id == st.session_id) continue;
      EXPECT_GT(spy.frames_of(id), 20u) << "session " << id;
    }
    std::printf(
        "figures: client %u session %08x: %u write+read rounds, %llu frames received, "
        "%llu foreign\n",
        i, st.session_id, rounds[i], static_cast<unsigned long long>(st.port.rx_frames),
        static_cast<unsigned long long>(st.foreign_frames));
  }
  for (auto& c : clients) c.ini->disconnect();
}

INSTANTIATE_TEST_SUITE_P(Ports, SessionsByKind, ::testing::Values("afpacket", "pcap"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// Six hyperscsi-bench processes start at the same moment on one interface:
// each verifies its own random I/O on its own LUN, its port received no
// frame of the others during the run, and the target logged six sessions.
TEST(SessionsTest, ConcurrentProcessesLogInAtOnce) {
  SKIP_UNLESS_READY();
  Lab lab;
  ASSERT_TRUE(lab.net.ok()) << lab.net.error();
  ASSERT_TRUE(lab.start_target()) << lab.target_log();
  TempDir out("hs_sessions_out");
  // A script file, so that the time limit covers all six (each also has its own).
  const fs::path script = out.path() / "start.sh";
  {
    std::ofstream s(script);
    for (uint32_t i = 0; i < 6; ++i)
      s << "( timeout -k 2 40 ip netns exec " << lab.net.ns_b()
        << " " HYPERSCSI_BENCH_BIN " --transport hyperscsi --port afpacket:" << lab.net.iface_b()
        << " --target " << kTarget << " --lun " << i
        << " --workload randrw --verify --bs 4k --qd 4 --size 8M --time 0.5 --quiet --json >"
        << (out.path() / std::to_string(i)).string() << " 2>&1; echo $? >"
        << (out.path() / (std::to_string(i) + ".rc")).string() << " ) &\n";
    s << "wait\n";
  }
  const auto r = run_bounded("bash " + script.string(), 60);
  ASSERT_EQ(r.status, 0) << r.out;
  for (uint32_t i = 0; i < 6; ++i) {
    const std::string rec = read_text_file(out.path() / std::to_string(i));
    EXPECT_EQ(read_text_file(out.path() / (std::to_string(i) + ".rc")), "0\n") << rec;
    EXPECT_NE(rec.find("\"verify_mismatches\": 0"), std::string::npos) << rec;
    EXPECT_NE(rec.find("\"errors\": 0"), std::string::npos) << rec;
    EXPECT_NE(rec.find("\"client_foreign_frames\": 0,"), std::string::npos) << rec;
  }
  const std::string log = lab.target_log();
  std::set<std::string> ids;
  const std::regex established("session ([0-9a-f]{8}) established");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), established);
       it != std::sregex_iterator(); ++it)
    ids.insert((*it)[1]);
  EXPECT_EQ(ids.size(), 6u) << log;
}

// A session keeps getting its own replies through an epoch change, a
// re-login and a kill -9 and restart of the target, while another session
// on the same interface keeps the link busy.
class SessionsRecovery : public ::testing::TestWithParam<bool> {};

TEST_P(SessionsRecovery, FilterFollowsEpochChangeReloginAndTargetRestart) {
  SKIP_UNLESS_READY();
  const bool protect = GetParam();
  Lab lab({.protect = protect});
  ASSERT_TRUE(lab.net.ok()) << lab.net.error();
  ASSERT_TRUE(lab.start_target()) << lab.target_log();
  Spy spy(lab.net, "afpacket");
  ASSERT_TRUE(spy.ok());
  Lab::Client x = lab.client("afpacket");
  Lab::Client y = lab.client("afpacket");
  ASSERT_TRUE(x.ini && y.ini);
  ASSERT_TRUE(x.ini->connect(kTarget)) << lab.target_log();
  ASSERT_TRUE(y.ini->connect(kTarget)) << lab.target_log();
  auto xl = x.ini->open_lun(0);
  auto yl = y.ini->open_lun(1);
  ASSERT_TRUE(xl && yl);

  // Y keeps the link busy throughout; X checks its own I/O at each step.
  struct Busy {
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> rounds{0};
    std::string error;
    std::thread thread;
    ~Busy() { join(); }
    void join() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  } busy;
  std::atomic<uint64_t>& y_rounds = busy.rounds;
  const std::string& y_error = busy.error;
  busy.thread = std::thread([&] {
    for (uint32_t n = 0; !busy.stop && busy.error.empty(); ++n) {
      busy.error = write_read(*yl, 64 * (n % 64), 50000 + n);
      ++busy.rounds;
    }
  });
  const auto steady = [&](Lab::Client& c) {
    const Stats st = c.ini->stats();
    c.watch->own = st.state == "established" ? st.session_id : 0;
    return st;
  };
  const Stats x0 = steady(x);
  steady(y);
  ASSERT_EQ(write_read(*xl, 0, 1), "");

  // Epoch change: X hears nothing (its socket swallows all) until it
  // declares the target dead; the target still hears X's keepalives and
  // keeps the session, so X resumes it: same id, epoch + 1.
  x.watch->own = 0;
  x.watch->blackout = true;
  ASSERT_TRUE(wait_until([&] { return x.ini->stats().state != "established"; }, 5s));
  x.watch->blackout = false;
  ASSERT_TRUE(wait_until([&] { return x.ini->stats().state == "established"; }, 10s))
      << x.ini->stats().state << "\n"
      << lab.target_log();
  const Stats x1 = steady(x);
  EXPECT_EQ(x1.session_id, x0.session_id);
  EXPECT_GT(x1.epoch, x0.epoch);
  EXPECT_GE(x1.resumes, 1u);
  EXPECT_EQ(write_read(*xl, 64, 2), "") << "after the epoch change";

  // Re-login: a fresh session id on the same socket.
  x.watch->own = 0;
  ASSERT_TRUE(x.ini->connect(x.ini->target()).ok()) << lab.target_log();
  auto xl2 = x.ini->open_lun(0);
  ASSERT_TRUE(xl2);
  const Stats x2 = steady(x);
  EXPECT_NE(x2.session_id, x1.session_id);
  EXPECT_EQ(write_read(*xl2, 128, 3), "") << "after the re-login";

  // kill -9 and restart: both sessions log in afresh by themselves (a
  // protected one notices by its dead time: the restarted target's
  // Disconnect is not protected and so ignored).
  x.watch->own = 0;
  y.watch->own = 0;
  lab.kill_target();
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(lab.start_target()) << lab.target_log();
  EXPECT_EQ(write_read(*xl2, 192, 4), "") << "after the restart\n" << lab.target_log();
  const Stats x3 = steady(x);
  EXPECT_NE(x3.session_id, x2.session_id);
  EXPECT_GE(x3.relogins + x3.resumes, 1u);
  ASSERT_TRUE(wait_until([&] { return y.ini->stats().state == "established"; }, 10s));
  const uint64_t y_before = y_rounds;
  ASSERT_TRUE(wait_until([&] { return y_rounds > y_before + 3; }, 15s));
  const Stats y3 = steady(y);

  // A last steady stretch with both sessions busy.
  const uint64_t spied = spy.frames_of(y3.session_id);
  for (uint32_t n = 0; n < 8; ++n) EXPECT_EQ(write_read(*xl2, 256 + 32 * n, 10 + n), "");
  busy.join();
  EXPECT_EQ(y_error, "");
  EXPECT_GT(spy.frames_of(y3.session_id), spied + 20) << "Y was not busy beside X";
  EXPECT_EQ(x.watch->foreign_data.load(), 0u) << "X's socket got Y's frames";
  EXPECT_EQ(y.watch->foreign_data.load(), 0u) << "Y's socket got X's frames";
  const Stats xs = x.ini->stats();
  const Stats ys = y.ini->stats();
  // Frames left from a session the socket had just left are counted, not used.
  EXPECT_LE(xs.foreign_frames, 16u);
  EXPECT_LE(ys.foreign_frames, 16u);
  std::printf(
      "figures: %s: X %08x epoch %u -> resumed epoch %u -> re-login %08x -> restart "
      "%08x; Y %llu rounds; foreign frames counted by the initiators X %llu Y %llu\n",
      protect ? "encrypt" : "unprotected", x0.session_id, x0.epoch, x1.epoch, x2.session_id,
      x3.session_id, static_cast<unsigned long long>(y_rounds.load()),
      static_cast<unsigned long long>(xs.foreign_frames),
      static_cast<unsigned long long>(ys.foreign_frames));
  x.ini->disconnect();
  y.ini->disconnect();
}

// An idle session stops receiving after Options::rx_pause_after (its socket
// costs the kernel nothing per frame of the busy session beside it), keeps
// its session alive through keepalives that resume it briefly, for longer
// than the dead time, and its next command resumes it and completes.
TEST(SessionsTest, IdleSessionPausesReceivingAndWakesForItsNextCommand) {
  SKIP_UNLESS_READY();
  Lab lab;
  ASSERT_TRUE(lab.net.ok()) << lab.net.error();
  ASSERT_TRUE(lab.start_target()) << lab.target_log();
  Lab::Client x = lab.client("afpacket", 200ms);
  Lab::Client y = lab.client("afpacket", Duration::zero());  // never pauses
  ASSERT_TRUE(x.ini && y.ini);
  ASSERT_TRUE(x.ini->connect(kTarget)) << lab.target_log();
  ASSERT_TRUE(y.ini->connect(kTarget)) << lab.target_log();
  auto xl = x.ini->open_lun(0);
  auto yl = y.ini->open_lun(1);
  ASSERT_TRUE(xl && yl);
  ASSERT_EQ(write_read(*xl, 0, 1), "");
  const Stats x0 = x.ini->stats();

  // Y busy for 3 s (twice the target's 1.5 s dead time); X idle.
  std::string y_error;
  uint32_t y_rounds = 0;
  const auto end = Clock::now() + 3s;
  bool seen_paused = false;
  while (Clock::now() < end && y_error.empty()) {
    y_error = write_read(*yl, 64 * (y_rounds % 64), 70000 + y_rounds);
    ++y_rounds;
    if (y_rounds % 16 == 0) seen_paused |= x.ini->stats().rx_filter.ends_with("(paused)");
  }
  EXPECT_EQ(y_error, "");
  const Stats x1 = x.ini->stats();
  EXPECT_TRUE(seen_paused) << x1.rx_filter;
  // Paused after the last command, then again after each keepalive (every
  // 300 ms here), and not more often.
  EXPECT_GE(x1.rx_pauses - x0.rx_pauses, 3u);
  EXPECT_LE(x1.rx_pauses - x0.rx_pauses, 20u);
  EXPECT_EQ(x1.state, "established");
  EXPECT_EQ(x1.session_id, x0.session_id) << "the session was lost while paused";
  EXPECT_EQ(x1.resumes + x1.relogins, 0u);

  const auto t0 = Clock::now();
  EXPECT_EQ(write_read(*xl, 64, 2), "") << "the first command after the pause";
  const auto first_ms =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count() / 1000.0;
  EXPECT_LT(first_ms, 500.0);
  EXPECT_FALSE(x.ini->stats().rx_filter.ends_with("(paused)"));
  std::printf(
      "figures: X paused %llu times in 3 s beside a busy session (%u write+read rounds); "
      "its first write+read after the pause took %.1f ms\n",
      static_cast<unsigned long long>(x1.rx_pauses), y_rounds, first_ms);
  x.ini->disconnect();
  y.ini->disconnect();
}

INSTANTIATE_TEST_SUITE_P(Protection, SessionsRecovery, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("encrypt") : std::string("off");
                         });

}  // namespace
}  // namespace hyperscsi::initiator

// Multipath over real veth pairs (issue 17, docs/protocol.md 14): the target
// engine with two ports in one namespace, an Initiator with two ports in the
// other, one veth pair per path. A verified write+read stream runs while one
// path is taken down and brought back, twice (the second link, then the
// login link): no I/O error, every write
// reads back, the path is declared failed each time (counted), and once back
// it carries frames again; no completion waits longer than 1.5 s. Then a target restart (engine
// destroyed and recreated on the same ports and file: what kill -9 leaves) under a two-path
// session: the session logs in again and the stream goes on. Root only (skips with the reason
// otherwise); about 8 s.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/store/block_store.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/wait.h"

namespace hyperscsi::initiator {
namespace {

using namespace std::chrono_literals;
using test_support::NetnsPair;
using test_support::wait_until;

// Lends a port to an engine, so a restarted engine takes the same socket.
class ProxyPort final : public io::Port {
 public:
  explicit ProxyPort(std::shared_ptr<io::Port> p) : p_(std::move(p)) {}
  std::string_view spec() const override { return p_->spec(); }
  io::MacAddress mac() const override { return p_->mac(); }
  size_t mtu() const override { return p_->mtu(); }
  io::PortCounters counters() const override { return p_->counters(); }
  int fd() const override { return p_->fd(); }
  io::Packet alloc() override { return p_->alloc(); }
  size_t rx_burst(std::span<io::Packet> out) override { return p_->rx_burst(out); }
  size_t tx_burst(std::span<io::Packet> pkts) override { return p_->tx_burst(pkts); }
  bool wait_rx(std::chrono::microseconds t) override { return p_->wait_rx(t); }

 private:
  std::shared_ptr<io::Port> p_;
};

std::unique_ptr<io::Port> open_on(const NetnsPair& net, bool side_a, size_t link) {
  const std::string spec = "afpacket:" + (side_a ? net.iface_a(link) : net.iface_b(link));
  auto fn = [&]() -> std::unique_ptr<io::Port> {
    auto r = ports::open_port(spec);
    if (!r.ok()) {
      ADD_FAILURE() << spec << ": " << r.error().message;
      return nullptr;
    }
    return std::move(r).value();
  };
  auto out = side_a ? net.run_in_a(fn) : net.run_in_b(fn);
  return out ? std::move(*out) : nullptr;
}

class MultipathLab {
 public:
  explicit MultipathLab(const NetnsPair& net) : net_(net) {
    path_ = std::filesystem::temp_directory_path() /
            ("hs-multipath-" + std::to_string(::getpid()) + ".img");
    for (size_t l = 0; l < 2; ++l) target_ports_.push_back(open_on(net, false, l));
    start_engine();
  }
  ~MultipathLab() {
    initiator.reset();
    engine_.reset();
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }

  void start_engine() {
    engine::EngineConfig cfg;
    cfg.target_name = "mp";
    cfg.seed = ++generation_ * 7919;
    cfg.multipath = true;
    cfg.limits.dead_time_ms = 4000;
    std::vector<std::unique_ptr<io::Port>> ports;
    for (auto& p : target_ports_) ports.push_back(std::make_unique<ProxyPort>(p));
    engine_ = std::make_unique<engine::TargetEngine>(cfg, std::move(ports));
    store::StoreOptions so;
    so.create_size = 16u << 20;
    auto st = store::open_store(path_.string(), so);
    ASSERT_TRUE(st.ok()) << st.error().message;
    hyperscsi::scsi::LuConfig lc;
    lc.target_name = "mp";
    engine::LunDefinition def;
    def.lun = 0;
    def.unit = std::make_unique<hyperscsi::scsi::LogicalUnit>(lc, std::move(st.value()));
    ASSERT_TRUE(engine_->add_lun(std::move(def)).ok());
    ASSERT_TRUE(engine_->start().ok());
  }
  // What kill -9 and a restart leave: sessions and reply caches gone, the file stays.
  void restart_engine() {
    engine_->stop();
    engine_.reset();
    start_engine();
  }
  engine::TargetEngine& engine() { return *engine_; }

  std::unique_ptr<Initiator> initiator;

 private:
  const NetnsPair& net_;
  std::filesystem::path path_;
  std::vector<std::shared_ptr<io::Port>> target_ports_;
  std::unique_ptr<engine::TargetEngine> engine_;
  uint64_t generation_ = 0;
};

// Writers that each own a region: write a fresh pattern, read it back,
// compare; any error or mismatch is recorded.
class VerifiedStream {
 public:
  VerifiedStream(Lun lun, size_t workers) : lun_(lun) {
    for (size_t w = 0; w < workers; ++w) threads_.emplace_back([this, w] { run(w); });
  }
  ~VerifiedStream() { stop(); }
  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  uint64_t rounds() const { return rounds_.load(); }
  // The longest time without any worker completing a round (the stall).
  std::chrono::milliseconds longest_gap() {
    std::lock_guard l(mu_);
    return std::chrono::duration_cast<std::chrono::milliseconds>(gap_);
  }
  std::string errors() {
    std::lock_guard l(mu_);
    return errors_;
  }

 private:
  void run(size_t w) {
    std::mt19937 rng(static_cast<uint32_t>(w * 977 + 1));
    const uint32_t bs = lun_.capacity().block_size;
    const uint32_t blocks = (64u << 10) / bs;
    const uint64_t region = lun_.capacity().num_blocks / 8;
    std::vector<uint8_t> data(static_cast<size_t>(blocks) * bs);
    while (!stop_) {
      for (auto& b : data) b = static_cast<uint8_t>(rng());
      const uint64_t lba = w * region + (rng() % (region - blocks));
      if (auto st = lun_.write_sync(lba, data); !st) {
        note("write at " + std::to_string(lba) + ": " + st.error().message);
        continue;
      }
      auto back = lun_.read_sync(lba, blocks);
      if (!back) {
        note("read at " + std::to_string(lba) + ": " + back.error().message);
        continue;
      }
      if (*back != data) note("data mismatch at " + std::to_string(lba));
      ++rounds_;
      std::lock_guard l(mu_);
      const auto now = std::chrono::steady_clock::now();
      if (last_ != std::chrono::steady_clock::time_point{}) gap_ = std::max(gap_, now - last_);
      last_ = now;
    }
  }
  void note(const std::string& e) {
    std::lock_guard l(mu_);
    if (errors_.size() < 4000) errors_ += e + "\n";
  }

  Lun lun_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> rounds_{0};
  std::mutex mu_;
  std::string errors_;
  std::chrono::steady_clock::time_point last_{};
  std::chrono::steady_clock::duration gap_{};
  std::vector<std::thread> threads_;
};

std::string describe(const Stats& s) {
  std::string out = "state " + s.state + " resumes " + std::to_string(s.resumes) + " relogins " +
                    std::to_string(s.relogins) + "\n";
  for (const PathStats& p : s.paths)
    out += "path " + std::to_string(p.id) + " " + p.state + " " + io::to_string(p.local_mac) +
           " -> " + io::to_string(p.target_mac) + " sent " + std::to_string(p.frames_sent) +
           " received " + std::to_string(p.frames_received) + " pdus sent " +
           std::to_string(p.pdus_sent) + " srtt " +
           std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(p.srtt).count()) +
           " us failures " + std::to_string(p.failures) + "\n";
  return out;
}

// A copy: the Stats it comes from is usually a temporary.
std::optional<PathStats> path_by_local(const Stats& s, const io::MacAddress& local,
                                       const io::MacAddress& target) {
  for (const PathStats& p : s.paths)
    if (p.local_mac == local && p.target_mac == target) return p;
  return std::nullopt;
}

size_t active_paths(const Stats& s) {
  size_t n = 0;
  for (const PathStats& p : s.paths) n += p.state == "active";
  return n;
}

struct Fixture {
  NetnsPair net{test_support::NetnsConfig{.mtu = 1500, .extra_links = {0}}};
  std::unique_ptr<MultipathLab> lab;
  std::vector<io::MacAddress> local;   // initiator port per link
  std::vector<io::MacAddress> remote;  // target port per link

  // Empty: ready; else why the test cannot run.
  std::string set_up() {
    if (!test_support::running_as_root()) return "needs root (network namespaces, raw sockets)";
    if (!net.ok()) return "network namespaces: " + net.error();
    lab = std::make_unique<MultipathLab>(net);
    std::vector<std::unique_ptr<io::Port>> ports;
    for (size_t l = 0; l < 2; ++l) {
      ports.push_back(open_on(net, true, l));
      if (!ports.back()) return "cannot open the initiator's ports";
      local.push_back(ports.back()->mac());
    }
    for (size_t l = 0; l < 2; ++l) {
      auto mac = net.run_in_b([&] {
        auto p = ports::open_port("afpacket:" + net.iface_b(l));
        return p.ok() ? p.value()->mac() : io::MacAddress{};
      });
      remote.push_back(mac.value_or(io::MacAddress{}));
    }
    Options o;
    o.initiator_name = "mp-test";
    o.discovery_window = 300ms;
    o.dead_time = 30s;
    o.seed = 17;
    auto ini = Initiator::create(std::move(ports), o);
    if (!ini) return "Initiator::create: " + ini.error().message;
    lab->initiator = std::move(ini).value();
    return {};
  }
};

TEST(MultipathE2e, VerifiedStreamSurvivesAPathDownAndBackTwiceAndUsesItAgain) {
  Fixture f;
  if (auto why = f.set_up(); !why.empty()) GTEST_SKIP() << why;
  Initiator& ini = *f.lab->initiator;
  ASSERT_TRUE(ini.connect("mp").ok());
  auto lun = ini.open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  ASSERT_TRUE(wait_until([&] { return active_paths(ini.stats()) >= 2; }, 3s))
      << describe(ini.stats());

  VerifiedStream stream(*lun, 4);
  std::this_thread::sleep_for(700ms);
  // Round 1 takes the second link down, round 2 the login link.
  for (size_t link : {size_t{1}, size_t{0}}) {
    const io::MacAddress l = f.local[link];
    const io::MacAddress t = f.remote[link];
    const uint64_t before = stream.rounds();
    const auto was = path_by_local(ini.stats(), l, t);
    ASSERT_TRUE(was.has_value());
    const uint64_t failures_before = was->failures;
    ASSERT_TRUE(f.net.set_link_up(link, false));
    // The path is declared failed within T_fail (at most 500 ms) and the
    // stream goes on over the other one.
    EXPECT_TRUE(wait_until(
        [&] {
          const auto p = path_by_local(ini.stats(), l, t);
          return p.has_value() && p->state != "active" && p->failures > failures_before;
        },
        2s))
        << describe(ini.stats());
    EXPECT_TRUE(wait_until([&] { return stream.rounds() > before + 10; }, 3s))
        << "the stream stalled with link " << link << " down\n"
        << describe(ini.stats());
    ASSERT_TRUE(f.net.set_link_up(link, true));
    // Probed, rejoined, verified (three full-size answers) and active again.
    EXPECT_TRUE(wait_until(
        [&] {
          const auto p = path_by_local(ini.stats(), l, t);
          return p.has_value() && p->state == "active";
        },
        6s))
        << describe(ini.stats());
    const auto p = path_by_local(ini.stats(), l, t);
    ASSERT_TRUE(p.has_value());
    const uint64_t sent = p->frames_sent;
    EXPECT_TRUE(wait_until(
        [&] {
          const auto q = path_by_local(ini.stats(), l, t);
          return q.has_value() && q->frames_sent > sent + 50;
        },
        3s))
        << "link " << link << " came back but carries nothing\n"
        << describe(ini.stats());
  }
  stream.stop();
  EXPECT_EQ(stream.errors(), "");
  EXPECT_GT(stream.rounds(), 50u);
  // A path that stops delivering is failed within 500 ms and its commands
  // move: no completion waits much longer than that (issue goal: 1 s).
  std::printf("longest gap between completions: %lld ms\n",
              static_cast<long long>(stream.longest_gap().count()));
  EXPECT_LT(stream.longest_gap(), 1500ms);
  const Stats s = ini.stats();
  EXPECT_EQ(s.failed, 0u);
  uint64_t failures = 0;
  for (const PathStats& p : s.paths) failures += p.failures;
  EXPECT_GE(failures, 2u) << describe(s);
  // The target served the session's paths too: its report lists them.
  auto sessions = f.lab->engine().sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_GE(sessions[0].info.paths.size(), 2u);
  ini.disconnect();
}

TEST(MultipathE2e, TargetRestartUnderATwoPathSessionRecovers) {
  Fixture f;
  if (auto why = f.set_up(); !why.empty()) GTEST_SKIP() << why;
  Initiator& ini = *f.lab->initiator;
  ASSERT_TRUE(ini.connect("mp").ok());
  auto lun = ini.open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  ASSERT_TRUE(wait_until([&] { return active_paths(ini.stats()) >= 2; }, 3s))
      << describe(ini.stats());
  VerifiedStream stream(*lun, 4);
  std::this_thread::sleep_for(500ms);
  f.lab->restart_engine();
  EXPECT_TRUE(wait_until([&] { return ini.stats().relogins >= 1; }, 6s)) << describe(ini.stats());
  // Multipath again after the new login, and the stream goes on.
  EXPECT_TRUE(wait_until([&] { return active_paths(ini.stats()) >= 2; }, 4s))
      << describe(ini.stats());
  const uint64_t after = stream.rounds();
  EXPECT_TRUE(wait_until([&] { return stream.rounds() > after + 20; }, 3s));
  stream.stop();
  EXPECT_EQ(stream.errors(), "");
  EXPECT_EQ(ini.stats().failed, 0u);
  ini.disconnect();
}

}  // namespace
}  // namespace hyperscsi::initiator

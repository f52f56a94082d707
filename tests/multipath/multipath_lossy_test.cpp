// A lossy path beside a clean one (issue 17): the target engine and an
// Initiator, each with two ports, in namespaces A and B. Path 0 (the login
// path) is a plain veth pair; path 1 goes A -- R -- B through
// hyperscsi-relay in a third namespace, dropping 20% of the frames in each
// direction. A verified write+read stream runs for about 4 s: no I/O error,
// every block reads back as written, both paths carry frames, and the lossy
// path carries fewer than the clean one (each side's per-path counters say
// so: the scheduler prefers the path with the shorter expected service
// time). Root only (skips with the reason otherwise); about 8 s.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/store/block_store.h"
#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"
#include "hyperscsi/test_support/relay_report.h"
#include "hyperscsi/test_support/wait.h"

namespace hyperscsi::initiator {
namespace {

using namespace std::chrono_literals;
using test_support::BackgroundProcess;
using test_support::NetnsPair;
using test_support::read_text_file;
using test_support::relay_stats;
using test_support::TempDir;
using test_support::wait_until;

constexpr double kLoss = 0.20;

// The relay's namespace R and the veths A <-> R <-> B; the destructor
// deletes R (and with it both veths), also after a failed assertion.
class RelayLink {
 public:
  explicit RelayLink(const NetnsPair& net) {
    const std::string p = "hs" + std::to_string(::getpid());
    ns = p + "lr";
    a_if = p + "la";
    r_a = p + "ra";
    r_b = p + "rb";
    b_if = p + "lb";
    if (!NetnsPair::shell("ip netns add " + ns)) {
      error = "ip netns add " + ns + " failed";
      return;
    }
    created_ = true;
    const std::string cmds[] = {
        "ip link add " + a_if + " netns " + net.ns_a() + " type veth peer name " + r_a + " netns " +
            ns,
        "ip link add " + r_b + " netns " + ns + " type veth peer name " + b_if + " netns " +
            net.ns_b(),
        "ip -n " + net.ns_a() + " link set " + a_if + " mtu 1500 up",
        "ip -n " + ns + " link set " + r_a + " mtu 1500 up",
        "ip -n " + ns + " link set " + r_b + " mtu 1500 up",
        "ip -n " + net.ns_b() + " link set " + b_if + " mtu 1500 up",
    };
    for (const std::string& c : cmds)
      if (!NetnsPair::shell(c)) {
        error = "failed: " + c;
        return;
      }
    ok = true;
  }
  ~RelayLink() {
    if (created_) NetnsPair::shell("ip netns del " + ns);
  }
  RelayLink(const RelayLink&) = delete;
  RelayLink& operator=(const RelayLink&) = delete;

  bool ok = false;
  std::string error;
  std::string ns, a_if, r_a, r_b, b_if;

 private:
  bool created_ = false;
};

std::unique_ptr<io::Port> open_in(const NetnsPair& net, bool side_a, const std::string& iface) {
  auto fn = [&]() -> std::unique_ptr<io::Port> {
    auto r = ports::open_port("afpacket:" + iface);
    if (!r.ok()) return nullptr;
    return std::move(r).value();
  };
  auto out = side_a ? net.run_in_a(fn) : net.run_in_b(fn);
  return out ? std::move(*out) : nullptr;
}

std::optional<PathStats> path_of(const Stats& s, const io::MacAddress& local) {
  for (const PathStats& p : s.paths)
    if (p.local_mac == local && p.state != "unreachable") return p;
  return std::nullopt;
}

std::string describe(const Stats& s) {
  std::string out;
  for (const PathStats& p : s.paths)
    out += "path " + std::to_string(p.id) + " " + p.state + " " + io::to_string(p.local_mac) +
           " -> " + io::to_string(p.target_mac) + " sent " + std::to_string(p.frames_sent) +
           " received " + std::to_string(p.frames_received) + " retransmitted " +
           std::to_string(p.frames_retransmitted) + " failures " + std::to_string(p.failures) +
           "\n";
  return out;
}

TEST(MultipathLossy, APathDroppingAFifthOfItsFramesCarriesLessAndTheDataStaysRight) {
  if (!test_support::running_as_root())
    GTEST_SKIP() << "needs root (network namespaces, raw sockets)";
  if (!std::filesystem::exists(HYPERSCSI_RELAY_BIN))
    GTEST_SKIP() << "not built: " HYPERSCSI_RELAY_BIN;
  NetnsPair net({.mtu = 1500});
  if (!net.ok()) GTEST_SKIP() << "network namespaces: " << net.error();
  RelayLink relay_link(net);
  ASSERT_TRUE(relay_link.ok) << relay_link.error;
  TempDir dir("hs_mp_lossy");
  ASSERT_FALSE(dir.path().empty());

  BackgroundProcess relay;
  const std::string relay_log = (dir.path() / "relay.log").string();
  std::ostringstream loss;
  loss << kLoss;
  ASSERT_TRUE(relay.start(
      "ip netns exec " + relay_link.ns + " " HYPERSCSI_RELAY_BIN " --a afpacket:" + relay_link.r_a +
          " --b afpacket:" + relay_link.r_b + " --loss " + loss.str() + " --seed 17 --duration 30",
      relay_log));
  ASSERT_TRUE(
      wait_until([&] { return read_text_file(relay_log).find("ready") != std::string::npos; }, 5s))
      << read_text_file(relay_log);

  // The target: two ports, the clean one first.
  std::vector<std::unique_ptr<io::Port>> target_ports;
  target_ports.push_back(open_in(net, false, net.iface_b()));
  target_ports.push_back(open_in(net, false, relay_link.b_if));
  ASSERT_TRUE(target_ports[0] && target_ports[1]);
  engine::EngineConfig cfg;
  cfg.target_name = "mp-lossy";
  cfg.seed = 4242;
  cfg.multipath = true;
  engine::TargetEngine engine(cfg, std::move(target_ports));
  const auto image = dir.path() / "lun0.img";
  store::StoreOptions so;
  so.create_size = 16u << 20;
  auto st = store::open_store(image.string(), so);
  ASSERT_TRUE(st.ok()) << st.error().message;
  hyperscsi::scsi::LuConfig lc;
  lc.target_name = cfg.target_name;
  engine::LunDefinition def;
  def.lun = 0;
  def.unit = std::make_unique<hyperscsi::scsi::LogicalUnit>(lc, std::move(st.value()));
  ASSERT_TRUE(engine.add_lun(std::move(def)).ok());
  ASSERT_TRUE(engine.start().ok());

  // The initiator: the clean port logs in, the lossy one joins.
  std::vector<std::unique_ptr<io::Port>> ports;
  ports.push_back(open_in(net, true, net.iface_a()));
  ports.push_back(open_in(net, true, relay_link.a_if));
  ASSERT_TRUE(ports[0] && ports[1]);
  const io::MacAddress clean_mac = ports[0]->mac();
  const io::MacAddress lossy_mac = ports[1]->mac();
  Options o;
  o.initiator_name = "mp-lossy-test";
  o.discovery_window = 300ms;
  o.dead_time = 30s;
  o.seed = 23;
  auto created = Initiator::create(std::move(ports), o);
  ASSERT_TRUE(created.ok()) << created.error().message;
  std::unique_ptr<Initiator> ini = std::move(created).value();
  ASSERT_TRUE(ini->connect(cfg.target_name).ok());
  auto lun = ini->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  // The lossy path joins despite its losses (its requests are retried).
  ASSERT_TRUE(wait_until(
      [&] {
        const auto p = path_of(ini->stats(), lossy_mac);
        return p && p->state == "active";
      },
      5s))
      << describe(ini->stats());

  // Verified write+read: each worker owns a region, writes a fresh pattern
  // (64 KiB), reads it back and compares every byte.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> rounds{0};
  std::mutex mu;
  std::string errors;
  const uint32_t bs = lun->capacity().block_size;
  const uint64_t region = lun->capacity().num_blocks / 4;
  std::vector<std::thread> workers;
  for (uint32_t w = 0; w < 4; ++w)
    workers.emplace_back([&, w] {
      std::mt19937 rng(w * 131 + 7);
      const uint32_t blocks = (64u << 10) / bs;
      std::vector<uint8_t> data(size_t{blocks} * bs);
      while (!stop) {
        for (auto& b : data) b = static_cast<uint8_t>(rng());
        const uint64_t lba = w * region + rng() % (region - blocks);
        std::string e;
        if (auto wr = lun->write_sync(lba, data); !wr) {
          e = "write at " + std::to_string(lba) + ": " + wr.error().message;
        } else if (auto rd = lun->read_sync(lba, blocks); !rd) {
          e = "read at " + std::to_string(lba) + ": " + rd.error().message;
        } else if (*rd != data) {
          e = "data mismatch at " + std::to_string(lba);
        }
        if (!e.empty()) {
          std::lock_guard l(mu);
          if (errors.size() < 2000) errors += e + "\n";
          continue;
        }
        ++rounds;
      }
    });
  std::this_thread::sleep_for(4s);
  stop = true;
  for (auto& t : workers) t.join();

  const Stats s = ini->stats();
  const auto target_sessions = engine.sessions();
  ini->disconnect();
  ini.reset();
  engine.stop();
  relay.stop();
  const std::string relay_out = read_text_file(relay_log);
  std::printf("rounds %llu\n%s%s", static_cast<unsigned long long>(rounds.load()),
              describe(s).c_str(), relay_out.c_str());

  EXPECT_EQ(errors, "");
  EXPECT_GT(rounds.load(), 50u);
  EXPECT_EQ(s.failed, 0u);
  const auto clean = path_of(s, clean_mac);
  const auto lossy = path_of(s, lossy_mac);
  ASSERT_TRUE(clean && lossy) << describe(s);
  // Both carried the stream; the lossy one less, and it had to resend.
  EXPECT_GT(lossy->frames_sent, 100u) << describe(s);
  EXPECT_LT(lossy->frames_sent, clean->frames_sent) << describe(s);
  EXPECT_LT(lossy->frames_received, clean->frames_received) << describe(s);
  EXPECT_GT(lossy->frames_retransmitted, 0u) << describe(s);
  // The target's counters agree: it sent less of the read data on that path.
  ASSERT_EQ(target_sessions.size(), 1u);
  const proto::PathInfo* t_clean = nullptr;
  const proto::PathInfo* t_lossy = nullptr;
  for (const proto::PathInfo& p : target_sessions[0].info.paths) {
    if (p.peer == clean_mac) t_clean = &p;
    if (p.peer == lossy_mac) t_lossy = &p;
  }
  ASSERT_TRUE(t_clean && t_lossy);
  EXPECT_LT(t_lossy->counters.frames_sent, t_clean->counters.frames_sent);
  // The relay really dropped frames, both ways.
  for (const char* d : {"a->b", "b->a"}) {
    const auto m = relay_stats(relay_out, d);
    ASSERT_TRUE(m.contains("lost")) << relay_out;
    EXPECT_GT(m.at("lost"), 20u) << d << "\n" << relay_out;
  }
}

}  // namespace
}  // namespace hyperscsi::initiator

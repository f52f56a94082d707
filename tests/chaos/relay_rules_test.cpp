// hyperscsi-relay's per-direction rules, measured with our own AF_PACKET
// ports at both ends (client ns -- relay ns -- server ns): a delay set on one
// direction delays that direction only and by at least what it says, a rate
// limit caps throughput at the rate (as a ratio, with a tolerance), and
// corruption flips exactly one bit of the frames the relay says it corrupted.
// Probe frames carry EtherType 0x889A (the relay forwards nothing else).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "chaos_support.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"

namespace {

namespace fs = std::filesystem;
using hyperscsi::chaos::in_netns;
using hyperscsi::chaos::Proc;
using hyperscsi::chaos::relay_stats;
using hyperscsi::chaos::slurp;
using hyperscsi::chaos::ThreeNs;
using hyperscsi::io::Packet;
using hyperscsi::io::Port;
using Clock = std::chrono::steady_clock;

// The topology, the relay with the given rules, and one port at each end.
class RelayRig {
 public:
  bool start(const std::string& rules, std::string& why) {
    if (!net_.ok) {
      why = "cannot create namespaces: " + net_.error;
      return false;
    }
    if (dir_.path().empty()) {
      why = "no temporary directory";
      return false;
    }
    log_ = dir_.path() / "relay.log";
    if (!relay_.start("ip netns exec " + net_.relay + " " HYPERSCSI_RELAY_BIN " --a afpacket:" +
                          net_.relay_a + " --b afpacket:" + net_.relay_b + " --seed 11 " + rules +
                          " --duration 40",
                      log_)) {
      why = "cannot start the relay";
      return false;
    }
    auto open_in = [&](const std::string& ns, const std::string& iface) {
      std::unique_ptr<Port> port;
      in_netns(ns, [&] {
        auto p = hyperscsi::ports::open_port("afpacket:" + iface);
        if (p) port = std::move(p).value();
      });
      return port;
    };
    a = open_in(net_.client, net_.cli_if);
    b = open_in(net_.server, net_.srv_if);
    if (!a || !b) {
      why = "cannot open the end ports";
      return false;
    }
    // Probes sent before the relay's sockets are bound are lost without a
    // count; wait for its ready line (a fixed sleep was too short under load).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (slurp(log_).find("hyperscsi-relay: ready") == std::string::npos) {
      if (!relay_.alive()) {
        why = "relay exited: " + slurp(log_);
        return false;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        why = "relay not ready after 15 s: " + slurp(log_);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }
  // Stops the relay; returns its statistics output.
  std::string finish() {
    relay_.stop();
    return slurp(log_);
  }

  std::unique_ptr<Port> a, b;  // client side (relay --a), server side (relay --b)

 private:
  ThreeNs net_;
  hyperscsi::test_support::TempDir dir_{"hs_relay"};
  Proc relay_;
  fs::path log_;
};

// A frame from `from` to `to` of `len` bytes: Ethernet header, EtherType
// 0x889A, the probe number, then bytes derived from it.
bool send_probe(Port& from, Port& to, uint32_t id, size_t len) {
  Packet p = from.alloc();
  if (!p || !p.resize(len)) return false;
  uint8_t* d = p.data();
  const auto dst = to.mac(), src = from.mac();
  std::memcpy(d, dst.data(), 6);
  std::memcpy(d + 6, src.data(), 6);
  hyperscsi::proto::bytes::store_be16(d + 12, hyperscsi::proto::kEtherType);
  hyperscsi::proto::bytes::store_be32(d + 14, id);
  for (size_t i = 18; i < len; ++i) d[i] = static_cast<uint8_t>(id * 31 + i);
  for (int tries = 0; tries < 1000; ++tries) {
    Packet one[1] = {std::move(p)};
    if (from.tx_burst(one) == 1) return true;
    p = std::move(one[0]);
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return false;
}

// Receives frames on `port` until `n` arrived or `timeout` passed; calls
// `on(frame, arrival)` for each.
template <typename F>
size_t receive(Port& port, size_t n, std::chrono::milliseconds timeout, F&& on) {
  const auto end = Clock::now() + timeout;
  size_t got = 0;
  Packet burst[64];
  while (got < n && Clock::now() < end) {
    port.wait_rx(std::chrono::microseconds(2000));
    const size_t k = port.rx_burst(burst);
    const auto now = Clock::now();
    for (size_t i = 0; i < k; ++i) {
      if (burst[i].size() >= 18 && hyperscsi::proto::bytes::load_be16(burst[i].data() + 12) ==
                                       hyperscsi::proto::kEtherType) {
        on(burst[i], now);
        ++got;
      }
      burst[i].reset();
    }
  }
  return got;
}

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// One probe at a time; returns the one-way latencies in ms.
std::vector<double> one_way(Port& from, Port& to, int probes) {
  std::vector<double> lat;
  for (int i = 0; i < probes; ++i) {
    const auto t0 = Clock::now();
    if (!send_probe(from, to, static_cast<uint32_t>(i), 100)) break;
    receive(to, 1, std::chrono::milliseconds(1000),
            [&](const Packet&, Clock::time_point at) { lat.push_back(ms(at - t0)); });
  }
  return lat;
}

#define SKIP_UNLESS_ROOT_AND_BUILT()                                                         \
  do {                                                                                       \
    if (!hyperscsi::test_support::running_as_root())                                         \
      GTEST_SKIP() << "needs root (network namespaces and AF_PACKET)";                       \
    if (!fs::exists(HYPERSCSI_RELAY_BIN)) GTEST_SKIP() << "not built: " HYPERSCSI_RELAY_BIN; \
  } while (0)

TEST(RelayRules, DelayAppliesToItsDirectionOnly) {
  SKIP_UNLESS_ROOT_AND_BUILT();
  RelayRig rig;
  std::string why;
  ASSERT_TRUE(rig.start("--b2a delay=20ms", why)) << why;
  constexpr int kProbes = 30;
  const auto t0 = Clock::now();
  const std::vector<double> fwd = one_way(*rig.a, *rig.b, kProbes);
  const std::vector<double> back = one_way(*rig.b, *rig.a, kProbes);
  const double took = hyperscsi::chaos::seconds_since(t0);
  const std::string out = rig.finish();
  ASSERT_EQ(fwd.size(), static_cast<size_t>(kProbes)) << out;
  ASSERT_EQ(back.size(), static_cast<size_t>(kProbes)) << out;
  const double fwd_med = median(fwd), back_med = median(back);
  const double back_min = *std::min_element(back.begin(), back.end());
  std::printf(
      "figures: %d probes each way in %.2f s; a->b median %.3f ms, b->a (delay=20ms) "
      "median %.3f ms min %.3f ms\n%s",
      kProbes, took, fwd_med, back_med, back_min, out.c_str());
  EXPECT_LT(fwd_med, 5.0) << "the undelayed direction must stay fast";
  EXPECT_GE(back_min, 20.0) << "no frame may arrive before its delay";
  EXPECT_LT(back_med, 30.0) << "the delay must not be much more than asked";
  EXPECT_EQ(relay_stats(out, "b->a").at("delivered"), static_cast<uint64_t>(kProbes)) << out;
}

TEST(RelayRules, RateLimitCapsThroughputOfItsDirection) {
  SKIP_UNLESS_ROOT_AND_BUILT();
  RelayRig rig;
  std::string why;
  ASSERT_TRUE(rig.start("--a2b rate=10mbit", why)) << why;
  constexpr size_t kLen = 1250;  // 10 000 bits on the relay's wire
  constexpr double kRate = 10e6;
  // Throughput seen by the receiver, from the arrival of the 20% mark to the
  // last (the first frames may be read late in one batch).
  auto measure = [&](Port& from, Port& to, size_t n) {
    std::vector<Clock::time_point> arrivals;
    arrivals.reserve(n);
    std::thread rx([&] {
      receive(to, n, std::chrono::milliseconds(5000),
              [&](const Packet&, Clock::time_point at) { arrivals.push_back(at); });
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    // Chunks of 50 frames 2 ms apart (10x the limit): the relay's rx socket
    // keeps up, and its queue holds the whole backlog, so the output pace is
    // the relay's alone, whatever the load on this machine does to the sender.
    for (size_t i = 0; i < n; ++i) {
      if (i % 50 == 0 && i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      send_probe(from, to, static_cast<uint32_t>(i), kLen);
    }
    rx.join();
    const size_t got = arrivals.size();
    if (got < 10) return std::make_pair(got, 0.0);
    const size_t skip = got / 5;
    const double secs = std::chrono::duration<double>(arrivals.back() - arrivals[skip]).count();
    return std::make_pair(got,
                          secs > 0 ? static_cast<double>(got - 1 - skip) * kLen * 8 / secs : 0.0);
  };
  const auto [got_ab, bps_ab] = measure(*rig.a, *rig.b, 600);  // 0.6 s at 10 Mbit/s
  const auto [got_ba, bps_ba] = measure(*rig.b, *rig.a, 200);
  const std::string out = rig.finish();
  std::printf(
      "figures: a->b (rate=10mbit) %zu frames at %.2f Mbit/s (ratio %.3f); b->a "
      "(unlimited) %zu frames at %.2f Mbit/s\n%s",
      got_ab, bps_ab / 1e6, bps_ab / kRate, got_ba, bps_ba / 1e6, out.c_str());
  ASSERT_EQ(got_ab, 600u) << out;
  EXPECT_GT(bps_ab / kRate, 0.8);
  EXPECT_LT(bps_ab / kRate, 1.06);
  ASSERT_GT(got_ba, 100u) << out;
  // Unlimited, it follows the sender's pace (about ten times the limit).
  EXPECT_GT(bps_ba, 2 * kRate) << "the other direction must not be limited";
}

TEST(RelayRules, CorruptionFlipsOneBitOfTheCountedFrames) {
  SKIP_UNLESS_ROOT_AND_BUILT();
  RelayRig rig;
  std::string why;
  ASSERT_TRUE(rig.start("--a2b corrupt=20%", why)) << why;
  constexpr int kFrames = 400;
  constexpr size_t kLen = 200;
  int exact = 0, one_bit = 0, worse = 0, missing = 0;
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_TRUE(send_probe(*rig.a, *rig.b, static_cast<uint32_t>(i), kLen));
    // Rebuild what was sent and compare bit by bit.
    const size_t got =
        receive(*rig.b, 1, std::chrono::milliseconds(200), [&](const Packet& p, Clock::time_point) {
          uint8_t expect[kLen];
          const auto dst = rig.b->mac(), src = rig.a->mac();
          std::memcpy(expect, dst.data(), 6);
          std::memcpy(expect + 6, src.data(), 6);
          hyperscsi::proto::bytes::store_be16(expect + 12, hyperscsi::proto::kEtherType);
          hyperscsi::proto::bytes::store_be32(expect + 14, static_cast<uint32_t>(i));
          for (size_t k = 18; k < kLen; ++k)
            expect[k] = static_cast<uint8_t>(static_cast<uint32_t>(i) * 31 + k);
          int bits = p.size() == kLen ? 0 : 1000;
          for (size_t k = 0; k < std::min(kLen, p.size()); ++k)
            bits += __builtin_popcount(static_cast<unsigned>(expect[k] ^ p.data()[k]));
          (bits == 0 ? exact : bits == 1 ? one_bit : worse)++;
        });
    if (got == 0) ++missing;  // e.g. the flipped bit was in the EtherType or the MAC
  }
  const std::vector<double> back = one_way(*rig.b, *rig.a, 50);
  const std::string out = rig.finish();
  const auto ab = relay_stats(out, "a->b");
  const auto ba = relay_stats(out, "b->a");
  std::printf(
      "figures: %d frames a->b with corrupt=20%%: %d exact, %d one bit flipped, %d "
      "missing; relay counted %llu corrupted\n%s",
      kFrames, exact, one_bit, missing, static_cast<unsigned long long>(ab.at("corrupted")),
      out.c_str());
  EXPECT_EQ(worse, 0);
  EXPECT_EQ(static_cast<uint64_t>(one_bit + missing), ab.at("corrupted")) << out;
  EXPECT_GT(one_bit, kFrames / 10);
  EXPECT_LT(one_bit, kFrames * 3 / 10);
  EXPECT_EQ(ba.at("corrupted"), 0u) << out;
  EXPECT_EQ(back.size(), 50u);
}

}  // namespace

namespace {

TEST(RelayRules, BadRulesAreRefusedWithTheReason) {
  if (!fs::exists(HYPERSCSI_RELAY_BIN)) GTEST_SKIP() << "not built: " HYPERSCSI_RELAY_BIN;
  const std::pair<const char*, const char*> cases[] = {
      {"--a2b bogus=1", "unknown key 'bogus'"},
      {"--b2a loss=150%", "bad value in 'loss=150%'"},
      {"--a2b delay=5min", "bad value in 'delay=5min'"},
      {"--a2b rate", "'rate': expected key=value"},
  };
  for (const auto& [rules, why] : cases) {
    const auto [out, status] = hyperscsi::test_support::run_command(
        std::string(HYPERSCSI_RELAY_BIN " --a mem:x --b mem:y ") + rules + " 2>&1");
    EXPECT_EQ(status, 2) << rules << ": " << out;
    EXPECT_NE(out.find(why), std::string::npos) << rules << ": " << out;
  }
}

}  // namespace

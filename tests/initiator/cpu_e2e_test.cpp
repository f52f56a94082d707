// CPU cost of the event loops on a link that is the bottleneck: a veth pair
// between two namespaces the test creates, shaped to 1 Gbit/s with tbf on
// both ends, the real hyperscsi-target daemon on one side and the initiator
// library on the other (root; skips otherwise).
//
//  - Streaming 128 KiB reads (the target sends) and writes (the initiator
//    sends) at line rate for a few seconds, each side's CPU time stays under
//    a generous ceiling derived from the bytes moved: the loops sleep while
//    the wire is busy (holds, sleeping senders, no busy polling of a
//    link-bound pipeline) instead of spinning. Before issue 20 the reading
//    initiator busy-polled through every frame.
//  - A logged-in idle session costs (almost) nothing on either side over
//    several seconds: wake-ups for timers and keepalives only.
//
// The streams run at MTU 9000 and 1500. At 1500 a sender that outruns the
// shaper's bucket makes tbf queue, and every frame it then sends costs the
// kernel a watchdog timer re-armed in the sender's sendmmsg (8-9 CPU s/GiB on
// the VMs this runs on, issue 20); the sender paces below the bucket, so tbf
// reports almost no overlimits, and that is asserted too.
// Cost: about 24 s (two 3 s streams per MTU, a 3 s idle period, set-up).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/background.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/sanitizer.h"

namespace {

using hyperscsi::test_support::NetnsPair;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace hi = hyperscsi::initiator;

constexpr double kGiB = 1024.0 * 1024 * 1024;
// Ceiling per side, CPU seconds per GiB moved: about 70% of one core at the
// payload line rate of 124 MB/s. Measured here (2 shared cores, this change):
// about 1-2 on either side; the ceiling leaves room for load.
// Sanitizer builds cost several times the CPU: scripts/test.sh sets
// HYPERSCSI_TEST_TIMEOUT_FACTOR for them, and the ceilings scale with it.
using hyperscsi::test_support::sanitizer_factor;
const double kMaxCpuPerGiB = 6.0 * sanitizer_factor();
// At MTU 1500, six times the frames: measured 1.3-2.5 per side with pacing
// below tbf's bucket, 5.2-8.9 on the sending side when tbf queued.
const double kMaxCpuPerGiB1500 = 4.0 * sanitizer_factor();
// tbf's overlimits (a dequeue that found no tokens and armed the watchdog)
// per frame it sent, on the sender's interface: ~0.5% when paced, >20% not.
constexpr double kMaxOverlimitShare = 0.05;
// Idle: CPU seconds per side over kIdle with a session logged in.
constexpr auto kIdle = 3s;
const double kMaxIdleCpu = 0.06 * sanitizer_factor();

// utime + stime of every thread of `pid`, from /proc (clock ticks).
double process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(in, text);
  const auto close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 1));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int n = 3; n <= 15 && fields >> f; ++n) {
    if (n == 14) utime = std::stoull(f);
    if (n == 15) stime = std::stoull(f);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The number after "key": in `json` (-1 when absent).
double json_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return -1;
  return std::strtod(json.c_str() + at + key.size() + 3, nullptr);
}

// tbf's "Sent B bytes P pkt (dropped D, overlimits O ..." of `iface` in `ns`.
struct TbfCounters {
  double packets = -1, overlimits = -1;
};
TbfCounters tbf_counters(const std::string& ns, const std::string& iface) {
  std::string out;
  if (!NetnsPair::shell("ip netns exec " + ns + " tc -s qdisc show dev " + iface + " 2>&1", &out))
    return {};
  TbfCounters c;
  const auto sent = out.find(" bytes ");
  const auto over = out.find("overlimits ");
  if (sent != std::string::npos) c.packets = std::strtod(out.c_str() + sent + 7, nullptr);
  if (over != std::string::npos) c.overlimits = std::strtod(out.c_str() + over + 11, nullptr);
  return c;
}

class ShapedCpuTest : public ::testing::Test {
 protected:
  virtual int mtu() const { return 9000; }

  void SetUp() override {
    const char* env = std::getenv("HYPERSCSI_TARGET_BIN");
    const std::string bin = env && *env ? env : HYPERSCSI_TARGET_BIN;
    if (bin.empty() || !fs::exists(bin))
      GTEST_SKIP() << "the target daemon hyperscsi-target is not built ('" << bin << "')";
    if (!hyperscsi::test_support::running_as_root())
      GTEST_SKIP() << "needs root (network namespaces, AF_PACKET, tc)";
    if (!NetnsPair::shell("command -v tc >/dev/null 2>&1"))
      GTEST_SKIP() << "no tc (iproute2) to shape the link";
    net_ = std::make_unique<NetnsPair>(
        hyperscsi::test_support::NetnsConfig{.mtu = static_cast<size_t>(mtu())});
    if (!net_->ok()) GTEST_SKIP() << "cannot create namespaces: " << net_->error();
    for (const auto& [ns, iface] :
         {std::pair{net_->ns_a(), net_->iface_a()}, std::pair{net_->ns_b(), net_->iface_b()}}) {
      std::string out;
      if (!NetnsPair::shell("ip netns exec " + ns + " tc qdisc add dev " + iface +
                                " root tbf rate 1gbit burst 256kb latency 20ms 2>&1",
                            &out))
        GTEST_SKIP() << "cannot shape the veth with tbf: " << out;
    }
    work_ = fs::temp_directory_path() / ("hs-cpu-e2e-" + std::to_string(::getpid()));
    fs::create_directories(work_);
    name_ = "hsc" + std::to_string(::getpid());
    ASSERT_TRUE(target_.start("ip netns exec " + net_->ns_b() + " " + bin + " --port afpacket:" +
                                  net_->iface_b() + " --lun 0=ram:256M --name " + name_ +
                                  " --control " + (work_ / "t.sock").string() + " --log-level warn",
                              (work_ / "target.log").string()));
    auto port =
        net_->run_in_a([&] { return hyperscsi::ports::open_port("afpacket:" + net_->iface_a()); });
    ASSERT_TRUE(port.has_value() && port->ok());
    hi::Options o;
    o.initiator_name = "cpu-e2e";
    o.dead_time = 20s;
    auto ini = hi::Initiator::create(std::move(port->value()), o);
    ASSERT_TRUE(ini.ok()) << ini.error().message;
    ini_ = std::move(ini).value();
    for (int i = 0; i < 40 && !ini_->connect(name_).ok(); ++i)
      std::this_thread::sleep_for(250ms);  // the daemon may still be starting
    ASSERT_EQ(ini_->stats().state, "established");
    auto lun = ini_->open_lun(0);
    ASSERT_TRUE(lun.ok()) << lun.error().message;
    lun_ = std::make_unique<hi::Lun>(*lun);
  }

  // `hyperscsi-target stats --json` of the daemon.
  std::string target_stats() {
    const char* env = std::getenv("HYPERSCSI_TARGET_BIN");
    const std::string bin = env && *env ? env : HYPERSCSI_TARGET_BIN;
    std::string out;
    EXPECT_TRUE(
        NetnsPair::shell(bin + " stats --json --control " + (work_ / "t.sock").string(), &out))
        << out;
    return out;
  }

  void TearDown() override {
    if (ini_) ini_->disconnect();
    lun_.reset();
    ini_.reset();
    target_.stop();
    net_.reset();
    std::error_code ec;
    if (!work_.empty()) fs::remove_all(work_, ec);
  }

  // Keeps `qd` 128 KiB reads or writes in flight for `secs`, resubmitting
  // from the completions (the loop thread; this thread only waits). Returns
  // the bytes moved; counts failures.
  uint64_t stream(bool write, std::chrono::seconds secs, uint32_t qd = 16) {
    struct State {
      std::atomic<uint64_t> bytes{0}, failed{0};
      std::atomic<uint32_t> in_flight{0};
      std::chrono::steady_clock::time_point end;
      std::promise<void> drained;
      std::vector<uint8_t> data = std::vector<uint8_t>(131072, 0x5a);
      std::atomic<uint64_t> issued{0};
      uint64_t blocks = 0;
      uint32_t per_io = 0;
    };
    auto st = std::make_shared<State>();
    st->end = std::chrono::steady_clock::now() + secs;
    st->per_io = 131072 / lun_->capacity().block_size;
    st->blocks = lun_->capacity().num_blocks;
    hi::Lun lun = *lun_;
    auto issue = std::make_shared<std::function<void()>>();
    *issue = [st, lun, write, issue]() mutable {
      const uint64_t lba = (st->issued++ * st->per_io) % (st->blocks - st->per_io);
      auto done = [st, issue](hi::CommandResult&& r) {
        if (r.good())
          st->bytes += 131072;
        else
          ++st->failed;
        if (std::chrono::steady_clock::now() < st->end) {
          (*issue)();
        } else if (--st->in_flight == 0) {
          st->drained.set_value();
        }
      };
      if (write)
        lun.write(lba, st->data, done);
      else
        lun.read(lba, st->per_io, done);
    };
    auto drained = st->drained.get_future();
    st->in_flight = qd;
    for (uint32_t i = 0; i < qd; ++i) (*issue)();
    const bool ok = drained.wait_for(secs + 30s) == std::future_status::ready;
    *issue = nullptr;  // break the cycle
    EXPECT_TRUE(ok) << "the stream did not drain";
    EXPECT_EQ(st->failed.load(), 0u);
    return st->bytes.load();
  }

  void expect_cheap_stream(bool write) {
    const char* what =
        write ? "128 KiB writes (the initiator sends)" : "128 KiB reads (the target sends)";
    stream(write, 1s);  // windows open, rates measured
    const double client0 = ini_->stats().cpu_seconds;
    const double target0 = process_cpu_seconds(target_.pid());
    // The sender's interface: the client's (a) on writes, the target's (b) on reads.
    const std::string sender_ns = write ? net_->ns_a() : net_->ns_b();
    const std::string sender_if = write ? net_->iface_a() : net_->iface_b();
    const TbfCounters tbf0 = tbf_counters(sender_ns, sender_if);
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t bytes = stream(write, 3s);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double client = ini_->stats().cpu_seconds - client0;
    const double target = process_cpu_seconds(target_.pid()) - target0;
    const TbfCounters tbf1 = tbf_counters(sender_ns, sender_if);
    ASSERT_GT(bytes, 0u);
    const double gib = static_cast<double>(bytes) / kGiB;
    const double ceiling = mtu() < 9000 ? kMaxCpuPerGiB1500 : kMaxCpuPerGiB;
    const double frames = tbf1.packets - tbf0.packets;
    const double overlimits = tbf1.overlimits - tbf0.overlimits;
    std::printf(
        "%s over tbf 1gbit, MTU %d: %.1f MB/s; CPU s/GiB initiator %.2f, target %.2f "
        "(ceiling %.1f each); sender's tbf: %.0f frames, %.0f overlimits\n",
        what, mtu(), static_cast<double>(bytes) / secs / 1e6, client / gib, target / gib, ceiling,
        frames, overlimits);
    EXPECT_LE(client, ceiling * gib) << what << ": the initiator's loop";
    EXPECT_LE(target, ceiling * gib) << what << ": the target's loop";
    ASSERT_GT(frames, 0) << "tc -s qdisc gave no counters on " << sender_if;
    EXPECT_LE(overlimits, kMaxOverlimitShare * frames)
        << what << ": the sender outran the shaper's bucket, so tbf queued its frames";
  }

  std::unique_ptr<NetnsPair> net_;
  fs::path work_;
  std::string name_;
  hyperscsi::test_support::BackgroundProcess target_;
  std::unique_ptr<hi::Initiator> ini_;
  std::unique_ptr<hi::Lun> lun_;
};

class ShapedCpuStreamTest : public ShapedCpuTest, public ::testing::WithParamInterface<int> {
 protected:
  int mtu() const override { return GetParam(); }
};

TEST_P(ShapedCpuStreamTest, StreamingAtLineRateCostsUnderACeilingPerGiBOnBothSides) {
  expect_cheap_stream(false);
  expect_cheap_stream(true);
  // The target's stats show how its loop waited: it held (slept without
  // watching the port) while writes streamed in and its reads waited for the
  // pacing clock, and its loop thread's CPU time and wake-ups are counted.
  const std::string ts = target_stats();
  std::printf("target port loop: %.0f turns, %.0f waits (%.0f holds), %.0f wake-ups, %.3f s CPU\n",
              json_number(ts, "loop_turns"), json_number(ts, "loop_waits"),
              json_number(ts, "loop_holds"), json_number(ts, "loop_wakeups"),
              json_number(ts, "loop_cpu_s"));
  EXPECT_GT(json_number(ts, "loop_turns"), 0) << ts;
  EXPECT_GT(json_number(ts, "loop_holds"), 0) << ts;
  EXPECT_GT(json_number(ts, "loop_wakeups"), 0) << ts;
  EXPECT_GT(json_number(ts, "loop_cpu_s"), 0) << ts;
  EXPECT_EQ(json_number(ts, "busy_poll_s"), 0) << ts;
  const hi::Stats st = ini_->stats();
  std::printf(
      "initiator loop: %llu turns, %llu waits (%llu holds), %llu busy polls (%.3f s), "
      "%llu wake-ups\n",
      static_cast<unsigned long long>(st.wake.turns),
      static_cast<unsigned long long>(st.wake.sleeps),
      static_cast<unsigned long long>(st.wake.holds),
      static_cast<unsigned long long>(st.wake.polls), static_cast<double>(st.wake.poll_ns) / 1e9,
      static_cast<unsigned long long>(st.wakeups));
}

INSTANTIATE_TEST_SUITE_P(Mtu, ShapedCpuStreamTest, ::testing::Values(9000, 1500),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return "Mtu" + std::to_string(p.param);
                         });

TEST_F(ShapedCpuTest, IdleSessionCostsNothing) {
  stream(false, 1s);  // a session that has worked, then rests
  std::this_thread::sleep_for(200ms);
  const hi::Stats before = ini_->stats();
  const double target0 = process_cpu_seconds(target_.pid());
  const std::string ts0 = target_stats();
  std::this_thread::sleep_for(kIdle);
  const std::string ts1 = target_stats();
  const hi::Stats after = ini_->stats();
  const double client = after.cpu_seconds - before.cpu_seconds;
  const double target = process_cpu_seconds(target_.pid()) - target0;
  std::printf("idle for %lld s: CPU initiator %.3f s (%llu wake-ups), target %.3f s\n",
              static_cast<long long>(kIdle.count()), client,
              static_cast<unsigned long long>(after.wakeups - before.wakeups), target);
  EXPECT_EQ(after.state, "established");
  EXPECT_LE(client, kMaxIdleCpu);
  EXPECT_LE(target, kMaxIdleCpu);
  EXPECT_EQ(after.wake.polls, before.wake.polls) << "an idle initiator busy-polled";
  // Timers (at most every 100 ms) and keepalives (every second) only.
  EXPECT_LE(after.wakeups - before.wakeups, 80u);
  // The target's port loop, by its own stats: asleep but for its timers.
  const double loop_wakeups = json_number(ts1, "loop_wakeups") - json_number(ts0, "loop_wakeups");
  const double loop_cpu = json_number(ts1, "loop_cpu_s") - json_number(ts0, "loop_cpu_s");
  std::printf("target port loop idle: %.0f wake-ups, %.3f s CPU\n", loop_wakeups, loop_cpu);
  EXPECT_GE(loop_wakeups, 0) << ts0 << ts1;
  EXPECT_LE(loop_wakeups, 80) << ts0 << ts1;
  EXPECT_LE(loop_cpu, kMaxIdleCpu) << ts0 << ts1;
}

}  // namespace

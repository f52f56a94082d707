// Chaos tests with the real daemons (hyperscsi-target as a process, the
// initiator library or hyperscsi-bench as the client), each bounded in time:
//   - kill -9 of the target during writes through the relay (3% loss), and a
//     restart on the same file: the client resumes by itself and every write
//     it saw acknowledged reads back correct (and is in the file);
//   - the same for a protected session (a secret, auth required, encrypt):
//     the client re-authenticates with the restarted target by itself;
//   - the link down for 3 s on the client side, then on the target side,
//     while writes run: nothing fails, commands wait and are retried;
//   - kill -9 of the client: the target reclaims the session after its dead
//     time, and a new client logs in and works;
//   - a hostile sender floods the target with bad and spoofed frames while a
//     verified workload runs: the workload passes, the target stays up,
//     keeps the real session as it was and counts what it dropped.
// Each test prints a "figures:" line (times, I/Os verified, stalls, counts).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "chaos_support.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/test_support/netns.h"
#include "hyperscsi/test_support/process.h"
#include "hyperscsi/test_support/sanitizer.h"

namespace {

namespace fs = std::filesystem;
namespace hi = hyperscsi::initiator;
using hyperscsi::chaos::in_netns;
using hyperscsi::chaos::json_int;
using hyperscsi::chaos::json_session_count;
using hyperscsi::chaos::Proc;
using hyperscsi::chaos::seconds_since;
using hyperscsi::chaos::slurp;
using hyperscsi::chaos::target_stats;
using hyperscsi::chaos::wait_until;
using hyperscsi::test_support::NetnsPair;
using hyperscsi::test_support::run_command;
using hyperscsi::test_support::TempDir;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

#define SKIP_UNLESS_READY()                                                                       \
  do {                                                                                            \
    if (!hyperscsi::test_support::running_as_root())                                              \
      GTEST_SKIP() << "needs root (network namespaces and AF_PACKET)";                            \
    for (const char* bin :                                                                        \
         {HYPERSCSI_RELAY_BIN, HYPERSCSI_TARGET_BIN, HYPERSCSI_BENCH_BIN, HYPERSCSI_HOSTILE_BIN}) \
      if (!fs::exists(bin)) GTEST_SKIP() << "not built: " << bin;                                 \
  } while (0)

// The bytes of write number `gen` to `block`: differ for every (block, gen).
void fill_pattern(uint8_t* out, size_t len, uint32_t block, uint32_t gen) {
  uint64_t x = (uint64_t{block} << 32) ^ gen ^ 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i + 8 <= len; i += 8) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(out + i, &z, 8);
  }
}

// Writes 4 KiB blocks round the first `blocks` of a LUN at queue depth `qd`
// and records, per block, the last generation whose write was acknowledged.
// A block is never written twice at once (qd is far below `blocks`), so the
// acknowledged generation is what the LUN must hold. Completion gaps give the
// longest stall the client saw.
class AckedWriter {
 public:
  static constexpr size_t kBytes = 4096;

  AckedWriter(hi::Lun lun, uint32_t blocks, uint32_t qd)
      : lun_(lun), blocks_(blocks), qd_(qd), acked_gen_(blocks, 0) {}
  // Also on a failed assertion: completions refer to this object, and the
  // initiator (20 s dead time) answers every write within the bound.
  ~AckedWriter() { stop(milliseconds(30000)); }
  AckedWriter(const AckedWriter&) = delete;
  AckedWriter& operator=(const AckedWriter&) = delete;

  void start() {
    last_completion_ = Clock::now();
    thread_ = std::thread([this] { loop(); });
  }
  // Stops issuing and waits (bounded) for the writes in flight.
  bool stop(milliseconds bound) {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound, [&] { return outstanding_ == 0; });
  }

  // Reads every block back; returns the number of blocks whose content is
  // not the last acknowledged write (never-written blocks must be zero).
  uint64_t verify(std::string& first_bad) {
    uint64_t bad = 0;
    const uint32_t per_read = 64;  // 256 KiB
    std::vector<uint8_t> expect(kBytes);
    const uint32_t sectors = kBytes / lun_.capacity().block_size;
    for (uint32_t b = 0; b < blocks_; b += per_read) {
      const uint32_t n = std::min(per_read, blocks_ - b);
      auto data = lun_.read_sync(uint64_t{b} * sectors, n * sectors);
      if (!data || data->size() != size_t{n} * kBytes) {
        bad += n;
        if (first_bad.empty())
          first_bad = "read of block " + std::to_string(b) +
                      " failed: " + (data ? "short" : data.error().message);
        continue;
      }
      for (uint32_t i = 0; i < n; ++i) {
        if (!matches(b + i, data->data() + size_t{i} * kBytes, expect)) {
          ++bad;
          if (first_bad.empty()) first_bad = "block " + std::to_string(b + i);
        }
      }
    }
    return bad;
  }

  // Checks the backing file directly (the target stopped).
  uint64_t verify_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::vector<uint8_t> buf(kBytes), expect(kBytes);
    uint64_t bad = 0;
    for (uint32_t b = 0; b < blocks_; ++b) {
      in.read(reinterpret_cast<char*>(buf.data()), kBytes);
      if (!in || !matches(b, buf.data(), expect)) ++bad;
    }
    return bad;
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
  // Longest time without any completion while writing (seconds).
  double max_stall() const {
    std::lock_guard lock(mu_);
    return max_stall_;
  }
  uint64_t acked_since(Clock::time_point t) const {
    std::lock_guard lock(mu_);
    uint64_t n = 0;
    for (auto c : completions_)
      if (c >= t) ++n;
    return n;
  }

 private:
  bool matches(uint32_t block, const uint8_t* got, std::vector<uint8_t>& expect) const {
    const uint32_t gen = acked_gen_[block];
    if (gen == 0)
      std::fill(expect.begin(), expect.end(), 0);
    else
      fill_pattern(expect.data(), kBytes, block, gen);
    return std::memcmp(got, expect.data(), kBytes) == 0;
  }

  void loop() {
    const uint32_t sectors = kBytes / lun_.capacity().block_size;
    for (uint64_t i = 0; !stop_; ++i) {
      {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, milliseconds(50), [&] { return outstanding_ < qd_; });
        if (outstanding_ >= qd_) {
          --i;  // not issued; try again
          continue;
        }
        ++outstanding_;
      }
      const uint32_t block = static_cast<uint32_t>(i % blocks_);
      const uint32_t gen = static_cast<uint32_t>(i / blocks_ + 1);
      std::vector<uint8_t> buf(kBytes);
      fill_pattern(buf.data(), kBytes, block, gen);
      lun_.write(uint64_t{block} * sectors, buf, [this, block, gen](hi::CommandResult&& r) {
        std::lock_guard lock(mu_);
        const auto now = Clock::now();
        max_stall_ =
            std::max(max_stall_, std::chrono::duration<double>(now - last_completion_).count());
        last_completion_ = now;
        if (r.good()) {
          ++acked_;
          acked_gen_[block] = std::max(acked_gen_[block], gen);
          completions_.push_back(now);
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
  std::vector<Clock::time_point> completions_;
  uint64_t acked_ = 0, failed_ = 0;
  std::string first_error_;
  Clock::time_point last_completion_;
  double max_stall_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

constexpr const char* kChaosInitiator = "iqn.2026-11.org.hyperscsi:chaos";

// An initiator whose port lives in namespace `ns`; with `secret` (and the
// weakest `protection` it accepts) it authenticates at every login.
std::unique_ptr<hi::Initiator> open_initiator(
    const std::string& ns, const std::string& iface, std::string& why,
    hyperscsi::proto::crypto::SecretBytes secret = {},
    hyperscsi::proto::Protection protection = hyperscsi::proto::Protection::kOff) {
  std::unique_ptr<hi::Initiator> ini;
  hi::Options o;
  o.initiator_name = kChaosInitiator;
  o.dead_time = std::chrono::seconds(20);
  o.max_outstanding = 8;
  o.secret = std::move(secret);
  o.protection = protection;
  in_netns(ns, [&] {
    auto r = hi::Initiator::open("afpacket:" + iface, o);
    if (r)
      ini = std::move(r).value();
    else
      why = r.error().message;
  });
  return ini;
}

std::string target_cmd(const std::string& ns, const std::string& iface, const std::string& lun,
                       const fs::path& control, const std::string& extra = "") {
  return "ip netns exec " + ns + " " HYPERSCSI_TARGET_BIN " --port afpacket:" + iface +
         " --lun 0=" + lun + " --control " + control.string() + " " + extra;
}

bool target_answers(const fs::path& control) {
  return !target_stats(HYPERSCSI_TARGET_BIN, control).empty();
}

// The string value of "key" in flat JSON (first occurrence).
std::string json_str(const std::string& json, const std::string& key) {
  const size_t k = json.find("\"" + key + "\":\"");
  if (k == std::string::npos) return {};
  const size_t from = k + key.size() + 4;
  return json.substr(from, json.find('"', from) - from);
}

// The MAC of `iface` in namespace `ns` ("aa:bb:cc:dd:ee:ff").
std::string mac_of(const std::string& ns, const std::string& iface) {
  const auto [out, status] =
      run_command("ip netns exec " + ns + " cat /sys/class/net/" + iface + "/address");
  return status == 0 ? out.substr(0, 17) : std::string();
}

TEST(ChaosDaemons, TargetKill9DuringWritesRestartsAndEveryAckedWriteIsThere) {
  SKIP_UNLESS_READY();
  const auto t_start = Clock::now();
  hyperscsi::chaos::ThreeNs net;
  if (!net.ok) GTEST_SKIP() << "cannot create namespaces: " << net.error;
  TempDir dir("hs_chaos");
  ASSERT_FALSE(dir.path().empty());
  const fs::path store = dir.path() / "lun0.img", control = dir.path() / "target.sock";
  { std::ofstream(store).close(); }
  fs::resize_file(store, 32ull << 20);

  Proc target, relay;
  ASSERT_TRUE(target.start(target_cmd(net.server, net.srv_if, store.string(), control),
                           dir.path() / "target.log"));
  ASSERT_TRUE(relay.start(
      "ip netns exec " + net.relay + " " HYPERSCSI_RELAY_BIN " --a afpacket:" + net.relay_a +
          " --b afpacket:" + net.relay_b + " --a2b loss=3% --b2a loss=3% --seed 3 --duration 55",
      dir.path() / "relay.log"));
  ASSERT_TRUE(wait_until([&] { return target_answers(control); }, milliseconds(5000)))
      << slurp(dir.path() / "target.log");

  std::string why;
  auto ini = open_initiator(net.client, net.cli_if, why);
  ASSERT_TRUE(ini) << why;
  auto info = ini->connect(std::string_view{});
  ASSERT_TRUE(info) << info.error().message;
  auto lun = ini->open_lun(0);
  ASSERT_TRUE(lun) << lun.error().message;

  AckedWriter writer(*lun, 2048, 8);  // 8 MiB
  writer.start();
  std::this_thread::sleep_for(milliseconds(1500));
  const uint64_t acked_before_kill = writer.acked();
  target.kill9();
  const auto killed_at = Clock::now();
  std::this_thread::sleep_for(milliseconds(1000));
  ASSERT_TRUE(target.start(target_cmd(net.server, net.srv_if, store.string(), control),
                           dir.path() / "target.log"));
  const auto restarted_at = Clock::now();
  // Bounded: the client must resume and complete writes on the new target.
  const bool resumed =
      wait_until([&] { return writer.acked_since(restarted_at) >= 100; }, milliseconds(15000));
  const double resume_s = seconds_since(restarted_at);
  std::this_thread::sleep_for(milliseconds(1500));
  ASSERT_TRUE(writer.stop(milliseconds(25000))) << "writes still in flight";
  const hi::Stats st = ini->stats();
  std::string first_bad;
  const uint64_t bad = resumed ? writer.verify(first_bad) : 0;
  ini->disconnect();
  ini.reset();
  EXPECT_EQ(target.stop(), 0) << slurp(dir.path() / "target.log");
  const uint64_t bad_in_file = writer.verify_file(store);
  relay.stop();
  const std::string relay_out = slurp(dir.path() / "relay.log");

  std::printf(
      "figures: %.1f s total; %llu writes acknowledged (%llu before the kill), %llu failed; "
      "stall %.2f s (target down 1.0 s, first 100 acks %.2f s after the restart); "
      "client resumes=%llu relogins=%llu reissued=%llu retransmitted=%llu; 2048 blocks "
      "(8 MiB) verified by reads and in the file\nrelay:\n%s",
      seconds_since(t_start), static_cast<unsigned long long>(writer.acked()),
      static_cast<unsigned long long>(acked_before_kill),
      static_cast<unsigned long long>(writer.failed()), writer.max_stall(), resume_s,
      static_cast<unsigned long long>(st.resumes), static_cast<unsigned long long>(st.relogins),
      static_cast<unsigned long long>(st.reissued),
      static_cast<unsigned long long>(st.transport.frames_retransmitted), relay_out.c_str());
  (void)killed_at;
  ASSERT_TRUE(resumed) << "no writes completed after the restart; stats state " << st.state << "\n"
                       << slurp(dir.path() / "target.log");
  EXPECT_GT(acked_before_kill, 0u);
  EXPECT_EQ(writer.failed(), 0u) << writer.first_error();
  EXPECT_EQ(bad, 0u) << first_bad;
  EXPECT_EQ(bad_in_file, 0u);
  EXPECT_GE(st.resumes + st.relogins, 1u);
}

// The inverse of an odd number modulo 2^64 (Newton's iteration).
constexpr uint64_t inverse_mod64(uint64_t m) {
  uint64_t x = m;
  for (int i = 0; i < 6; ++i) x *= 2 - m * x;
  return x;
}

// Inverse of fill_pattern's mixing step (splitmix64's finalizer).
uint64_t unmix(uint64_t z) {
  constexpr uint64_t kInv2 = inverse_mod64(0x94D049BB133111EBull);
  constexpr uint64_t kInv1 = inverse_mod64(0xBF58476D1CE4E5B9ull);
  static_assert(kInv1 * 0xBF58476D1CE4E5B9ull == 1 && kInv2 * 0x94D049BB133111EBull == 1);
  z ^= (z >> 31) ^ (z >> 62);
  z *= kInv2;
  z ^= (z >> 27) ^ (z >> 54);
  z *= kInv1;
  z ^= (z >> 30) ^ (z >> 60);
  return z;
}

// Whether `data` holds 16 bytes of some fill_pattern output, at any offset:
// two consecutive 8-byte words of it unmix to counters 0x9E37... apart. For
// random bytes (ciphertext) that happens with probability 2^-64 per offset.
bool holds_clear_pattern(const uint8_t* data, size_t len) {
  uint64_t unmixed[8] = {};  // of the words at the last 8 offsets
  for (size_t i = 0; i + 8 <= len; ++i) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    const uint64_t u = unmix(w);
    if (i >= 8 && u - unmixed[i % 8] == 0x9E3779B97F4A7C15ull) return true;
    unmixed[i % 8] = u;
  }
  return false;
}

// Reads every HyperSCSI frame (EtherType 0x889A) arriving at `iface` of
// namespace `ns` on a thread of its own, and counts those that carry
// fill_pattern bytes in the clear. Stops (bounded) in the destructor.
class WireWatch {
 public:
  WireWatch(const std::string& ns, const std::string& iface) {
    in_netns(ns, [&] {
      fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x889A));
      if (fd_ < 0) return;
      sockaddr_ll a{};
      a.sll_family = AF_PACKET;
      a.sll_protocol = htons(0x889A);
      a.sll_ifindex = static_cast<int>(::if_nametoindex(iface.c_str()));
      timeval tv{0, 100000};
      if (a.sll_ifindex == 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
        ::close(fd_);
        fd_ = -1;
      }
    });
    if (fd_ >= 0) thread_ = std::thread([this] { loop(); });
  }
  ~WireWatch() { stop(); }
  WireWatch(const WireWatch&) = delete;
  WireWatch& operator=(const WireWatch&) = delete;

  bool ok() const { return fd_ >= 0; }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  uint64_t frames() const { return frames_; }
  uint64_t clear_frames() const { return clear_frames_; }

 private:
  void loop() {
    std::vector<uint8_t> buf(65536);
    while (!stop_) {
      const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
      if (n <= 0) continue;  // timeout: look at stop_ again
      ++frames_;
      if (holds_clear_pattern(buf.data(), static_cast<size_t>(n))) ++clear_frames_;
    }
  }

  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> frames_{0}, clear_frames_{0};
  std::thread thread_;
};

// The kill -9 restart of a PROTECTED session: the daemon's config gives the
// client's initiator name a secret and the LUN (a file) auth = "required",
// protection = "encrypt". A protected session ignores the unprotected
// Disconnect the restarted target sends for a session it does not know
// (docs/protocol.md 10.13), so the client finds out by its dead time: the
// target offers a short one (keepalive 300 ms, dead 2 s). The client must
// then resume (re-authenticating, 10.12) or log in afresh by itself, with a
// new handshake and new keys, and every acknowledged write must be there.
TEST(ChaosDaemons, ProtectedSessionSurvivesTargetKill9AndReauthenticates) {
  SKIP_UNLESS_READY();
  const auto t_start = Clock::now();
  NetnsPair net({.mtu = 1500});
  if (!net.ok()) GTEST_SKIP() << "cannot create namespaces: " << net.error();
  TempDir dir("hs_chaos");
  ASSERT_FALSE(dir.path().empty());
  const fs::path store = dir.path() / "lun0.img", control = dir.path() / "target.sock";
  const fs::path key = dir.path() / "chaos.key", config = dir.path() / "target.toml";
  { std::ofstream(store).close(); }
  fs::resize_file(store, 32ull << 20);
  { std::ofstream(key) << "5be0c1d27a9f43e8b6d1057c2e9a4f3b81c6d0e7a2f5b9c4\n"; }
  fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write);
  const std::string name = "hsp" + std::to_string(::getpid());
  {
    std::ofstream(config) << "[target]\nname = \"" << name
                          << "\"\nports = [\"afpacket:" << net.iface_b() << "\"]\ncontrol = \""
                          << control.string() << "\"\nkeepalive_ms = 300\ndead_time_ms = 2000\n\n"
                          << "[[initiator]]\nname = \"" << kChaosInitiator << "\"\nsecret_file = \""
                          << key.string() << "\"\n\n"
                          << "[[lun]]\nnumber = 0\nstore = \"" << store.string()
                          << "\"\nauth = \"required\"\nprotection = \"encrypt\"\n";
  }
  const std::string cmd =
      "ip netns exec " + net.ns_b() + " " HYPERSCSI_TARGET_BIN " --config " + config.string();
  auto stats = [&] { return target_stats(HYPERSCSI_TARGET_BIN, control); };
  // The one session, authenticated with encryption.
  auto protected_session = [](const std::string& json) {
    return json_session_count(json) == 1 &&
           json.find("\"authenticated\":true,\"protection\":\"encrypt\"") != std::string::npos;
  };

  Proc target;
  ASSERT_TRUE(target.start(cmd, dir.path() / "target.log"));
  ASSERT_TRUE(wait_until([&] { return target_answers(control); }, milliseconds(5000)))
      << slurp(dir.path() / "target.log");

  // What reaches the target's port: the written blocks must not be there in
  // the clear. The detector itself is checked on a clear block first.
  std::vector<uint8_t> clear(AckedWriter::kBytes + 3);
  fill_pattern(clear.data() + 3, AckedWriter::kBytes, 7, 1);
  ASSERT_TRUE(holds_clear_pattern(clear.data() + 1000, 40));
  WireWatch wire(net.ns_b(), net.iface_b());
  ASSERT_TRUE(wire.ok()) << "cannot open a packet socket on " << net.iface_b();

  std::string why;
  auto secret = hi::read_secret_file(key.string());
  ASSERT_TRUE(secret) << secret.error().message;
  auto ini = open_initiator(net.ns_a(), net.iface_a(), why, std::move(secret).value(),
                            hyperscsi::proto::Protection::kEncrypt);
  ASSERT_TRUE(ini) << why;
  auto info = ini->connect(name);
  ASSERT_TRUE(info) << info.error().message << "\n" << slurp(dir.path() / "target.log");
  auto lun = ini->open_lun(0);
  ASSERT_TRUE(lun) << lun.error().message;

  AckedWriter writer(*lun, 2048, 8);  // 8 MiB
  writer.start();
  std::this_thread::sleep_for(milliseconds(1500));
  const std::string before = stats();
  const hi::Stats st_before = ini->stats();
  const uint64_t acked_before_kill = writer.acked();
  target.kill9();
  std::this_thread::sleep_for(milliseconds(1000));
  ASSERT_TRUE(target.start(cmd, dir.path() / "target.log"));
  const auto restarted_at = Clock::now();
  const bool resumed =
      wait_until([&] { return writer.acked_since(restarted_at) >= 100; }, milliseconds(15000));
  const double resume_s = seconds_since(restarted_at);
  std::this_thread::sleep_for(milliseconds(1000));
  // Taken while the writes still run: the session is open.
  const std::string after = stats();
  ASSERT_TRUE(writer.stop(milliseconds(25000))) << "writes still in flight";
  const hi::Stats st = ini->stats();
  std::string first_bad;
  const uint64_t bad = resumed ? writer.verify(first_bad) : 0;
  wire.stop();
  ini->disconnect();
  ini.reset();
  EXPECT_EQ(target.stop(), 0) << slurp(dir.path() / "target.log");
  const uint64_t bad_in_file = writer.verify_file(store);
  const std::string log = slurp(dir.path() / "target.log");

  std::printf(
      "figures: %.1f s total; %llu writes acknowledged (%llu before the kill), %llu failed; "
      "stall %.2f s (target down 1.0 s, dead time 2 s, first 100 acks %.2f s after the "
      "restart); client resumes=%llu relogins=%llu reissued=%llu, session %08x epoch %u -> "
      "%08x epoch %u; target after restart: auth_successes=%lld auth_failures=%lld "
      "frames_bad_tag=%lld; 2048 blocks (8 MiB) verified by reads and in the file; wire: "
      "%llu frames to the target, %llu with a block in the clear\n",
      seconds_since(t_start), static_cast<unsigned long long>(writer.acked()),
      static_cast<unsigned long long>(acked_before_kill),
      static_cast<unsigned long long>(writer.failed()), writer.max_stall(), resume_s,
      static_cast<unsigned long long>(st.resumes), static_cast<unsigned long long>(st.relogins),
      static_cast<unsigned long long>(st.reissued), st_before.session_id, st_before.epoch,
      st.session_id, st.epoch, static_cast<long long>(json_int(after, "auth_successes")),
      static_cast<long long>(json_int(after, "auth_failures")),
      static_cast<long long>(json_int(after, "frames_bad_tag")),
      static_cast<unsigned long long>(wire.frames()),
      static_cast<unsigned long long>(wire.clear_frames()));
  EXPECT_TRUE(protected_session(before)) << before;
  EXPECT_GE(json_int(before, "auth_successes"), 1) << before;
  ASSERT_TRUE(resumed) << "no writes completed after the restart; state " << st.state << "\n"
                       << log;
  EXPECT_GT(acked_before_kill, 0u);
  EXPECT_EQ(writer.failed(), 0u) << writer.first_error();
  EXPECT_EQ(bad, 0u) << first_bad;
  EXPECT_EQ(bad_in_file, 0u);
  EXPECT_GE(st.resumes + st.relogins, 1u);
  // The restarted daemon (its counters start at zero) authenticated the
  // client again and serves the LUN only over the encrypted session.
  EXPECT_TRUE(protected_session(after)) << after;
  EXPECT_GE(json_int(after, "auth_successes"), 1) << after;
  EXPECT_EQ(json_int(after, "auth_failures"), 0) << after;
  EXPECT_EQ(json_int(after, "commands_unauthenticated"), 0) << after;
  EXPECT_GT(wire.frames(), acked_before_kill) << "the capture saw too few frames";
  EXPECT_EQ(wire.clear_frames(), 0u) << "written data crossed the wire unencrypted";
  EXPECT_EQ(log.find("5be0c1d2"), std::string::npos) << "the secret must never be logged";
}

TEST(ChaosDaemons, LinkDownAndUpOnEitherSideDelaysButFailsNothing) {
  SKIP_UNLESS_READY();
  const auto t_start = Clock::now();
  NetnsPair net({.mtu = 9000});
  if (!net.ok()) GTEST_SKIP() << "cannot create namespaces: " << net.error();
  TempDir dir("hs_chaos");
  ASSERT_FALSE(dir.path().empty());
  const fs::path control = dir.path() / "target.sock";
  Proc target;
  ASSERT_TRUE(target.start(target_cmd(net.ns_b(), net.iface_b(), "ram:64M", control),
                           dir.path() / "target.log"));
  ASSERT_TRUE(wait_until([&] { return target_answers(control); }, milliseconds(5000)))
      << slurp(dir.path() / "target.log");
  std::string why;
  auto ini = open_initiator(net.ns_a(), net.iface_a(), why);
  ASSERT_TRUE(ini) << why;
  auto info = ini->connect(std::string_view{});
  ASSERT_TRUE(info) << info.error().message;
  auto lun = ini->open_lun(0);
  ASSERT_TRUE(lun) << lun.error().message;

  AckedWriter writer(*lun, 2048, 8);
  writer.start();
  std::this_thread::sleep_for(milliseconds(1000));
  // Client side down for 3 s, then (after 1 s of service) the target side.
  // The CPU each side uses in the last 2 s of its own outage (no I/O can
  // move) shows whether its event loop waits or spins: an AF_PACKET socket
  // whose interface went down reports POLLERR until the error is read.
  using hyperscsi::chaos::cpu_seconds;
  ASSERT_TRUE(net.set_up(net.ns_a(), net.iface_a(), false));
  std::this_thread::sleep_for(milliseconds(1000));
  const double client_cpu0 = cpu_seconds(::getpid());
  std::this_thread::sleep_for(milliseconds(2000));
  const double client_outage_cpu = cpu_seconds(::getpid()) - client_cpu0;
  ASSERT_TRUE(net.set_up(net.ns_a(), net.iface_a(), true));
  std::this_thread::sleep_for(milliseconds(1000));
  ASSERT_TRUE(net.set_up(net.ns_b(), net.iface_b(), false));
  std::this_thread::sleep_for(milliseconds(1000));
  const double target_cpu0 = cpu_seconds(target.pid());
  std::this_thread::sleep_for(milliseconds(2000));
  const double target_outage_cpu = cpu_seconds(target.pid()) - target_cpu0;
  ASSERT_TRUE(net.set_up(net.ns_b(), net.iface_b(), true));
  const auto up_at = Clock::now();
  const bool resumed =
      wait_until([&] { return writer.acked_since(up_at) >= 100; }, milliseconds(15000));
  const double resume_s = seconds_since(up_at);
  ASSERT_TRUE(writer.stop(milliseconds(25000))) << "writes still in flight";
  // With no I/O, both sides must go quiet afterwards too.
  const double target_idle0 = cpu_seconds(target.pid());
  const double self_idle0 = cpu_seconds(::getpid());
  std::this_thread::sleep_for(milliseconds(1000));
  const double target_idle_cpu = cpu_seconds(target.pid()) - target_idle0;
  const double client_idle_cpu = cpu_seconds(::getpid()) - self_idle0;
  const hi::Stats st = ini->stats();
  std::string first_bad;
  const uint64_t bad = resumed ? writer.verify(first_bad) : 0;
  ini->disconnect();
  ini.reset();
  const bool target_up = target.alive();
  EXPECT_EQ(target.stop(), 0) << slurp(dir.path() / "target.log");
  std::printf(
      "figures: %.1f s total; %llu writes acknowledged, %llu failed; longest stall %.2f s (each "
      "outage 3 s); 100 acks %.2f s after the last link up; resumes=%llu relogins=%llu "
      "retransmitted=%llu; 2048 blocks (8 MiB) verified; CPU in 2 s of its own outage: "
      "client %.2f s, target %.2f s; over 1 s idle afterwards: target %.2f s, client %.2f s\n",
      seconds_since(t_start), static_cast<unsigned long long>(writer.acked()),
      static_cast<unsigned long long>(writer.failed()), writer.max_stall(), resume_s,
      static_cast<unsigned long long>(st.resumes), static_cast<unsigned long long>(st.relogins),
      static_cast<unsigned long long>(st.transport.frames_retransmitted), client_outage_cpu,
      target_outage_cpu, target_idle_cpu, client_idle_cpu);
  // A spinning loop costs ~2 s in the 2 s outage (1 s idle); the ceilings
  // scale with the sanitizer build's slowdown (3x: 1.2 s, 0.6 s), as the CPU
  // ceilings of cpu_e2e_test do.
  const double f = hyperscsi::test_support::sanitizer_factor();
  EXPECT_LT(client_outage_cpu, 0.4 * f) << "the client spins while its link is down";
  EXPECT_LT(target_outage_cpu, 0.4 * f) << "the target spins while its link is down";
  EXPECT_LT(target_idle_cpu, 0.2 * f) << "the target spins after the link flap";
  EXPECT_LT(client_idle_cpu, 0.2 * f) << "the client spins after the link flap";
  EXPECT_TRUE(target_up) << slurp(dir.path() / "target.log");
  ASSERT_TRUE(resumed) << "no writes completed after the link came back; state " << st.state;
  EXPECT_EQ(writer.failed(), 0u) << writer.first_error();
  EXPECT_EQ(bad, 0u) << first_bad;
  EXPECT_GE(writer.max_stall(), 2.0) << "the outages must really have stopped the I/O";
}

std::string bench_cmd(const NetnsPair& net, int seconds) {
  return "ip netns exec " + net.ns_a() +
         " " HYPERSCSI_BENCH_BIN " --transport hyperscsi --port afpacket:" + net.iface_a() +
         " --lun 0 --workload randrw --verify --size 16M --bs 16k --qd 8 --time " +
         std::to_string(seconds) + " --json --quiet";
}

TEST(ChaosDaemons, ClientKill9SessionReclaimedAfterDeadTime) {
  SKIP_UNLESS_READY();
  const auto t_start = Clock::now();
  NetnsPair net({.mtu = 9000});
  if (!net.ok()) GTEST_SKIP() << "cannot create namespaces: " << net.error();
  TempDir dir("hs_chaos");
  ASSERT_FALSE(dir.path().empty());
  const fs::path control = dir.path() / "target.sock";
  constexpr int kDeadMs = 2000;
  Proc target, bench;
  ASSERT_TRUE(
      target.start(target_cmd(net.ns_b(), net.iface_b(), "ram:64M", control,
                              "--keepalive-ms 500 --dead-time-ms " + std::to_string(kDeadMs)),
                   dir.path() / "target.log"));
  ASSERT_TRUE(wait_until([&] { return target_answers(control); }, milliseconds(5000)))
      << slurp(dir.path() / "target.log");
  ASSERT_TRUE(bench.start(bench_cmd(net, 30), dir.path() / "bench1.log"));
  auto sessions = [&] { return json_session_count(target_stats(HYPERSCSI_TARGET_BIN, control)); };
  ASSERT_TRUE(wait_until([&] { return sessions() == 1; }, milliseconds(10000)))
      << slurp(dir.path() / "bench1.log");
  std::this_thread::sleep_for(milliseconds(1000));  // mid-workload
  bench.kill9();
  const auto killed_at = Clock::now();
  const bool reclaimed = wait_until([&] { return sessions() == 0; }, milliseconds(kDeadMs + 3000));
  const double reclaim_s = seconds_since(killed_at);
  const std::string after_kill = target_stats(HYPERSCSI_TARGET_BIN, control);

  ASSERT_TRUE(bench.start(bench_cmd(net, 2), dir.path() / "bench2.log"));
  const int bench_status = bench.wait(milliseconds(30000));
  const std::string json = slurp(dir.path() / "bench2.log");
  const std::string final_stats = target_stats(HYPERSCSI_TARGET_BIN, control);
  EXPECT_EQ(target.stop(), 0) << slurp(dir.path() / "target.log");
  std::printf(
      "figures: %.1f s total; session reclaimed %.2f s after kill -9 (dead time %d ms); "
      "new client: %lld I/Os verified\nstats after the kill: %s",
      seconds_since(t_start), reclaim_s, kDeadMs, static_cast<long long>(json_int(json, "ios")),
      after_kill.c_str());
  ASSERT_TRUE(reclaimed) << after_kill;
  EXPECT_GE(reclaim_s, kDeadMs / 1000.0 - 0.6) << "reclaimed before the dead time";
  EXPECT_GE(json_int(after_kill, "sessions_reclaimed"), 1) << after_kill;
  EXPECT_EQ(bench_status, 0) << json;
  EXPECT_EQ(json_int(json, "errors"), 0) << json;
  EXPECT_EQ(json_int(json, "verify_mismatches"), 0) << json;
  EXPECT_GT(json_int(json, "ios"), 0) << json;
  EXPECT_EQ(json_int(final_stats, "logins_accepted"), 2) << final_stats;
}

TEST(ChaosDaemons, HostileFloodNeitherCrashesTargetNorHarmsTheRealSession) {
  SKIP_UNLESS_READY();
  const auto t_start = Clock::now();
  NetnsPair net({.mtu = 9000});
  if (!net.ok()) GTEST_SKIP() << "cannot create namespaces: " << net.error();
  TempDir dir("hs_chaos");
  ASSERT_FALSE(dir.path().empty());
  const fs::path control = dir.path() / "target.sock";
  Proc target, bench;
  ASSERT_TRUE(target.start(target_cmd(net.ns_b(), net.iface_b(), "ram:64M", control),
                           dir.path() / "target.log"));
  ASSERT_TRUE(wait_until([&] { return target_answers(control); }, milliseconds(5000)))
      << slurp(dir.path() / "target.log");
  ASSERT_TRUE(bench.start(bench_cmd(net, 10), dir.path() / "bench.log"));
  std::string before;
  ASSERT_TRUE(wait_until(
      [&] {
        before = target_stats(HYPERSCSI_TARGET_BIN, control);
        return json_session_count(before) == 1;
      },
      milliseconds(10000)))
      << slurp(dir.path() / "bench.log");
  const int64_t session_id = json_int(before, "session_id");
  const int64_t epoch = json_int(before, "epoch");
  const std::string client_mac = json_str(before, "mac");
  const std::string target_mac = mac_of(net.ns_b(), net.iface_b());
  ASSERT_EQ(target_mac.size(), 17u);
  ASSERT_EQ(client_mac.size(), 17u) << before;

  const auto [sent, hostile_status] = run_command(
      "timeout 20 ip netns exec " + net.ns_a() +
      " " HYPERSCSI_HOSTILE_BIN " --port afpacket:" + net.iface_a() + " --target-mac " +
      target_mac + " --client-mac " + client_mac + " --session-id " + std::to_string(session_id) +
      " --epoch " + std::to_string(epoch) + " --count 100000 --seconds 5 --pps 12000 --seed 9");
  const std::string during = target_stats(HYPERSCSI_TARGET_BIN, control);
  const bool target_alive_after_flood = target.alive();
  const int bench_status = bench.wait(milliseconds(30000));
  const std::string json = slurp(dir.path() / "bench.log");
  const bool target_alive = target.alive();
  const std::string after = target_stats(HYPERSCSI_TARGET_BIN, control);
  EXPECT_EQ(target.stop(), 0) << slurp(dir.path() / "target.log");

  auto sent_count = [&](const std::string& key) {
    const size_t k = sent.find(" " + key + "=");
    return k == std::string::npos ? int64_t{-1} : std::stoll(sent.substr(k + key.size() + 2));
  };
  const int64_t malformed_sent = sent_count("malformed");
  const int64_t wellformed_sent = sent_count("wellformed");
  auto delta = [&](const char* key) { return json_int(during, key) - json_int(before, key); };
  const int64_t malformed_counted = delta("malformed_frames");
  const int64_t session_refused = delta("unknown_session") + delta("stale_epoch");
  // The real session's own counters (it started after `before` was taken
  // only if it was replaced, which is checked below).
  const int64_t window_refused =
      json_int(during, "out_of_window") + json_int(during, "duplicates_received") -
      json_int(before, "out_of_window") - json_int(before, "duplicates_received");
  const int64_t other_session_sent =
      sent_count("wrong_session") + sent_count("spoof_session") + sent_count("spoof_epoch");
  std::printf(
      "figures: %.1f s total; hostile: %s; target counted malformed_frames +%lld, "
      "unknown_session +%lld, stale_epoch +%lld, real session out_of_window + "
      "duplicates_received +%lld, frames_not_for_us +%lld; bench %lld I/Os verified\n"
      "stats during: %s",
      seconds_since(t_start), sent.c_str(), static_cast<long long>(malformed_counted),
      static_cast<long long>(delta("unknown_session")),
      static_cast<long long>(delta("stale_epoch")), static_cast<long long>(window_refused),
      static_cast<long long>(delta("frames_not_for_us")),
      static_cast<long long>(json_int(json, "ios")), during.c_str());
  EXPECT_EQ(hostile_status, 0) << sent;
  EXPECT_TRUE(target_alive_after_flood);
  EXPECT_TRUE(target_alive);
  EXPECT_FALSE(after.empty()) << "control socket must still answer";
  // The real session is untouched: same id and epoch, no second session.
  EXPECT_EQ(json_session_count(during), 1) << during;
  EXPECT_EQ(json_int(during, "session_id"), session_id) << during;
  EXPECT_EQ(json_int(during, "epoch"), epoch) << during;
  // The workload passed.
  EXPECT_EQ(bench_status, 0) << json;
  EXPECT_EQ(json_int(json, "errors"), 0) << json;
  EXPECT_EQ(json_int(json, "verify_mismatches"), 0) << json;
  EXPECT_GT(json_int(json, "ios"), 0) << json;
  // What was dropped is counted: at least 3/4 of each class (under the flood
  // the target's receive ring overflows now and then and the kernel drops
  // frames before the target sees them: up to 10% at 25k frames/s here).
  ASSERT_GT(malformed_sent, 10000) << sent;
  EXPECT_GE(malformed_counted, malformed_sent * 3 / 4) << during;
  EXPECT_LE(malformed_counted, malformed_sent) << during;
  ASSERT_GT(wellformed_sent, 10000) << sent;
  EXPECT_GE(session_refused, other_session_sent * 3 / 4) << during;
  EXPECT_LE(session_refused, other_session_sent) << during;
  EXPECT_GE(window_refused, sent_count("spoof_seq") * 3 / 4) << during;
}

}  // namespace

// The initiator library against the real target engine (hyperscsi_target_engine
// with a file-backed scsi::LogicalUnit) over an impaired MemLink: random I/O
// against a model, and a target restart (engine destroyed and recreated on
// the same link end and the same file) in the middle of a write stream.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/store/block_store.h"

namespace hyperscsi::initiator {
namespace {

using namespace std::chrono_literals;

// Lends a shared port to an engine, so a new engine can take the same link end.
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

// What the initiator logged through Options::log, thread-safe.
struct LogCapture {
  std::mutex m;
  std::vector<std::string> lines;
  std::function<void(LogLevel, const std::string&)> sink() {
    return [this](LogLevel, const std::string& text) {
      std::lock_guard l(m);
      lines.push_back(text);
    };
  }
  bool has(const std::string& part) {
    std::lock_guard l(m);
    for (const auto& t : lines)
      if (t.find(part) != std::string::npos) return true;
    return false;
  }
  std::string all() {
    std::lock_guard l(m);
    std::string out;
    for (const auto& t : lines) out += t + "\n";
    return out;
  }
};

class EngineLab {
 public:
  // `store`: empty for the lab's file, else a store spec ("ram:16M", a path).
  explicit EngineLab(io::Impairment imp, Options o = {}, std::string store = {},
                     engine::EngineConfig ecfg = {})
      : store_(std::move(store)), engine_config_(std::move(ecfg)) {
    path_ = std::filesystem::temp_directory_path() /
            ("hs-initiator-engine-" + std::to_string(::getpid()) + ".img");
    io::MemLinkConfig cfg;
    cfg.a_to_b = imp;
    cfg.b_to_a = imp;
    cfg.seed = 11;
    auto link = io::make_mem_link(cfg);
    EXPECT_TRUE(link.ok());
    target_port_ = std::shared_ptr<io::Port>(std::move(link->b));
    o.seed = 5;
    o.discovery_window = 300ms;
    o.initiator_name = "engine-test";
    auto ini = Initiator::create(std::move(link->a), o);
    EXPECT_TRUE(ini.ok());
    initiator = std::move(ini.value());
    start_engine();
  }
  ~EngineLab() {
    initiator.reset();
    engine_.reset();
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }

  void start_engine() {
    engine::EngineConfig cfg = engine_config_;
    cfg.target_name = "engine";
    cfg.seed = ++generation_ * 7919;
    std::vector<std::unique_ptr<io::Port>> ports;
    ports.push_back(std::make_unique<ProxyPort>(target_port_));
    engine_ = std::make_unique<engine::TargetEngine>(cfg, std::move(ports));
    store::StoreOptions so;
    so.create_size = 16u << 20;
    auto st = store::open_store(store_.empty() ? path_.string() : store_, so);
    ASSERT_TRUE(st.ok()) << st.error().message;
    hyperscsi::scsi::LuConfig lc;
    lc.target_name = "engine";
    engine::LunDefinition def;
    def.lun = 0;
    def.unit = std::make_unique<hyperscsi::scsi::LogicalUnit>(lc, std::move(st.value()));
    ASSERT_TRUE(engine_->add_lun(std::move(def)).ok());
    ASSERT_TRUE(engine_->start().ok());
  }

  // Like a kill -9 and restart: no drain, sessions and reply caches lost; the file stays.
  void restart_engine() {
    if (engine_) engine_->stop();
    engine_.reset();
    start_engine();
  }
  // The same, with another store behind LUN 0.
  void restart_engine(std::string store) {
    store_ = std::move(store);
    restart_engine();
  }
  void stop_engine() {
    engine_->stop();
    engine_.reset();
  }
  // What a SIGHUP with a grown file does: the LUN reopened on the same
  // (grown) file, its sessions told CAPACITY DATA HAS CHANGED.
  void reopen_grown(uint64_t new_size) {
    auto usage = engine_->lun_usage(0);
    ASSERT_TRUE(usage.has_value());
    ASSERT_TRUE(engine_->remove_lun(0, std::chrono::seconds(5)));
    std::filesystem::resize_file(path_, new_size);
    auto st = store::open_store(path_.string(), {});
    ASSERT_TRUE(st.ok()) << st.error().message;
    engine::LunDefinition def;
    def.lun = 0;
    def.unit = std::make_unique<hyperscsi::scsi::LogicalUnit>(hyperscsi::scsi::LuConfig{},
                                                              std::move(st.value()));
    def.unit->succeed(usage->nexuses, usage->owner, hyperscsi::scsi::Succession::kSameData, true);
    ASSERT_TRUE(engine_->add_lun(std::move(def)).ok());
  }

  std::unique_ptr<Initiator> initiator;

 private:
  std::filesystem::path path_;
  std::string store_;
  engine::EngineConfig engine_config_;
  std::shared_ptr<io::Port> target_port_;
  std::unique_ptr<engine::TargetEngine> engine_;
  uint64_t generation_ = 0;
};

std::vector<uint8_t> pattern(size_t bytes, uint32_t seed) {
  std::vector<uint8_t> v(bytes);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(EngineE2eTest, RandomIoOverLossyLinkMatchesModel) {
  io::Impairment imp;
  imp.loss = 0.02;
  imp.duplicate = 0.02;
  imp.reorder = 0.05;
  EngineLab lab(imp);
  ASSERT_TRUE(lab.initiator->connect("engine").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  EXPECT_EQ(lun->size_bytes(), 16u << 20);
  auto inq = lun->inquiry();
  ASSERT_TRUE(inq.ok()) << inq.error().message;
  EXPECT_EQ(inq->vendor, "HYPERSCS");

  const uint64_t blocks = lun->capacity().num_blocks;
  const uint32_t bs = lun->capacity().block_size;
  std::vector<uint8_t> model(blocks * bs, 0);
  ASSERT_TRUE(lun->write_sync(0, model).ok());  // a known start (the file may be reused)
  std::mt19937_64 rng(3);
  constexpr uint32_t kSlots = 16;
  const uint64_t slot = blocks / kSlots;
  uint64_t bad = 0;
  std::mutex m;
  for (int round = 0; round < 10; ++round) {
    std::condition_variable cv;
    uint32_t left = kSlots;
    for (uint32_t s = 0; s < kSlots; ++s) {
      const uint32_t n = 1 + static_cast<uint32_t>(rng() % slot);  // up to 1 MiB
      const uint64_t lba = s * slot + rng() % (slot - n + 1);
      auto done = [&](bool ok) {
        std::lock_guard l(m);
        if (!ok) ++bad;
        --left;
        cv.notify_all();
      };
      if (rng() % 2) {
        auto data = pattern(size_t{n} * bs, static_cast<uint32_t>(rng()));
        std::copy(data.begin(), data.end(), model.begin() + static_cast<ptrdiff_t>(lba * bs));
        lun->write(lba, data, [done](CommandResult&& r) { done(r.good()); });
      } else {
        std::vector<uint8_t> expect(model.begin() + static_cast<ptrdiff_t>(lba * bs),
                                    model.begin() + static_cast<ptrdiff_t>((lba + n) * bs));
        lun->read(lba, n, [done, expect = std::move(expect)](CommandResult&& r) {
          done(r.good() && r.data_in == expect);
        });
      }
    }
    std::unique_lock l(m);
    ASSERT_TRUE(cv.wait_for(l, 120s, [&] { return left == 0; })) << "round " << round;
  }
  EXPECT_EQ(bad, 0u);
  auto all = lun->read_sync(0, static_cast<uint32_t>(blocks));
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_TRUE(*all == model);
  EXPECT_TRUE(lun->flush_sync().ok());
  EXPECT_TRUE(lun->unmap_sync(0, 8).ok());
}

TEST(EngineE2eTest, EngineRestartMidWriteStreamLosesNoAcknowledgedWrite) {
  io::Impairment imp;
  imp.loss = 0.01;
  imp.reorder = 0.02;
  EngineLab lab(imp);
  ASSERT_TRUE(lab.initiator->connect("engine").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;

  constexpr uint32_t kWrites = 300, kBlocks = 16;
  std::mutex m;
  std::condition_variable cv;
  std::map<uint32_t, bool> acked;
  uint32_t in_flight = 0, done = 0, failed = 0;
  std::vector<std::vector<uint8_t>> data(kWrites);
  for (uint32_t i = 0; i < kWrites; ++i) {
    data[i] = pattern(kBlocks * 512, i + 17);
    {
      std::unique_lock l(m);
      ASSERT_TRUE(cv.wait_for(l, 60s, [&] { return in_flight < 16; }));
      ++in_flight;
    }
    lun->write(uint64_t{i} * kBlocks, data[i], [&, i](CommandResult&& r) {
      std::lock_guard l(m);
      --in_flight;
      ++done;
      if (r.good())
        acked[i] = true;
      else
        ++failed;
      cv.notify_all();
    });
    if (i == kWrites / 2) lab.restart_engine();
  }
  {
    std::unique_lock l(m);
    ASSERT_TRUE(cv.wait_for(l, 120s, [&] { return done == kWrites; }));
  }
  EXPECT_EQ(failed, 0u);
  const Stats st = lab.initiator->stats();
  EXPECT_GE(st.relogins + st.resumes, 1u);
  auto back = lun->read_sync(0, kWrites * kBlocks);
  ASSERT_TRUE(back.ok()) << back.error().message;
  for (const auto& [i, ok] : acked) {
    const auto first = back->begin() + static_cast<ptrdiff_t>(size_t{i} * kBlocks * 512);
    EXPECT_TRUE(std::equal(data[i].begin(), data[i].end(), first)) << "write " << i << " lost";
  }
}

// A RAM target restarts under an attached LUN: the client logs in again,
// reads the LUN's identity, finds another disk and fails the LUN's I/O
// instead of serving the blank disk; nothing it had queued reaches the new
// disk. A new attach (connect + open_lun) then sees the new, empty disk.
TEST(EngineE2eTest, RamTargetRestartFencesTheLunInsteadOfServingABlankDisk) {
  LogCapture logs;
  Options o;
  o.log = logs.sink();
  EngineLab lab({}, o, "ram:16M");
  ASSERT_TRUE(lab.initiator->connect("engine").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  const std::string id = lab.initiator->lun_identity(0);
  EXPECT_EQ(id.rfind("uuid:", 0), 0u) << id;
  const auto data = pattern(64 * 512, 9);
  ASSERT_TRUE(lun->write_sync(0, data).ok());
  auto before = lun->read_sync(0, 64);
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(*before, data);

  lab.restart_engine("ram:16M");  // a new RAM disk behind LUN 0
  auto after = lun->read_sync(0, 64);
  ASSERT_FALSE(after.ok()) << "read the blank disk as data";
  EXPECT_EQ(after.error().kind, ErrorKind::kLunAbsent);
  EXPECT_NE(after.error().message.find("is another disk after the re-login"), std::string::npos)
      << after.error().message;
  auto write = lun->write_sync(100, pattern(512, 3));
  ASSERT_FALSE(write.ok());
  EXPECT_NE(write.error().message.find("LUN fenced"), std::string::npos) << write.error().message;
  const Stats st = lab.initiator->stats();
  EXPECT_EQ(st.identity_mismatches, 1u);
  EXPECT_EQ(st.relogins, 1u);
  EXPECT_GE(st.fenced, 2u);
  EXPECT_GE(st.failed, st.fenced);
  EXPECT_TRUE(logs.has("lost")) << logs.all();
  EXPECT_TRUE(logs.has("re-login started")) << logs.all();
  EXPECT_TRUE(logs.has("logged in again")) << logs.all();
  EXPECT_TRUE(logs.has("identity mismatch: LUN 0 of target 'engine'")) << logs.all();

  // Attaching again is how to use the new disk: it is empty (the fenced
  // write never reached it).
  ASSERT_TRUE(lab.initiator->connect("engine").ok());
  auto fresh = lab.initiator->open_lun(0);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  EXPECT_NE(lab.initiator->lun_identity(0), id);
  auto blank = fresh->read_sync(0, 128);
  ASSERT_TRUE(blank.ok()) << blank.error().message;
  EXPECT_TRUE(std::all_of(blank->begin(), blank->end(), [](uint8_t b) { return b == 0; }));
}

// A file target restarted with another file behind LUN 0: refused the same
// way; restarted with the same file: I/O goes on.
TEST(EngineE2eTest, AnotherFileBehindLunZeroIsRefusedTheSameFileResumes) {
  const auto other = std::filesystem::temp_directory_path() /
                     ("hs-initiator-other-" + std::to_string(::getpid()) + ".img");
  EngineLab lab({});
  ASSERT_TRUE(lab.initiator->connect("engine").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  const auto data = pattern(8 * 512, 5);
  ASSERT_TRUE(lun->write_sync(0, data).ok());

  lab.restart_engine();  // the same file: the same disk
  auto same = lun->read_sync(0, 8);
  ASSERT_TRUE(same.ok()) << same.error().message;
  EXPECT_EQ(*same, data);

  lab.restart_engine(other.string());  // another file, same size, same LUN number
  auto refused = lun->read_sync(0, 8);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("is another disk"), std::string::npos)
      << refused.error().message;
  lab.initiator.reset();
  lab.stop_engine();
  std::filesystem::remove(other);
}

// The LUN grows under the client: the unit attention is noticed and logged,
// the I/O goes on.
TEST(EngineE2eTest, CapacityChangeIsNoticedAndLogged) {
  LogCapture logs;
  Options o;
  o.log = logs.sink();
  EngineLab lab({}, o);
  ASSERT_TRUE(lab.initiator->connect("engine").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  ASSERT_TRUE(lun->read_sync(0, 8).ok());
  lab.reopen_grown(32u << 20);
  auto r = lun->read_sync(0, 8);
  ASSERT_TRUE(r.ok()) << r.error().message;  // retried after the unit attention
  EXPECT_TRUE(logs.has("LUN 0 of target 'engine'") && logs.has("capacity changed")) << logs.all();
  EXPECT_GE(lab.initiator->stats().retried, 1u);
}

// The target goes away: the client's log says so, counts the re-login
// attempts and every command that failed back, and says when it is back.
TEST(EngineE2eTest, OutageIsLoggedAndEveryFailedCommandCounted) {
  LogCapture logs;
  Options o;
  o.log = logs.sink();
  o.dead_time = 1500ms;  // the client's dead time
  o.login_attempts = 2;  // a re-login attempt fails within about 300 ms
  o.login_timeout = 100ms;
  o.reconnect_backoff_max = 300ms;
  engine::EngineConfig ecfg;
  ecfg.limits.keepalive_ms = 100;
  ecfg.limits.dead_time_ms = 500;  // the session timeout
  EngineLab lab({}, o, "", ecfg);
  ASSERT_TRUE(lab.initiator->connect("engine").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  ASSERT_TRUE(lun->read_sync(0, 8).ok());
  const Stats before = lab.initiator->stats();

  lab.stop_engine();
  const auto data = pattern(4096, 1);
  auto w = std::async(std::launch::async, [&] { return lun->write_sync(8, data); });
  auto r1 = lun->read_sync(0, 8);
  auto r2 = w.get();
  ASSERT_FALSE(r1.ok());
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r1.error().message.find("dead time expired"), std::string::npos) << r1.error().message;
  std::this_thread::sleep_for(1200ms);  // a second line of the rate-limited log
  const Stats st = lab.initiator->stats();
  EXPECT_EQ(st.failed - before.failed, 2u);
  EXPECT_EQ(st.timed_out - before.timed_out, 2u);
  EXPECT_GE(st.relogin_failures, 1u);
  EXPECT_TRUE(logs.has("target 'engine'")) << logs.all();
  EXPECT_TRUE(logs.has(" lost: ")) << logs.all();
  EXPECT_TRUE(logs.has("re-login started")) << logs.all();
  EXPECT_TRUE(logs.has("re-login to target 'engine'")) << logs.all();
  EXPECT_TRUE(logs.has("timed out")) << logs.all();

  lab.restart_engine();
  bool back = false;
  for (int i = 0; i < 100 && !back; ++i) {
    back = lun->read_sync(0, 8).ok();
    if (!back) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(back);
  EXPECT_TRUE(logs.has("logged in again to target 'engine'")) << logs.all();
  EXPECT_TRUE(logs.has("LUN 0 of target 'engine'") && logs.has("is the same disk")) << logs.all();
  EXPECT_EQ(lab.initiator->stats().identity_mismatches, 0u);
  if (std::getenv("HS_SHOW_LOG")) std::printf("%s", logs.all().c_str());
}

}  // namespace
}  // namespace hyperscsi::initiator

// The initiator library against the real target engine (hyperscsi_target_engine
// with a file-backed scsi::LogicalUnit) over an impaired MemLink: random I/O
// against a model, and a target restart (engine destroyed and recreated on
// the same link end and the same file) in the middle of a write stream.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

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

class EngineLab {
 public:
  explicit EngineLab(io::Impairment imp) {
    path_ = std::filesystem::temp_directory_path() /
            ("hs-initiator-engine-" + std::to_string(::getpid()) + ".img");
    io::MemLinkConfig cfg;
    cfg.a_to_b = imp;
    cfg.b_to_a = imp;
    cfg.seed = 11;
    auto link = io::make_mem_link(cfg);
    EXPECT_TRUE(link.ok());
    target_port_ = std::shared_ptr<io::Port>(std::move(link->b));
    Options o;
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
    engine::EngineConfig cfg;
    cfg.target_name = "engine";
    cfg.seed = ++generation_ * 7919;
    std::vector<std::unique_ptr<io::Port>> ports;
    ports.push_back(std::make_unique<ProxyPort>(target_port_));
    engine_ = std::make_unique<engine::TargetEngine>(cfg, std::move(ports));
    store::StoreOptions so;
    so.create_size = 16u << 20;
    auto st = store::open_store(path_.string(), so);
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
    engine_->stop();
    engine_.reset();
    start_engine();
  }

  std::unique_ptr<Initiator> initiator;

 private:
  std::filesystem::path path_;
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

}  // namespace
}  // namespace hyperscsi::initiator

// ByteDevice and Lun::read_into against the real target engine over a
// MemLink (no root): reads straight into the caller's buffer, split at a
// small negotiated maximum; the asynchronous byte API (aligned, unaligned,
// errors); read-modify-writes racing aligned writes of the same blocks from
// many threads; discard; and a write-protected LUN learnt from MODE SENSE.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/initiator/byte_device.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/store/block_store.h"

namespace hyperscsi::initiator {
namespace {

using namespace std::chrono_literals;

struct LabConfig {
  bool read_only = false;
  uint32_t max_transfer = (1u << 20) + 4096;
  uint64_t size = 8u << 20;
  uint64_t max_write_same_blocks = 0x400000;
};

// One engine with one file-backed LUN and one connected initiator.
class Lab {
 public:
  explicit Lab(LabConfig c) {
    path_ =
        std::filesystem::temp_directory_path() / ("hs-byte-device-" + std::to_string(::getpid()) +
                                                  "-" + std::to_string(++counter_) + ".img");
    auto link = io::make_mem_link(io::MemLinkConfig{});
    EXPECT_TRUE(link.ok());
    engine::EngineConfig cfg;
    cfg.target_name = "bdev";
    std::vector<std::unique_ptr<io::Port>> ports;
    ports.push_back(std::move(link->b));
    engine_ = std::make_unique<engine::TargetEngine>(cfg, std::move(ports));
    store::StoreOptions so;
    so.create_size = c.size;
    if (c.read_only) {  // create it writable first, then reopen read-only
      auto w = store::open_store(path_.string(), so);
      EXPECT_TRUE(w.ok());
    }
    so.read_only = c.read_only;
    auto st = store::open_store(path_.string(), so);
    EXPECT_TRUE(st.ok()) << st.error().message;
    hyperscsi::scsi::LuConfig lc;
    lc.target_name = "bdev";
    lc.max_write_same_blocks = c.max_write_same_blocks;
    engine::LunDefinition def;
    def.lun = 0;
    def.unit = std::make_unique<hyperscsi::scsi::LogicalUnit>(lc, std::move(st.value()));
    EXPECT_TRUE(engine_->add_lun(std::move(def)).ok());
    EXPECT_TRUE(engine_->start().ok());
    Options o;
    o.seed = 9;
    o.discovery_window = 200ms;
    o.max_transfer = c.max_transfer;
    auto ini = Initiator::create(std::move(link->a), o);
    EXPECT_TRUE(ini.ok());
    initiator = std::move(ini.value());
    EXPECT_TRUE(initiator->connect("bdev").ok());
  }
  ~Lab() {
    initiator.reset();
    engine_.reset();
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }

  std::unique_ptr<Initiator> initiator;

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
  std::unique_ptr<engine::TargetEngine> engine_;
};

std::vector<uint8_t> pattern(size_t bytes, uint32_t seed) {
  std::vector<uint8_t> v(bytes);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(ByteDeviceTest, ReadIntoLandsInTheCallersBufferAlsoWhenSplit) {
  Lab lab({.max_transfer = 64 * 1024 + 4096});  // 64 KiB per command
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  EXPECT_FALSE(lun->read_only());
  EXPECT_EQ(lun->max_data_per_command(), 64u * 1024);
  const auto data = pattern(300 * 1024, 1);
  ASSERT_TRUE(lun->write_sync(8, data).ok());

  std::vector<uint8_t> out(data.size(), 0xee);
  std::promise<CommandResult> p;
  lun->read_into(8, static_cast<uint32_t>(data.size() / 512), out,
                 [&p](CommandResult&& r) { p.set_value(std::move(r)); });
  CommandResult r = p.get_future().get();
  ASSERT_TRUE(r.good()) << r.describe();
  EXPECT_TRUE(r.data_in.empty());  // nothing copied into the result
  EXPECT_TRUE(out == data);

  // A buffer of the wrong size is refused at once, nothing is sent.
  std::promise<CommandResult> bad;
  lun->read_into(0, 2, std::span<uint8_t>(out).first(512),
                 [&bad](CommandResult&& res) { bad.set_value(std::move(res)); });
  EXPECT_EQ(bad.get_future().get().error, CompletionError::kInvalid);
}

TEST(ByteDeviceTest, AsyncReadsAndWritesAlignedAndUnaligned) {
  Lab lab({});
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  EXPECT_EQ(lun->max_data_per_command(), 1u << 20);  // a 1 MiB request is one command
  ByteDevice dev(*lun);
  const auto a = pattern(1 << 20, 2);
  std::promise<Status<Error>> w;
  dev.write(a, 4096, false, [&w](Status<Error> st) { w.set_value(std::move(st)); });
  ASSERT_TRUE(w.get_future().get().ok());
  // Unaligned read: the slice of the covering blocks.
  std::vector<uint8_t> part(1000);
  std::promise<Status<Error>> rd;
  dev.read(part, 4096 + 777, [&rd](Status<Error> st) { rd.set_value(std::move(st)); });
  ASSERT_TRUE(rd.get_future().get().ok());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), a.begin() + 777));
  // Unaligned write (read-modify-write), FUA, then read back around it.
  const auto b = pattern(3000, 3);
  ASSERT_TRUE(dev.pwrite(b, 4096 + 1001, true).ok());
  std::vector<uint8_t> back(8192);
  ASSERT_TRUE(dev.pread(back, 4096).ok());
  auto expect = std::vector<uint8_t>(a.begin(), a.begin() + 8192);
  std::copy(b.begin(), b.end(), expect.begin() + 1001);
  EXPECT_TRUE(back == expect);
  // Out of range: EINVAL, on the calling thread.
  auto st = dev.pread(back, dev.size() - 100);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(ByteDevice::errno_of(st.error()), EINVAL);
  EXPECT_TRUE(dev.flush().ok());
}

// Read-modify-writes of slots inside the same blocks, from several threads,
// with aligned writes of neighbouring blocks: every slot's last value holds
// (a read-modify-write that raced another write would lose one).
TEST(ByteDeviceTest, ReadModifyWritesNeverLoseAnUpdate) {
  Lab lab({});
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  ByteDevice dev(*lun);
  std::vector<uint8_t> zeros(64 * 1024, 0);
  ASSERT_TRUE(dev.pwrite(zeros, 0).ok());
  constexpr int kThreads = 4, kRounds = 40, kSlot = 100;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        // Slot t of blocks 0..3 (unaligned), then an aligned write of block 8+t.
        std::vector<uint8_t> v(kSlot, static_cast<uint8_t>(i + 1));
        if (!dev.pwrite(v, static_cast<uint64_t>(t) * kSlot + 7).ok()) ++failures;
        std::vector<uint8_t> blk(512, static_cast<uint8_t>(i + 1));
        std::promise<Status<Error>> p;
        dev.write(blk, (8 + static_cast<uint64_t>(t)) * 512, false,
                  [&p](Status<Error> st) { p.set_value(std::move(st)); });
        if (!p.get_future().get().ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  std::vector<uint8_t> back(16 * 512);
  ASSERT_TRUE(dev.pread(back, 0).ok());
  for (int t = 0; t < kThreads; ++t) {
    for (int k = 0; k < kSlot; ++k)
      ASSERT_EQ(back[static_cast<size_t>(t * kSlot + 7 + k)], kRounds) << "slot " << t;
    EXPECT_EQ(back[static_cast<size_t>((8 + t) * 512)], kRounds);
  }
  EXPECT_EQ(back[6], 0);
}

TEST(ByteDeviceTest, DiscardZeroesThePunchedRange) {
  Lab lab({});
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  ByteDevice dev(*lun);
  const auto a = pattern(16384, 4);
  ASSERT_TRUE(dev.pwrite(a, 0).ok());
  ASSERT_TRUE(dev.discard(1000, 10000).ok());  // partial edges and whole blocks
  std::vector<uint8_t> back(16384);
  ASSERT_TRUE(dev.pread(back, 0).ok());
  for (size_t i = 0; i < back.size(); ++i) {
    const bool punched = i >= 1000 && i < 11000;
    ASSERT_EQ(back[i], punched ? 0 : a[i]) << "byte " << i;
  }
}

// Zeroing a range: WRITE SAME for the whole blocks (one block of data on
// the wire), writes for the partial edges; a target that refuses the WRITE
// SAME (here: longer than its limit) gets writes of zeros instead.
TEST(ByteDeviceTest, WriteZeroesUsesWriteSameAndFallsBackToWrites) {
  for (const uint64_t limit : {uint64_t{0x400000}, uint64_t{8}}) {
    SCOPED_TRACE("max_write_same_blocks " + std::to_string(limit));
    Lab lab({.max_write_same_blocks = limit});
    auto lun = lab.initiator->open_lun(0);
    ASSERT_TRUE(lun.ok()) << lun.error().message;
    ByteDevice dev(*lun);
    const auto a = pattern(3u << 20, 6);
    ASSERT_TRUE(dev.pwrite(a, 0).ok());
    const uint64_t out0 = lab.initiator->stats().bytes_out;
    const uint64_t off = 1000, len = (2u << 20) + 5000;  // > 1 MiB: several fallback writes
    ASSERT_TRUE(dev.write_zeroes(off, len).ok());
    const uint64_t sent = lab.initiator->stats().bytes_out - out0;
    if (limit == 8)
      EXPECT_GE(sent, len - 1024) << "writes of zeros";
    else
      EXPECT_LT(sent, 8192u) << "WRITE SAME sends one block, the edges one block each";
    std::vector<uint8_t> back(a.size());
    ASSERT_TRUE(dev.pread(back, 0).ok());
    for (size_t i = 0; i < back.size(); ++i) {
      const bool zeroed = i >= off && i < off + len;
      ASSERT_EQ(back[i], zeroed ? 0 : a[i]) << "byte " << i;
    }
    EXPECT_FALSE(dev.write_zeroes(dev.size() - 512, 1024).ok()) << "beyond the end";
  }
}

TEST(ByteDeviceTest, WriteProtectedLunIsReadOnlyAndWritesFailWithErofs) {
  Lab lab({.read_only = true});
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  EXPECT_TRUE(lun->read_only());
  ByteDevice dev(*lun);
  EXPECT_TRUE(dev.read_only());
  std::vector<uint8_t> buf(4096);
  EXPECT_TRUE(dev.pread(buf, 0).ok());
  auto st = dev.pwrite(buf, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(ByteDevice::errno_of(st.error()), EROFS) << st.error().message;
}

}  // namespace
}  // namespace hyperscsi::initiator

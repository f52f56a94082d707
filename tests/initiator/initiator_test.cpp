// End-to-end tests of the initiator library over an impaired MemLink against
// the in-test MiniTarget: random I/O checked against a model of the disk,
// recovery across a target restart, dead-time expiry and typed setup errors.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "hyperscsi/initiator/byte_device.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/io/mem_link.h"
#include "mini_target.h"

namespace hyperscsi::initiator {
namespace {

using namespace std::chrono_literals;

struct Lab {
  std::unique_ptr<test::MiniTarget> target;
  std::unique_ptr<Initiator> initiator;
  io::MemPort* initiator_port = nullptr;
  io::MemPort* target_port = nullptr;
};

Lab make_lab(io::Impairment imp, Options options = {}, test::MiniTargetConfig tc = {},
             size_t mtu_a = 1500, size_t mtu_b = 1500) {
  io::MemLinkConfig cfg;
  cfg.name = "itest" + std::to_string(::getpid());
  cfg.a_to_b = imp;
  cfg.b_to_a = imp;
  cfg.mtu_a = mtu_a;
  cfg.mtu_b = mtu_b;
  cfg.seed = 7;
  auto link = io::make_mem_link(cfg);
  EXPECT_TRUE(link.ok());
  Lab lab;
  lab.initiator_port = link->a.get();
  lab.target_port = link->b.get();
  lab.target = std::make_unique<test::MiniTarget>(std::move(link->b), tc);
  options.seed = 42;
  options.discovery_window = 300ms;
  auto ini = Initiator::create(std::move(link->a), options);
  EXPECT_TRUE(ini.ok());
  lab.initiator = std::move(ini.value());
  return lab;
}

std::vector<uint8_t> pattern(size_t bytes, uint32_t seed) {
  std::vector<uint8_t> v(bytes);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Waits for `count` completions, bounded in time.
class Counter {
 public:
  void done() {
    std::lock_guard l(m_);
    ++n_;
    cv_.notify_all();
  }
  bool wait_for(size_t count, std::chrono::seconds limit) {
    std::unique_lock l(m_);
    return cv_.wait_for(l, limit, [&] { return n_ >= count; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  size_t n_ = 0;
};

TEST(InitiatorTest, DiscoverConnectInquiryCapacity) {
  Lab lab = make_lab({});
  auto targets = lab.initiator->discover();
  ASSERT_TRUE(targets.ok()) << targets.error().message;
  ASSERT_EQ(targets->size(), 1u);
  EXPECT_EQ(targets->front().name, "mini");
  ASSERT_EQ(targets->front().luns.size(), 1u);
  EXPECT_EQ(targets->front().luns[0].num_blocks, 16384u);

  auto st = lab.initiator->connect(targets->front());
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  // READ CAPACITY(16) is refused by the mini target: this came from the (10) fallback.
  EXPECT_EQ(lun->capacity().num_blocks, 16384u);
  EXPECT_EQ(lun->capacity().block_size, 512u);
  auto inq = lun->inquiry();
  ASSERT_TRUE(inq.ok()) << inq.error().message;
  EXPECT_EQ(inq->vendor, "HSCSITST");
  EXPECT_EQ(inq->product, "MiniTarget RAM");

  // A raw CDB the target does not know: CHECK CONDITION decoded in words.
  ScsiCommand bad;
  bad.cdb = {0xd9, 0, 0, 0, 0, 0};
  CommandResult r = lab.initiator->execute(bad).get();
  EXPECT_EQ(r.error, CompletionError::kNone);
  EXPECT_EQ(r.status, 0x02);
  EXPECT_EQ(r.describe(), "CHECK CONDITION: ILLEGAL REQUEST: INVALID COMMAND OPERATION CODE");

  // Out of range.
  auto oor = lun->read_sync(16384, 1);
  ASSERT_FALSE(oor.ok());
  EXPECT_EQ(oor.error().kind, ErrorKind::kScsi);
  EXPECT_NE(oor.error().message.find("LOGICAL BLOCK ADDRESS OUT OF RANGE"), std::string::npos);

  // An orderly end.
  lab.initiator->disconnect();
  EXPECT_EQ(lab.initiator->stats().state, "closed");
}

// Random concurrent reads and writes in disjoint slots over a lossy,
// reordering, duplicating link, with transfers split at a small maximum.
void random_io_with_loss_matches_model(std::chrono::microseconds busy_poll) {
  io::Impairment imp;
  imp.loss = 0.02;
  imp.duplicate = 0.02;
  imp.reorder = 0.05;
  Options opt;
  opt.max_transfer = 64 * 1024 + 4096;  // 60 KiB of data per command: forces splitting
  opt.busy_poll = busy_poll;
  Lab lab = make_lab(imp, opt);
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;
  EXPECT_EQ(lab.initiator->max_data_per_command(), 64u * 1024);  // 300 blocks need 3 commands
  // Setup commands the mini target refuses (READ CAPACITY(16)) count as failed.
  const uint64_t failed_at_open = lab.initiator->stats().failed;

  const uint32_t bs = 512;
  const uint64_t blocks = lun->capacity().num_blocks;
  std::vector<uint8_t> model(blocks * bs, 0);
  constexpr uint32_t kSlots = 16;
  const uint64_t slot_blocks = blocks / kSlots;
  std::mt19937_64 rng(99);
  uint64_t mismatches = 0, failures = 0;
  for (int round = 0; round < 12; ++round) {
    Counter counter;
    std::mutex m;
    std::vector<std::function<void()>> checks;
    for (uint32_t s = 0; s < kSlots; ++s) {
      const uint32_t n = 1 + static_cast<uint32_t>(rng() % std::min<uint64_t>(slot_blocks, 300));
      const uint64_t lba = s * slot_blocks + rng() % (slot_blocks - n + 1);
      if (rng() % 2 == 0) {
        auto data = pattern(size_t{n} * bs, static_cast<uint32_t>(rng()));
        std::copy(data.begin(), data.end(), model.begin() + static_cast<ptrdiff_t>(lba * bs));
        lun->write(lba, data, [&](CommandResult&& r) {
          std::lock_guard l(m);
          if (!r.good()) ++failures;
          counter.done();
        });
      } else {
        std::vector<uint8_t> expect(model.begin() + static_cast<ptrdiff_t>(lba * bs),
                                    model.begin() + static_cast<ptrdiff_t>((lba + n) * bs));
        lun->read(lba, n, [&, expect = std::move(expect)](CommandResult&& r) {
          std::lock_guard l(m);
          if (!r.good())
            ++failures;
          else if (r.data_in != expect)
            ++mismatches;
          counter.done();
        });
      }
    }
    ASSERT_TRUE(counter.wait_for(kSlots, 60s)) << "round " << round << " did not complete";
  }
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(mismatches, 0u);
  auto all = lun->read_sync(0, static_cast<uint32_t>(blocks));
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_TRUE(*all == model);
  EXPECT_TRUE(lab.target->snapshot() == model);
  const Stats st = lab.initiator->stats();
  EXPECT_GT(st.transport.frames_retransmitted, 0u);  // the impairments really bit
  EXPECT_EQ(st.failed, failed_at_open);
}

TEST(InitiatorTest, RandomIoWithLossReorderDuplicationMatchesModel) {
  random_io_with_loss_matches_model(std::chrono::microseconds(0));
}

// The I/O thread polls before it sleeps: timers, retransmission and
// completions behave the same.
TEST(InitiatorTest, RandomIoWithLossMatchesModelWhileBusyPolling) {
  random_io_with_loss_matches_model(std::chrono::microseconds(200));
}

// The target restarts (loses every session) during a stream of writes: the
// initiator logs in again, reissues what was unanswered, and every write it
// acknowledged reads back.
TEST(InitiatorTest, TargetRestartMidWriteStreamLosesNoAcknowledgedWrite) {
  io::Impairment imp;
  imp.loss = 0.01;
  imp.reorder = 0.02;
  Lab lab = make_lab(imp);
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;

  constexpr uint32_t kWrites = 400;
  constexpr uint32_t kBlocks = 8;  // 4 KiB each, disjoint
  std::mutex m;
  std::condition_variable cv;
  std::map<uint32_t, bool> acked;
  uint32_t in_flight = 0, done = 0, failed = 0;
  std::vector<std::vector<uint8_t>> data(kWrites);
  for (uint32_t i = 0; i < kWrites; ++i) {
    data[i] = pattern(kBlocks * 512, i + 1);
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
    if (i == kWrites / 3 || i == 2 * kWrites / 3) lab.target->restart();
  }
  {
    std::unique_lock l(m);
    ASSERT_TRUE(cv.wait_for(l, 90s, [&] { return done == kWrites; }));
  }
  EXPECT_EQ(failed, 0u);
  EXPECT_EQ(acked.size(), kWrites);
  const Stats st = lab.initiator->stats();
  EXPECT_GE(st.resumes + st.relogins, 1u) << "the restart was not noticed";
  EXPECT_EQ(st.state, "established");
  auto back = lun->read_sync(0, kWrites * kBlocks);
  ASSERT_TRUE(back.ok()) << back.error().message;
  for (const auto& [i, ok] : acked) {
    const auto first = back->begin() + static_cast<ptrdiff_t>(size_t{i} * kBlocks * 512);
    EXPECT_TRUE(std::equal(data[i].begin(), data[i].end(), first)) << "write " << i << " lost";
  }
}

// A write whose data_out has room for the PDU header is sent from that
// buffer; any other headroom is skipped and the data copied. Both must land,
// also when the target restarts and the kept PDU is sent again under a new
// header (the restart test above covers that under load).
TEST(InitiatorTest, DataOutHeadroomIsSkippedAndTheDataLands) {
  Lab lab = make_lab({});
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  const std::vector<uint8_t> a = pattern(8 * 512, 11), b = pattern(8 * 512, 12);
  auto with_room = [](std::vector<uint8_t> cdb, const std::vector<uint8_t>& data, uint32_t room) {
    ScsiCommand c{0, std::move(cdb), std::vector<uint8_t>(room, 0xee), 0, 0};
    c.data_out.insert(c.data_out.end(), data.begin(), data.end());
    c.data_out_headroom = room;
    return c;
  };
  auto cdb_a = scsi::write_cdb(0, 8, false), cdb_b = scsi::write_cdb(8, 8, false);
  const uint32_t exact = command_headroom(cdb_a.size());
  auto ra = lab.initiator->execute(with_room(cdb_a, a, exact)).get();
  EXPECT_TRUE(ra.good()) << ra.describe();
  auto rb = lab.initiator->execute(with_room(cdb_b, b, 3)).get();
  EXPECT_TRUE(rb.good()) << rb.describe();
  auto back = lab.initiator->execute(ScsiCommand{0, scsi::read_cdb(0, 16), {}, 16 * 512, 0}).get();
  ASSERT_TRUE(back.good()) << back.describe();
  ASSERT_EQ(back.data_in.size(), 16u * 512);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), back.data_in.begin()));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), back.data_in.begin() + 8 * 512));
  EXPECT_EQ(lab.initiator->stats().bytes_out, 16u * 512);
}

// Borrowed writes (ScsiCommand::data_out_borrowed): framed from the
// caller's buffers, over a lossy, reordering link, while the target restarts
// twice, so that frames are retransmitted and whole commands are sent again
// after the re-login from the same borrowed bytes. Each completion scribbles
// over its buffer and frees it (under ASan a later read is a
// use-after-free); every write reads back intact. 64 KiB writes span many
// frames (the first carries the header copied beside the first data).
TEST(InitiatorTest, BorrowedWritesLandIntactAcrossLossAndTargetRestarts) {
  io::Impairment imp;
  imp.loss = 0.01;
  imp.reorder = 0.02;
  Lab lab = make_lab(imp);
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok()) << lun.error().message;

  constexpr uint32_t kWrites = 120;
  constexpr uint32_t kBlocks = 128;  // 64 KiB each, disjoint: 120 x 64 KiB < 8 MiB
  std::mutex m;
  std::condition_variable cv;
  uint32_t in_flight = 0, done = 0, failed = 0;
  for (uint32_t i = 0; i < kWrites; ++i) {
    auto* buf = new std::vector<uint8_t>(pattern(kBlocks * 512, 1000 + i));
    {
      std::unique_lock l(m);
      ASSERT_TRUE(cv.wait_for(l, 60s, [&] { return in_flight < 16; }));
      ++in_flight;
    }
    lun->write_borrowed(uint64_t{i} * kBlocks, *buf, [&, buf](CommandResult&& r) {
      std::fill(buf->begin(), buf->end(), uint8_t{0x5A});  // the caller reuses it...
      delete buf;                                          // ...or frees it
      std::lock_guard l(m);
      --in_flight;
      ++done;
      if (!r.good()) ++failed;
      cv.notify_all();
    });
    if (i == kWrites / 3 || i == 2 * kWrites / 3) lab.target->restart();
  }
  {
    std::unique_lock l(m);
    ASSERT_TRUE(cv.wait_for(l, 90s, [&] { return done == kWrites; }));
  }
  EXPECT_EQ(failed, 0u);
  const Stats st = lab.initiator->stats();
  EXPECT_GE(st.resumes + st.relogins, 1u) << "the restart was not noticed";
  EXPECT_GT(st.transport.frames_retransmitted, 0u) << "nothing was retransmitted";
  EXPECT_EQ(st.bytes_out, uint64_t{kWrites} * kBlocks * 512);
  auto back = lun->read_sync(0, kWrites * kBlocks);
  ASSERT_TRUE(back.ok()) << back.error().message;
  for (uint32_t i = 0; i < kWrites; ++i) {
    const auto want = pattern(kBlocks * 512, 1000 + i);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), back->begin() + ptrdiff_t{i} * kBlocks * 512))
        << "write " << i << " is not intact";
  }
}

// A borrowed write's completion runs only once the initiator no longer
// holds its data: here it fails by dead time while the link is down and its
// frames are still queued for retransmission. The caller scribbles over the
// buffer in the completion; when the link comes back, whatever reaches the
// target must be the original data (or nothing), never the scribble. On code
// that completed at once, the retransmitted frames carried the scribble.
TEST(InitiatorTest, BorrowedWriteIsNotReadAfterItsCompletion) {
  Options opt;
  opt.dead_time = 800ms;
  Lab lab = make_lab({}, opt);
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok());
  io::Impairment down;
  down.loss = 1.0;
  lab.initiator_port->set_tx_impairment(down);
  lab.target_port->set_tx_impairment(down);
  std::vector<uint8_t> buf = pattern(32768, 77);
  const std::vector<uint8_t> original = buf;
  std::promise<CommandResult> p;
  std::atomic<bool> completed{false};
  lun->write_borrowed(0, buf, [&](CommandResult&& r) {
    std::fill(buf.begin(), buf.end(), uint8_t{0x5A});
    completed = true;
    p.set_value(std::move(r));
  });
  std::this_thread::sleep_for(1100ms);  // past the dead time, frames still queued
  lab.initiator_port->set_tx_impairment({});
  lab.target_port->set_tx_impairment({});
  auto fut = p.get_future();
  ASSERT_EQ(fut.wait_for(30s), std::future_status::ready) << "the completion never ran";
  EXPECT_EQ(fut.get().error, CompletionError::kDeadTime);
  // Let any retransmission of the old frames land, then look at the disk.
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (lab.target->writes_executed() == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(50ms);
  std::this_thread::sleep_for(300ms);
  const std::vector<uint8_t> disk = lab.target->snapshot();
  const std::vector<uint8_t> head(disk.begin(), disk.begin() + 32768);
  EXPECT_TRUE(head == original || head == std::vector<uint8_t>(32768, 0))
      << "the target got bytes written into the buffer after the completion";
}

// A borrowed write on a dead link fails at its own dead time, as a copied
// one does, not when the session is declared dead (here 10 s): the
// connection, which still holds the unacknowledged data, takes a copy. The
// completion scribbles over the buffer and frees it (under ASan a later read
// is a use-after-free); when the link comes back the connection delivers the
// write from its copy, so the target executes the original bytes. Before the
// copy, the completion waited for the link to come back (or for the session
// to be declared dead).
TEST(InitiatorTest, BorrowedWriteOnADeadLinkFailsAtItsDeadTime) {
  std::promise<CommandResult> done;  // declared before the lab: outlives its loop
  auto fut = done.get_future();
  test::MiniTargetConfig tc;
  tc.dead_time_ms = 10000;
  Options opt;
  opt.dead_time = 500ms;
  Lab lab = make_lab({}, opt, tc);
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok());
  io::Impairment down;
  down.loss = 1.0;
  lab.initiator_port->set_tx_impairment(down);
  lab.target_port->set_tx_impairment(down);
  const std::vector<uint8_t> original = pattern(65536, 91);  // many frames: some never sent
  auto* buf = new std::vector<uint8_t>(original);
  const auto t0 = std::chrono::steady_clock::now();
  lun->write_borrowed(0, *buf, [&done, buf](CommandResult&& r) {
    std::fill(buf->begin(), buf->end(), uint8_t{0x5A});  // the caller reuses it...
    delete buf;                                          // ...or frees it
    done.set_value(std::move(r));
  });
  const bool on_time = fut.wait_for(3s) == std::future_status::ready;
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(on_time) << "the completion was held while the link was down";
  lab.initiator_port->set_tx_impairment({});
  lab.target_port->set_tx_impairment({});
  ASSERT_EQ(fut.wait_for(30s), std::future_status::ready) << "the completion never ran";
  if (on_time) {
    EXPECT_GE(took, 500ms);
  }
  EXPECT_EQ(fut.get().error, CompletionError::kDeadTime);
  const auto until = std::chrono::steady_clock::now() + 15s;
  while (lab.target->writes_executed() == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(lab.target->writes_executed(), 1u) << "the connection did not deliver its copy";
  const std::vector<uint8_t> disk = lab.target->snapshot();
  EXPECT_TRUE(std::equal(original.begin(), original.end(), disk.begin()))
      << "the target did not get the original bytes";
}

// A poller (the FUSE export's /dev/fuse) runs when the loop's wait saw its fd
// readable, not at every turn: each run is a read() that would block, and a
// 4 KiB command turns the loop several times (command, frames, reply). And a
// readable fd still ends the loop's sleep at once.
TEST(InitiatorTest, APollerRunsWhenItsFdIsReadableNotEveryTurn) {
  Lab lab = make_lab({});
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  std::atomic<uint64_t> calls{0}, bytes{0};
  lab.initiator->add_poller(fds[0], [&] {
    calls.fetch_add(1, std::memory_order_relaxed);
    char b[64];
    ssize_t n;
    while ((n = ::read(fds[0], b, sizeof b)) > 0) bytes.fetch_add(static_cast<uint64_t>(n));
  });
  const uint64_t turns0 = lab.initiator->stats().wake.turns, calls0 = calls.load();
  for (int i = 0; i < 200; ++i) {
    auto r = lab.initiator->execute(ScsiCommand{0, scsi::read_cdb(0, 8), {}, 8 * 512, 0}).get();
    ASSERT_TRUE(r.good()) << r.describe();
  }
  const uint64_t turns = lab.initiator->stats().wake.turns - turns0, runs = calls.load() - calls0;
  EXPECT_GE(turns, 200u);
  EXPECT_LT(runs * 4, turns) << runs << " poller runs in " << turns << " turns";

  // Idle now: the loop sleeps until the pipe is written.
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  while (bytes.load() == 0 && std::chrono::steady_clock::now() - t0 < 2s)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(bytes.load(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms)
      << "the readable fd did not wake the loop";
  lab.initiator->remove_poller(fds[0]);
  ::close(fds[0]);
  ::close(fds[1]);
}

// Byte-granular I/O as FUSE and nbdkit issue it: unaligned reads and writes
// (read-modify-write), discards with partial edges, from several threads.
TEST(InitiatorTest, ByteDeviceUnalignedIoAndDiscardMatchModel) {
  io::Impairment imp;
  imp.loss = 0.01;
  Lab lab = make_lab(imp);
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok());
  ByteDevice dev(*lun);
  ASSERT_EQ(dev.size(), 16384u * 512);
  std::vector<uint8_t> model(dev.size(), 0);
  std::mutex model_mutex;
  std::atomic<int> errors{0};
  // Each thread owns a disjoint quarter; offsets and lengths are unaligned.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      const uint64_t base = uint64_t(t) * dev.size() / 4, span = dev.size() / 4;
      for (int i = 0; i < 40; ++i) {
        const uint64_t len = 1 + rng() % 5000;
        const uint64_t off = base + rng() % (span - len);
        if (rng() % 3 == 0) {
          if (!dev.discard(off, len)) ++errors;
          std::lock_guard l(model_mutex);
          std::fill_n(model.begin() + static_cast<ptrdiff_t>(off), len, 0);
        } else {
          auto data = pattern(len, static_cast<uint32_t>(rng()));
          if (!dev.pwrite(data, off)) ++errors;
          std::lock_guard l(model_mutex);
          std::copy(data.begin(), data.end(), model.begin() + static_cast<ptrdiff_t>(off));
        }
        const uint64_t rlen = 1 + rng() % 3000;
        const uint64_t roff = base + rng() % (span - rlen);
        std::vector<uint8_t> got(rlen);
        if (!dev.pread(got, roff)) ++errors;
        std::lock_guard l(model_mutex);
        if (!std::equal(got.begin(), got.end(), model.begin() + static_cast<ptrdiff_t>(roff)))
          ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_TRUE(lab.target->snapshot() == model);
  // Out of range is a typed error, not a crash.
  std::vector<uint8_t> one(1);
  auto st = dev.pread(one, dev.size());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().kind, ErrorKind::kInvalidArgument);
}

// Only the target-to-initiator direction fails for longer than the session
// dead time: the initiator declares the target dead, the target still hears
// it and keeps the session, so the initiator resumes it (same session id, new
// epoch) and the writes sent during the outage complete exactly once.
TEST(InitiatorTest, OneWayOutageIsRecoveredByResume) {
  Lab lab = make_lab({});
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok());
  const uint32_t sid = lab.initiator->stats().session_id;
  io::Impairment down;
  down.loss = 1.0;
  lab.target_port->set_tx_impairment(down);
  std::vector<std::future<CommandResult>> writes;
  std::vector<std::vector<uint8_t>> data;
  for (uint32_t i = 0; i < 8; ++i) {
    data.push_back(pattern(4096, 500 + i));
    ScsiCommand c{0, scsi::write_cdb(i * 8, 8, false), data.back(), 0, 0};
    writes.push_back(lab.initiator->execute(std::move(c)));
  }
  // The session's dead time is 2 s (MiniTarget); wait until it is declared dead.
  for (int i = 0; i < 100 && lab.initiator->stats().state == "established"; ++i)
    std::this_thread::sleep_for(50ms);
  const uint64_t before = lab.target->writes_executed();
  lab.target_port->set_tx_impairment({});
  for (auto& w : writes) {
    ASSERT_EQ(w.wait_for(30s), std::future_status::ready);
    EXPECT_TRUE(w.get().good());
  }
  const Stats st = lab.initiator->stats();
  EXPECT_GE(st.resumes, 1u);
  EXPECT_EQ(st.relogins, 0u);
  EXPECT_EQ(st.session_id, sid);
  EXPECT_GE(st.epoch, 1u);
  // Executed exactly once each: those the target ran during the outage were
  // answered from its reply cache after the resume, the rest ran then.
  EXPECT_GT(before, 0u);
  EXPECT_EQ(lab.target->writes_executed(), 8u);
  auto back = lun->read_sync(0, 64);
  ASSERT_TRUE(back.ok());
  for (uint32_t i = 0; i < 8; ++i)
    EXPECT_TRUE(std::equal(data[i].begin(), data[i].end(), back->begin() + i * 4096));
}

TEST(InitiatorTest, DeadTimeFailsCommandsWithClearError) {
  Options opt;
  opt.dead_time = 1500ms;
  opt.login_attempts = 2;
  Lab lab = make_lab({}, opt);
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok());
  io::Impairment down;
  down.loss = 1.0;  // the link goes down for good
  lab.initiator_port->set_tx_impairment(down);
  lab.target_port->set_tx_impairment(down);
  const auto t0 = std::chrono::steady_clock::now();
  auto fut = lab.initiator->execute(ScsiCommand{0, scsi::read_cdb(0, 1), {}, 512, 0});
  ASSERT_EQ(fut.wait_for(30s), std::future_status::ready) << "the command hung";
  CommandResult r = fut.get();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 1400ms);
  EXPECT_EQ(r.error, CompletionError::kDeadTime);
  EXPECT_NE(r.describe().find("no reply from target 'mini' within"), std::string::npos)
      << r.describe();
}

// read_into() places the reply's data in the caller's buffer while the
// reply is reassembled. A command that completed by another path (here dead
// time, its reply held back on the link) hands the buffer back for good: the
// late reply must not write into it. Then, the link healthy again, a read
// lands in place and is exact. About 3 s.
TEST(InitiatorTest, LateReplyNeverWritesABufferHandedBack) {
  Options opt;
  opt.dead_time = 800ms;
  Lab lab = make_lab({}, opt);
  ASSERT_TRUE(lab.initiator->connect("mini").ok());
  auto lun = lab.initiator->open_lun(0);
  ASSERT_TRUE(lun.ok());
  const auto data = pattern(65536, 17);
  ASSERT_TRUE(lun->write_sync(0, data).ok());
  io::Impairment late;
  late.delay = 1800ms;  // every frame from the target arrives after the dead time
  lab.target_port->set_tx_impairment(late);
  std::vector<uint8_t> buf(65536, 0xEE);
  std::promise<CommandResult> p;
  const uint64_t unmatched_before = lab.initiator->stats().unmatched_replies;
  lun->read_into(0, 128, buf, [&](CommandResult&& r) {
    std::fill(buf.begin(), buf.end(), uint8_t{0x5A});  // the caller reuses its buffer
    p.set_value(std::move(r));
  });
  auto fut = p.get_future();
  ASSERT_EQ(fut.wait_for(20s), std::future_status::ready);
  EXPECT_EQ(fut.get().error, CompletionError::kDeadTime);
  // Let the held-back reply fall due, then send a read without a buffer of
  // its own (an idle initiator may not read its port; this command takes the
  // freed tag without registering anything): the late reply is read first
  // and counted unmatched.
  lab.target_port->set_tx_impairment({});
  std::this_thread::sleep_for(2200ms);
  auto one = lun->read_sync(0, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(std::equal(one->begin(), one->end(), data.begin()));
  EXPECT_GT(lab.initiator->stats().unmatched_replies, unmatched_before);
  EXPECT_EQ(buf, std::vector<uint8_t>(65536, 0x5A)) << "a late reply wrote into the buffer";
  // A read into a buffer lands in place and exact.
  std::vector<uint8_t> again(65536, 0xEE);
  std::promise<CommandResult> q;
  lun->read_into(0, 128, again, [&](CommandResult&& r) { q.set_value(std::move(r)); });
  auto fq = q.get_future();
  ASSERT_EQ(fq.wait_for(20s), std::future_status::ready);
  const CommandResult rq = fq.get();
  EXPECT_TRUE(rq.good()) << rq.describe();
  EXPECT_EQ(again, data);
  EXPECT_EQ(buf, std::vector<uint8_t>(65536, 0x5A));
}

TEST(InitiatorTest, SetupErrorsAreTyped) {
  {  // nobody on the link answers discovery
    io::Impairment down;
    down.loss = 1.0;
    Lab lab = make_lab(down);
    auto t = lab.initiator->discover();
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().kind, ErrorKind::kNoTarget);
    EXPECT_NE(t.error().message.find("no target answered"), std::string::npos);
  }
  {  // LUN absent
    Lab lab = make_lab({});
    ASSERT_TRUE(lab.initiator->connect("mini").ok());
    auto lun = lab.initiator->open_lun(3);
    ASSERT_FALSE(lun.ok());
    EXPECT_EQ(lun.error().kind, ErrorKind::kLunAbsent);
  }
  {  // access denied
    test::MiniTargetConfig tc;
    tc.login_answer = proto::LoginStatus::kAccessDenied;
    Lab lab = make_lab({}, {}, tc);
    auto t = lab.initiator->connect("mini");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().kind, ErrorKind::kAccessDenied);
  }
  {  // the target claims 9000 but its port only takes 1500-byte frames
    test::MiniTargetConfig tc;
    tc.advertised_mtu = 9000;
    Lab lab = make_lab({}, {}, tc, 9000, 1500);
    auto t = lab.initiator->connect("mini");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().kind, ErrorKind::kMtuMismatch);
    EXPECT_NE(t.error().message.find("9000"), std::string::npos) << t.error().message;
  }
  {  // interface absent
    auto ini = Initiator::open("afpacket:hsnone" + std::to_string(::getpid() % 10000));
    ASSERT_FALSE(ini.ok());
    EXPECT_TRUE(ini.error().kind == ErrorKind::kInterfaceAbsent ||
                ini.error().kind == ErrorKind::kNotRoot)
        << ini.error().message;
  }
}

}  // namespace
}  // namespace hyperscsi::initiator

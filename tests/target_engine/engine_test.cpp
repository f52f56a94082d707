// End-to-end tests of the target engine over the in-memory link: a real
// TargetEngine (LogicalUnits on RAM and file stores) and test initiators built
// from proto::InitiatorSession.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "hyperscsi/base/scsi_opcodes.h"
#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/io/port_sink.h"
#include "hyperscsi/proto/discovery.h"
#include "hyperscsi/scsi/logical_unit.h"
#include "hyperscsi/store/block_store.h"
#include "hyperscsi/store/forwarding_store.h"
#include "test_initiator.h"

namespace hyperscsi::test {
namespace {

using engine::AccessEntry;
using engine::AccessList;
using engine::TargetEngine;

constexpr char kTarget[] = "tgt.engine-test";

std::unique_ptr<scsi::LogicalUnit> make_unit(uint16_t lun, const std::string& spec,
                                             uint32_t block_size = 512) {
  store::StoreOptions o;
  o.block_size = block_size;
  auto s = store::open_store(spec, o);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  if (!s.ok()) return nullptr;
  scsi::LuConfig c;
  c.target_name = kTarget;
  c.lun = lun;
  c.serial = "S" + std::to_string(lun);
  return std::make_unique<scsi::LogicalUnit>(c, std::move(s).value());
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 g(seed);
  for (auto& b : v) b = static_cast<uint8_t>(g());
  return v;
}

struct Rig {
  std::unique_ptr<TargetEngine> engine;
  std::vector<std::unique_ptr<io::MemPort>> initiator_ports;
  std::vector<io::MacAddress> target_macs;
};

// An engine with `links` ports, each a MemLink whose B end is for an initiator.
Rig make_rig(size_t links, engine::EngineConfig cfg = {},
             std::vector<io::Impairment> to_target = {}) {
  Rig rig;
  std::vector<std::unique_ptr<io::Port>> ports;
  for (size_t i = 0; i < links; ++i) {
    io::MemLinkConfig lc;
    lc.name = "eng" + std::to_string(::getpid()) + "_" + std::to_string(i);
    lc.seed = 100 + i;
    if (i < to_target.size()) {
      lc.b_to_a = to_target[i];
      lc.a_to_b = to_target[i];
    }
    auto link = io::make_mem_link(lc);
    EXPECT_TRUE(link.ok());
    rig.target_macs.push_back(link->a->mac());
    ports.push_back(std::move(link->a));
    rig.initiator_ports.push_back(std::move(link->b));
  }
  cfg.target_name = kTarget;
  cfg.seed = 42;
  rig.engine = std::make_unique<TargetEngine>(cfg, std::move(ports));
  return rig;
}

TEST(TargetEngine, InquiryCapacityWriteReadAndSeveralLuns) {
  Rig rig = make_rig(1);
  ASSERT_TRUE(rig.engine->add_lun({0, make_unit(0, "ram:1M"), {}}).ok());
  ASSERT_TRUE(rig.engine->add_lun({1, make_unit(1, "ram:2M", 4096), {}}).ok());
  EXPECT_FALSE(rig.engine->add_lun({1, make_unit(1, "ram:1M"), {}}).ok());  // duplicate
  ASSERT_TRUE(rig.engine->start().ok());

  TestInitiator ini(*rig.initiator_ports[0], "ini.alice");
  ASSERT_TRUE(ini.login(rig.target_macs[0], kTarget)) << ini.why();

  auto inq = ini.command(0, cdb_inquiry(), 96);
  ASSERT_TRUE(inq);
  EXPECT_EQ(inq->header.status, 0);
  ASSERT_GE(inq->data.size(), 36u);
  EXPECT_EQ(inq->data[0] & 0x1F, 0x00);  // direct-access block device
  EXPECT_EQ(std::string(inq->data.begin() + 8, inq->data.begin() + 16), "HYPERSCS");

  auto cap0 = ini.command(0, cdb_read_capacity10(), 8);
  ASSERT_TRUE(cap0);
  ASSERT_EQ(cap0->data.size(), 8u);
  EXPECT_EQ(be32(cap0->data, 0), 2047u);  // last LBA of 1 MiB in 512-byte blocks
  EXPECT_EQ(be32(cap0->data, 4), 512u);
  auto cap1 = ini.command(1, cdb_read_capacity10(), 8);
  ASSERT_TRUE(cap1);
  EXPECT_EQ(be32(cap1->data, 0), 511u);
  EXPECT_EQ(be32(cap1->data, 4), 4096u);

  // WRITE then READ on both LUNs, a multi-frame PDU each way.
  const auto d0 = pattern(64 * 512, 1);
  auto w0 = ini.command(0, cdb_write10(100, 64), 0, d0);
  ASSERT_TRUE(w0);
  EXPECT_EQ(w0->header.status, 0);
  const auto d1 = pattern(8 * 4096, 2);
  auto w1 = ini.command(1, cdb_write10(3, 8, true), 0, d1);
  ASSERT_TRUE(w1);
  EXPECT_EQ(w1->header.status, 0);
  auto r0 = ini.command(0, cdb_read10(100, 64), 64 * 512);
  ASSERT_TRUE(r0);
  EXPECT_EQ(r0->header.status, 0);
  EXPECT_EQ(r0->data, d0);
  auto r1 = ini.command(1, cdb_read10(3, 8), 8 * 4096);
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->data, d1);

  // Residual: the initiator offers more than the command moves.
  auto under = ini.command(0, cdb_read10(100, 1), 1024);
  ASSERT_TRUE(under);
  EXPECT_TRUE(under->header.flags & proto::kReplyFlagUnderflow);
  EXPECT_EQ(under->header.residual, 512u);

  // Out of range: sense from the SCSI layer travels back.
  auto oor = ini.command(0, cdb_read10(5000, 1), 512);
  ASSERT_TRUE(oor);
  EXPECT_EQ(oor->header.status, 0x02);
  EXPECT_EQ(oor->sense_key(), 0x05);
  EXPECT_EQ(oor->asc(), 0x21);

  // An absent LUN: CHECK CONDITION, LOGICAL UNIT NOT SUPPORTED.
  auto absent = ini.command(7, cdb_tur(), 0);
  ASSERT_TRUE(absent);
  EXPECT_EQ(absent->header.status, 0x02);
  EXPECT_EQ(absent->sense_key(), 0x05);
  EXPECT_EQ(absent->asc(), 0x25);
  auto absent_inq = ini.command(7, cdb_inquiry(), 96);
  ASSERT_TRUE(absent_inq);
  EXPECT_EQ(absent_inq->data.at(0), 0x7F);  // peripheral qualifier 011b

  auto luns = ini.command(0, cdb_report_luns(), 4096);
  ASSERT_TRUE(luns);
  ASSERT_GE(luns->data.size(), 24u);
  EXPECT_EQ(be32(luns->data, 0), 16u);
  EXPECT_EQ(luns->data[9], 0);
  EXPECT_EQ(luns->data[17], 1);

  const auto sessions = rig.engine->sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].info.initiator_name, "ini.alice");
  EXPECT_GE(sessions[0].info.commands, 12u);
  EXPECT_GT(sessions[0].info.transport.bytes_received, d0.size() + d1.size());
  EXPECT_GT(sessions[0].info.transport.bytes_sent, d0.size() + d1.size());
  const auto st = rig.engine->stats();
  EXPECT_GE(st.commands_executed, 9u);
  EXPECT_EQ(st.commands_absent, 2u);
  EXPECT_EQ(st.malformed_frames, 0u);
  rig.engine->stop();
}

// EngineConfig::read_thread: a read that arrives while an earlier reply is
// still queued is copied on the tmpfs store's own thread, and both replies
// carry the right bytes; without the option every read is copied inline.
TEST(TargetEngine, ReadThreadCopiesReadsBehindABacklogOnlyWhenConfigured) {
  if (!std::filesystem::exists("/dev/shm")) GTEST_SKIP() << "no /dev/shm here";
  for (const bool configured : {true, false}) {
    const std::string path = "/dev/shm/hs-engine-rt-" + std::to_string(::getpid()) + ".img";
    engine::EngineConfig cfg;
    cfg.read_thread = configured;
    Rig rig = make_rig(1, cfg);
    const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 4 << 20), 0);
    ::close(fd);
    auto unit = make_unit(0, path, 512);
    ASSERT_TRUE(unit);
    std::remove(path.c_str());  // the store's fd keeps the file
    scsi::LogicalUnit* lu = unit.get();
    ASSERT_TRUE(rig.engine->add_lun({0, std::move(unit), {}}).ok());
    ASSERT_TRUE(rig.engine->start().ok());
    TestInitiator ini(*rig.initiator_ports[0], "ini.rt");
    ASSERT_TRUE(ini.login(rig.target_macs[0], kTarget)) << ini.why();
    const auto data = pattern(2 << 20, 11);
    for (uint32_t off = 0; off < data.size(); off += 128 * 1024) {
      const std::vector<uint8_t> chunk(data.begin() + off, data.begin() + off + 128 * 1024);
      auto w = ini.command(0, cdb_write10(off / 512, 256), 0, chunk);
      ASSERT_TRUE(w);
      ASSERT_EQ(w->header.status, 0);
    }
    // A (1 MiB) goes out and stalls on the window: this side does not ack
    // for a while. B then finds A's reply queued.
    const uint32_t a = ini.send(0, cdb_read10(0, 2048), 1 << 20);
    ASSERT_NE(a, 0u);
    ini.pump();
    std::this_thread::sleep_for(20ms);
    const uint32_t b = ini.send(0, cdb_read10(2048, 2048), 1 << 20);
    ASSERT_NE(b, 0u);
    auto ra = ini.wait(a);
    auto rb = ini.wait(b);
    ASSERT_TRUE(ra && rb);
    EXPECT_EQ(ra->header.status, 0);
    EXPECT_EQ(rb->header.status, 0);
    EXPECT_TRUE(ra->data == std::vector<uint8_t>(data.begin(), data.begin() + (1 << 20)));
    EXPECT_TRUE(rb->data == std::vector<uint8_t>(data.begin() + (1 << 20), data.end()));
    // What `hyperscsi-target stats` shows, read while the loops run.
    const auto luns = rig.engine->lun_stats();
    ASSERT_EQ(luns.size(), 1u);
    EXPECT_EQ(luns[0].lun, 0u);
    EXPECT_GE(luns[0].store.bytes_read, 2u << 20);
    EXPECT_EQ(rig.engine->stats().luns.size(), 1u);
    rig.engine->stop();  // the loops are joined: the store's counters are ours to read
    const auto c = lu->store().counters();
    EXPECT_EQ(luns[0].store.offloaded_reads, c.offloaded_reads);
    if (configured) {
      EXPECT_GE(c.offloaded_reads, 1u) << "B should have gone to the read thread";
    } else {
      EXPECT_EQ(c.offloaded_reads, 0u);
    }
  }
}

TEST(TargetEngine, AccessListsHideLunsAndRefuseLogins) {
  Rig rig = make_rig(2);
  AccessList alice_only{{AccessEntry{"ini.alice", std::nullopt}}};
  ASSERT_TRUE(rig.engine->add_lun({0, make_unit(0, "ram:1M"), alice_only}).ok());
  ASSERT_TRUE(rig.engine->add_lun({1, make_unit(1, "ram:1M"), {}}).ok());
  ASSERT_TRUE(rig.engine->start().ok());

  TestInitiator alice(*rig.initiator_ports[0], "ini.alice", 11);
  TestInitiator bob(*rig.initiator_ports[1], "ini.bob", 12);
  ASSERT_TRUE(alice.login(rig.target_macs[0], kTarget)) << alice.why();
  ASSERT_TRUE(bob.login(rig.target_macs[1], kTarget)) << bob.why();

  auto a = alice.command(0, cdb_tur(), 0);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->header.status, 0);
  auto b = bob.command(0, cdb_tur(), 0);  // hidden from bob: as if absent
  ASSERT_TRUE(b);
  EXPECT_EQ(b->header.status, 0x02);
  EXPECT_EQ(b->sense_key(), 0x05);
  EXPECT_EQ(b->asc(), 0x25);
  auto bw = bob.command(0, cdb_write10(0, 1), 0, pattern(512, 3));
  ASSERT_TRUE(bw);
  EXPECT_EQ(bw->header.status, 0x02);
  auto bl = bob.command(1, cdb_report_luns(), 4096);
  ASSERT_TRUE(bl);
  EXPECT_EQ(be32(bl->data, 0), 8u);  // only LUN 1
  auto al = alice.command(1, cdb_report_luns(), 4096);
  ASSERT_TRUE(al);
  EXPECT_EQ(be32(al->data, 0), 16u);
  EXPECT_EQ(rig.engine->stats().commands_denied, 2u);

  // By MAC: LUN 1 now only for alice's MAC; a new login of carol (on bob's
  // link, another MAC) sees no LUN and is refused.
  AccessList by_mac{{AccessEntry{"", rig.initiator_ports[0]->mac()}}};
  ASSERT_TRUE(rig.engine->set_access(1, by_mac));
  auto b2 = bob.command(1, cdb_tur(), 0);
  ASSERT_TRUE(b2);
  EXPECT_EQ(b2->asc(), 0x25);
  TestInitiator carol(*rig.initiator_ports[1], "ini.carol", 13);
  EXPECT_FALSE(carol.login(rig.target_macs[1], kTarget));
  EXPECT_EQ(carol.session().failure().login_status, proto::LoginStatus::kAccessDenied);
  rig.engine->stop();
}

TEST(TargetEngine, TwoInitiatorsOneOverALossyReorderingLink) {
  io::Impairment lossy;
  lossy.loss = 0.05;
  lossy.reorder = 0.05;
  lossy.duplicate = 0.02;
  Rig rig = make_rig(2, {}, {lossy, io::Impairment{}});
  ASSERT_TRUE(rig.engine->add_lun({0, make_unit(0, "ram:4M"), {}}).ok());
  ASSERT_TRUE(rig.engine->start().ok());
  TestInitiator a(*rig.initiator_ports[0], "ini.lossy", 21, std::chrono::milliseconds(20));
  TestInitiator b(*rig.initiator_ports[1], "ini.clean", 22);
  ASSERT_TRUE(a.login(rig.target_macs[0], kTarget)) << a.why();
  ASSERT_TRUE(b.login(rig.target_macs[1], kTarget)) << b.why();
  ASSERT_TRUE(a.command(0, cdb_tur(), 0));  // takes the power-on unit attention
  ASSERT_TRUE(b.command(0, cdb_tur(), 0));

  // Interleaved writes of 16 KiB chunks to disjoint halves, several in flight.
  constexpr int kChunks = 24;
  std::vector<uint32_t> sa, sb;
  for (int i = 0; i < kChunks; ++i) {
    sa.push_back(a.send(0, cdb_write10(i * 32, 32), 0, pattern(32 * 512, 1000 + i)));
    sb.push_back(b.send(0, cdb_write10(4096 + i * 32, 32), 0, pattern(32 * 512, 2000 + i)));
    ASSERT_NE(sa.back(), 0u);
    ASSERT_NE(sb.back(), 0u);
    a.pump();
    b.pump();
  }
  for (int i = 0; i < kChunks; ++i) {
    auto ra = a.wait(sa[i], std::chrono::seconds(20));
    ASSERT_TRUE(ra) << "lossy write " << i;
    EXPECT_EQ(ra->header.status, 0);
    auto rb = b.wait(sb[i], std::chrono::seconds(20));
    ASSERT_TRUE(rb) << "clean write " << i;
    EXPECT_EQ(rb->header.status, 0);
  }
  // Each reads back both halves (so each sees the other's data).
  for (int i = 0; i < kChunks; ++i) {
    auto ra = a.command(0, cdb_read10(4096 + i * 32, 32), 32 * 512, {}, std::chrono::seconds(20));
    ASSERT_TRUE(ra);
    EXPECT_EQ(ra->data, pattern(32 * 512, 2000 + i)) << i;
    auto rb = b.command(0, cdb_read10(i * 32, 32), 32 * 512);
    ASSERT_TRUE(rb);
    EXPECT_EQ(rb->data, pattern(32 * 512, 1000 + i)) << i;
  }
  const auto stats = rig.initiator_ports[0]->tx_link_stats();
  EXPECT_GT(stats.lost + stats.reordered, 0u);  // the impairments really acted
  bool retransmitted = false;
  for (const auto& s : rig.engine->sessions())
    if (s.info.initiator_name == "ini.lossy")
      retransmitted = s.info.transport.frames_retransmitted > 0 ||
                      s.info.cache.in_progress_duplicates + s.info.cache.replays > 0 ||
                      s.info.transport.duplicates_received > 0;
  EXPECT_TRUE(retransmitted);
  rig.engine->stop();
}

TEST(TargetEngine, SilentInitiatorIsReclaimed) {
  engine::EngineConfig cfg;
  cfg.limits.keepalive_ms = 100;
  cfg.limits.dead_time_ms = 300;
  Rig rig = make_rig(1, cfg);
  ASSERT_TRUE(rig.engine->add_lun({0, make_unit(0, "ram:1M"), {}}).ok());
  ASSERT_TRUE(rig.engine->start().ok());
  TestInitiator ini(*rig.initiator_ports[0], "ini.silent");
  ASSERT_TRUE(ini.login(rig.target_macs[0], kTarget)) << ini.why();
  ASSERT_TRUE(ini.command(0, cdb_tur(), 0));
  ASSERT_EQ(rig.engine->sessions().size(), 1u);
  // The initiator goes silent: no more pump().
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!rig.engine->sessions().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(rig.engine->sessions().empty());
  EXPECT_EQ(rig.engine->stats().endpoint.sessions_reclaimed, 1u);
  rig.engine->stop();
}

// Discovery over one link: the start-up announcement names only open LUNs, an
// answer to a request names the LUNs this initiator may see.
std::vector<uint16_t> discover(io::Port& port, const std::string& name, TargetEngine* start_me) {
  proto::DiscoveryConfig dc;
  dc.local_mac = port.mac();
  dc.initiator_name = name;
  dc.window = std::chrono::milliseconds(400);
  proto::DiscoveryClient client(dc);
  io::PortSink sink(port);
  client.start(proto::Clock::now());
  if (start_me) {
    EXPECT_TRUE(start_me->start().ok());
  }
  const auto deadline = proto::Clock::now() + std::chrono::seconds(5);
  while (!client.done(proto::Clock::now()) && proto::Clock::now() < deadline) {
    io::Packet pkts[16];
    const size_t n = port.rx_burst(std::span<io::Packet>(pkts, 16));
    for (size_t i = 0; i < n; ++i)
      if (auto f = proto::decode_frame(pkts[i].bytes())) client.on_frame(*f, proto::Clock::now());
    client.poll(proto::Clock::now(), sink);
    sink.flush();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<uint16_t> luns;
  for (const auto& t : client.results())
    if (t.name == kTarget)
      for (const auto& l : t.luns) luns.push_back(l.lun);
  return luns;
}

TEST(TargetEngine, DiscoveryListsOnlyVisibleLuns) {
  Rig rig = make_rig(2);
  AccessList alice_only{{AccessEntry{"ini.alice", std::nullopt}}};
  ASSERT_TRUE(rig.engine->add_lun({0, make_unit(0, "ram:1M"), {}}).ok());
  ASSERT_TRUE(rig.engine->add_lun({1, make_unit(1, "ram:1M"), alice_only}).ok());
  EXPECT_EQ(discover(*rig.initiator_ports[0], "ini.alice", rig.engine.get()),
            (std::vector<uint16_t>{0, 1}));
  EXPECT_EQ(discover(*rig.initiator_ports[1], "ini.bob", nullptr), (std::vector<uint16_t>{0}));
  const auto st = rig.engine->stats();
  EXPECT_EQ(st.endpoint.announcements, 2u);  // one per port at start
  EXPECT_GE(st.endpoint.discovery_replies, 2u);
  rig.engine->stop();
}

// A store whose completions are held back until the gate opens, to keep
// commands in flight; records whether it was flushed and destroyed.
class GateStore final : public store::ForwardingStore {
 public:
  struct Probe {
    std::atomic<bool> open{false};
    std::atomic<int> flushes{0};
    std::atomic<bool> destroyed{false};
  };
  GateStore(std::unique_ptr<store::BlockStore> inner, std::shared_ptr<Probe> probe)
      : ForwardingStore(std::move(inner)), probe_(std::move(probe)) {}
  ~GateStore() override { probe_->destroyed = true; }
  std::string describe() const override { return "gate"; }
  void submit_read(uint64_t off, std::span<std::byte> buf, store::IoCallback cb) override {
    inner_->submit_read(off, buf, hold(std::move(cb)));
  }
  void submit_write(uint64_t off, std::span<const std::byte> buf, bool fua,
                    store::IoCallback cb) override {
    inner_->submit_write(off, buf, fua, hold(std::move(cb)));
  }
  void submit_flush(store::IoCallback cb) override {
    ++probe_->flushes;
    inner_->submit_flush(std::move(cb));
  }
  void submit_unmap(uint64_t off, uint64_t len, store::IoCallback cb) override {
    inner_->submit_unmap(off, len, hold(std::move(cb)));
  }
  size_t poll() override {
    size_t n = inner_->poll();
    if (probe_->open) n += release();
    return n;
  }
  void drain() override {
    inner_->drain();
    release();
  }
  size_t in_flight() const override { return inner_->in_flight() + held_.size(); }

 private:
  store::IoCallback hold(store::IoCallback cb) {
    return [this, cb = std::move(cb)](store::IoStatus st) mutable {
      held_.push_back([cb = std::move(cb), st]() mutable { cb(st); });
    };
  }
  size_t release() {
    auto run = std::exchange(held_, {});
    for (auto& f : run) f();
    return run.size();
  }
  std::shared_ptr<Probe> probe_;
  std::vector<std::function<void()>> held_;
};

TEST(TargetEngine, RemovingABusyLunWaitsForItsCommandsThenFlushes) {
  Rig rig = make_rig(1);
  auto probe = std::make_shared<GateStore::Probe>();
  {
    auto ram = store::open_store("ram:1M", {});
    ASSERT_TRUE(ram.ok());
    scsi::LuConfig c;
    c.target_name = kTarget;
    auto unit = std::make_unique<scsi::LogicalUnit>(
        c, std::make_unique<GateStore>(std::move(ram).value(), probe));
    ASSERT_TRUE(rig.engine->add_lun({0, std::move(unit), {}}).ok());
  }
  ASSERT_TRUE(rig.engine->add_lun({1, make_unit(1, "ram:1M"), {}}).ok());
  ASSERT_TRUE(rig.engine->start().ok());
  TestInitiator ini(*rig.initiator_ports[0], "ini.remove");
  ASSERT_TRUE(ini.login(rig.target_macs[0], kTarget)) << ini.why();
  ASSERT_TRUE(ini.command(0, cdb_tur(), 0));  // power-on unit attention, no I/O

  const auto data = pattern(8 * 512, 31);
  const uint32_t sn = ini.send(0, cdb_write10(16, 8), 0, data);
  ASSERT_NE(sn, 0u);
  EXPECT_FALSE(ini.wait(sn, std::chrono::milliseconds(300)));  // held by the gate
  ASSERT_TRUE(rig.engine->remove_lun(0));
  auto gone = ini.command(0, cdb_tur(), 0);  // new commands: the LUN is absent
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->asc(), 0x25);
  EXPECT_FALSE(probe->destroyed);  // still busy with the write

  probe->open = true;
  auto done = ini.wait(sn);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->header.status, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!probe->destroyed && std::chrono::steady_clock::now() < deadline) {
    ini.pump();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(probe->destroyed);
  EXPECT_GE(probe->flushes.load(), 1);
  rig.engine->stop();
}

// A store that records every entry (submit, poll, drain...) and whether
// another thread was inside at the same time. Each entry lingers a few
// microseconds, so two loops that entered unguarded would overlap.
class ExclusiveStore final : public store::ForwardingStore {
 public:
  struct Probe {
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    std::atomic<uint64_t> entries{0};
    std::mutex mu;  // the test's own bookkeeping, not the engine's lock
    std::set<std::thread::id> threads;
  };
  ExclusiveStore(std::unique_ptr<store::BlockStore> inner, std::shared_ptr<Probe> probe)
      : ForwardingStore(std::move(inner)), probe_(std::move(probe)) {}
  std::string describe() const override { return "exclusive"; }
  void submit_read(uint64_t off, std::span<std::byte> buf, store::IoCallback cb) override {
    Entry e(*probe_);
    ForwardingStore::submit_read(off, buf, std::move(cb));
  }
  void submit_write(uint64_t off, std::span<const std::byte> buf, bool fua,
                    store::IoCallback cb) override {
    Entry e(*probe_);
    ForwardingStore::submit_write(off, buf, fua, std::move(cb));
  }
  void submit_flush(store::IoCallback cb) override {
    Entry e(*probe_);
    ForwardingStore::submit_flush(std::move(cb));
  }
  void submit_unmap(uint64_t off, uint64_t len, store::IoCallback cb) override {
    Entry e(*probe_);
    ForwardingStore::submit_unmap(off, len, std::move(cb));
  }
  void submit() override {
    Entry e(*probe_);
    ForwardingStore::submit();
  }
  size_t poll() override {
    Entry e(*probe_);
    return ForwardingStore::poll();
  }
  void drain() override {
    Entry e(*probe_);
    ForwardingStore::drain();
  }

 private:
  struct Entry {
    explicit Entry(Probe& p) : probe(p) {
      if (probe.inside.fetch_add(1) != 0) ++probe.overlaps;
      ++probe.entries;
      {
        std::lock_guard lock(probe.mu);
        probe.threads.insert(std::this_thread::get_id());
      }
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
      while (std::chrono::steady_clock::now() < until) {
      }
    }
    ~Entry() { probe.inside.fetch_sub(1); }
    Probe& probe;
  };
  std::shared_ptr<Probe> probe_;
};

// The contract target_engine.h states: LUNs are shared by every port, and a
// LogicalUnit (and so its store) is used under its own mutex. Two initiators
// on two ports (two loop threads) drive one LUN at once; no entry into its
// store may overlap another, and every byte written is read back.
TEST(TargetEngine, OneLunDrivenFromTwoPortsIsNeverEnteredByTwoLoopsAtOnce) {
  Rig rig = make_rig(2);
  auto probe = std::make_shared<ExclusiveStore::Probe>();
  {
    auto ram = store::open_store("ram:4M", {});
    ASSERT_TRUE(ram.ok());
    scsi::LuConfig c;
    c.target_name = kTarget;
    auto unit = std::make_unique<scsi::LogicalUnit>(
        c, std::make_unique<ExclusiveStore>(std::move(ram).value(), probe));
    ASSERT_TRUE(rig.engine->add_lun({0, std::move(unit), {}}).ok());
  }
  ASSERT_TRUE(rig.engine->start().ok());

  // Each initiator on its own thread: writes then reads back its own half,
  // four commands in flight, 16 KiB each.
  auto drive = [&](size_t port, uint32_t first_lba, uint32_t seed, std::string& failure) {
    TestInitiator ini(*rig.initiator_ports[port], "ini.lock" + std::to_string(port),
                      static_cast<uint32_t>(50 + port));
    if (!ini.login(rig.target_macs[port], kTarget)) {
      failure = "login: " + ini.why();
      return;
    }
    if (!ini.command(0, cdb_tur(), 0)) {
      failure = "tur";
      return;
    }
    constexpr int kChunks = 96;
    constexpr int kDepth = 4;
    for (int round = 0; round < 2; ++round) {
      const bool writing = round == 0;
      std::deque<std::pair<uint32_t, int>> flight;
      for (int i = 0; i < kChunks || !flight.empty();) {
        while (i < kChunks && flight.size() < kDepth) {
          const uint32_t lba = first_lba + static_cast<uint32_t>(i) * 32;
          const uint32_t sn =
              writing ? ini.send(0, cdb_write10(lba, 32), 0, pattern(32 * 512, seed + i))
                      : ini.send(0, cdb_read10(lba, 32), 32 * 512);
          if (sn == 0) {
            failure = "send refused";
            return;
          }
          flight.emplace_back(sn, i++);
        }
        auto r = ini.wait(flight.front().first, std::chrono::seconds(20));
        if (!r || r->header.status != 0) {
          failure = "command " + std::to_string(flight.front().second) + " failed";
          return;
        }
        if (!writing && r->data != pattern(32 * 512, seed + flight.front().second)) {
          failure = "chunk " + std::to_string(flight.front().second) + " read back wrong";
          return;
        }
        flight.pop_front();
      }
    }
  };
  std::string fail_a, fail_b;
  std::thread a([&] { drive(0, 0, 7000, fail_a); });
  std::thread b([&] { drive(1, 4096, 9000, fail_b); });
  a.join();
  b.join();
  EXPECT_EQ(fail_a, "");
  EXPECT_EQ(fail_b, "");
  EXPECT_EQ(probe->overlaps.load(), 0) << "of " << probe->entries.load() << " entries";
  std::set<std::thread::id> threads;
  {
    std::lock_guard lock(probe->mu);
    threads = probe->threads;
  }
  EXPECT_GE(threads.size(), 2u);  // both loops did enter the LUN
  EXPECT_GE(probe->entries.load(), 2u * 2 * 96);
  rig.engine->stop();
}

// Writes raw bytes as a frame from the initiator's end of the link.
void inject(io::Port& port, const std::vector<uint8_t>& bytes) {
  io::Packet p = port.alloc();
  ASSERT_TRUE(p);
  ASSERT_TRUE(p.resize(bytes.size()));
  std::copy(bytes.begin(), bytes.end(), p.data());
  io::Packet one[1] = {std::move(p)};
  ASSERT_EQ(port.tx_burst(std::span<io::Packet>(one, 1)), 1u);
}

TEST(TargetEngine, MalformedFramesAreCountedAndNeverFatal) {
  Rig rig = make_rig(1);
  ASSERT_TRUE(rig.engine->add_lun({0, make_unit(0, "ram:1M"), {}}).ok());
  ASSERT_TRUE(rig.engine->start().ok());
  io::Port& port = *rig.initiator_ports[0];
  TestInitiator ini(port, "ini.fuzz");
  ASSERT_TRUE(ini.login(rig.target_macs[0], kTarget)) << ini.why();

  std::mt19937 g(5);
  const auto dst = rig.target_macs[0];
  const auto src = port.mac();
  size_t injected = 0;
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> f(14 + 1 + g() % 200);
    for (auto& b : f) b = static_cast<uint8_t>(g());
    std::copy(dst.begin(), dst.end(), f.begin());
    std::copy(src.begin(), src.end(), f.begin() + 6);
    f[12] = 0x88;
    f[13] = 0x9A;
    if (i % 3 == 0 && f.size() > 18) f[17] = proto::kProtocolVersion;  // get past the version check
    if (f.size() < 60) f.resize(60, 0);
    inject(port, f);
    ++injected;
  }
  // Truncated headers.
  for (size_t len = 14; len < 54; len += 3) {
    std::vector<uint8_t> f(len, 0);
    std::copy(dst.begin(), dst.end(), f.begin());
    f[12] = 0x88;
    f[13] = 0x9A;
    if (len > 17) f[17] = proto::kProtocolVersion;
    inject(port, f);
    ++injected;
  }
  // The engine still serves the session afterwards.
  auto r = ini.command(0, cdb_inquiry(), 96, {}, std::chrono::seconds(10));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header.status, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  engine::EngineStats st;
  do {
    st = rig.engine->stats();
    if (st.malformed_frames + st.endpoint.malformed + st.endpoint.frames_ignored +
            st.endpoint.unknown_session >=
        injected)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_GE(st.frames_received, injected);
  // Random bytes fail decode_frame almost always (checksums, lengths); the few
  // that decode are dropped by the endpoint and counted there.
  EXPECT_GT(st.malformed_frames, injected / 2);
  EXPECT_TRUE(rig.engine->running());
  rig.engine->stop();
}

TEST(TargetEngine, DrainFlushesFileStoreAndRemovedLunsClose) {
  const std::string path =
      std::filesystem::temp_directory_path() / ("hs_engine_" + std::to_string(::getpid()) + ".img");
  std::remove(path.c_str());
  {
    store::StoreOptions o;
    o.create_size = 1 << 20;
    auto s = store::open_store(path, o);
    ASSERT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    scsi::LuConfig c;
    c.target_name = kTarget;
    Rig rig = make_rig(1);
    ASSERT_TRUE(
        rig.engine->add_lun({0, std::make_unique<scsi::LogicalUnit>(c, std::move(s).value()), {}})
            .ok());
    ASSERT_TRUE(rig.engine->add_lun({1, make_unit(1, "ram:1M"), {}}).ok());
    ASSERT_TRUE(rig.engine->start().ok());
    TestInitiator ini(*rig.initiator_ports[0], "ini.drain");
    ASSERT_TRUE(ini.login(rig.target_macs[0], kTarget)) << ini.why();
    ASSERT_TRUE(ini.command(0, cdb_tur(), 0));  // takes the power-on unit attention
    const auto data = pattern(128 * 512, 9);
    std::vector<uint32_t> sns;
    for (int i = 0; i < 4; ++i)
      sns.push_back(ini.send(
          0, cdb_write10(i * 32, 32), 0,
          std::vector<uint8_t>(data.begin() + i * 32 * 512, data.begin() + (i + 1) * 32 * 512)));
    for (uint32_t sn : sns) {
      auto r = ini.wait(sn);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->header.status, 0);
    }
    // Removing LUN 1 hides it at once.
    EXPECT_TRUE(rig.engine->remove_lun(1));
    EXPECT_FALSE(rig.engine->has_lun(1));
    auto gone = ini.command(1, cdb_tur(), 0);
    ASSERT_TRUE(gone);
    EXPECT_EQ(gone->asc(), 0x25);

    // Keep acknowledging replies while the engine drains.
    std::atomic<bool> done{false};
    engine::DrainReport report;
    std::thread t([&] {
      report = rig.engine->drain(std::chrono::milliseconds(3000));
      done = true;
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done && std::chrono::steady_clock::now() < deadline) {
      ini.pump();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    t.join();
    EXPECT_TRUE(report.completed);
    EXPECT_EQ(report.flush_errors, 0u);
    EXPECT_FALSE(rig.engine->running());
    // Read with a separate fd: the data reached the file.
    std::vector<uint8_t> back(data.size());
    const int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
    ::close(fd);
    EXPECT_EQ(back, data);
  }
  std::remove(path.c_str());
}

// Through the engine (the device routes them): GET LBA STATUS follows a
// write on a thin RAM LUN, PREVENT ALLOW MEDIUM REMOVAL is GOOD on a disk
// (a no-op: the medium of a fixed disk cannot be removed), and REPORT LUNS
// with NACA or LINK set is refused as the SCSI layer refuses it elsewhere.
TEST(TargetEngine, GetLbaStatusPreventAndReportLunsChecksThroughTheDevice) {
  namespace op = scsi::op;
  Rig rig = make_rig(1);
  ASSERT_TRUE(rig.engine->add_lun({0, make_unit(0, "ram:1M"), {}}).ok());
  ASSERT_TRUE(rig.engine->start().ok());
  TestInitiator ini(*rig.initiator_ports[0], "ini.lba");
  ASSERT_TRUE(ini.login(rig.target_macs[0], kTarget)) << ini.why();
  ini.command(0, cdb_tur(), 0);  // the power-on unit attention

  auto get_lba_status = [&](uint64_t lba) {
    std::vector<uint8_t> c(op::cdb_length(op::kServiceActionIn16), 0);
    c[0] = op::kServiceActionIn16;
    c[1] = op::kSaGetLbaStatus;
    for (int b = 0; b < 8; ++b) c[2 + b] = static_cast<uint8_t>(lba >> (56 - 8 * b));
    c[13] = 64;  // allocation length
    return ini.command(0, c, 64);
  };
  auto fresh = get_lba_status(0);
  ASSERT_TRUE(fresh);
  ASSERT_EQ(fresh->header.status, 0);
  ASSERT_EQ(fresh->data.size(), 24u);
  EXPECT_EQ(be32(fresh->data, 0), 20u);     // one descriptor
  EXPECT_EQ(fresh->data[20] & 0x0F, 1);     // deallocated: nothing written yet
  EXPECT_EQ(be32(fresh->data, 16), 2048u);  // the whole 1 MiB LUN
  auto w = ini.command(0, cdb_write10(0, 16), 0, pattern(16 * 512, 5));
  ASSERT_TRUE(w);
  ASSERT_EQ(w->header.status, 0);
  auto written = get_lba_status(0);
  ASSERT_TRUE(written);
  ASSERT_EQ(written->data.size(), 24u);
  EXPECT_EQ(written->data[20] & 0x0F, 0);  // mapped
  EXPECT_GE(be32(written->data, 16), 16u);
  EXPECT_LT(be32(written->data, 16), 2048u);

  for (uint8_t prevent : {0, 1, 0}) {
    auto r = ini.command(0, {op::kPreventAllowMediumRemoval, 0, 0, 0, prevent, 0}, 0);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header.status, 0) << "prevent " << int(prevent);
  }
  auto back = ini.command(0, cdb_read10(0, 16), 16 * 512);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->data, pattern(16 * 512, 5));

  for (uint8_t control : {0x04, 0x01}) {  // NACA, LINK
    auto rl = cdb_report_luns();
    rl[11] = control;
    auto r = ini.command(0, rl, 4096);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header.status, 0x02);
    EXPECT_EQ(r->sense_key(), 0x05);
    EXPECT_EQ(r->asc(), 0x24);
  }
  rig.engine->stop();
}

}  // namespace
}  // namespace hyperscsi::test

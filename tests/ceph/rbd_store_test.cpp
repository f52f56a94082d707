// The rbd: store against a real one-host Ceph cluster (tests/ceph/cluster.sh):
//   - the SCSI suite's cases (tests/target/scsi_command_cases.cpp: read, write,
//     FUA, flush, unmap, write same, compare and write, ...) on an rbd LUN;
//   - the asynchronous contract (callbacks only in poll(), the fd signals);
//   - data written through the store reads back with `rbd export`, and
//     `rbd import`ed data reads back through the store;
//   - size and block size from the image; a resize in Ceph raises CAPACITY
//     DATA HAS CHANGED with the new size;
//   - write same and compare and write offloaded to librbd, compare and write
//     atomic between two gateways of one image;
//   - bad configuration (missing pool, image or keyring, wrong key,
//     unreachable monitor): typed errors with clear messages, in bounded time;
//   - a blocked OSD: commands wait, and past the op timeout fail with ABORTED
//     COMMAND / COMMAND TIMEOUT DURING PROCESSING; I/O resumes after.
// The process enters the cluster's network namespace before librados starts
// its threads (ceph_support.h).
#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "ceph_support.h"
#include "hyperscsi/scsi/opcodes.h"
#include "hyperscsi/store/block_store.h"
#include "hyperscsi/test_support/process.h"
#include "scsi_command_cases.h"

namespace hyperscsi::scsi::testing {
namespace {

namespace fs = std::filesystem;
using ceph_test::Cluster;
using Clock = std::chrono::steady_clock;

// The shared cluster, with this process inside its namespace; skips otherwise.
#define NEED_CLUSTER(c)                                                \
  std::string why_;                                                    \
  const Cluster* c = ceph_test::shared_cluster(why_);                  \
  if (!c) GTEST_SKIP() << why_;                                        \
  if (!ceph_test::enter_cluster_netns(*c, why_)) GTEST_FAIL() << why_; \
  do {                                                                 \
  } while (0)

store::StoreOptions gateway_options(const Cluster& c, std::uint32_t block_size = 512) {
  store::StoreOptions o;
  o.block_size = block_size;
  o.rbd.conf_file = c.conf;
  o.rbd.client_id = c.client_id;
  o.rbd.keyring = c.client_keyring;
  return o;
}

std::string spec_of(const Cluster& c, const std::string& image) {
  return "rbd:" + c.pool + "/" + image;
}

// LuParam::maker for the SCSI suite: one image per test, made on first use.
Result<std::unique_ptr<store::BlockStore>, store::StoreError> make_rbd(
    const std::string& key, const store::StoreOptions& options) {
  std::string why;
  const Cluster* c = ceph_test::shared_cluster(why);
  if (!c) [&] { GTEST_SKIP() << why; }();
  if (!c || !ceph_test::enter_cluster_netns(*c, why))
    return Unexpected(store::StoreError{store::StoreError::Kind::kNotFound, why});
  const std::string image =
      "hs-suite-" + std::to_string(std::hash<std::string>{}(key) % 1000000000);
  std::string out;
  if (ceph_test::rbd(*c, "info " + c->pool + "/" + image, &out) != 0 &&
      !ceph_test::create_image(*c, image, kCapacity, &out)) {
    return Unexpected(store::StoreError{store::StoreError::Kind::kNotFound, out});
  }
  store::StoreOptions o = gateway_options(*c, options.block_size);
  o.read_only = options.read_only;
  return store::open_store(spec_of(*c, image), o);
}

INSTANTIATE_TEST_SUITE_P(Rbd, ScsiCommand,
                         ::testing::Values(LuParam{"rbd", 512, &make_rbd},
                                           LuParam{"rbd", 4096, &make_rbd}),
                         lu_param_name);

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    const std::uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  return v;
}

std::span<std::byte> as_bytes(std::vector<std::uint8_t>& v) {
  return std::as_writable_bytes(std::span(v));
}

// Runs one store request to its callback (bounded), through poll() only.
store::IoStatus wait_for(store::BlockStore& s, bool& done, store::IoStatus& st) {
  const auto end = Clock::now() + std::chrono::seconds(60);
  while (!done && Clock::now() < end) {
    pollfd p{s.completion_fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    s.poll();
  }
  EXPECT_TRUE(done) << "request never completed";
  return st;
}

store::IoStatus write_sync(store::BlockStore& s, std::uint64_t off, std::vector<std::uint8_t>& d,
                           bool fua = false) {
  bool done = false;
  store::IoStatus st = store::IoStatus::kMediumError;
  s.submit_write(off, as_bytes(d), fua, [&](store::IoStatus x) {
    st = x;
    done = true;
  });
  return wait_for(s, done, st);
}

store::IoStatus read_sync(store::BlockStore& s, std::uint64_t off, std::vector<std::uint8_t>& d) {
  bool done = false;
  store::IoStatus st = store::IoStatus::kMediumError;
  s.submit_read(off, as_bytes(d), [&](store::IoStatus x) {
    st = x;
    done = true;
  });
  return wait_for(s, done, st);
}

store::IoStatus flush_sync(store::BlockStore& s) {
  bool done = false;
  store::IoStatus st = store::IoStatus::kMediumError;
  s.submit_flush([&](store::IoStatus x) {
    st = x;
    done = true;
  });
  return wait_for(s, done, st);
}

std::unique_ptr<store::BlockStore> open_or_fail(const std::string& spec,
                                                const store::StoreOptions& o) {
  auto s = store::open_store(spec, o);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return s.ok() ? std::move(s).value() : nullptr;
}

TEST(RbdStore, SizeAndBlockSizeComeFromTheImage) {
  NEED_CLUSTER(c);
  const std::string image = ceph_test::unique_image("geom");
  ASSERT_TRUE(ceph_test::create_image(*c, image, 24 << 20));
  auto s = open_or_fail(spec_of(*c, image), gateway_options(*c));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->block_size(), 512u);
  EXPECT_EQ(s->num_blocks(), (24u << 20) / 512);
  EXPECT_TRUE(s->supports_unmap());
  EXPECT_TRUE(s->unmapped_reads_zero());
  EXPECT_TRUE(s->offloads_write_same());
  EXPECT_TRUE(s->offloads_compare_and_write(512));
  EXPECT_FALSE(s->offloads_compare_and_write(4096));  // librbd 16: one sector at most
  EXPECT_NE(s->describe().find(spec_of(*c, image)), std::string::npos) << s->describe();
  EXPECT_NE(s->describe().find("client." + c->client_id), std::string::npos) << s->describe();
  s.reset();

  // The image keeps its block size: every gateway exports the same geometry.
  ASSERT_EQ(
      ceph_test::rbd(*c, "image-meta set " + c->pool + "/" + image + " hyperscsi.block_size 4096"),
      0);
  store::StoreOptions o = gateway_options(*c);
  o.block_size_set = false;  // 512 only as a default
  s = open_or_fail(spec_of(*c, image), o);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->block_size(), 4096u);
  EXPECT_EQ(s->num_blocks(), (24u << 20) / 4096);
  s.reset();
  o.block_size_set = true;  // asked for 512 explicitly: a conflict, said so
  auto bad = store::open_store(spec_of(*c, image), o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind, store::StoreError::Kind::kBadBlockSize);
  EXPECT_NE(bad.error().message.find("hyperscsi.block_size"), std::string::npos)
      << bad.error().message;
  ASSERT_EQ(
      ceph_test::rbd(*c, "image-meta set " + c->pool + "/" + image + " hyperscsi.block_size 1000"),
      0);
  bad = store::open_store(spec_of(*c, image), gateway_options(*c));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("not 512 or 4096"), std::string::npos);

  // An image size that is no multiple of the block size.
  const std::string odd = ceph_test::unique_image("odd");
  ASSERT_TRUE(ceph_test::create_image(*c, odd, (1 << 20) + 512));
  bad = store::open_store(spec_of(*c, odd), gateway_options(*c, 4096));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind, store::StoreError::Kind::kBadSize);
}

TEST(RbdStore, CallbacksRunOnlyInPollAndTheFdSignals) {
  NEED_CLUSTER(c);
  const std::string image = ceph_test::unique_image("async");
  ASSERT_TRUE(ceph_test::create_image(*c, image, 8 << 20));
  auto s = open_or_fail(spec_of(*c, image), gateway_options(*c));
  ASSERT_TRUE(s);
  auto data = random_bytes(64 << 10, 1);
  int calls = 0;
  s->submit_write(4096, as_bytes(data), false, [&](store::IoStatus st) {
    EXPECT_EQ(st, store::IoStatus::kOk);
    ++calls;
  });
  // Refused at once (out of range), still completed from poll() only.
  std::vector<std::uint8_t> beyond(512);
  s->submit_read(8 << 20, as_bytes(beyond), [&](store::IoStatus st) {
    EXPECT_EQ(st, store::IoStatus::kOutOfRange);
    ++calls;
  });
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(s->in_flight(), 2u);
  const auto end = Clock::now() + std::chrono::seconds(30);
  while (calls < 2 && Clock::now() < end) {
    pollfd p{s->completion_fd(), POLLIN, 0};
    if (::poll(&p, 1, 1000) == 1) s->poll();  // woken by the fd, not by a timer
  }
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(s->in_flight(), 0u);
  EXPECT_EQ(s->counters().errors, 1u);
}

TEST(RbdStore, WrittenDataReadsBackWithRbdExportAndImportedDataThroughTheStore) {
  NEED_CLUSTER(c);
  ceph_test::Cluster cl = *c;
  test_support::TempDir dir("hs_rbd");
  const std::string image = ceph_test::unique_image("export");
  constexpr std::uint64_t kSize = 16 << 20;
  ASSERT_TRUE(ceph_test::create_image(cl, image, kSize));
  {
    auto s = open_or_fail(spec_of(cl, image), gateway_options(cl));
    ASSERT_TRUE(s);
    // Whole objects, pieces across an object boundary (4 MiB), single sectors, a FUA write.
    auto all = random_bytes(kSize, 7);
    auto first = std::vector<std::uint8_t>(all.begin(), all.begin() + (6 << 20));
    EXPECT_EQ(write_sync(*s, 0, first), store::IoStatus::kOk);
    auto mid = std::vector<std::uint8_t>(all.begin() + (6 << 20), all.begin() + (6 << 20) + 512);
    EXPECT_EQ(write_sync(*s, 6 << 20, mid, true), store::IoStatus::kOk);
    auto rest = std::vector<std::uint8_t>(all.begin() + (6 << 20) + 512, all.end());
    EXPECT_EQ(write_sync(*s, (6 << 20) + 512, rest), store::IoStatus::kOk);
    EXPECT_EQ(flush_sync(*s), store::IoStatus::kOk);
    const fs::path out = dir.path() / "export.raw";
    std::string msg;
    ASSERT_EQ(ceph_test::rbd(
                  cl, "export --no-progress " + cl.pool + "/" + image + " " + out.string(), &msg),
              0)
        << msg;
    EXPECT_TRUE(ceph_test::read_file(out) == all) << "rbd export differs from what was written";
  }
  // The other way: rbd import, then read through the store.
  const fs::path in = dir.path() / "import.raw";
  const auto src = random_bytes(12 << 20, 8);
  std::ofstream(in, std::ios::binary)
      .write(reinterpret_cast<const char*>(src.data()), static_cast<std::streamsize>(src.size()));
  const std::string imported = ceph_test::unique_image("import");
  std::string msg;
  ASSERT_EQ(ceph_test::rbd(
                cl, "import --no-progress " + in.string() + " " + cl.pool + "/" + imported, &msg),
            0)
      << msg;
  auto s = open_or_fail(spec_of(cl, imported), gateway_options(cl, 4096));
  ASSERT_TRUE(s);
  ASSERT_EQ(s->size_bytes(), src.size());
  std::vector<std::uint8_t> back(src.size());
  EXPECT_EQ(read_sync(*s, 0, back), store::IoStatus::kOk);
  EXPECT_TRUE(back == src) << "data read through the store differs from rbd import's";
}

// Runs a CDB on `lu` until completion (the store is polled by run()).
CommandResult cmd(LogicalUnit& lu, const Bytes& cdb, std::span<const std::uint8_t> out = {},
                  std::uint32_t in = 0, const Nexus& n = kNexusA) {
  return run(lu, cdb, out, in, n);
}

std::unique_ptr<LogicalUnit> make_unit(std::unique_ptr<store::BlockStore> s) {
  LuConfig cfg;
  cfg.max_transfer_bytes = 1 << 20;
  auto lu = std::make_unique<LogicalUnit>(cfg, std::move(s));
  clear_power_on_ua(*lu);
  return lu;
}

Bytes cdb_caw(std::uint64_t lba, std::uint8_t n) {
  Bytes c = cdb_rw16(op::kCompareAndWrite, lba, 0);
  c[13] = n;
  return c;
}

TEST(RbdStore, ResizeInCephRaisesCapacityDataChangedWithTheNewSize) {
  NEED_CLUSTER(c);
  const std::string image = ceph_test::unique_image("resize");
  ASSERT_TRUE(ceph_test::create_image(*c, image, 8 << 20));
  auto s = open_or_fail(spec_of(*c, image), gateway_options(*c));
  ASSERT_TRUE(s);
  auto lu = make_unit(std::move(s));
  clear_power_on_ua(*lu, kNexusB);
  const Bytes rc16 = {op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0};
  auto capacity = [&](const Nexus& n) {
    auto r = cmd(*lu, rc16, {}, 32, n);
    return r.data_in.size() >= 8 ? load_be(r.data_in, 0, 8) + 1 : 0;
  };
  EXPECT_EQ(capacity(kNexusA), (8u << 20) / 512);

  // Wait (bounded) for the watch to report, through commands only.
  auto wait_ua = [&](const Nexus& n) {
    const auto end = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < end) {
      auto r = cmd(*lu, Bytes(6, 0), {}, 0, n);
      if (r.status != status::kGood) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return CommandResult{};
  };
  ASSERT_EQ(ceph_test::rbd(*c, "resize --no-progress --size 12M " + c->pool + "/" + image), 0);
  auto ua = wait_ua(kNexusA);
  EXPECT_SENSE(ua, SenseKey::kUnitAttention, 0x2A, 0x09);
  EXPECT_EQ(capacity(kNexusA), (12u << 20) / 512);
  // The other nexus hears of it once too, then reads the new blocks.
  EXPECT_SENSE(cmd(*lu, Bytes(6, 0), {}, 0, kNexusB), SenseKey::kUnitAttention, 0x2A, 0x09);
  EXPECT_EQ(capacity(kNexusB), (12u << 20) / 512);
  const auto tail = pattern(512, 3);
  EXPECT_GOOD(cmd(*lu, cdb_rw16(op::kWrite16, (12u << 20) / 512 - 1, 1), tail));
  EXPECT_EQ(lu->store().counters().capacity_changes, 1u);

  // Shrinking: the blocks past the new end are out of range.
  ASSERT_EQ(
      ceph_test::rbd(*c, "resize --no-progress --allow-shrink --size 4M " + c->pool + "/" + image),
      0);
  EXPECT_SENSE(wait_ua(kNexusA), SenseKey::kUnitAttention, 0x2A, 0x09);
  EXPECT_EQ(capacity(kNexusA), (4u << 20) / 512);
  EXPECT_SENSE(cmd(*lu, cdb_rw16(op::kRead16, (4u << 20) / 512, 1), {}, 512),
               SenseKey::kIllegalRequest, 0x21, 0);
}

TEST(RbdStore, WriteSameIsDoneByLibrbd) {
  NEED_CLUSTER(c);
  const std::string image = ceph_test::unique_image("ws");
  ASSERT_TRUE(ceph_test::create_image(*c, image, 16 << 20));
  auto lu = make_unit(open_or_fail(spec_of(*c, image), gateway_options(*c, 4096)));
  const auto block = pattern(4096, 9);
  // WRITE SAME over 3000 blocks (crossing object boundaries): one request.
  const auto before = lu->store().counters();
  EXPECT_GOOD(cmd(*lu, cdb_rw16(op::kWriteSame16, 100, 3000), block));
  const auto after = lu->store().counters();
  EXPECT_EQ(after.write_sames, before.write_sames + 1);
  EXPECT_EQ(after.writes, before.writes);
  for (std::uint64_t lba : {100ull, 1023ull, 1024ull, 3099ull}) {
    auto r = cmd(*lu, cdb_rw16(op::kRead16, lba, 1), {}, 4096);
    EXPECT_EQ(r.data_in, block) << "lba " << lba;
  }
  EXPECT_EQ(cmd(*lu, cdb_rw16(op::kRead16, 3100, 1), {}, 4096).data_in, Bytes(4096, 0));
  EXPECT_EQ(cmd(*lu, cdb_rw16(op::kRead16, 99, 1), {}, 4096).data_in, Bytes(4096, 0));
}

// COMPARE AND WRITE of one 512-byte block is librbd's (atomic in the OSD);
// a 4096-byte block is beyond librbd 16 and emulated under the LU's range
// lock. Either way the miscompare offset is the first differing byte.
TEST(RbdStore, CompareAndWriteOffloadedOrEmulatedReportsTheMiscompareOffset) {
  NEED_CLUSTER(c);
  for (std::uint32_t bs : {512u, 4096u}) {
    SCOPED_TRACE("block size " + std::to_string(bs));
    const std::string image = ceph_test::unique_image("caw");
    ASSERT_TRUE(ceph_test::create_image(*c, image, 4 << 20));
    auto lu = make_unit(open_or_fail(spec_of(*c, image), gateway_options(*c, bs)));
    const auto block = pattern(bs, 9), next = pattern(bs, 10);
    EXPECT_GOOD(cmd(*lu, cdb_rw16(op::kWrite16, 100, 1), block));
    const auto before = lu->store().counters().compare_and_writes;
    Bytes both = block;
    both.insert(both.end(), next.begin(), next.end());
    EXPECT_GOOD(cmd(*lu, cdb_caw(100, 1), both));
    EXPECT_EQ(lu->store().counters().compare_and_writes, before + (bs == 512 ? 1 : 0));
    EXPECT_EQ(cmd(*lu, cdb_rw16(op::kRead16, 100, 1), {}, bs).data_in, next);
    auto mis = cmd(*lu, cdb_caw(100, 1), both);  // compares against `block`, which is gone
    EXPECT_SENSE(mis, SenseKey::kMiscompare, 0x1D, 0);
    std::size_t first = 0;
    while (block[first] == next[first]) ++first;
    EXPECT_EQ(sense_of(mis)->information, std::optional<std::uint64_t>(first));
    const std::size_t at = bs - 100;
    Bytes late = next;  // differs only at byte `at`
    late[at] ^= 0xFF;
    late.insert(late.end(), block.begin(), block.end());
    auto mis2 = cmd(*lu, cdb_caw(100, 1), late);
    EXPECT_SENSE(mis2, SenseKey::kMiscompare, 0x1D, 0);
    EXPECT_EQ(sense_of(mis2)->information, std::optional<std::uint64_t>(at));
    EXPECT_EQ(cmd(*lu, cdb_rw16(op::kRead16, 100, 1), {}, bs).data_in, next);
  }
}

// Two gateways (two image handles, as two targets have) race COMPARE AND
// WRITE on one 512-byte block: the OSD decides, exactly one wins each round.
TEST(RbdStore, CompareAndWriteIsAtomicBetweenTwoGateways) {
  NEED_CLUSTER(c);
  const std::string image = ceph_test::unique_image("caw2");
  ASSERT_TRUE(ceph_test::create_image(*c, image, 4 << 20));
  auto a = make_unit(open_or_fail(spec_of(*c, image), gateway_options(*c)));
  auto b = make_unit(open_or_fail(spec_of(*c, image), gateway_options(*c)));
  Bytes current(512, 0);
  int rounds_with_one_winner = 0;
  constexpr int kRounds = 10;
  for (int round = 0; round < kRounds; ++round) {
    const auto va = pattern(512, 1000 + 2 * round), vb = pattern(512, 1001 + 2 * round);
    Bytes ca = current, cb = current;
    ca.insert(ca.end(), va.begin(), va.end());
    cb.insert(cb.end(), vb.begin(), vb.end());
    const Bytes cdb = cdb_caw(5, 1);
    std::optional<CommandResult> ra, rb;
    a->execute({cdb, ca, 0, kNexusA}, [&](CommandResult r) { ra = std::move(r); });
    b->execute({cdb, cb, 0, kNexusA}, [&](CommandResult r) { rb = std::move(r); });
    const auto end = Clock::now() + std::chrono::seconds(60);
    while ((!ra || !rb) && Clock::now() < end) {
      pollfd p[2] = {{a->store().completion_fd(), POLLIN, 0},
                     {b->store().completion_fd(), POLLIN, 0}};
      ::poll(p, 2, 100);
      a->store().poll();
      b->store().poll();
    }
    ASSERT_TRUE(ra && rb);
    const bool a_won = ra->status == status::kGood, b_won = rb->status == status::kGood;
    if (a_won != b_won) ++rounds_with_one_winner;
    if (a_won) {
      EXPECT_SENSE(*rb, SenseKey::kMiscompare, 0x1D, 0);
      current = va;
    } else if (b_won) {
      EXPECT_SENSE(*ra, SenseKey::kMiscompare, 0x1D, 0);
      current = vb;
    }
    EXPECT_EQ(cmd(*a, cdb_rw10(op::kRead10, 5, 1), {}, 512).data_in, current);
  }
  EXPECT_EQ(rounds_with_one_winner, kRounds);
}

TEST(RbdStore, BadConfigurationGivesClearErrorsInBoundedTime) {
  NEED_CLUSTER(c);
  using Kind = store::StoreError::Kind;
  test_support::TempDir dir("hs_rbd_bad");
  const std::string image = ceph_test::unique_image("bad");
  ASSERT_TRUE(ceph_test::create_image(*c, image, 4 << 20));
  struct Case {
    const char* what;
    std::string spec;
    store::StoreOptions options;
    Kind kind;
    std::string says;
  };
  std::vector<Case> cases;
  cases.push_back({"missing pool", "rbd:nopool/" + image, gateway_options(*c), Kind::kNotFound,
                   "pool 'nopool' does not exist"});
  cases.push_back({"missing image", spec_of(*c, "no-such-image"), gateway_options(*c),
                   Kind::kNotFound, "image 'no-such-image' does not exist in pool"});
  // A well-formed key that is not client.hyperscsi's.
  const fs::path wrong = dir.path() / "wrong.keyring";
  std::ofstream(wrong) << "[client." << c->client_id
                       << "]\n\tkey = AQBMjxNlAAAAABAAdXp2b0VvY1JZbEtpRWlDbHBYU0xnPT0=\n";
  store::StoreOptions wrong_key = gateway_options(*c);
  wrong_key.rbd.keyring = wrong.string();
  cases.push_back({"wrong key", spec_of(*c, image), wrong_key, Kind::kAccessDenied,
                   "refused client." + c->client_id});
  store::StoreOptions no_keyring = gateway_options(*c);
  no_keyring.rbd.keyring = (dir.path() / "absent.keyring").string();
  cases.push_back({"missing keyring", spec_of(*c, image), no_keyring, Kind::kOpenFailed,
                   "cannot read the keyring"});
  // A monitor address nobody answers on (the cluster's own subnet).
  const fs::path far = dir.path() / "unreachable.conf";
  std::ofstream(far) << "[global]\nmon_host = 198.18.100.254\n";
  store::StoreOptions unreachable = gateway_options(*c);
  unreachable.rbd.conf_file = far.string();
  unreachable.rbd.connect_timeout_s = 3;
  cases.push_back({"unreachable monitor", spec_of(*c, image), unreachable, Kind::kUnreachable,
                   "no answer from the Ceph monitors"});
  store::StoreOptions no_conf = gateway_options(*c);
  no_conf.rbd.conf_file = (dir.path() / "absent.conf").string();
  cases.push_back({"missing ceph.conf", spec_of(*c, image), no_conf, Kind::kOpenFailed,
                   "cannot read the Ceph configuration"});
  cases.push_back({"bad spec", "rbd:just-a-pool", gateway_options(*c), Kind::kBadSpec,
                   "expected rbd:POOL/IMAGE"});
  cases.push_back(
      {"snapshot", spec_of(*c, image + "@snap"), gateway_options(*c), Kind::kBadSpec, "snapshots"});
  for (const Case& k : cases) {
    const auto t0 = Clock::now();
    auto s = store::open_store(k.spec, k.options);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    ASSERT_FALSE(s.ok()) << k.what;
    EXPECT_EQ(s.error().kind, k.kind) << k.what << ": " << s.error().message;
    EXPECT_NE(s.error().message.find(k.says), std::string::npos)
        << k.what << ": " << s.error().message;
    EXPECT_NE(s.error().message.find(k.spec), std::string::npos) << s.error().message;
    EXPECT_LT(secs, 15.0) << k.what;
    std::printf("%-20s %.2f s: %s\n", k.what, secs, s.error().message.c_str());
  }
}

// The OSD answers nothing (SIGSTOP): a write waits; a pause shorter than the
// op timeout costs only time, a longer one fails the command with a clear
// status and nothing acknowledged is lost. Needs a cluster of its own.
TEST(RbdBlockedOsd, CommandsWaitThenTimeOutWithAClearStatus) {
  std::string why;
  if (!ceph_test::shared_cluster(why)) GTEST_SKIP() << why;
  ceph_test::PrivateCluster pc;
  ASSERT_TRUE(pc.ok()) << pc.error();
  const Cluster& c = pc.cluster();
  ASSERT_TRUE(ceph_test::enter_cluster_netns(c, why)) << why;
  const std::string image = ceph_test::unique_image("blocked");
  ASSERT_TRUE(ceph_test::create_image(c, image, 4 << 20));
  store::StoreOptions o = gateway_options(c);
  o.rbd.op_timeout_s = 3;
  auto lu = make_unit(open_or_fail(spec_of(c, image), o));
  ASSERT_TRUE(lu);
  const auto a = pattern(512, 21), b = pattern(512, 22), d = pattern(512, 23);
  EXPECT_GOOD(cmd(*lu, cdb_rw10(op::kWrite10, 1, 1), a));

  // Shorter than the timeout: the write waits and succeeds.
  ASSERT_TRUE(pc.osd_pause());
  std::thread resume([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    pc.osd_resume();
  });
  auto t0 = Clock::now();
  EXPECT_GOOD(cmd(*lu, cdb_rw10(op::kWrite10, 2, 1), b));
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  resume.join();
  EXPECT_GT(waited, 1.0);

  // Longer: ABORTED COMMAND, COMMAND TIMEOUT DURING PROCESSING, after ~3 s.
  ASSERT_TRUE(pc.osd_pause());
  t0 = Clock::now();
  auto timed_out = cmd(*lu, cdb_rw10(op::kWrite10, 3, 1), d);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  auto read_out = cmd(*lu, cdb_rw10(op::kRead10, 1, 1), {}, 512);
  ASSERT_TRUE(pc.osd_resume());
  EXPECT_SENSE(timed_out, SenseKey::kAbortedCommand, 0x2E, 0x02);
  EXPECT_SENSE(read_out, SenseKey::kAbortedCommand, 0x2E, 0x02);
  EXPECT_GE(took, 2.5);
  EXPECT_LT(took, 15.0);
  std::printf(
      "figures: paused 1.5 s -> write waited %.2f s and succeeded; paused past the 3 s "
      "op timeout -> failed after %.2f s\n",
      waited, took);
  // I/O resumes; the acknowledged writes are there.
  EXPECT_EQ(cmd(*lu, cdb_rw10(op::kRead10, 1, 1), {}, 512).data_in, a);
  EXPECT_EQ(cmd(*lu, cdb_rw10(op::kRead10, 2, 1), {}, 512).data_in, b);
  EXPECT_GOOD(cmd(*lu, cdb_rw10(op::kWrite10, 3, 1), d));
  EXPECT_EQ(cmd(*lu, cdb_rw10(op::kRead10, 3, 1), {}, 512).data_in, d);
  lu.reset();
}

}  // namespace
}  // namespace hyperscsi::scsi::testing

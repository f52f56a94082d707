// Backing stores: RAM, file (buffered and O_DIRECT) and block device (loop).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "hyperscsi/store/block_store.h"
#include "hyperscsi/store/ram_store.h"

namespace fs = std::filesystem;
using namespace hyperscsi::store;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (fs::temp_directory_path() / ("hs-store-" + std::to_string(::getpid()) + "-XXXXXX"))
            .string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<std::byte> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

// Submits, then drains; returns the status the callback saw.
IoStatus sync_write(BlockStore& s, std::uint64_t off, std::span<const std::byte> buf,
                    bool fua = false) {
  IoStatus got = IoStatus::kUnsupported;
  bool done = false;
  s.submit_write(off, buf, fua, [&](IoStatus st) {
    got = st;
    done = true;
  });
  s.drain();
  EXPECT_TRUE(done);
  return got;
}
IoStatus sync_read(BlockStore& s, std::uint64_t off, std::span<std::byte> buf) {
  IoStatus got = IoStatus::kUnsupported;
  bool done = false;
  s.submit_read(off, buf, [&](IoStatus st) {
    got = st;
    done = true;
  });
  s.drain();
  EXPECT_TRUE(done);
  return got;
}
IoStatus sync_flush(BlockStore& s) {
  IoStatus got = IoStatus::kUnsupported;
  s.submit_flush([&](IoStatus st) { got = st; });
  s.drain();
  return got;
}
IoStatus sync_unmap(BlockStore& s, std::uint64_t off, std::uint64_t len) {
  IoStatus got = IoStatus::kUnsupported;
  s.submit_unmap(off, len, [&](IoStatus st) { got = st; });
  s.drain();
  return got;
}

std::uint64_t allocated_blocks(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return static_cast<std::uint64_t>(st.st_blocks);
}

}  // namespace

TEST(ParseSize, AcceptsSuffixesAndRejectsGarbage) {
  EXPECT_EQ(*parse_size("512"), 512u);
  EXPECT_EQ(*parse_size("4K"), 4096u);
  EXPECT_EQ(*parse_size("1M"), 1u << 20);
  EXPECT_EQ(*parse_size("1G"), 1ull << 30);
  EXPECT_EQ(*parse_size("2TiB"), 2ull << 40);
  for (const char* bad :
       {"", "G", "1X", "1GG", "-1", "0", "99999999999999999999", "17179869184G"}) {
    auto r = parse_size(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind, StoreError::Kind::kBadSpec) << bad;
    EXPECT_NE(r.error().message.find("bad size"), std::string::npos);
  }
}

TEST(OpenStore, TypedErrorsNameThePathAndReason) {
  TempDir dir;
  StoreOptions o;
  auto missing = open_store(dir.file("nope.img"), o);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind, StoreError::Kind::kNotFound);
  EXPECT_NE(missing.error().message.find("nope.img"), std::string::npos);

  auto bad_ram = open_store("ram:12Q", o);
  ASSERT_FALSE(bad_ram.ok());
  EXPECT_EQ(bad_ram.error().kind, StoreError::Kind::kBadSpec);

  auto odd_ram = open_store("ram:1000", o);
  ASSERT_FALSE(odd_ram.ok());
  EXPECT_EQ(odd_ram.error().kind, StoreError::Kind::kBadSize);

  // A file whose size is not a multiple of the block size.
  {
    FILE* f = std::fopen(dir.file("odd.img").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("hello", f);
    std::fclose(f);
  }
  auto odd = open_store(dir.file("odd.img"), o);
  ASSERT_FALSE(odd.ok());
  EXPECT_EQ(odd.error().kind, StoreError::Kind::kBadSize);
  EXPECT_NE(odd.error().message.find("odd.img"), std::string::npos);

  // Cannot be opened at all (a path through a regular file): typed, names the path.
  auto unopenable = open_store(dir.file("odd.img") + "/inner.img", o);
  ASSERT_FALSE(unopenable.ok());
  EXPECT_EQ(unopenable.error().kind, StoreError::Kind::kOpenFailed);
  EXPECT_NE(unopenable.error().message.find("inner.img"), std::string::npos);
  EXPECT_NE(unopenable.error().message.find("Not a directory"), std::string::npos);

  auto dir_store = open_store(dir.path(), o);
  ASSERT_FALSE(dir_store.ok());
  EXPECT_EQ(dir_store.error().kind, StoreError::Kind::kUnsupportedType);

  StoreOptions bad_bs;
  bad_bs.block_size = 1024;
  EXPECT_EQ(open_store("ram:1M", bad_bs).error().kind, StoreError::Kind::kBadBlockSize);

  StoreOptions create;
  create.create_size = 1000;  // not a multiple of 512
  EXPECT_EQ(open_store(dir.file("new.img"), create).error().kind, StoreError::Kind::kBadSize);
  EXPECT_FALSE(fs::exists(dir.file("new.img")));
}

TEST(RamStore, SparseWriteReadUnmap) {
  auto r = RamStore::create(1ull << 30, 512, false);
  ASSERT_TRUE(r.ok());
  RamStore& s = **r;
  EXPECT_EQ(s.num_blocks(), (1ull << 30) / 512);
  EXPECT_EQ(s.allocated_bytes(), 0u);
  auto data = pattern(3 * RamStore::kChunkBytes, 1);
  const std::uint64_t off = 5 * RamStore::kChunkBytes - 4096;  // straddles chunks
  ASSERT_EQ(sync_write(s, off, data), IoStatus::kOk);
  EXPECT_EQ(s.allocated_bytes(), 4 * RamStore::kChunkBytes);
  std::vector<std::byte> back(data.size());
  ASSERT_EQ(sync_read(s, off, back), IoStatus::kOk);
  EXPECT_EQ(back, data);
  // Unmap the middle: whole chunks are freed and read back as zeros.
  ASSERT_EQ(sync_unmap(s, 5 * RamStore::kChunkBytes, 2 * RamStore::kChunkBytes), IoStatus::kOk);
  EXPECT_EQ(s.allocated_bytes(), 2 * RamStore::kChunkBytes);
  ASSERT_EQ(sync_read(s, off, back), IoStatus::kOk);
  for (std::size_t i = 4096; i < 4096 + 2 * RamStore::kChunkBytes; ++i) {
    ASSERT_EQ(back[i], std::byte{0}) << i;
  }
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + 4096, data.begin()));
  // Out of range and misaligned requests fail cleanly.
  std::vector<std::byte> one(512);
  EXPECT_EQ(sync_read(s, s.size_bytes(), one), IoStatus::kOutOfRange);
  EXPECT_EQ(sync_read(s, 100, one), IoStatus::kOutOfRange);
  EXPECT_EQ(sync_write(s, UINT64_MAX - 511, one), IoStatus::kOutOfRange);
}

TEST(RamStore, CallbacksOnlyRunInPollAndFdSignals) {
  auto r = RamStore::create(1 << 20, 512, false);
  ASSERT_TRUE(r.ok());
  RamStore& s = **r;
  std::vector<std::byte> buf(512);
  bool done = false;
  s.submit_read(0, buf, [&](IoStatus) { done = true; });
  EXPECT_FALSE(done);
  EXPECT_EQ(s.in_flight(), 1u);
  std::uint64_t v = 0;
  EXPECT_EQ(::read(s.completion_fd(), &v, sizeof v), static_cast<ssize_t>(sizeof v));  // readable
  EXPECT_EQ(s.poll(), 1u);
  EXPECT_TRUE(done);
}

TEST(RamStore, ReadOnlyRejectsWrites) {
  StoreOptions o;
  o.read_only = true;
  auto r = open_store("ram:1M", o);
  ASSERT_TRUE(r.ok());
  std::vector<std::byte> buf(512);
  EXPECT_EQ(sync_write(**r, 0, buf), IoStatus::kReadOnly);
  EXPECT_EQ(sync_unmap(**r, 0, 512), IoStatus::kReadOnly);
  EXPECT_EQ(sync_read(**r, 0, buf), IoStatus::kOk);
}

namespace {

// Many in-flight random reads and writes checked against an in-memory model.
// Writes go out in runs of adjacent blocks so the batcher merges them.
void concurrent_model_test(BlockStore& s, std::uint32_t seed) {
  const std::uint32_t bs = s.block_size();
  const std::uint64_t blocks = std::min<std::uint64_t>(s.num_blocks(), 2048);
  std::vector<std::byte> model(blocks * bs, std::byte{0});
  ASSERT_EQ(sync_write(s, 0, model), IoStatus::kOk);
  std::mt19937 rng(seed);
  int failures = 0;
  for (int round = 0; round < 20; ++round) {
    // Non-overlapping writes in this round (adjacent runs allowed), then reads.
    std::vector<bool> used(blocks, false);
    std::vector<std::vector<std::byte>> bufs;
    bufs.reserve(256);
    std::size_t completed = 0, submitted = 0;
    for (int i = 0; i < 64; ++i) {
      const std::uint64_t start = rng() % (blocks - 8);
      const std::uint64_t run = 1 + rng() % 4;
      for (std::uint64_t j = 0; j < run; ++j) {
        const std::uint64_t b = start + j;
        if (used[b]) continue;
        used[b] = true;
        bufs.push_back(pattern(bs, static_cast<std::uint32_t>(rng())));
        std::memcpy(model.data() + b * bs, bufs.back().data(), bs);
        ++submitted;
        s.submit_write(b * bs, bufs.back(), (rng() % 8) == 0, [&](IoStatus st) {
          if (st != IoStatus::kOk) ++failures;
          ++completed;
        });
      }
    }
    s.drain();
    ASSERT_EQ(completed, submitted);
    std::vector<std::vector<std::byte>> reads;
    std::vector<std::uint64_t> where;
    reads.reserve(64);
    for (int i = 0; i < 64; ++i) {
      const std::uint64_t b = rng() % (blocks - 4);
      const std::uint64_t n = 1 + rng() % 4;
      reads.emplace_back(n * bs);
      where.push_back(b);
      s.submit_read(b * bs, reads.back(), [&](IoStatus st) {
        if (st != IoStatus::kOk) ++failures;
      });
    }
    s.drain();
    for (std::size_t i = 0; i < reads.size(); ++i) {
      ASSERT_EQ(std::memcmp(reads[i].data(), model.data() + where[i] * bs, reads[i].size()), 0)
          << "round " << round << " read " << i;
    }
  }
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(s.in_flight(), 0u);
}

}  // namespace

TEST(RamStore, ConcurrentRandomIoMatchesModel) {
  auto r = open_store("ram:4M", StoreOptions{});
  ASSERT_TRUE(r.ok());
  concurrent_model_test(**r, 7);
}

TEST(FileStore, ConcurrentRandomIoMatchesModelAndMerges) {
  TempDir dir;
  StoreOptions o;
  o.create_size = 4 << 20;
  auto r = open_store(dir.file("disk.img"), o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  concurrent_model_test(**r, 11);
  const auto c = (*r)->counters();
  EXPECT_GT(c.merged, 0u) << "adjacent requests were not merged";
  EXPECT_LT(c.ops_submitted, c.reads + c.writes);
  EXPECT_LT(c.batches, c.ops_submitted);
  EXPECT_GT(c.fua_writes, 0u);
}

TEST(FileStore, AdjacentWritesInOneBatchBecomeOneVectoredOp) {
  TempDir dir;
  StoreOptions o;
  o.create_size = 1 << 20;
  auto r = open_store(dir.file("disk.img"), o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  BlockStore& s = **r;
  const auto before = s.counters();
  std::vector<std::vector<std::byte>> bufs;
  int ok = 0;
  // Submitted out of order on purpose: the batch is sorted before merging.
  for (int i : {3, 1, 0, 2, 5, 4, 7, 6}) {
    bufs.push_back(pattern(4096, static_cast<std::uint32_t>(i)));
    s.submit_write(static_cast<std::uint64_t>(i) * 4096, bufs.back(), false,
                   [&](IoStatus st) { ok += st == IoStatus::kOk; });
  }
  s.drain();
  EXPECT_EQ(ok, 8);
  const auto after = s.counters();
  EXPECT_EQ(after.ops_submitted - before.ops_submitted, 1u);
  EXPECT_EQ(after.merged - before.merged, 7u);
  std::vector<std::byte> all(8 * 4096);
  ASSERT_EQ(sync_read(s, 0, all), IoStatus::kOk);
  int idx = 0;
  for (int i : {3, 1, 0, 2, 5, 4, 7, 6}) {
    EXPECT_EQ(
        std::memcmp(all.data() + i * 4096, bufs[static_cast<std::size_t>(idx++)].data(), 4096), 0);
  }
}

TEST(FileStore, FlushReachesTheFile) {
  TempDir dir;
  const std::string path = dir.file("disk.img");
  StoreOptions o;
  o.create_size = 1 << 20;
  auto r = open_store(path, o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  BlockStore& s = **r;
  auto data = pattern(64 * 1024, 3);
  ASSERT_EQ(sync_write(s, 128 * 1024, data), IoStatus::kOk);
  const auto before = s.counters().flushes;
  ASSERT_EQ(sync_flush(s), IoStatus::kOk);
  EXPECT_EQ(s.counters().flushes, before + 1) << "no fsync was issued";
  // Read back through an independent O_DIRECT descriptor (bypasses the page cache).
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) {
    fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  void* mem = nullptr;
  ASSERT_EQ(::posix_memalign(&mem, 4096, data.size()), 0);
  const ssize_t n = ::pread(fd, mem, data.size(), 128 * 1024);
  ::close(fd);
  EXPECT_EQ(n, static_cast<ssize_t>(data.size()));
  EXPECT_EQ(std::memcmp(mem, data.data(), data.size()), 0);
  std::free(mem);
}

// Page-cache hits are copied by preadv2(RWF_NOWAIT) at submit time, without an
// io_uring round trip; the callback still runs only in poll(), after the
// completion fd became readable. Evicted pages take the io_uring path.
TEST(FileStore, CachedReadsSkipIoUringButKeepTheAsyncContract) {
  TempDir dir;
  const std::string path = dir.file("disk.img");
  StoreOptions o;
  o.create_size = 1 << 20;
  auto r = open_store(path, o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  BlockStore& s = **r;
  const auto data = pattern(64 * 1024, 21);
  ASSERT_EQ(sync_write(s, 0, data), IoStatus::kOk);

  const auto before = s.counters();
  std::vector<std::byte> back(data.size());
  bool done = false;
  IoStatus got = IoStatus::kUnsupported;
  s.submit_read(0, back, [&](IoStatus st) {
    got = st;
    done = true;
  });
  EXPECT_FALSE(done) << "callback ran inside submit_read";
  EXPECT_EQ(s.in_flight(), 1u);
  pollfd pfd{s.completion_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 1000), 1) << "completion fd not readable";
  EXPECT_EQ(s.poll(), 1u);
  ASSERT_TRUE(done);
  EXPECT_EQ(got, IoStatus::kOk);
  EXPECT_EQ(back, data);
  const auto hit = s.counters();
  EXPECT_EQ(hit.inline_ops - before.inline_ops, 1u);
  EXPECT_EQ(hit.ops_submitted, before.ops_submitted) << "a page-cache hit went to io_uring";
  EXPECT_EQ(hit.bytes_read - before.bytes_read, data.size());
  EXPECT_EQ(s.in_flight(), 0u);

  // Evict the pages (written back first); the read must still return the data,
  // through io_uring when the kernel reports the miss.
  ASSERT_EQ(sync_flush(s), IoStatus::kOk);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  const auto evicted = s.counters();
  std::fill(back.begin(), back.end(), std::byte{0});
  ASSERT_EQ(sync_read(s, 0, back), IoStatus::kOk);
  EXPECT_EQ(back, data);
  const auto after = s.counters();
  if (after.inline_misses == evicted.inline_misses) {
    std::printf("note: pages were not evicted on this filesystem; miss path not exercised\n");
  } else {
    EXPECT_EQ(after.ops_submitted - evicted.ops_submitted, 1u) << "a miss did not go to io_uring";
    EXPECT_EQ(after.inline_ops, evicted.inline_ops);
  }
}

// On tmpfs every read and write is a memory copy done when accepted (io_uring
// would punt it to a worker thread); flushes still go through io_uring, and
// callbacks still run only in poll().
TEST(FileStore, TmpfsReadsAndWritesAreInline) {
  const std::string path = "/dev/shm/hs-store-inline-" + std::to_string(::getpid()) + ".img";
  struct statfs fs {};
  if (::statfs("/dev/shm", &fs) != 0 || fs.f_type != TMPFS_MAGIC)
    GTEST_SKIP() << "/dev/shm is not a tmpfs here";
  StoreOptions o;
  o.create_size = 1 << 20;
  auto r = open_store(path, o);
  ::unlink(path.c_str());  // the open fd keeps the file
  ASSERT_TRUE(r.ok()) << r.error().message;
  BlockStore& s = **r;
  const auto before = s.counters();
  std::vector<std::vector<std::byte>> bufs;
  int ok = 0;
  for (int i = 0; i < 16; ++i) {
    bufs.push_back(pattern(4096, static_cast<std::uint32_t>(100 + i)));
    s.submit_write(static_cast<std::uint64_t>(i) * 4096, bufs.back(), i % 4 == 0,
                   [&](IoStatus st) { ok += st == IoStatus::kOk; });
  }
  EXPECT_EQ(ok, 0) << "callbacks ran inside submit_write";
  s.drain();
  EXPECT_EQ(ok, 16);
  std::vector<std::byte> back(16 * 4096);
  ASSERT_EQ(sync_read(s, 0, back), IoStatus::kOk);
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(std::memcmp(back.data() + i * 4096, bufs[static_cast<std::size_t>(i)].data(), 4096),
              0);
  const auto mid = s.counters();
  EXPECT_EQ(mid.inline_ops - before.inline_ops, 17u);
  EXPECT_EQ(mid.ops_submitted, before.ops_submitted) << "tmpfs I/O went to io_uring";
  EXPECT_EQ(mid.bytes_written - before.bytes_written, 16u * 4096);
  EXPECT_EQ(mid.bytes_read - before.bytes_read, 16u * 4096);
  ASSERT_EQ(sync_flush(s), IoStatus::kOk);
  EXPECT_EQ(s.counters().ops_submitted - mid.ops_submitted, 1u);
  EXPECT_EQ(s.counters().flushes - mid.flushes, 1u);
}

namespace {

// A tmpfs store opened for the read-thread tests (the file is unlinked at once;
// the open fd keeps it). Skips where /dev/shm is not a tmpfs.
std::unique_ptr<BlockStore> open_tmpfs_store(const char* tag, std::uint64_t size) {
  const std::string path =
      std::string("/dev/shm/hs-store-") + tag + "-" + std::to_string(::getpid()) + ".img";
  StoreOptions o;
  o.create_size = size;
  auto r = open_store(path, o);
  ::unlink(path.c_str());
  if (!r.ok()) ADD_FAILURE() << r.error().message;
  return r.ok() ? std::move(r).value() : nullptr;
}

bool dev_shm_is_tmpfs() {
  struct statfs fs {};
  return ::statfs("/dev/shm", &fs) == 0 && fs.f_type == TMPFS_MAGIC;
}

}  // namespace

// With the offload hint (a port loop with a send backlog), large tmpfs reads
// are copied on the store's read thread: callbacks still run only in poll(),
// in order, with every byte; small reads, and large ones without the hint,
// stay inline.
TEST(FileStore, TmpfsLargeReadsGoToTheReadThreadOnlyWhenPreferred) {
  if (!dev_shm_is_tmpfs()) GTEST_SKIP() << "/dev/shm is not a tmpfs here";
  auto store = open_tmpfs_store("offload", 4 << 20);
  ASSERT_TRUE(store);
  BlockStore& s = *store;
  const auto data = pattern(4 << 20, 77);
  ASSERT_EQ(sync_write(s, 0, data), IoStatus::kOk);
  const auto before = s.counters();

  s.set_read_offload(true);
  constexpr std::size_t kReads = 12;
  constexpr std::size_t kLen = 256 * 1024;
  std::vector<std::vector<std::byte>> bufs(kReads, std::vector<std::byte>(kLen));
  std::vector<int> order;
  for (std::size_t i = 0; i < kReads; ++i) {
    const std::uint64_t off = ((i * 5) % 16) * kLen;  // scattered over the file
    s.submit_read(off, bufs[i], [&order, &bufs, &data, i, off](IoStatus st) {
      EXPECT_EQ(st, IoStatus::kOk);
      EXPECT_EQ(std::memcmp(bufs[i].data(), data.data() + off, kLen), 0) << "read " << i;
      order.push_back(static_cast<int>(i));
    });
  }
  std::vector<std::byte> small(4096);
  bool small_done = false;
  s.submit_read(4096, small, [&](IoStatus st) { small_done = st == IoStatus::kOk; });
  EXPECT_TRUE(order.empty()) << "callbacks ran inside submit_read";
  EXPECT_EQ(s.in_flight(), kReads + 1);
  for (int i = 0; i < 200 && s.in_flight() > 0; ++i) {
    pollfd pfd{s.completion_fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 5000), 1) << "completion fd never readable";
    s.poll();
  }
  ASSERT_EQ(order.size(), kReads);
  for (std::size_t i = 0; i < kReads; ++i) EXPECT_EQ(order[i], static_cast<int>(i));
  EXPECT_TRUE(small_done);
  EXPECT_EQ(std::memcmp(small.data(), data.data() + 4096, 4096), 0);
  const auto mid = s.counters();
  EXPECT_EQ(mid.offloaded_reads - before.offloaded_reads, kReads);
  EXPECT_EQ(mid.inline_ops - before.inline_ops, 1u) << "the 4 KiB read should stay inline";
  EXPECT_EQ(mid.bytes_read - before.bytes_read, kReads * kLen + 4096);
  EXPECT_EQ(mid.ops_submitted, before.ops_submitted) << "tmpfs reads went to io_uring";

  // Without the hint a lone large read is copied inline again.
  s.set_read_offload(false);
  std::vector<std::byte> lone(kLen);
  ASSERT_EQ(sync_read(s, kLen, lone), IoStatus::kOk);
  EXPECT_EQ(std::memcmp(lone.data(), data.data() + kLen, kLen), 0);
  EXPECT_EQ(s.counters().offloaded_reads, mid.offloaded_reads);
  EXPECT_EQ(s.counters().inline_ops - mid.inline_ops, 1u);
}

// drain() waits for reads on the read thread, and a store destroyed with
// reads still there runs their callbacks first (the buffers stay the
// caller's until then).
TEST(FileStore, ReadThreadIsDrainedBeforeTheStoreGoes) {
  if (!dev_shm_is_tmpfs()) GTEST_SKIP() << "/dev/shm is not a tmpfs here";
  const auto data = pattern(2 << 20, 5);
  std::vector<std::byte> a(1 << 20), b(1 << 20);
  int ok = 0;
  {
    auto store = open_tmpfs_store("offload-drain", 2 << 20);
    ASSERT_TRUE(store);
    ASSERT_EQ(sync_write(*store, 0, data), IoStatus::kOk);
    store->set_read_offload(true);
    store->submit_read(0, a, [&](IoStatus st) { ok += st == IoStatus::kOk; });
    store->drain();
    EXPECT_EQ(ok, 1);
    EXPECT_EQ(store->in_flight(), 0u);
    store->submit_read(1 << 20, b, [&](IoStatus st) { ok += st == IoStatus::kOk; });
    EXPECT_EQ(store->counters().offloaded_reads, 2u);
  }
  EXPECT_EQ(ok, 2) << "the store went with a read's callback not run";
  EXPECT_EQ(std::memcmp(a.data(), data.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(b.data(), data.data() + (1 << 20), b.size()), 0);
}

// A read the read thread cannot fill (the file shrank under the export) is a
// medium error, never a short buffer reported as good.
TEST(FileStore, ReadThreadReportsAShortFileAsAMediumError) {
  if (!dev_shm_is_tmpfs()) GTEST_SKIP() << "/dev/shm is not a tmpfs here";
  const std::string path = "/dev/shm/hs-store-offload-short-" + std::to_string(::getpid()) + ".img";
  StoreOptions o;
  o.create_size = 1 << 20;
  auto r = open_store(path, o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  BlockStore& s = **r;
  ASSERT_EQ(::truncate(path.c_str(), 512 * 1024), 0);
  ::unlink(path.c_str());
  s.set_read_offload(true);
  std::vector<std::byte> buf(256 * 1024);
  EXPECT_EQ(sync_read(s, 384 * 1024, buf), IoStatus::kMediumError);
  EXPECT_EQ(s.counters().offloaded_reads, 1u);
  EXPECT_EQ(s.counters().errors, 1u);
}

TEST(FileStore, DirectIoBouncesUnalignedBuffers) {
  TempDir dir;
  StoreOptions o;
  o.create_size = 1 << 20;
  o.direct_io = true;
  o.block_size = 4096;
  auto r = open_store(dir.file("disk.img"), o);
  if (!r.ok() && r.error().message.find("Invalid argument") != std::string::npos) {
    GTEST_SKIP() << "filesystem of the temp dir does not support O_DIRECT: " << r.error().message;
  }
  ASSERT_TRUE(r.ok()) << r.error().message;
  BlockStore& s = **r;
  // Buffers deliberately misaligned by one byte.
  std::vector<std::byte> raw_w(3 * 4096 + 1), raw_r(3 * 4096 + 1);
  auto data = pattern(3 * 4096, 9);
  std::memcpy(raw_w.data() + 1, data.data(), data.size());
  ASSERT_EQ(sync_write(s, 8192, std::span(raw_w).subspan(1, data.size()), true), IoStatus::kOk);
  ASSERT_EQ(sync_read(s, 8192, std::span(raw_r).subspan(1, data.size())), IoStatus::kOk);
  EXPECT_EQ(std::memcmp(raw_r.data() + 1, data.data(), data.size()), 0);
  EXPECT_GE(s.counters().bounced, 2u);
  EXPECT_EQ(s.counters().inline_ops, 0u) << "O_DIRECT reads must not use the page-cache path";
  EXPECT_NE(s.describe().find("O_DIRECT"), std::string::npos);
}

TEST(FileStore, UnmapPunchesHoles) {
  TempDir dir;
  const std::string path = dir.file("disk.img");
  StoreOptions o;
  o.create_size = 4 << 20;
  auto r = open_store(path, o);
  ASSERT_TRUE(r.ok());
  BlockStore& s = **r;
  ASSERT_TRUE(s.supports_unmap());
  auto data = pattern(2 << 20, 5);
  ASSERT_EQ(sync_write(s, 0, data), IoStatus::kOk);
  ASSERT_EQ(sync_flush(s), IoStatus::kOk);
  const auto full = allocated_blocks(path);
  ASSERT_EQ(sync_unmap(s, 0, 1 << 20), IoStatus::kOk);
  const auto punched = allocated_blocks(path);
  EXPECT_LT(punched, full) << "st_blocks did not shrink";
  std::vector<std::byte> back(1 << 20);
  ASSERT_EQ(sync_read(s, 0, back), IoStatus::kOk);
  EXPECT_TRUE(std::all_of(back.begin(), back.end(), [](std::byte b) { return b == std::byte{0}; }));
  EXPECT_EQ(fs::file_size(path), 4u << 20);  // KEEP_SIZE
}

TEST(FileStore, ReadOnlyExport) {
  TempDir dir;
  const std::string path = dir.file("disk.img");
  {
    StoreOptions o;
    o.create_size = 1 << 20;
    auto r = open_store(path, o);
    ASSERT_TRUE(r.ok());
    auto data = pattern(4096, 1);
    ASSERT_EQ(sync_write(**r, 0, data), IoStatus::kOk);
  }
  ::chmod(path.c_str(), 0444);
  StoreOptions ro;
  ro.read_only = true;
  auto r = open_store(path, ro);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE((*r)->read_only());
  EXPECT_FALSE((*r)->supports_unmap());
  std::vector<std::byte> buf(4096);
  EXPECT_EQ(sync_read(**r, 0, buf), IoStatus::kOk);
  EXPECT_EQ(buf, pattern(4096, 1));
  EXPECT_EQ(sync_write(**r, 0, buf), IoStatus::kReadOnly);
  EXPECT_EQ(sync_flush(**r), IoStatus::kOk);
}

TEST(FileStore, OutOfSpaceBecomesNoSpace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  TempDir dir;
  const std::string mnt = dir.file("mnt");
  fs::create_directory(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=256k") != 0) {
    GTEST_SKIP() << "cannot mount tmpfs: " << std::strerror(errno);
  }
  {
    StoreOptions o;
    o.create_size = 8 << 20;  // sparse file far larger than the filesystem
    auto r = open_store(mnt + "/disk.img", o);
    ASSERT_TRUE(r.ok()) << r.error().message;
    auto data = pattern(1 << 20, 2);
    EXPECT_EQ(sync_write(**r, 0, data), IoStatus::kNoSpace);
    EXPECT_GT((*r)->counters().errors, 0u);
  }
  ::umount2(mnt.c_str(), MNT_DETACH);
}

namespace {
std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}
}  // namespace

TEST(BlockDeviceStore, LoopDevice) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for losetup";
  TempDir dir;
  const std::string img = dir.file("backing.img");
  {
    StoreOptions o;
    o.create_size = 8 << 20;
    auto r = open_store(img, o);
    ASSERT_TRUE(r.ok());
  }
  const std::string dev = run("losetup --find --show " + img + " 2>/dev/null");
  if (dev.rfind("/dev/loop", 0) != 0) GTEST_SKIP() << "losetup failed (no loop devices?)";
  {
    StoreOptions o;
    o.block_size = 4096;
    auto r = open_store(dev, o);
    ASSERT_TRUE(r.ok()) << r.error().message;
    BlockStore& s = **r;
    EXPECT_EQ(s.size_bytes(), 8u << 20);
    EXPECT_NE(s.describe().find("blockdev:"), std::string::npos);
    concurrent_model_test(s, 13);
    ASSERT_EQ(sync_flush(s), IoStatus::kOk);
    EXPECT_GE(s.counters().flushes, 1u);
    if (s.supports_unmap()) {
      EXPECT_EQ(sync_unmap(s, 0, 1 << 20), IoStatus::kOk);
      EXPECT_FALSE(s.unmapped_reads_zero());
    }
  }
  run("losetup -d " + dev);
}

namespace {
// Drives a store the way an engine does: poll(2) on completion_fd(), then
// store.poll(); never calls submit() or drain() directly.
void event_loop_test(BlockStore& s) {
  const std::uint32_t bs = s.block_size();
  constexpr int kRequests = 256;
  std::vector<std::vector<std::byte>> bufs;
  int completed = 0, failed = 0;
  for (int i = 0; i < kRequests; ++i) {
    bufs.push_back(pattern(bs, static_cast<std::uint32_t>(i)));
    s.submit_write(static_cast<std::uint64_t>(i) * bs, bufs.back(), false, [&](IoStatus st) {
      ++completed;
      failed += st != IoStatus::kOk;
    });
  }
  std::vector<std::vector<std::byte>> reads(kRequests, std::vector<std::byte>(bs));
  int read_done = 0;
  for (int guard = 0; guard < 10000 && read_done < kRequests; ++guard) {
    pollfd pfd{s.completion_fd(), POLLIN, 0};
    const int rc = ::poll(&pfd, 1, 1000);
    ASSERT_GE(rc, 0);
    ASSERT_GT(rc, 0) << "completion fd never became readable (stalled queue)";
    s.poll();
    if (completed == kRequests && read_done == 0 && s.in_flight() == 0) {
      // Second phase, issued from the loop like an engine reacting to completions.
      for (int i = 0; i < kRequests; ++i) {
        s.submit_read(static_cast<std::uint64_t>(i) * bs, reads[static_cast<std::size_t>(i)],
                      [&](IoStatus st) {
                        ++read_done;
                        failed += st != IoStatus::kOk;
                      });
      }
    }
  }
  EXPECT_EQ(completed, kRequests);
  EXPECT_EQ(read_done, kRequests);
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(reads, bufs);
}
}  // namespace

TEST(EventLoop, FileStoreProgressesFromCompletionFdAlone) {
  TempDir dir;
  StoreOptions o;
  o.create_size = 4 << 20;
  auto r = open_store(dir.file("disk.img"), o);
  ASSERT_TRUE(r.ok());
  event_loop_test(**r);
  EXPECT_LT((*r)->counters().batches, 64u) << "requests were not batched";
}

TEST(EventLoop, RamStoreProgressesFromCompletionFdAlone) {
  auto r = open_store("ram:4M", StoreOptions{});
  ASSERT_TRUE(r.ok());
  event_loop_test(**r);
}

// ---- identity and exclusive use (issue 15) ----

TEST(StoreIdentity, FileKeepsItsIdentityInAnXattrAcrossReopenAndRename) {
  TempDir dir;
  const std::string path = dir.file("disk.img");
  StoreOptions o;
  o.create_size = 1 << 20;
  StoreIdentity first;
  {
    auto r = open_store(path, o);
    ASSERT_TRUE(r.ok()) << r.error().message;
    first = (*r)->identity();
  }
  ASSERT_TRUE(first.known());
  EXPECT_TRUE(first.persistent) << first.source;
  EXPECT_NE(first.source.find(kIdentityXattr), std::string::npos) << first.source;
  char buf[64] = {};
  const ssize_t n = ::getxattr(path.c_str(), kIdentityXattr, buf, sizeof buf - 1);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)), first.text());
  // The same file after a rename, read-only: the same identity.
  const std::string moved = dir.file("moved.img");
  fs::rename(path, moved);
  StoreOptions ro;
  ro.read_only = true;
  auto again = open_store(moved, ro);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ((*again)->identity().text(), first.text());
  // Another file is another disk.
  StoreOptions other = o;
  auto b = open_store(dir.file("other.img"), other);
  ASSERT_TRUE(b.ok());
  EXPECT_NE((*b)->identity().text(), first.text());
}

TEST(StoreIdentity, RamStoreIsANewDiskAtEveryStart) {
  auto a = open_store("ram:1M", StoreOptions{});
  auto b = open_store("ram:1M", StoreOptions{});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE((*a)->identity().known());
  EXPECT_FALSE((*a)->identity().persistent);
  EXPECT_NE((*a)->identity().text(), (*b)->identity().text());
  EXPECT_EQ((*a)->identity().text()[14], '4');  // RFC 9562 version 4 (random)
}

TEST(StoreIdentity, MalformedXattrIsRefusedWithTheFix) {
  TempDir dir;
  const std::string path = dir.file("disk.img");
  { std::ofstream(path) << std::string(4096, '\0'); }
  ASSERT_EQ(::setxattr(path.c_str(), kIdentityXattr, "not-a-uuid", 10, 0), 0);
  auto r = open_store(path, StoreOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("is not a UUID"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("setfattr -x"), std::string::npos) << r.error().message;
  EXPECT_FALSE(parse_uuid("0123456789abcdef0123456789abcdef0123").has_value());
  auto u = parse_uuid("00112233-4455-6677-8899-AABBCCDDEEFF");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ((*u)[15], 0xFF);
}

TEST(StoreLock, AFileIsExportedOnceReadOnlyExportsMayShare) {
  TempDir dir;
  const std::string path = dir.file("disk.img");
  StoreOptions o;
  o.create_size = 1 << 20;
  auto first = open_store(path, o);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = open_store(path, o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().kind, StoreError::Kind::kBusy);
  EXPECT_NE(second.error().message.find("already exported"), std::string::npos)
      << second.error().message;
  EXPECT_NE(second.error().message.find("this process"), std::string::npos)
      << second.error().message;
  StoreOptions ro;
  ro.read_only = true;
  EXPECT_EQ(open_store(path, ro).error().kind, StoreError::Kind::kBusy);  // read-write holds it
  first.value().reset();  // closes it: the lock goes with the fd
  auto r1 = open_store(path, ro);
  auto r2 = open_store(path, ro);
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_EQ(open_store(path, o).error().kind, StoreError::Kind::kBusy);
}

TEST(StoreLock, AnotherProcessIsNamedAsTheHolder) {
  TempDir dir;
  const std::string path = dir.file("disk.img");
  { std::ofstream(path) << std::string(4096, '\0'); }
  // flock(1) holds the lock from another process (its own process group).
  const pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    ::setpgid(0, 0);
    ::execlp("flock", "flock", "-x", path.c_str(), "sleep", "30", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  bool refused = false;
  std::string message;
  for (int i = 0; i < 200 && !refused; ++i) {  // until flock(1) has taken it
    auto r = open_store(path, StoreOptions{});
    if (!r.ok()) {
      refused = r.error().kind == StoreError::Kind::kBusy;
      message = r.error().message;
    } else {
      ::usleep(20000);
    }
  }
  ::kill(-holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  ASSERT_TRUE(refused) << message;
  EXPECT_NE(message.find("pid " + std::to_string(holder)), std::string::npos) << message;
  EXPECT_NE(message.find("flock -x"), std::string::npos) << message;
}

TEST(StoreIdentity, LoopDeviceHasItsBackingFilesIdentityAndIsHeldExclusively) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for losetup";
  TempDir dir;
  const std::string img = dir.file("backing.img");
  StoreIdentity file_id;
  {
    StoreOptions o;
    o.create_size = 8 << 20;
    auto r = open_store(img, o);
    ASSERT_TRUE(r.ok());
    file_id = (*r)->identity();
  }
  const std::string dev = run("losetup --find --show " + img + " 2>/dev/null");
  if (dev.rfind("/dev/loop", 0) != 0) GTEST_SKIP() << "losetup failed (no loop devices?)";
  {
    auto r = open_store(dev, StoreOptions{});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ((*r)->identity().text(), file_id.text()) << (*r)->identity().source;
    EXPECT_TRUE((*r)->identity().persistent);
    auto again = open_store(dev, StoreOptions{});
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().kind, StoreError::Kind::kBusy) << again.error().message;
  }
  // A mounted device is refused read-write, naming the mount.
  const std::string mnt = dir.file("mnt");
  fs::create_directory(mnt);
  if (run("mkfs.ext4 -q " + dev + " >/dev/null 2>&1 && mount " + dev + " " + mnt + " && echo ok") ==
      "ok") {
    auto r = open_store(dev, StoreOptions{});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind, StoreError::Kind::kBusy);
    EXPECT_NE(r.error().message.find("mounted on " + mnt), std::string::npos) << r.error().message;
    ::umount2(mnt.c_str(), MNT_DETACH);
  } else {
    std::printf("mounted-device part skipped: mkfs.ext4 or mount failed\n");
  }
  run("losetup -d " + dev);
}

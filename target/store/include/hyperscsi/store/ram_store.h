// RamStore: a sparse in-memory store ("ram:1G"). Memory is allocated per chunk
// on first write; unmap frees whole chunks (and zeroes partial ones), reads of
// unallocated chunks return zeros. Requests are executed and completed inside
// poll(), so the asynchronous contract of BlockStore holds. Same threading
// rules as BlockStore.
#pragma once

#include <memory>
#include <unordered_map>
#include <vector>

#include "hyperscsi/store/block_store.h"

namespace hyperscsi::store {

class RamStore final : public BlockStore {
 public:
  static constexpr std::uint64_t kChunkBytes = 64 * 1024;

  static Result<std::unique_ptr<RamStore>, StoreError> create(std::uint64_t size_bytes,
                                                              std::uint32_t block_size,
                                                              bool read_only);
  ~RamStore() override;

  std::uint32_t block_size() const override { return block_size_; }
  std::uint64_t num_blocks() const override { return blocks_; }
  bool read_only() const override { return read_only_; }
  bool supports_unmap() const override { return !read_only_; }
  std::string describe() const override;
  StoreIdentity identity() const override { return identity_; }
  // By 64 KiB chunk: a chunk is allocated from its first write until an
  // unmap covers all of it.
  std::optional<Allocation> allocation_at(std::uint64_t offset) const override;

  void submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) override;
  void submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                    IoCallback cb) override;
  void submit_flush(IoCallback cb) override;
  void submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) override;
  void submit() override {}
  int completion_fd() const override { return event_fd_; }
  std::size_t poll() override;
  void drain() override;
  std::size_t in_flight() const override { return queue_.size(); }
  StoreCounters counters() const override { return counters_; }

  // Bytes of memory currently backing written data (sparseness check).
  std::uint64_t allocated_bytes() const { return chunks_.size() * kChunkBytes; }

 private:
  enum class Op : std::uint8_t { kRead, kWrite, kFlush, kUnmap };
  struct Request {
    Op op;
    std::uint64_t offset;
    std::uint64_t length;
    std::byte* read_buf;
    const std::byte* write_buf;
    IoCallback cb;
  };
  RamStore(std::uint64_t blocks, std::uint32_t block_size, bool read_only, int event_fd);
  bool in_range(std::uint64_t offset, std::uint64_t length) const;
  void enqueue(Request r);
  IoStatus execute(const Request& r);

  std::uint64_t blocks_;
  std::uint32_t block_size_;
  StoreIdentity identity_ = random_identity("random (RAM store: a new disk at every start)");
  bool read_only_;
  int event_fd_;
  std::unordered_map<std::uint64_t, std::unique_ptr<std::byte[]>> chunks_;
  std::vector<Request> queue_;
  StoreCounters counters_;
};

}  // namespace hyperscsi::store

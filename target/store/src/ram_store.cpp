#include "hyperscsi/store/ram_store.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace hyperscsi::store {

Result<std::unique_ptr<RamStore>, StoreError> RamStore::create(std::uint64_t size_bytes,
                                                               std::uint32_t block_size,
                                                               bool read_only) {
  if (block_size != 512 && block_size != 4096) {
    return Unexpected(
        StoreError{StoreError::Kind::kBadBlockSize,
                   "ram: block size " + std::to_string(block_size) + " is not 512 or 4096"});
  }
  if (size_bytes == 0 || size_bytes % block_size != 0) {
    return Unexpected(StoreError{StoreError::Kind::kBadSize,
                                 "ram: size " + std::to_string(size_bytes) +
                                     " is not a non-zero multiple of the block size " +
                                     std::to_string(block_size)});
  }
  int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) {
    return Unexpected(StoreError{StoreError::Kind::kIoSetupFailed,
                                 std::string("ram: eventfd: ") + std::strerror(errno)});
  }
  return std::unique_ptr<RamStore>(
      new RamStore(size_bytes / block_size, block_size, read_only, efd));
}

RamStore::RamStore(std::uint64_t blocks, std::uint32_t block_size, bool read_only, int event_fd)
    : blocks_(blocks), block_size_(block_size), read_only_(read_only), event_fd_(event_fd) {}

RamStore::~RamStore() {
  drain();
  ::close(event_fd_);
}

std::string RamStore::describe() const {
  return "ram:" + std::to_string(size_bytes());
}

std::optional<BlockStore::Allocation> RamStore::allocation_at(std::uint64_t offset) const {
  const std::uint64_t size = size_bytes();
  if (offset >= size) return std::nullopt;
  // Bounded scan: a long run is reported in pieces (the initiator asks again).
  constexpr std::uint64_t kMaxChunksScanned = 16384;  // 1 GiB
  std::uint64_t chunk = offset / kChunkBytes;
  const bool allocated = chunks_.count(chunk) != 0;
  std::uint64_t end = (chunk + 1) * kChunkBytes;
  for (std::uint64_t n = 1; n < kMaxChunksScanned && end < size; ++n) {
    if ((chunks_.count(++chunk) != 0) != allocated) break;
    end += kChunkBytes;
  }
  return Allocation{allocated, std::min(end, size) - offset};
}

bool RamStore::in_range(std::uint64_t offset, std::uint64_t length) const {
  const std::uint64_t size = size_bytes();
  return offset % block_size_ == 0 && length % block_size_ == 0 && offset <= size &&
         length <= size - offset;
}

void RamStore::enqueue(Request r) {
  const bool was_empty = queue_.empty();
  queue_.push_back(std::move(r));
  if (was_empty) {
    const std::uint64_t one = 1;
    // Wake an event loop watching completion_fd(); a full counter is harmless.
    [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
  }
}

void RamStore::submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) {
  enqueue({Op::kRead, offset, buf.size(), buf.data(), nullptr, std::move(cb)});
}

void RamStore::submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                            IoCallback cb) {
  if (fua) ++counters_.fua_writes;
  enqueue({Op::kWrite, offset, buf.size(), nullptr, buf.data(), std::move(cb)});
}

void RamStore::submit_flush(IoCallback cb) {
  enqueue({Op::kFlush, 0, 0, nullptr, nullptr, std::move(cb)});
}

void RamStore::submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) {
  enqueue({Op::kUnmap, offset, length, nullptr, nullptr, std::move(cb)});
}

IoStatus RamStore::execute(const Request& r) {
  if (r.op == Op::kFlush) {
    ++counters_.flushes;  // memory is the medium: nothing to write back
    return IoStatus::kOk;
  }
  if (!in_range(r.offset, r.length)) return IoStatus::kOutOfRange;
  if ((r.op == Op::kWrite || r.op == Op::kUnmap) && read_only_) return IoStatus::kReadOnly;
  std::uint64_t pos = r.offset;
  const std::uint64_t end = r.offset + r.length;
  while (pos < end) {
    const std::uint64_t chunk = pos / kChunkBytes;
    const std::uint64_t in_chunk = pos % kChunkBytes;
    const std::uint64_t n = std::min(end - pos, kChunkBytes - in_chunk);
    const std::uint64_t done = pos - r.offset;
    auto it = chunks_.find(chunk);
    switch (r.op) {
      case Op::kRead:
        if (it == chunks_.end()) {
          std::memset(r.read_buf + done, 0, n);
        } else {
          std::memcpy(r.read_buf + done, it->second.get() + in_chunk, n);
        }
        break;
      case Op::kWrite:
        if (it == chunks_.end()) {
          auto mem = std::make_unique<std::byte[]>(kChunkBytes);  // zero-initialised
          it = chunks_.emplace(chunk, std::move(mem)).first;
        }
        std::memcpy(it->second.get() + in_chunk, r.write_buf + done, n);
        break;
      case Op::kUnmap:
        if (it != chunks_.end()) {
          if (n == kChunkBytes) {
            chunks_.erase(it);
          } else {
            std::memset(it->second.get() + in_chunk, 0, n);
          }
        }
        break;
      case Op::kFlush:
        break;
    }
    pos += n;
  }
  switch (r.op) {
    case Op::kRead:
      ++counters_.reads;
      counters_.bytes_read += r.length;
      break;
    case Op::kWrite:
      ++counters_.writes;
      counters_.bytes_written += r.length;
      break;
    case Op::kUnmap:
      ++counters_.unmaps;
      break;
    case Op::kFlush:
      break;
  }
  return IoStatus::kOk;
}

std::size_t RamStore::poll() {
  std::uint64_t discard = 0;
  [[maybe_unused]] ssize_t n = ::read(event_fd_, &discard, sizeof discard);
  std::size_t ran = 0;
  // Callbacks may submit more work; run only what was queued at entry, then
  // re-arm the fd if new work arrived so the event loop comes back.
  std::vector<Request> batch;
  batch.swap(queue_);
  if (!batch.empty()) ++counters_.batches;
  for (auto& r : batch) {
    IoStatus s = execute(r);
    ++counters_.ops_submitted;
    if (s != IoStatus::kOk) ++counters_.errors;
    if (r.cb) r.cb(s);
    ++ran;
  }
  if (!queue_.empty()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(event_fd_, &one, sizeof one);
  }
  return ran;
}

void RamStore::drain() {
  // Each round runs at least one request; callbacks may add more, so bound
  // the loop by the work actually done rather than a fixed count.
  while (!queue_.empty()) poll();
}

}  // namespace hyperscsi::store

#include "hyperscsi/initiator/byte_device.h"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <vector>

namespace hyperscsi::initiator {

namespace {

Error out_of_range(uint64_t offset, uint64_t length, uint64_t size) {
  return {ErrorKind::kInvalidArgument, "range " + std::to_string(offset) + "+" +
                                           std::to_string(length) + " beyond the LUN size " +
                                           std::to_string(size)};
}

bool in_range(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

// Completion of one command as the caller's Done.
Completion finish(ByteDevice::Done done, const char* what) {
  return [done = std::move(done), what](CommandResult&& r) {
    if (r.good())
      done({});
    else
      done(Unexpected{error_of(r, what)});
  };
}

// The caller's thread waits on its own stack: no shared state to allocate
// (a promise costs three allocations per command). The completion signals
// under the mutex, so the waiter cannot return and free the state before
// the completion is done with it.
template <typename Start>
Status<Error> wait_for(Start&& start) {
  struct Wait {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
    Status<Error> status;
  } w;
  start([&w](Status<Error> st) {
    std::lock_guard lock(w.mutex);
    w.status = std::move(st);
    w.done = true;
    w.cv.notify_one();
  });
  std::unique_lock lock(w.mutex);
  w.cv.wait(lock, [&w] { return w.done; });
  return std::move(w.status);
}

}  // namespace

void ByteDevice::read(std::span<uint8_t> out, uint64_t offset, Done done) {
  if (!in_range(offset, out.size(), size()))
    return done(Unexpected{out_of_range(offset, out.size(), size())});
  if (out.empty()) return done({});
  const uint32_t bs = block_size();
  const uint64_t first = offset / bs;
  const uint64_t blocks = (offset + out.size() - 1) / bs - first + 1;
  if (blocks > 0xffffffffu) return done(Unexpected{out_of_range(offset, out.size(), size())});
  if (offset % bs == 0 && out.size() % bs == 0) {
    lun_.read_into(first, static_cast<uint32_t>(blocks), out, finish(std::move(done), "READ"));
    return;
  }
  // Unaligned: the covering blocks into scratch, then the slice.
  auto scratch = std::make_shared<std::vector<uint8_t>>(blocks * bs);
  const size_t skip = offset - first * bs;
  lun_.read_into(first, static_cast<uint32_t>(blocks), *scratch,
                 [scratch, out, skip, done = std::move(done)](CommandResult&& r) {
                   if (!r.good()) return done(Unexpected{error_of(r, "READ")});
                   std::memcpy(out.data(), scratch->data() + skip, out.size());
                   done({});
                 });
}

void ByteDevice::enter_shared() {
  std::unique_lock lock(gate_mutex_);
  gate_cv_.wait(lock, [this] { return !exclusive_; });
  ++shared_in_flight_;
}

void ByteDevice::leave_shared() {
  bool last = false;
  {
    std::lock_guard lock(gate_mutex_);
    last = --shared_in_flight_ == 0 && exclusive_;
  }
  if (last) gate_cv_.notify_all();
}

void ByteDevice::write(std::span<const uint8_t> in, uint64_t offset, bool fua, Done done,
                       bool borrowed) {
  if (!in_range(offset, in.size(), size()))
    return done(Unexpected{out_of_range(offset, in.size(), size())});
  if (in.empty()) return done({});
  const uint32_t bs = block_size();
  if (offset % bs != 0 || in.size() % bs != 0) return done(read_modify_write(in, offset, fua));
  enter_shared();
  submit_write(in, offset, fua, std::move(done), borrowed);
}

bool ByteDevice::write_nowait(std::span<const uint8_t> in, uint64_t offset, bool fua,
                              const Done& done, bool borrowed) {
  if (!in_range(offset, in.size(), size())) {
    done(Unexpected{out_of_range(offset, in.size(), size())});
    return true;
  }
  if (in.empty()) {
    done({});
    return true;
  }
  const uint32_t bs = block_size();
  if (offset % bs != 0 || in.size() % bs != 0) return false;
  {
    std::lock_guard lock(gate_mutex_);
    if (exclusive_) return false;
    ++shared_in_flight_;
  }
  submit_write(in, offset, fua, done, borrowed);
  return true;
}

void ByteDevice::submit_write(std::span<const uint8_t> in, uint64_t offset, bool fua, Done done,
                              bool borrowed) {
  Completion c = [this, done = std::move(done)](CommandResult&& r) {
    leave_shared();
    if (r.good())
      done({});
    else
      done(Unexpected{error_of(r, "WRITE")});
  };
  if (borrowed)
    lun_.write_borrowed(offset / block_size(), in, std::move(c), fua);
  else
    lun_.write(offset / block_size(), in, std::move(c), fua);
}

Status<Error> ByteDevice::read_modify_write(std::span<const uint8_t> in, uint64_t offset,
                                            bool fua) {
  {
    std::unique_lock lock(gate_mutex_);
    gate_cv_.wait(lock, [this] { return !exclusive_; });
    exclusive_ = true;
    gate_cv_.wait(lock, [this] { return shared_in_flight_ == 0; });
  }
  const uint32_t bs = block_size();
  const uint64_t first = offset / bs;
  const uint64_t last = (offset + in.size() - 1) / bs;
  const uint64_t blocks = last - first + 1;
  std::vector<uint8_t> buf(blocks * bs);
  // Only the edge blocks need their old contents.
  auto status = [&]() -> Status<Error> {
    auto head = lun_.read_sync(first, 1);
    if (!head) return Unexpected{head.error()};
    std::memcpy(buf.data(), head->data(), bs);
    if (last != first) {
      auto tail = lun_.read_sync(last, 1);
      if (!tail) return Unexpected{tail.error()};
      std::memcpy(buf.data() + (blocks - 1) * bs, tail->data(), bs);
    }
    std::memcpy(buf.data() + (offset - first * bs), in.data(), in.size());
    return lun_.write_sync(first, buf, fua);
  }();
  {
    std::lock_guard lock(gate_mutex_);
    exclusive_ = false;
  }
  gate_cv_.notify_all();
  return status;
}

void ByteDevice::flush(Done done) {
  lun_.flush(finish(std::move(done), "SYNCHRONIZE CACHE"));
}

void ByteDevice::unmap_blocks(uint64_t first, uint64_t count, Done done) {
  enter_shared();
  lun_.unmap(first, count, [this, done = std::move(done)](CommandResult&& r) {
    leave_shared();
    if (r.good())
      done({});
    else
      done(Unexpected{error_of(r, "UNMAP")});
  });
}

Status<Error> ByteDevice::zero_edges(uint64_t offset, uint64_t length, uint64_t first,
                                     uint64_t end) {
  const uint32_t bs = block_size();
  const uint64_t head_end = std::min(offset + length, first * bs);
  if (head_end > offset) {
    std::vector<uint8_t> zeros(head_end - offset, 0);
    if (auto st = pwrite(zeros, offset); !st) return st;
  }
  const uint64_t tail_start = std::max(end * bs, head_end);
  if (offset + length > tail_start) {
    std::vector<uint8_t> zeros(offset + length - tail_start, 0);
    if (auto st = pwrite(zeros, tail_start); !st) return st;
  }
  return {};
}

void ByteDevice::discard(uint64_t offset, uint64_t length, Done done) {
  if (!in_range(offset, length, size()))
    return done(Unexpected{out_of_range(offset, length, size())});
  const uint32_t bs = block_size();
  const uint64_t start = (offset + bs - 1) / bs;
  const uint64_t end = (offset + length) / bs;
  // Zero the partial edges by writing (synchronously: rare, and ordered
  // before the unmap completes).
  if (auto st = zero_edges(offset, length, start, end); !st) return done(st);
  if (end <= start) return done({});
  const Capacity& cap = lun_.capacity();
  if (cap.thin && cap.unmapped_reads_zero) return unmap_blocks(start, end - start, std::move(done));
  done(zero_blocks(start, end - start));
}

Status<Error> ByteDevice::zero_blocks(uint64_t first, uint64_t count) {
  const uint32_t bs = block_size();
  if (!no_write_same_.load(std::memory_order_relaxed)) {
    enter_shared();
    auto p = std::make_shared<std::promise<CommandResult>>();
    auto f = p->get_future();
    lun_.write_zeroes(first, count, [p](CommandResult&& r) { p->set_value(std::move(r)); });
    CommandResult r = f.get();
    leave_shared();
    if (r.good()) return {};
    // ILLEGAL REQUEST other than a bad LBA: no WRITE SAME here (or not this
    // long); write zeros from now on.
    const scsi::SenseInfo s = scsi::parse_sense(r.sense);
    if (!(r.error == CompletionError::kNone && s.valid && s.key == 0x05 && s.asc != 0x21))
      return Unexpected{error_of(r, "WRITE SAME")};
    no_write_same_.store(true, std::memory_order_relaxed);
  }
  // Writes of zeros, up to 1 MiB each, 8 in flight.
  const uint64_t per = std::max<uint64_t>(1, (1u << 20) / bs);
  static const std::vector<uint8_t> zeros(1u << 20, 0);
  std::mutex m;
  std::condition_variable cv;
  unsigned in_flight = 0;
  Status<Error> first_error;
  for (uint64_t b = first; b < first + count;) {
    const uint64_t n = std::min(per, first + count - b);
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return in_flight < 8; });
      if (!first_error) break;
      ++in_flight;
    }
    write(std::span<const uint8_t>(zeros.data(), n * bs), b * bs, false, [&](Status<Error> st) {
      std::lock_guard lock(m);
      if (!st && first_error) first_error = std::move(st);
      --in_flight;
      cv.notify_all();
    });
    b += n;
  }
  std::unique_lock lock(m);
  cv.wait(lock, [&] { return in_flight == 0; });
  return first_error;
}

void ByteDevice::write_zeroes(uint64_t offset, uint64_t length, Done done) {
  if (!in_range(offset, length, size()))
    return done(Unexpected{out_of_range(offset, length, size())});
  const uint32_t bs = block_size();
  const uint64_t start = (offset + bs - 1) / bs;
  const uint64_t end = (offset + length) / bs;
  if (auto st = zero_edges(offset, length, start, end); !st) return done(st);
  if (end > start) return done(zero_blocks(start, end - start));
  done({});
}

Status<Error> ByteDevice::pread(std::span<uint8_t> out, uint64_t offset) {
  return wait_for([&](Done d) { read(out, offset, std::move(d)); });
}

Status<Error> ByteDevice::pwrite(std::span<const uint8_t> in, uint64_t offset, bool fua) {
  // `in` outlives the wait: borrowed, not copied (issue 13: the nbdkit
  // plugin's writes).
  return wait_for([&](Done d) { write(in, offset, fua, std::move(d), true); });
}

Status<Error> ByteDevice::flush() {
  return wait_for([&](Done d) { flush(std::move(d)); });
}

Status<Error> ByteDevice::discard(uint64_t offset, uint64_t length) {
  return wait_for([&](Done d) { discard(offset, length, std::move(d)); });
}

Status<Error> ByteDevice::write_zeroes(uint64_t offset, uint64_t length) {
  return wait_for([&](Done d) { write_zeroes(offset, length, std::move(d)); });
}

int ByteDevice::errno_of(const Error& e) {
  switch (e.kind) {
    case ErrorKind::kInvalidArgument:
      return EINVAL;
    case ErrorKind::kNotConnected:
    case ErrorKind::kNoTarget:
      return ENOTCONN;
    case ErrorKind::kCommandFailed:
      return ETIMEDOUT;
    case ErrorKind::kScsi:
      if (e.message.find("WRITE PROTECTED") != std::string::npos) return EROFS;
      if (e.message.find("INVALID COMMAND OPERATION CODE") != std::string::npos) return EOPNOTSUPP;
      return EIO;
    default:
      return EIO;
  }
}

}  // namespace hyperscsi::initiator

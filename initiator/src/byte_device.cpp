#include "hyperscsi/initiator/byte_device.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

namespace hyperscsi::initiator {

namespace {
Error out_of_range(uint64_t offset, size_t length, uint64_t size) {
  return {ErrorKind::kInvalidArgument, "range " + std::to_string(offset) + "+" +
                                           std::to_string(length) + " beyond the LUN size " +
                                           std::to_string(size)};
}
}  // namespace

Status<Error> ByteDevice::pread(std::span<uint8_t> out, uint64_t offset) {
  if (offset > size() || out.size() > size() - offset)
    return Unexpected{out_of_range(offset, out.size(), size())};
  if (out.empty()) return {};
  const uint32_t bs = block_size();
  const uint64_t first = offset / bs;
  const uint64_t last = (offset + out.size() - 1) / bs;
  const uint64_t blocks = last - first + 1;
  if (offset % bs == 0 && out.size() % bs == 0 && blocks <= 0xffffffffu) {
    auto data = lun_.read_sync(first, static_cast<uint32_t>(blocks));
    if (!data) return Unexpected{data.error()};
    std::memcpy(out.data(), data->data(), out.size());
    return {};
  }
  auto data = lun_.read_sync(first, static_cast<uint32_t>(blocks));
  if (!data) return Unexpected{data.error()};
  std::memcpy(out.data(), data->data() + (offset - first * bs), out.size());
  return {};
}

Status<Error> ByteDevice::pwrite(std::span<const uint8_t> in, uint64_t offset, bool fua) {
  if (offset > size() || in.size() > size() - offset)
    return Unexpected{out_of_range(offset, in.size(), size())};
  if (in.empty()) return {};
  const uint32_t bs = block_size();
  if (offset % bs == 0 && in.size() % bs == 0) {
    std::shared_lock lock(rmw_);
    return lun_.write_sync(offset / bs, in, fua);
  }
  std::unique_lock lock(rmw_);
  const uint64_t first = offset / bs;
  const uint64_t last = (offset + in.size() - 1) / bs;
  const uint64_t blocks = last - first + 1;
  std::vector<uint8_t> buf(blocks * bs);
  // Only the edge blocks need their old contents.
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
}

Status<Error> ByteDevice::discard(uint64_t offset, uint64_t length) {
  if (offset > size() || length > size() - offset)
    return Unexpected{out_of_range(offset, static_cast<size_t>(length), size())};
  const uint32_t bs = block_size();
  const uint64_t start = (offset + bs - 1) / bs;
  const uint64_t end = (offset + length) / bs;
  // Zero the partial edges by writing.
  const uint64_t head_end = std::min(offset + length, start * bs);
  if (head_end > offset) {
    std::vector<uint8_t> zeros(head_end - offset, 0);
    if (auto st = pwrite(zeros, offset); !st) return st;
  }
  const uint64_t tail_start = std::max(end * bs, head_end);
  if (offset + length > tail_start) {
    std::vector<uint8_t> zeros(offset + length - tail_start, 0);
    if (auto st = pwrite(zeros, tail_start); !st) return st;
  }
  if (end > start) {
    std::shared_lock lock(rmw_);
    return lun_.unmap_sync(start, end - start);
  }
  return {};
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

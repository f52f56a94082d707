// Explicit big-endian loads and stores, and a bounded reader/writer for
// length-prefixed wire bodies. Every wire byte in proto/ goes through these:
// no struct is ever cast onto a buffer, so alignment and host byte order never
// matter.
// Thread-safety: free functions and small value types; no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace hyperscsi::proto::bytes {

// Raw loads/stores. The caller guarantees the bytes exist (callers check the
// length first; BoundedReader below does it for them).
inline uint8_t load_u8(const uint8_t* p) {
  return p[0];
}
inline uint16_t load_be16(const uint8_t* p) {
  return static_cast<uint16_t>((static_cast<uint16_t>(p[0]) << 8) | p[1]);
}
inline uint32_t load_be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}
inline uint64_t load_be64(const uint8_t* p) {
  return (static_cast<uint64_t>(load_be32(p)) << 32) | load_be32(p + 4);
}

inline void store_u8(uint8_t* p, uint8_t v) {
  p[0] = v;
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
inline void store_be64(uint8_t* p, uint64_t v) {
  store_be32(p, static_cast<uint32_t>(v >> 32));
  store_be32(p + 4, static_cast<uint32_t>(v));
}

// Reads fields in order from a span and never past its end. Each getter
// returns false (and leaves the position unchanged) when too few bytes remain;
// the span it hands out points into the input, which must outlive it.
class BoundedReader {
 public:
  explicit BoundedReader(std::span<const uint8_t> in) : in_(in) {}

  size_t remaining() const { return in_.size() - pos_; }
  size_t position() const { return pos_; }

  bool u8(uint8_t& v) {
    if (remaining() < 1) return false;
    v = load_u8(in_.data() + pos_);
    pos_ += 1;
    return true;
  }
  bool be16(uint16_t& v) {
    if (remaining() < 2) return false;
    v = load_be16(in_.data() + pos_);
    pos_ += 2;
    return true;
  }
  bool be32(uint32_t& v) {
    if (remaining() < 4) return false;
    v = load_be32(in_.data() + pos_);
    pos_ += 4;
    return true;
  }
  bool be64(uint64_t& v) {
    if (remaining() < 8) return false;
    v = load_be64(in_.data() + pos_);
    pos_ += 8;
    return true;
  }
  bool bytes(size_t n, std::span<const uint8_t>& v) {
    if (remaining() < n) return false;
    v = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool skip(size_t n) {
    if (remaining() < n) return false;
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> rest() const { return in_.subspan(pos_); }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

// Appends big-endian fields to a growing vector.
class VectorWriter {
 public:
  explicit VectorWriter(std::vector<uint8_t>& out) : out_(out) {}

  void u8(uint8_t v) { out_.push_back(v); }
  void be16(uint16_t v) { store_be16(grow(2), v); }
  void be32(uint32_t v) { store_be32(grow(4), v); }
  void be64(uint64_t v) { store_be64(grow(8), v); }
  void bytes(std::span<const uint8_t> v) { out_.insert(out_.end(), v.begin(), v.end()); }
  void zeros(size_t n) { out_.resize(out_.size() + n, 0); }

 private:
  uint8_t* grow(size_t n) {
    out_.resize(out_.size() + n);
    return out_.data() + out_.size() - n;
  }
  std::vector<uint8_t>& out_;
};

}  // namespace hyperscsi::proto::bytes

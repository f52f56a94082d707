// Per-frame protection; see frame_protection.h and docs/protocol.md.
#include "hyperscsi/proto/frame_protection.h"

#include <algorithm>
#include <cstring>

#include "hyperscsi/proto/bytes.h"

namespace hyperscsi::proto {

namespace {

// Offsets within the HyperSCSI header (after the EtherType), as in frame.cpp.
constexpr size_t kOffExtLen = 5;
constexpr size_t kOffFlags = 6;
constexpr size_t kOffSackCount = 7;
constexpr size_t kOffPayloadLength = 32;
constexpr size_t kOffCrc = 36;

std::array<uint8_t, crypto::kAeadNonceSize> make_nonce(const std::array<uint8_t, kSaltSize>& salt,
                                                       uint64_t counter) {
  std::array<uint8_t, crypto::kAeadNonceSize> n{};
  std::copy(salt.begin(), salt.end(), n.begin());
  bytes::store_be64(n.data() + kSaltSize, counter);
  return n;
}

}  // namespace

FrameSealer::FrameSealer(Protection protection, std::span<const uint8_t> key,
                         std::span<const uint8_t, kSaltSize> salt)
    : protection_(protection), aead_(key) {
  std::copy(salt.begin(), salt.end(), salt_.begin());
}

size_t FrameSealer::seal(std::span<uint8_t> frame, size_t length) {
  if (!aead_.valid() || length > frame.size()) return 0;
  if (length < kEthernetHeaderSize + kHeaderSize) return 0;
  uint8_t* p = frame.data();
  uint8_t* hs = p + kEthernetHeaderSize;
  const size_t payload_start =
      kEthernetHeaderSize + kCommonHeaderSize + hs[kOffExtLen] + size_t{hs[kOffSackCount]} * 8;
  const size_t payload_end = payload_start + bytes::load_be16(hs + kOffPayloadLength);
  const size_t sealed_end = payload_end + kProtectionTrailerSize;
  if (payload_end > length || sealed_end > frame.size()) return 0;

  hs[kOffFlags] = static_cast<uint8_t>((hs[kOffFlags] | kFlagProtected) & ~kFlagChecksum);
  bytes::store_be32(hs + kOffCrc, 0);
  const uint64_t counter = ++counter_;
  bytes::store_be64(p + payload_end, counter);
  const auto nonce = make_nonce(salt_, counter);
  std::span<uint8_t, crypto::kAeadTagSize> tag(p + payload_end + 8, crypto::kAeadTagSize);
  const bool encrypt = protection_ == Protection::kEncrypt;
  const std::span<const uint8_t> aad(p, encrypt ? payload_start : payload_end);
  const std::span<uint8_t> body =
      encrypt ? frame.subspan(payload_start, payload_end - payload_start) : std::span<uint8_t>{};
  if (!aead_.seal(nonce, aad, body, tag)) return 0;
  const size_t total = std::max(sealed_end, kMinEthernetFrame);
  if (total > frame.size()) return 0;
  if (total > sealed_end) std::memset(p + sealed_end, 0, total - sealed_end);
  return total;
}

FrameOpener::FrameOpener(Protection protection, std::span<const uint8_t> key,
                         std::span<const uint8_t, kSaltSize> salt)
    : protection_(protection), aead_(key) {
  std::copy(salt.begin(), salt.end(), salt_.begin());
}

bool FrameOpener::seen(uint64_t counter) const {
  if (counter > highest_) return false;
  const uint64_t age = highest_ - counter;
  if (age >= kReplayWindow) return true;  // too old to tell: treat as seen
  return (window_[age / 64] >> (age % 64)) & 1u;
}

void FrameOpener::mark(uint64_t counter) {
  if (counter > highest_) {
    const uint64_t shift = counter - highest_;
    if (shift >= kReplayWindow) {
      window_.fill(0);
    } else {
      // Shift the bitmap by `shift` bits towards older ages.
      const size_t words = shift / 64;
      const unsigned bits = static_cast<unsigned>(shift % 64);
      for (size_t i = window_.size(); i-- > 0;) {
        uint64_t v = i >= words ? window_[i - words] << bits : 0;
        if (bits != 0 && i >= words + 1) v |= window_[i - words - 1] >> (64 - bits);
        window_[i] = v;
      }
    }
    highest_ = counter;
  }
  const uint64_t age = highest_ - counter;
  window_[age / 64] |= uint64_t{1} << (age % 64);
}

OpenVerdict FrameOpener::open(const FrameView& in, std::vector<uint8_t>& scratch, FrameView& out) {
  if ((in.header.ext.flags & kFlagProtected) == 0 || in.raw.empty() || !aead_.valid())
    return OpenVerdict::kUnprotected;
  const uint8_t* p = in.raw.data();
  const size_t payload_start = static_cast<size_t>(in.payload.data() - p);
  const size_t payload_end = payload_start + in.payload.size();
  if (payload_start > in.raw.size() || payload_end + kProtectionTrailerSize > in.raw.size())
    return OpenVerdict::kUnprotected;
  const uint64_t counter = bytes::load_be64(p + payload_end);
  if (counter == 0 || seen(counter)) return OpenVerdict::kReplayed;
  const auto nonce = make_nonce(salt_, counter);
  std::span<const uint8_t, crypto::kAeadTagSize> tag(p + payload_end + 8, crypto::kAeadTagSize);
  out = in;
  if (protection_ == Protection::kEncrypt) {
    scratch.resize(in.payload.size());
    if (!aead_.open(nonce, in.raw.subspan(0, payload_start), in.payload, scratch, tag))
      return OpenVerdict::kBadTag;
    out.payload = scratch;
  } else {
    if (!aead_.open(nonce, in.raw.subspan(0, payload_end), {}, {}, tag))
      return OpenVerdict::kBadTag;
  }
  mark(counter);
  return OpenVerdict::kOk;
}

void ProtectionStats::count(OpenVerdict v) {
  switch (v) {
    case OpenVerdict::kOk:
      break;
    case OpenVerdict::kUnprotected:
      ++unprotected;
      break;
    case OpenVerdict::kBadTag:
      ++bad_tag;
      break;
    case OpenVerdict::kReplayed:
      ++replayed;
      break;
  }
}

std::span<uint8_t> SealingSink::acquire(size_t size) {
  buffer_ = inner_.acquire(size + kProtectionTrailerSize);
  if (buffer_.empty()) return buffer_;
  return buffer_.first(size);
}

void SealingSink::commit(size_t length) {
  const size_t sealed = sealer_.seal(buffer_, length);
  // A frame that cannot be sealed is never sent unprotected: it is not
  // committed, and the inner sink reuses the buffer for the next frame.
  if (sealed != 0) inner_.commit(sealed);
}

}  // namespace hyperscsi::proto

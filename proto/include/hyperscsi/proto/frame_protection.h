// Per-frame protection of an authenticated session (docs/protocol.md,
// "Per-frame protection"). A protected frame has kFlagProtected set and a
// 24-byte trailer right after its payload (before any Ethernet padding):
//
//   u64 counter (big-endian)  | 16-byte AES-256-GCM tag
//
// The nonce is salt(4) || counter(8); the sender increments the counter for
// every frame it sends, retransmissions included, so a nonce is never reused
// under one key. kIntegrity: the tag authenticates Ethernet header, HyperSCSI
// header, SACK blocks and payload (GMAC), the payload stays readable.
// kEncrypt: the payload is encrypted, the headers are the associated data.
// The receiver keeps an anti-replay window (as IPsec ESP does): a counter seen
// before or older than the window is rejected; reordered first copies within
// the window pass (Connection sorts them by seq).
//
// Thread-safety: none; a sealer belongs to the sending thread, an opener to
// the receiving one. No I/O, no exceptions.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/crypto.h"
#include "hyperscsi/proto/frame.h"

namespace hyperscsi::proto {

inline constexpr size_t kProtectionTrailerSize = 8 + crypto::kAeadTagSize;  // 24
inline constexpr size_t kReplayWindow = 1024;                               // counters

// Seals encoded frames in place.
class FrameSealer {
 public:
  FrameSealer(Protection protection, std::span<const uint8_t> key,
              std::span<const uint8_t, kSaltSize> salt);
  // `frame` holds an encoded frame of `length` bytes and has room for the
  // trailer. Sets kFlagProtected (clearing kFlagChecksum: the tag supersedes
  // the crc), appends the trailer and encrypts if asked. Returns the new
  // frame length, or 0 if the frame does not parse or does not fit.
  size_t seal(std::span<uint8_t> frame, size_t length);
  uint64_t frames_sealed() const { return counter_; }

 private:
  Protection protection_;
  crypto::Aead aead_;
  std::array<uint8_t, kSaltSize> salt_{};
  uint64_t counter_ = 0;  // last counter used; the first frame carries 1
};

enum class OpenVerdict : uint8_t {
  kOk,
  kUnprotected,  // no kFlagProtected, or no room for the trailer
  kBadTag,       // forged or modified
  kReplayed,     // counter seen before or older than the window
};

// Verifies (and decrypts) received frames of one direction.
class FrameOpener {
 public:
  FrameOpener(Protection protection, std::span<const uint8_t> key,
              std::span<const uint8_t, kSaltSize> salt);
  // `in` must come from decode_frame (its `raw` spans the whole frame). On
  // kOk `out` is `in` with the payload in clear: for kEncrypt it points into
  // `scratch`, which must outlive `out`.
  OpenVerdict open(const FrameView& in, std::vector<uint8_t>& scratch, FrameView& out);

 private:
  bool seen(uint64_t counter) const;
  void mark(uint64_t counter);

  Protection protection_;
  crypto::Aead aead_;
  std::array<uint8_t, kSaltSize> salt_{};
  uint64_t highest_ = 0;                               // highest counter accepted so far (0: none)
  std::array<uint64_t, kReplayWindow / 64> window_{};  // bit i: counter highest_ - i seen
};

// Counters of frames a session dropped for failing protection.
struct ProtectionStats {
  uint64_t unprotected = 0;
  uint64_t bad_tag = 0;
  uint64_t replayed = 0;
  void count(OpenVerdict v);
};

// A sealer and an opener that two owners use one after the other on the
// same keys: a multipath session's login path is sealed by the initiator's
// login session while it verifies the MTU, then by the path (and by the
// login session again for its Disconnect). Sharing them keeps the counter
// going (fresh ones would use the same nonces again: with AES-GCM that
// gives the authentication key away) and the anti-replay window whole.
// Ownership: shared; both owners run on one thread.
struct SharedProtection {
  std::shared_ptr<FrameSealer> sealer;
  std::shared_ptr<FrameOpener> opener;
};

// A FrameSink that seals every frame written through it.
class SealingSink : public FrameSink {
 public:
  SealingSink(FrameSink& inner, FrameSealer& sealer) : inner_(inner), sealer_(sealer) {}
  std::span<uint8_t> acquire(size_t size) override;
  void commit(size_t length) override;

 private:
  FrameSink& inner_;
  FrameSealer& sealer_;
  std::span<uint8_t> buffer_;
};

}  // namespace hyperscsi::proto

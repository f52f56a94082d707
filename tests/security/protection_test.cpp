// FrameSealer/FrameOpener on real encoded frames: round trips at both levels,
// tampering with any covered byte, replays and the anti-replay window.
#include <gtest/gtest.h>

#include "hyperscsi/proto/frame_protection.h"

namespace hyperscsi::proto {
namespace {

const std::array<uint8_t, kSaltSize> kSalt = {1, 2, 3, 4};

std::vector<uint8_t> key(uint8_t v) {
  return std::vector<uint8_t>(32, v);
}

// An encoded CommandRequest fragment with room for the trailer.
std::vector<uint8_t> frame_with(std::span<const uint8_t> payload, uint32_t seq = 5) {
  FrameHeader h;
  h.dst = {2, 0, 0, 0, 0, 0x10};
  h.src = {2, 0, 0, 0, 0, 0x01};
  h.common.opcode = Opcode::kCommandRequest;
  h.ext.flags = kFlagChecksum | kFlagAck;
  h.ext.session_id = 0x1234;
  h.ext.epoch = 1;
  h.ext.seq = seq;
  h.ext.pdu_length = static_cast<uint32_t>(payload.size());
  std::vector<uint8_t> out(encoded_size(h, payload.size()) + kProtectionTrailerSize);
  const size_t n = encode_frame(out, h, payload);
  EXPECT_GT(n, 0u);
  out.resize(n + kProtectionTrailerSize);
  return out;
}

struct Sealed {
  std::vector<uint8_t> bytes;
};

Sealed seal(FrameSealer& s, std::span<const uint8_t> payload, uint32_t seq = 5) {
  auto f = frame_with(payload, seq);
  const size_t base = f.size() - kProtectionTrailerSize;
  const size_t n = s.seal(f, base);
  EXPECT_GT(n, 0u);
  f.resize(n);
  return {f};
}

OpenVerdict open(FrameOpener& o, const std::vector<uint8_t>& bytes,
                 std::vector<uint8_t>* plain = nullptr) {
  auto d = decode_frame(bytes);
  if (!d) return OpenVerdict::kUnprotected;  // reported separately below
  std::vector<uint8_t> scratch;
  FrameView out;
  const OpenVerdict v = o.open(d.value(), scratch, out);
  if (v == OpenVerdict::kOk && plain) plain->assign(out.payload.begin(), out.payload.end());
  return v;
}

std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(i * 13 + 1);
  return p;
}

class Levels : public ::testing::TestWithParam<Protection> {};

TEST_P(Levels, RoundTripAndEveryTamperedByteIsRejected) {
  FrameSealer sealer(GetParam(), key(7), kSalt);
  const auto payload = pattern(300);
  Sealed s = seal(sealer, payload);
  auto decoded = decode_frame(s.bytes);
  ASSERT_TRUE(decoded) << "a sealed frame still decodes";
  EXPECT_TRUE(decoded->header.ext.flags & kFlagProtected);
  EXPECT_FALSE(decoded->header.ext.flags & kFlagChecksum);
  const bool in_clear = std::equal(payload.begin(), payload.end(), decoded->payload.begin());
  EXPECT_EQ(in_clear, GetParam() == Protection::kIntegrity);

  {
    FrameOpener opener(GetParam(), key(7), kSalt);
    std::vector<uint8_t> plain;
    ASSERT_EQ(open(opener, s.bytes, &plain), OpenVerdict::kOk);
    EXPECT_EQ(plain, payload);
    EXPECT_EQ(open(opener, s.bytes), OpenVerdict::kReplayed);
  }
  // Flip one bit at a time in every byte the tag covers: MACs, EtherType
  // excluded (a non-HyperSCSI frame is not ours to open), header, payload, trailer.
  for (size_t i = 0; i < s.bytes.size(); ++i) {
    if (i == 12 || i == 13) continue;
    auto bad = s.bytes;
    bad[i] ^= 0x10;
    FrameOpener opener(GetParam(), key(7), kSalt);
    auto d = decode_frame(bad);
    if (!d) continue;  // the decoder rejected it already (e.g. bad length)
    std::vector<uint8_t> scratch;
    FrameView out;
    const OpenVerdict v = opener.open(d.value(), scratch, out);
    EXPECT_NE(v, OpenVerdict::kOk) << "byte " << i;
  }
  // Another key (another session or direction) does not open it.
  FrameOpener other(GetParam(), key(8), kSalt);
  EXPECT_EQ(open(other, s.bytes), OpenVerdict::kBadTag);
}

INSTANTIATE_TEST_SUITE_P(Protection, Levels,
                         ::testing::Values(Protection::kIntegrity, Protection::kEncrypt));

TEST(FrameProtection, UnprotectedFramesAreRefused) {
  FrameOpener opener(Protection::kEncrypt, key(7), kSalt);
  auto f = frame_with(pattern(64));
  f.resize(f.size() - kProtectionTrailerSize);
  EXPECT_EQ(open(opener, f), OpenVerdict::kUnprotected);
}

TEST(FrameProtection, ReorderWithinTheWindowPassesReplaysAndOldFramesDoNot) {
  FrameSealer sealer(Protection::kIntegrity, key(1), kSalt);
  FrameOpener opener(Protection::kIntegrity, key(1), kSalt);
  std::vector<Sealed> frames;
  for (uint32_t i = 0; i < kReplayWindow + 200; ++i) frames.push_back(seal(sealer, pattern(8), i));
  // Counters 1..N. Deliver 10, then 3..9 reordered: all first copies pass.
  EXPECT_EQ(open(opener, frames[9].bytes), OpenVerdict::kOk);
  for (size_t i = 2; i < 9; ++i) EXPECT_EQ(open(opener, frames[i].bytes), OpenVerdict::kOk) << i;
  for (size_t i = 2; i < 10; ++i) EXPECT_EQ(open(opener, frames[i].bytes), OpenVerdict::kReplayed);
  // Jump far ahead: frame 1 (never seen) is now older than the window.
  EXPECT_EQ(open(opener, frames[kReplayWindow + 150].bytes), OpenVerdict::kOk);
  EXPECT_EQ(open(opener, frames[0].bytes), OpenVerdict::kReplayed);
  // Within the window of the new highest, unseen counters still pass once.
  EXPECT_EQ(open(opener, frames[kReplayWindow + 100].bytes), OpenVerdict::kOk);
  EXPECT_EQ(open(opener, frames[kReplayWindow + 100].bytes), OpenVerdict::kReplayed);
  EXPECT_EQ(open(opener, frames[200].bytes), OpenVerdict::kOk);  // age 950 < 1024
  EXPECT_EQ(open(opener, frames[200].bytes), OpenVerdict::kReplayed);
  EXPECT_EQ(sealer.frames_sealed(), kReplayWindow + 200);
}

TEST(FrameProtection, ShortFramesArePaddedAfterTheTrailer) {
  FrameSealer sealer(Protection::kEncrypt, key(3), kSalt);
  FrameOpener opener(Protection::kEncrypt, key(3), kSalt);
  Sealed s = seal(sealer, {});
  EXPECT_GE(s.bytes.size(), kMinEthernetFrame);
  EXPECT_EQ(open(opener, s.bytes), OpenVerdict::kOk);
}

}  // namespace
}  // namespace hyperscsi::proto

#include "pattern.h"

#include <cstring>

namespace hyperscsi::bench {
namespace {

constexpr uint64_t kMagic = 0x31484342'53485348ULL;  // "HSHSBCH1" in little-endian bytes
constexpr size_t kHeader = 24;                       // magic, lba, generation
constexpr size_t kBodyEnd = kPatternSector - 8;      // checksum in the last 8 bytes

void store64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint64_t load64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}
// FNV-1a over 64-bit words: cheap, and any flipped byte changes it.
uint64_t checksum(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i += 8) h = (h ^ load64(p + i)) * 0x100000001b3ULL;
  return h;
}

void fill_sector(uint8_t* s, uint64_t lba, uint64_t generation) {
  store64(s, kMagic);
  store64(s + 8, lba);
  store64(s + 16, generation);
  uint64_t x = (lba * 0x9e3779b97f4a7c15ULL) ^ (generation + 0x632be59bd9b4e019ULL);
  for (size_t i = kHeader; i < kBodyEnd; i += 8) {
    x ^= x << 13;  // xorshift64
    x ^= x >> 7;
    x ^= x << 17;
    store64(s + i, x);
  }
  store64(s + kBodyEnd, checksum(s, kBodyEnd));
}

}  // namespace

void fill_pattern(std::span<uint8_t> out, uint64_t sector, uint64_t generation) {
  for (size_t off = 0; off + kPatternSector <= out.size(); off += kPatternSector)
    fill_sector(out.data() + off, sector + off / kPatternSector, generation);
}

PatternCheck check_pattern(std::span<const uint8_t> data, uint64_t sector,
                           std::optional<uint64_t> generation) {
  uint8_t expect[kPatternSector];
  for (size_t off = 0; off + kPatternSector <= data.size(); off += kPatternSector) {
    const uint8_t* s = data.data() + off;
    const uint64_t lba = sector + off / kPatternSector;
    auto bad = [&](const std::string& why) {
      return PatternCheck{false, "sector " + std::to_string(lba) + ": " + why};
    };
    if (load64(s) != kMagic) return bad("no verify pattern (magic missing)");
    if (load64(s + 8) != lba)
      return bad("holds the pattern of sector " + std::to_string(load64(s + 8)));
    const uint64_t gen = load64(s + 16);
    if (generation && gen != *generation)
      return bad("generation " + std::to_string(gen) + ", expected " + std::to_string(*generation));
    if (checksum(s, kBodyEnd) != load64(s + kBodyEnd)) return bad("checksum mismatch");
    fill_sector(expect, lba, gen);
    if (std::memcmp(expect, s, kPatternSector) != 0) return bad("body differs from the pattern");
  }
  return {};
}

}  // namespace hyperscsi::bench

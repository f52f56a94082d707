// Verify patterns: every 512-byte sector written in --verify mode carries a
// header (magic, LBA of the sector, generation number), a pseudo-random body
// derived from (LBA, generation) and a checksum of everything before it.
// All fields are little-endian, written and read with explicit byte stores.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace hyperscsi::bench {

inline constexpr uint32_t kPatternSector = 512;

// Fills `out` (a multiple of 512 bytes) for sectors starting at `sector`.
void fill_pattern(std::span<uint8_t> out, uint64_t sector, uint64_t generation);

struct PatternCheck {
  bool ok = true;
  std::string problem;  // first bad sector and why
};
// Checks `data` read from `sector`. `generation` empty: any generation a
// verify run wrote is accepted (the chunk was not written in this run).
PatternCheck check_pattern(std::span<const uint8_t> data, uint64_t sector,
                           std::optional<uint64_t> generation);

}  // namespace hyperscsi::bench

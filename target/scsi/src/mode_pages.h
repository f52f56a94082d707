// MODE SENSE data and MODE SELECT parsing (caching, control and
// informational-exceptions pages). Only WCE is changeable. Internal.
#pragma once

#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "hyperscsi/scsi/sense.h"

namespace hyperscsi::scsi {

struct ModeState {
  bool wce = true;
  bool read_only = false;
  std::uint32_t block_size = 512;
  std::uint64_t num_blocks = 0;
};

struct ModeSenseArgs {
  bool ten = false;     // MODE SENSE(10)
  bool dbd = false;     // disable block descriptors
  bool llbaa = false;   // long LBA block descriptor allowed (10 only)
  std::uint8_t pc = 0;  // page control
  std::uint8_t page = 0;
  std::uint8_t subpage = 0;
};

// Full (untruncated) mode parameter data or the sense to report.
std::variant<std::vector<std::uint8_t>, Sense> build_mode_sense(const ModeSenseArgs& a,
                                                                const ModeState& st);

// Validates a MODE SELECT parameter list; on success returns the new WCE value.
std::variant<bool, Sense> parse_mode_select(bool ten, std::span<const std::uint8_t> params,
                                            const ModeState& st);

}  // namespace hyperscsi::scsi

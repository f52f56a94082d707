// INQUIRY standard data and VPD pages. Internal to hyperscsi_scsi.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "hyperscsi/scsi/logical_unit.h"

namespace hyperscsi::scsi {

std::vector<std::uint8_t> standard_inquiry_data(const LuConfig& cfg);
// nullopt for a page we do not implement.
std::optional<std::vector<std::uint8_t>> vpd_page(std::uint8_t page, const LuConfig& cfg,
                                                  const store::BlockStore& store,
                                                  const std::array<std::uint8_t, 8>& naa);
// FNV-1a based 60-bit hash used for the NAA identifier.
std::array<std::uint8_t, 8> make_naa_identifier(const LuConfig& cfg);

}  // namespace hyperscsi::scsi

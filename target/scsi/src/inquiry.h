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
// NAA 3 (locally assigned) identifier: 60 bits of the store identity's UUID
// when it has one, else an FNV-1a hash of target name, LUN and serial.
std::array<std::uint8_t, 8> make_naa_identifier(const LuConfig& cfg,
                                                const store::StoreIdentity& identity);

}  // namespace hyperscsi::scsi

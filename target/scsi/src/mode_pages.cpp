#include "mode_pages.h"

#include "cdb.h"

namespace hyperscsi::scsi {
namespace {

constexpr std::uint8_t kCachingPage = 0x08;
constexpr std::uint8_t kControlPage = 0x0A;
constexpr std::uint8_t kInfoExceptionsPage = 0x1C;
constexpr std::uint8_t kAllPages = 0x3F;

enum PageControl : std::uint8_t { kCurrent = 0, kChangeable = 1, kDefault = 2, kSaved = 3 };

// One page in the given page-control flavour.
std::vector<std::uint8_t> page_bytes(std::uint8_t page, std::uint8_t pc, const ModeState& st) {
  std::vector<std::uint8_t> p;
  switch (page) {
    case kCachingPage:
      p.assign(20, 0);
      p[0] = kCachingPage;
      p[1] = 18;
      if (pc == kChangeable) {
        p[2] = 0x04;  // WCE only
      } else if (pc == kDefault) {
        p[2] = 0x04;
      } else {
        p[2] = st.wce ? 0x04 : 0x00;
      }
      break;
    case kControlPage:
      p.assign(12, 0);
      p[0] = kControlPage;
      p[1] = 10;
      if (pc != kChangeable) {
        p[3] = 0x10;  // queue algorithm modifier 1: unrestricted reordering
      }
      break;
    case kInfoExceptionsPage:
      p.assign(12, 0);
      p[0] = kInfoExceptionsPage;
      p[1] = 10;
      if (pc != kChangeable) p[2] = 0x08;  // DEXCPT: no informational exceptions
      break;
    default:
      break;
  }
  return p;
}

}  // namespace

std::variant<std::vector<std::uint8_t>, Sense> build_mode_sense(const ModeSenseArgs& a,
                                                                const ModeState& st) {
  if (a.pc == kSaved) return sense::saving_parameters_not_supported();
  std::vector<std::uint8_t> pages;
  auto append = [&](std::uint8_t page) {
    auto p = page_bytes(page, a.pc, st);
    pages.insert(pages.end(), p.begin(), p.end());
  };
  if (a.page == kAllPages) {
    if (a.subpage != 0x00 && a.subpage != 0xFF) return sense::invalid_field_in_cdb(3);
    append(kCachingPage);
    append(kControlPage);
    append(kInfoExceptionsPage);
  } else if (a.page == kCachingPage || a.page == kControlPage || a.page == kInfoExceptionsPage) {
    if (a.subpage != 0) return sense::invalid_field_in_cdb(3);
    append(a.page);
  } else {
    return sense::invalid_field_in_cdb(2, 5);
  }

  const bool long_lba = a.ten && a.llbaa;
  std::vector<std::uint8_t> desc;
  if (!a.dbd) {
    if (long_lba) {
      desc.assign(16, 0);
      put64(desc, 0, st.num_blocks);
      put32(desc, 12, st.block_size);
    } else {
      desc.assign(8, 0);
      put32(
          desc, 0,
          st.num_blocks > 0xFFFFFFFFull ? 0xFFFFFFFFu : static_cast<std::uint32_t>(st.num_blocks));
      desc[5] = static_cast<std::uint8_t>(st.block_size >> 16);
      desc[6] = static_cast<std::uint8_t>(st.block_size >> 8);
      desc[7] = static_cast<std::uint8_t>(st.block_size);
    }
  }
  const std::uint8_t dev_specific = static_cast<std::uint8_t>((st.read_only ? 0x80 : 0) | 0x10);
  std::vector<std::uint8_t> d;
  if (a.ten) {
    d.assign(8, 0);
    put16(d, 0, static_cast<std::uint16_t>(6 + desc.size() + pages.size()));
    d[3] = dev_specific;
    d[4] = long_lba ? 0x01 : 0x00;
    put16(d, 6, static_cast<std::uint16_t>(desc.size()));
  } else {
    d.assign(4, 0);
    d[0] = static_cast<std::uint8_t>(3 + desc.size() + pages.size());
    d[2] = dev_specific;
    d[3] = static_cast<std::uint8_t>(desc.size());
  }
  d.insert(d.end(), desc.begin(), desc.end());
  d.insert(d.end(), pages.begin(), pages.end());
  return d;
}

std::variant<bool, Sense> parse_mode_select(bool ten, std::span<const std::uint8_t> p,
                                            const ModeState& st) {
  const std::size_t header = ten ? 8 : 4;
  if (p.empty()) return st.wce;  // nothing to change
  if (p.size() < header) return sense::parameter_list_length_error();
  const std::size_t desc_len = ten ? be16(p, 6) : p[3];
  if (desc_len != 0 && desc_len != 8 && !(ten && desc_len == 16 && (p[4] & 1))) {
    return sense::invalid_field_in_parameter_list(ten ? 6 : 3);
  }
  if (p.size() < header + desc_len) return sense::parameter_list_length_error();
  if (desc_len == 8) {
    // The block length may be restated, never changed.
    if (be24(p, header + 5) != st.block_size && be24(p, header + 5) != 0) {
      return sense::invalid_field_in_parameter_list(static_cast<std::uint16_t>(header + 5));
    }
  } else if (desc_len == 16) {
    if (be32(p, header + 12) != st.block_size && be32(p, header + 12) != 0) {
      return sense::invalid_field_in_parameter_list(static_cast<std::uint16_t>(header + 12));
    }
  }
  bool wce = st.wce;
  std::size_t at = header + desc_len;
  while (at < p.size()) {
    if (p.size() - at < 2) return sense::parameter_list_length_error();
    const std::uint8_t code = p[at] & 0x3F;
    if (p[at] & 0x40) {  // sub-page format: none of ours
      return sense::invalid_field_in_parameter_list(static_cast<std::uint16_t>(at), 6);
    }
    const std::size_t len = std::size_t{p[at + 1]} + 2;
    if (p.size() - at < len) return sense::parameter_list_length_error();
    const auto current = page_bytes(code, kCurrent, st);
    if (current.empty()) {
      return sense::invalid_field_in_parameter_list(static_cast<std::uint16_t>(at), 5);
    }
    if (len != current.size()) {
      return sense::invalid_field_in_parameter_list(static_cast<std::uint16_t>(at + 1));
    }
    const auto changeable = page_bytes(code, kChangeable, st);
    for (std::size_t i = 2; i < len; ++i) {
      const std::uint8_t fixed_mask = static_cast<std::uint8_t>(~changeable[i]);
      if ((p[at + i] & fixed_mask) != (current[i] & fixed_mask)) {
        return sense::invalid_field_in_parameter_list(static_cast<std::uint16_t>(at + i));
      }
    }
    if (code == kCachingPage) wce = (p[at + 2] & 0x04) != 0;
    at += len;
  }
  return wce;
}

}  // namespace hyperscsi::scsi

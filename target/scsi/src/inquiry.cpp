#include "inquiry.h"

#include <algorithm>
#include <string_view>

#include "cdb.h"

namespace hyperscsi::scsi {
namespace {

// Space-padded, printable ASCII field (SPC-4 4.4.1).
void put_ascii(std::vector<std::uint8_t>& d, std::size_t at, std::size_t width,
               std::string_view s) {
  for (std::size_t i = 0; i < width; ++i) {
    char ch = i < s.size() ? s[i] : ' ';
    if (ch < 0x20 || ch > 0x7E) ch = ' ';
    d[at + i] = static_cast<std::uint8_t>(ch);
  }
}

std::vector<std::uint8_t> page_header(std::uint8_t page, std::size_t payload) {
  std::vector<std::uint8_t> d(4 + payload, 0);
  if (d.size() < 4) return d;  // unreachable; keeps the optimiser's null analysis quiet
  d[0] = 0x00;                 // peripheral qualifier 0, direct access block device
  d[1] = page;
  put16(d, 2, static_cast<std::uint16_t>(payload));
  return d;
}

constexpr std::uint8_t kSupportedPages[] = {0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2};

}  // namespace

std::array<std::uint8_t, 8> make_naa_identifier(const LuConfig& cfg,
                                                const store::StoreIdentity& identity) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  if (identity.known()) {
    // The UUID's first 8 bytes, version nibble and all: random or hashed bits.
    h = 0;
    for (int i = 0; i < 8; ++i) h = h << 8 | identity.uuid[static_cast<std::size_t>(i)];
    h ^= std::uint64_t{identity.uuid[8]} << 4;  // fold in some of the second half
  }
  auto mix = [&h](std::string_view s) {
    for (char ch : s) {
      h ^= static_cast<std::uint8_t>(ch);
      h *= 0x100000001b3ull;
    }
    h ^= 0xFF;  // field separator so ("ab","c") != ("a","bc")
    h *= 0x100000001b3ull;
  };
  if (!identity.known()) {
    mix(cfg.target_name);
    mix(std::to_string(cfg.lun));
    mix(cfg.serial);
  }
  // NAA 3 (locally assigned): 4-bit NAA then 60 bits of identifier.
  const std::uint64_t v = (std::uint64_t{3} << 60) | (h & 0x0FFFFFFFFFFFFFFFull);
  std::array<std::uint8_t, 8> out{};
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (56 - 8 * i));
  return out;
}

std::vector<std::uint8_t> standard_inquiry_data(const LuConfig& cfg) {
  std::vector<std::uint8_t> d(66, 0);
  d[0] = 0x00;  // connected, direct access block device
  d[1] = 0x00;  // not removable
  d[2] = 0x06;  // SPC-4
  d[3] = 0x12;  // HISUP, response data format 2
  d[4] = static_cast<std::uint8_t>(d.size() - 5);
  d[7] = 0x02;  // CMDQUE
  put_ascii(d, 8, 8, cfg.vendor);
  put_ascii(d, 16, 16, cfg.product);
  put_ascii(d, 32, 4, cfg.revision);
  // Version descriptors: SAM-5, SPC-4, SBC-3.
  put16(d, 58, 0x00A0);
  put16(d, 60, 0x0460);
  put16(d, 62, 0x04C0);
  return d;
}

std::optional<std::vector<std::uint8_t>> vpd_page(std::uint8_t page, const LuConfig& cfg,
                                                  const store::BlockStore& store,
                                                  const std::array<std::uint8_t, 8>& naa) {
  const std::uint32_t bs = store.block_size();
  switch (page) {
    case 0x00: {
      auto d = page_header(0x00, sizeof kSupportedPages);
      std::copy(std::begin(kSupportedPages), std::end(kSupportedPages), d.begin() + 4);
      return d;
    }
    case 0x80: {
      const std::size_t n = std::min<std::size_t>(cfg.serial.size(), 252);
      auto d = page_header(0x80, n);
      put_ascii(d, 4, n, cfg.serial);
      return d;
    }
    case 0x83: {
      // Designator 1: NAA (binary, LU association). With a store identity,
      // designator 2: UUID (SPC-5 type 0Ah, binary): the identity itself.
      // Last: T10 vendor ID (ASCII): vendor + the identity's text, or target
      // name + LUN + serial for a store without one.
      const store::StoreIdentity id = store.identity();
      std::string t10 = id.known()
                            ? id.text()
                            : cfg.target_name + ":" + std::to_string(cfg.lun) + ":" + cfg.serial;
      if (t10.size() > 200) t10.resize(200);
      const std::size_t t10_len = 8 + t10.size();
      const std::size_t uuid_len = id.known() ? 4 + 18 : 0;
      auto d = page_header(0x83, 4 + 8 + uuid_len + 4 + t10_len);
      std::size_t at = 4;
      d[at] = 0x01;      // code set binary
      d[at + 1] = 0x03;  // association LU, type NAA
      d[at + 3] = 8;
      std::copy(naa.begin(), naa.end(), d.begin() + static_cast<std::ptrdiff_t>(at + 4));
      at += 12;
      if (id.known()) {
        d[at] = 0x01;      // code set binary
        d[at + 1] = 0x0A;  // association LU, type UUID
        d[at + 3] = 18;
        d[at + 4] = 0x10;  // UUID TYPE 1: RFC 4122
        std::copy(id.uuid.begin(), id.uuid.end(), d.begin() + static_cast<std::ptrdiff_t>(at + 6));
        at += uuid_len;
      }
      d[at] = 0x02;      // code set ASCII
      d[at + 1] = 0x01;  // association LU, type T10 vendor ID
      d[at + 3] = static_cast<std::uint8_t>(t10_len);
      put_ascii(d, at + 4, 8, cfg.vendor);
      put_ascii(d, at + 12, t10.size(), t10);
      return d;
    }
    case 0xB0: {
      auto d = page_header(0xB0, 0x3C);
      d[4] = 0x01;  // WSNZ: WRITE SAME with zero blocks is rejected
      d[5] = cfg.max_compare_and_write_blocks;
      put32(d, 8, cfg.max_transfer_bytes / bs);   // maximum transfer length
      put32(d, 12, cfg.max_transfer_bytes / bs);  // optimal transfer length
      if (store.supports_unmap()) {
        put32(d, 20, cfg.max_unmap_blocks);
        put32(d, 24, cfg.max_unmap_descriptors);
        put32(d, 28, 1);  // optimal unmap granularity: 1 block
      }
      put64(d, 36, cfg.max_write_same_blocks);
      return d;
    }
    case 0xB1: {
      auto d = page_header(0xB1, 0x3C);
      put16(d, 4, cfg.rotation_rate);
      return d;
    }
    case 0xB2: {
      auto d = page_header(0xB2, 4);
      if (store.supports_unmap()) {
        d[5] = 0x80 | 0x40 | 0x20;                      // LBPU, LBPWS, LBPWS10
        if (store.unmapped_reads_zero()) d[5] |= 0x04;  // LBPRZ
        d[6] = 0x02;                                    // thin provisioned
      }
      return d;
    }
    default:
      return std::nullopt;
  }
}

}  // namespace hyperscsi::scsi

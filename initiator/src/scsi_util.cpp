// CDB builders and sense/status decoding for the initiator and its tools.
#include <algorithm>
#include <cstdio>
#include <string>

#include "hyperscsi/base/scsi_opcodes.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/proto/bytes.h"

namespace hyperscsi::initiator::scsi {

namespace op = hyperscsi::scsi::op;  // the opcode names the target uses too
using proto::bytes::load_be16;
using proto::bytes::store_be16;
using proto::bytes::store_be32;
using proto::bytes::store_be64;

SenseInfo parse_sense(std::span<const uint8_t> sense) {
  SenseInfo s;
  if (sense.size() < 2) return s;
  const uint8_t code = sense[0] & 0x7f;
  if (code == 0x70 || code == 0x71) {  // fixed format
    if (sense.size() < 3) return s;
    s.key = sense[2] & 0x0f;
    if (sense.size() > 12) s.asc = sense[12];
    if (sense.size() > 13) s.ascq = sense[13];
    s.valid = true;
  } else if (code == 0x72 || code == 0x73) {  // descriptor format
    s.key = sense[1] & 0x0f;
    if (sense.size() > 2) s.asc = sense[2];
    if (sense.size() > 3) s.ascq = sense[3];
    s.valid = true;
  }
  return s;
}

std::string_view sense_key_name(uint8_t key) {
  static constexpr std::string_view kNames[16] = {
      "NO SENSE",       "RECOVERED ERROR", "NOT READY",      "MEDIUM ERROR",
      "HARDWARE ERROR", "ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT",
      "BLANK CHECK",    "VENDOR SPECIFIC", "COPY ABORTED",   "ABORTED COMMAND",
      "RESERVED (0xC)", "VOLUME OVERFLOW", "MISCOMPARE",     "COMPLETED"};
  return kNames[key & 0x0f];
}

std::string asc_name(uint8_t asc, uint8_t ascq) {
  struct Entry {
    uint8_t asc;
    uint8_t ascq;
    const char* name;
  };
  static constexpr Entry kTable[] = {
      {0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION"},
      {0x04, 0x00, "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE"},
      {0x04, 0x01, "LOGICAL UNIT IS IN PROCESS OF BECOMING READY"},
      {0x04, 0x02, "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED"},
      {0x04, 0x03, "LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED"},
      {0x0c, 0x00, "WRITE ERROR"},
      {0x11, 0x00, "UNRECOVERED READ ERROR"},
      {0x1a, 0x00, "PARAMETER LIST LENGTH ERROR"},
      {0x1d, 0x00, "MISCOMPARE DURING VERIFY OPERATION"},
      {0x20, 0x00, "INVALID COMMAND OPERATION CODE"},
      {0x21, 0x00, "LOGICAL BLOCK ADDRESS OUT OF RANGE"},
      {0x24, 0x00, "INVALID FIELD IN CDB"},
      {0x25, 0x00, "LOGICAL UNIT NOT SUPPORTED"},
      {0x26, 0x00, "INVALID FIELD IN PARAMETER LIST"},
      {0x27, 0x00, "WRITE PROTECTED"},
      {0x28, 0x00, "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED"},
      {0x29, 0x00, "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED"},
      {0x2a, 0x01, "MODE PARAMETERS CHANGED"},
      {0x2a, 0x09, "CAPACITY DATA HAS CHANGED"},
      {0x2e, 0x02, "COMMAND TIMEOUT DURING PROCESSING"},
      {0x3f, 0x03, "INQUIRY DATA HAS CHANGED"},
      {0x3f, 0x0e, "REPORTED LUNS DATA HAS CHANGED"},
      {0x3a, 0x00, "MEDIUM NOT PRESENT"},
      {0x44, 0x00, "INTERNAL TARGET FAILURE"},
      {0x55, 0x03, "INSUFFICIENT RESOURCES"},
  };
  for (const Entry& e : kTable)
    if (e.asc == asc && e.ascq == ascq) return e.name;
  char buf[40];
  std::snprintf(buf, sizeof buf, "ASC 0x%02x ASCQ 0x%02x", asc, ascq);
  return buf;
}

std::string_view status_name(uint8_t status) {
  switch (status) {
    case 0x00:
      return "GOOD";
    case 0x02:
      return "CHECK CONDITION";
    case 0x04:
      return "CONDITION MET";
    case 0x08:
      return "BUSY";
    case 0x18:
      return "RESERVATION CONFLICT";
    case 0x28:
      return "TASK SET FULL";
    case 0x30:
      return "ACA ACTIVE";
    case 0x40:
      return "TASK ABORTED";
    default:
      return "UNKNOWN STATUS";
  }
}

std::string describe_sense(std::span<const uint8_t> sense) {
  const SenseInfo s = parse_sense(sense);
  if (!s.valid) return sense.empty() ? "no sense data" : "unrecognised sense format";
  std::string out(sense_key_name(s.key));
  out += ": ";
  out += asc_name(s.asc, s.ascq);
  return out;
}

namespace {
// A zeroed CDB of the length the opcode's group gives, opcode in byte 0.
template <uint8_t Opcode>
std::vector<uint8_t> new_cdb() {
  constexpr size_t kLength = op::cdb_length(Opcode);
  static_assert(kLength != 0, "an opcode of a fixed-length group");
  std::vector<uint8_t> c(kLength, 0);
  c[0] = Opcode;
  return c;
}
}  // namespace

std::vector<uint8_t> read_cdb(uint64_t lba, uint32_t blocks) {
  if (lba + blocks <= 0xffffffffull && blocks <= 0xffff) {
    std::vector<uint8_t> c = new_cdb<op::kRead10>();
    store_be32(&c[2], static_cast<uint32_t>(lba));
    store_be16(&c[7], static_cast<uint16_t>(blocks));
    return c;
  }
  std::vector<uint8_t> c = new_cdb<op::kRead16>();
  store_be64(&c[2], lba);
  store_be32(&c[10], blocks);
  return c;
}

std::vector<uint8_t> write_cdb(uint64_t lba, uint32_t blocks, bool fua) {
  std::vector<uint8_t> c;
  if (lba + blocks <= 0xffffffffull && blocks <= 0xffff) {
    c = new_cdb<op::kWrite10>();
    store_be32(&c[2], static_cast<uint32_t>(lba));
    store_be16(&c[7], static_cast<uint16_t>(blocks));
  } else {
    c = new_cdb<op::kWrite16>();
    store_be64(&c[2], lba);
    store_be32(&c[10], blocks);
  }
  if (fua) c[1] |= 0x08;
  return c;
}

std::vector<uint8_t> inquiry_cdb(uint16_t alloc) {
  std::vector<uint8_t> c = new_cdb<op::kInquiry>();
  store_be16(&c[3], alloc);
  return c;
}

std::vector<uint8_t> read_capacity10_cdb() {
  std::vector<uint8_t> c = new_cdb<op::kReadCapacity10>();
  return c;
}

std::vector<uint8_t> read_capacity16_cdb(uint32_t alloc) {
  std::vector<uint8_t> c = new_cdb<op::kServiceActionIn16>();
  c[1] = op::kSaReadCapacity16;
  store_be32(&c[10], alloc);
  return c;
}

std::vector<uint8_t> mode_sense6_cdb(uint8_t alloc) {
  std::vector<uint8_t> c = new_cdb<op::kModeSense6>();
  c[1] = 0x08;  // DBD: no block descriptors
  c[2] = 0x3f;  // current values, all pages
  c[4] = alloc;
  return c;
}

std::vector<uint8_t> synchronize_cache_cdb() {
  std::vector<uint8_t> c = new_cdb<op::kSynchronizeCache10>();
  return c;
}

std::vector<uint8_t> write_same16_cdb(uint64_t lba, uint32_t blocks) {
  std::vector<uint8_t> c = new_cdb<op::kWriteSame16>();
  store_be64(&c[2], lba);
  store_be32(&c[10], blocks);
  return c;
}

std::vector<uint8_t> unmap_cdb(uint16_t param_len) {
  std::vector<uint8_t> c = new_cdb<op::kUnmap>();
  store_be16(&c[7], param_len);
  return c;
}

std::vector<uint8_t> unmap_params(uint64_t lba, uint32_t blocks) {
  std::vector<uint8_t> p(24, 0);
  store_be16(&p[0], 22);  // UNMAP data length: bytes after this field
  store_be16(&p[2], 16);  // block descriptor data length
  store_be64(&p[8], lba);
  store_be32(&p[16], blocks);
  return p;
}

namespace {
std::string trimmed(std::span<const uint8_t> bytes) {
  std::string s;
  for (uint8_t b : bytes) s.push_back(b >= 0x20 && b < 0x7f ? static_cast<char>(b) : ' ');
  while (!s.empty() && s.back() == ' ') s.pop_back();
  size_t start = 0;
  while (start < s.size() && s[start] == ' ') ++start;
  return s.substr(start);
}
}  // namespace

InquiryData parse_inquiry(std::span<const uint8_t> data) {
  InquiryData d;
  if (data.empty()) return d;
  d.device_type = data[0] & 0x1f;
  if (data.size() >= 16) d.vendor = trimmed(data.subspan(8, 8));
  if (data.size() >= 32) d.product = trimmed(data.subspan(16, 16));
  if (data.size() >= 36) d.revision = trimmed(data.subspan(32, 4));
  return d;
}

std::vector<uint8_t> inquiry_vpd_cdb(uint8_t page, uint16_t alloc) {
  std::vector<uint8_t> c = inquiry_cdb(alloc);
  c[1] = 0x01;  // EVPD
  c[2] = page;
  return c;
}

std::string lu_identity(std::span<const uint8_t> d) {
  if (d.size() < 4 || d[1] != 0x83) return {};
  const size_t end = std::min<size_t>(d.size(), 4 + size_t{load_be16(&d[2])});
  // Preference among LU designators: UUID, NAA, EUI-64, SCSI name, T10.
  static constexpr struct {
    uint8_t type;
    const char* prefix;
    bool text;
  } kOrder[] = {{0x0A, "uuid:", false},
                {0x03, "naa:", false},
                {0x02, "eui64:", false},
                {0x08, "name:", true},
                {0x01, "t10:", true}};
  for (const auto& want : kOrder) {
    for (size_t at = 4; at + 4 <= end;) {
      const size_t len = d[at + 3];
      if (at + 4 + len > end) break;
      const uint8_t assoc = (d[at + 1] >> 4) & 0x03;
      if (assoc == 0 && (d[at + 1] & 0x0F) == want.type && len > 0) {
        auto v = d.subspan(at + 4, len);
        std::string out = want.prefix;
        if (want.text) {
          for (uint8_t b : v)
            if (b >= 0x20 && b < 0x7f) out.push_back(static_cast<char>(b));
        } else {
          if (want.type == 0x0A && v.size() == 18) v = v.subspan(2);  // UUID TYPE, reserved
          char hex[3];
          for (uint8_t b : v) {
            std::snprintf(hex, sizeof hex, "%02x", b);
            out += hex;
          }
        }
        return out;
      }
      at += 4 + len;
    }
  }
  return {};
}

}  // namespace hyperscsi::initiator::scsi

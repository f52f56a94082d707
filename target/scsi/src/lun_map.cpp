#include "hyperscsi/scsi/lun_map.h"

#include "cdb.h"
#include "hyperscsi/scsi/opcodes.h"

namespace hyperscsi::scsi {

std::array<std::uint8_t, 8> encode_lun(std::uint64_t lun) {
  std::array<std::uint8_t, 8> l{};
  if (lun < 256) {
    l[1] = static_cast<std::uint8_t>(lun);  // peripheral device addressing, bus 0
  } else {
    l[0] = static_cast<std::uint8_t>(0x40 | ((lun >> 8) & 0x3F));  // flat space
    l[1] = static_cast<std::uint8_t>(lun);
  }
  return l;
}

std::optional<std::uint64_t> decode_lun(std::span<const std::uint8_t> l) {
  if (l.size() < 8) return std::nullopt;
  for (std::size_t i = 2; i < 8; ++i) {
    if (l[i] != 0) return std::nullopt;
  }
  switch (l[0] >> 6) {
    case 0:
      if ((l[0] & 0x3F) != 0) return std::nullopt;  // bus != 0
      return l[1];
    case 1:
      return (std::uint64_t{l[0] & 0x3Fu} << 8) | l[1];
    default:
      return std::nullopt;
  }
}

namespace {

CommandResult clipped(std::vector<std::uint8_t> data, std::uint32_t alloc,
                      std::uint32_t expected_data_in) {
  CommandResult r;
  r.status = status::kGood;
  if (data.size() > alloc) data.resize(alloc);
  if (data.size() > expected_data_in) {
    r.residual = Residual::kOverflow;
    r.residual_count = static_cast<std::uint32_t>(data.size() - expected_data_in);
    data.resize(expected_data_in);
  } else if (data.size() < expected_data_in) {
    r.residual = Residual::kUnderflow;
    r.residual_count = static_cast<std::uint32_t>(expected_data_in - data.size());
  }
  r.data_in = std::move(data);
  return r;
}

CommandResult check_condition(const Sense& s, std::uint32_t expected_data_in,
                              std::size_t data_out_size = 0) {
  CommandResult r;
  r.status = status::kCheckCondition;
  r.sense = encode_fixed_sense(s);
  if (expected_data_in > 0) {
    r.residual = Residual::kUnderflow;
    r.residual_count = expected_data_in;
  } else if (data_out_size > 0) {
    r.residual = Residual::kUnderflow;
    r.residual_count = static_cast<std::uint32_t>(data_out_size);
  }
  return r;
}

}  // namespace

CommandResult report_luns(std::span<const std::uint8_t> cdb, std::span<const std::uint64_t> luns,
                          std::uint32_t expected_data_in) {
  if (cdb.size() < 12)
    return check_condition(sense::invalid_field_in_cdb(static_cast<std::uint16_t>(cdb.size())),
                           expected_data_in);
  if (cdb[11] & 0x05)  // NACA / LINK are not supported
    return check_condition(sense::invalid_field_in_cdb(11, (cdb[11] & 0x04) ? 2 : 0),
                           expected_data_in);
  if (cdb[2] > 0x02) return check_condition(sense::invalid_field_in_cdb(2), expected_data_in);
  std::vector<std::uint8_t> d(8 + 8 * luns.size(), 0);
  put32(d, 0, static_cast<std::uint32_t>(8 * luns.size()));
  std::size_t at = 8;
  for (const std::uint64_t n : luns) {
    const auto l = encode_lun(n);
    std::copy(l.begin(), l.end(), d.begin() + static_cast<std::ptrdiff_t>(at));
    at += 8;
  }
  return clipped(std::move(d), be32(cdb, 6), expected_data_in);
}

Status<std::string> LunMap::add(std::uint64_t lun, std::unique_ptr<LogicalUnit> unit) {
  if (lun > kMaxLun) {
    return Unexpected(std::string("LUN ") + std::to_string(lun) + " exceeds " +
                      std::to_string(kMaxLun));
  }
  if (!unit) return Unexpected(std::string("LUN ") + std::to_string(lun) + ": no unit");
  if (units_.count(lun) != 0) {
    return Unexpected(std::string("duplicate LUN ") + std::to_string(lun));
  }
  units_.emplace(lun, std::move(unit));
  return {};
}

std::unique_ptr<LogicalUnit> LunMap::remove(std::uint64_t lun) {
  auto it = units_.find(lun);
  if (it == units_.end()) return nullptr;
  auto u = std::move(it->second);
  units_.erase(it);
  return u;
}

LogicalUnit* LunMap::find(std::uint64_t lun) {
  auto it = units_.find(lun);
  return it == units_.end() ? nullptr : it->second.get();
}

std::vector<std::uint64_t> LunMap::luns() const {
  std::vector<std::uint64_t> v;
  for (const auto& [lun, unit] : units_) v.push_back(lun);
  return v;
}

std::size_t LunMap::poll_all() {
  std::size_t n = 0;
  for (auto& [lun, unit] : units_) n += unit->store().poll();
  return n;
}

namespace {
void reply(const CommandRequest& req, CommandCallback& done, std::vector<std::uint8_t> data,
           std::uint32_t alloc) {
  done(clipped(std::move(data), alloc, req.expected_data_in));
}

void check(const CommandRequest& req, CommandCallback& done, const Sense& s) {
  done(check_condition(s, req.expected_data_in, req.data_out.size()));
}
}  // namespace

void LunMap::execute(std::uint64_t lun, const CommandRequest& req, CommandCallback done) {
  const auto cdb = req.cdb;
  if (!cdb.empty() && cdb[0] == op::kReportLuns) {
    const std::vector<std::uint64_t> all = luns();
    return done(report_luns(cdb, all, req.expected_data_in));
  }
  if (LogicalUnit* u = find(lun)) return u->execute(req, std::move(done));
  answer_absent_lun(req, std::move(done));
}

void answer_absent_lun(const CommandRequest& req, CommandCallback done) {
  const auto cdb = req.cdb;
  if (!cdb.empty() && cdb[0] == op::kInquiry && cdb.size() >= 6) {
    if ((cdb[1] & 0x01) == 0 && cdb[2] == 0) {
      std::vector<std::uint8_t> d(36, 0);
      d[0] = 0x7F;  // qualifier 011b: no LU here; type 1Fh
      d[2] = 0x06;
      d[3] = 0x12;
      d[4] = 31;
      return reply(req, done, std::move(d), be16(cdb, 3));
    }
  }
  if (!cdb.empty() && cdb[0] == op::kRequestSense && cdb.size() >= 6) {
    return reply(req, done, encode_fixed_sense(sense::lun_not_supported()), cdb[4]);
  }
  check(req, done, sense::lun_not_supported());
}

}  // namespace hyperscsi::scsi

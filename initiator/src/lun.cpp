// Block helpers: transfers split at the negotiated maximum, capacity and
// inquiry with typed errors for the setup paths.
#include <algorithm>
#include <memory>

#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/proto/bytes.h"

namespace hyperscsi::initiator {

namespace {

// Joins the parts of a split request: completes once, after the last part,
// with the first failure or a GOOD result carrying the joined data-in.
// Parts complete on the loop thread only, so no lock is needed.
struct Joiner {
  size_t remaining = 0;
  CommandResult result;
  bool failed = false;
  Completion done;
  void part(CommandResult&& r, size_t offset) {
    if (!failed) {
      if (!r.good()) {
        failed = true;
        result = std::move(r);
        result.data_in.clear();
      } else if (!r.data_in.empty()) {
        std::copy(r.data_in.begin(), r.data_in.end(),
                  result.data_in.begin() + static_cast<ptrdiff_t>(offset));
      }
    }
    if (--remaining == 0 && done) done(std::move(result));
  }
};

template <typename Fn>
Status<Error> wait_status(Fn&& start, std::string_view what) {
  auto p = std::make_shared<std::promise<CommandResult>>();
  auto f = p->get_future();
  start([p](CommandResult&& r) { p->set_value(std::move(r)); });
  CommandResult r = f.get();
  if (!r.good()) return Unexpected{error_of(r, what)};
  return {};
}

}  // namespace

Error error_of(const CommandResult& r, std::string_view what) {
  if (r.error == CompletionError::kIdentityMismatch)  // the LUN we had is gone
    return {ErrorKind::kLunAbsent, std::string(what) + ": " + r.describe()};
  if (r.error == CompletionError::kNone && r.status == 0x18)
    return {ErrorKind::kScsi, std::string(what) +
                                  ": RESERVATION CONFLICT: the LUN is in use by another session "
                                  "(an exclusive LUN, or reserved)"};
  if (r.error != CompletionError::kNone)
    return {ErrorKind::kCommandFailed, std::string(what) + ": " + r.describe()};
  const scsi::SenseInfo s = scsi::parse_sense(r.sense);
  if (s.valid && s.key == 0x05 && s.asc == 0x25)
    return {ErrorKind::kLunAbsent, std::string(what) + ": " + r.describe()};
  return {ErrorKind::kScsi, std::string(what) + ": " + r.describe()};
}

void Lun::read_into(uint64_t lba, uint32_t blocks, std::span<uint8_t> out, Completion done) {
  const uint32_t bs = capacity_.block_size;
  if (out.size() != size_t{blocks} * bs) {
    CommandResult r;
    r.error = CompletionError::kInvalid;
    r.message = "read buffer of " + std::to_string(out.size()) + " bytes for " +
                std::to_string(blocks) + " blocks of " + std::to_string(bs);
    done(std::move(r));
    return;
  }
  const uint32_t per = std::max<uint32_t>(1, initiator_->max_data_per_command() / bs);
  if (blocks <= per) {  // the common case: one command, no joining
    ScsiCommand c;
    c.lun = lun_;
    c.cdb = scsi::read_cdb(lba, blocks);
    c.data_in_length = blocks * bs;
    initiator_->submit_into(std::move(c), out, std::move(done));
    return;
  }
  auto join = std::make_shared<Joiner>();
  join->done = std::move(done);
  join->remaining = (blocks + per - 1) / per;
  for (uint32_t off = 0; off < blocks; off += per) {
    const uint32_t n = std::min(per, blocks - off);
    ScsiCommand c;
    c.lun = lun_;
    c.cdb = scsi::read_cdb(lba + off, n);
    c.data_in_length = n * bs;
    initiator_->submit_into(std::move(c), out.subspan(size_t{off} * bs, size_t{n} * bs),
                            [join](CommandResult&& r) { join->part(std::move(r), 0); });
  }
}

void Lun::read(uint64_t lba, uint32_t blocks, Completion done) {
  const uint32_t bs = capacity_.block_size;
  const uint32_t per = std::max<uint32_t>(1, initiator_->max_data_per_command() / bs);
  auto join = std::make_shared<Joiner>();
  join->done = std::move(done);
  join->result.data_in.resize(size_t{blocks} * bs);
  join->remaining = blocks == 0 ? 1 : (blocks + per - 1) / per;
  if (blocks == 0) {
    join->part(CommandResult{}, 0);
    return;
  }
  for (uint32_t off = 0; off < blocks; off += per) {
    const uint32_t n = std::min(per, blocks - off);
    ScsiCommand c;
    c.lun = lun_;
    c.cdb = scsi::read_cdb(lba + off, n);
    c.data_in_length = n * bs;
    const size_t byte_off = size_t{off} * bs;
    initiator_->submit(std::move(c),
                       [join, byte_off](CommandResult&& r) { join->part(std::move(r), byte_off); });
  }
}

namespace {

// WRITE commands for `data` at `lba`, split at the negotiated maximum;
// `borrow`: each command borrows its part of `data` instead of a copy.
void submit_writes(Initiator& initiator, uint16_t lun, uint32_t bs, uint64_t lba,
                   std::span<const uint8_t> data, Completion done, bool fua, bool borrow) {
  const uint64_t blocks = data.size() / bs;
  const uint32_t per = std::max<uint32_t>(1, initiator.max_data_per_command() / bs);
  auto join = std::make_shared<Joiner>();
  join->done = std::move(done);
  if (data.size() % bs != 0 || blocks == 0) {
    join->remaining = 1;
    CommandResult r;
    r.error = CompletionError::kInvalid;
    r.message = "write of " + std::to_string(data.size()) +
                " bytes is not a positive multiple of the block size " + std::to_string(bs);
    join->part(std::move(r), 0);
    return;
  }
  join->remaining = static_cast<size_t>((blocks + per - 1) / per);
  for (uint64_t off = 0; off < blocks; off += per) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(per, blocks - off));
    ScsiCommand c;
    c.lun = lun;
    c.cdb = scsi::write_cdb(lba + off, n, fua);
    auto part = data.subspan(off * bs, size_t{n} * bs);
    if (borrow) {
      c.data_out_borrowed = part;  // framed from the caller's buffer: no copy
      initiator.submit(std::move(c), [join](CommandResult&& r) { join->part(std::move(r), 0); });
      continue;
    }
    // The data behind room for the PDU header: the initiator sends this
    // buffer as the PDU (one copy of the caller's data, not two).
    c.data_out_headroom = command_headroom(c.cdb.size());
    c.data_out.reserve(c.data_out_headroom + part.size());
    c.data_out.resize(c.data_out_headroom);
    c.data_out.insert(c.data_out.end(), part.begin(), part.end());
    initiator.submit(std::move(c), [join](CommandResult&& r) { join->part(std::move(r), 0); });
  }
}

}  // namespace

void Lun::write(uint64_t lba, std::span<const uint8_t> data, Completion done, bool fua) {
  submit_writes(*initiator_, lun_, capacity_.block_size, lba, data, std::move(done), fua, false);
}

void Lun::write_borrowed(uint64_t lba, std::span<const uint8_t> data, Completion done, bool fua) {
  submit_writes(*initiator_, lun_, capacity_.block_size, lba, data, std::move(done), fua, true);
}

void Lun::flush(Completion done) {
  ScsiCommand c;
  c.lun = lun_;
  c.cdb = scsi::synchronize_cache_cdb();
  initiator_->submit(std::move(c), std::move(done));
}

void Lun::unmap(uint64_t lba, uint64_t blocks, Completion done) {
  constexpr uint64_t kPer = 0xffffffffull;
  auto join = std::make_shared<Joiner>();
  join->done = std::move(done);
  join->remaining = blocks == 0 ? 1 : static_cast<size_t>((blocks + kPer - 1) / kPer);
  if (blocks == 0) {
    join->part(CommandResult{}, 0);
    return;
  }
  for (uint64_t off = 0; off < blocks; off += kPer) {
    const auto n = static_cast<uint32_t>(std::min(kPer, blocks - off));
    ScsiCommand c;
    c.lun = lun_;
    c.data_out = scsi::unmap_params(lba + off, n);
    c.cdb = scsi::unmap_cdb(static_cast<uint16_t>(c.data_out.size()));
    initiator_->submit(std::move(c), [join](CommandResult&& r) { join->part(std::move(r), 0); });
  }
}

void Lun::write_zeroes(uint64_t lba, uint64_t blocks, Completion done) {
  constexpr uint64_t kPer = 0xffff;
  auto join = std::make_shared<Joiner>();
  join->done = std::move(done);
  join->remaining = blocks == 0 ? 1 : static_cast<size_t>((blocks + kPer - 1) / kPer);
  if (blocks == 0) {
    join->part(CommandResult{}, 0);
    return;
  }
  for (uint64_t off = 0; off < blocks; off += kPer) {
    const auto n = static_cast<uint32_t>(std::min(kPer, blocks - off));
    ScsiCommand c;
    c.lun = lun_;
    c.cdb = scsi::write_same16_cdb(lba + off, n);
    c.data_out.assign(capacity_.block_size, 0);
    initiator_->submit(std::move(c), [join](CommandResult&& r) { join->part(std::move(r), 0); });
  }
}

Result<std::vector<uint8_t>, Error> Lun::read_sync(uint64_t lba, uint32_t blocks) {
  auto p = std::make_shared<std::promise<CommandResult>>();
  auto f = p->get_future();
  read(lba, blocks, [p](CommandResult&& r) { p->set_value(std::move(r)); });
  CommandResult r = f.get();
  if (!r.good()) return Unexpected{error_of(r, "READ")};
  return std::move(r.data_in);
}

Status<Error> Lun::write_sync(uint64_t lba, std::span<const uint8_t> data, bool fua) {
  // It waits for the completion: the data may be borrowed.
  return wait_status([&](Completion c) { write_borrowed(lba, data, std::move(c), fua); }, "WRITE");
}

Status<Error> Lun::flush_sync() {
  return wait_status([&](Completion c) { flush(std::move(c)); }, "SYNCHRONIZE CACHE");
}

Status<Error> Lun::unmap_sync(uint64_t lba, uint64_t blocks) {
  return wait_status([&](Completion c) { unmap(lba, blocks, std::move(c)); }, "UNMAP");
}

Result<InquiryData, Error> Lun::inquiry() {
  ScsiCommand c;
  c.lun = lun_;
  c.cdb = scsi::inquiry_cdb(96);
  c.data_in_length = 96;
  CommandResult r = initiator_->execute(std::move(c)).get();
  if (!r.good()) return Unexpected{error_of(r, "INQUIRY")};
  return scsi::parse_inquiry(r.data_in);
}

Result<Lun, Error> Initiator::open_lun(uint16_t lun) {
  const TargetInfo t = target();
  if (!t.luns.empty() &&
      std::none_of(t.luns.begin(), t.luns.end(), [&](const auto& l) { return l.lun == lun; })) {
    std::string list;
    for (const auto& l : t.luns) list += (list.empty() ? "" : ", ") + std::to_string(l.lun);
    return Unexpected{Error{ErrorKind::kLunAbsent, "LUN absent: target '" + t.name +
                                                       "' exports no LUN " + std::to_string(lun) +
                                                       " to us (it exports: " + list + ")"}};
  }
  ScsiCommand c16;
  c16.lun = lun;
  c16.cdb = scsi::read_capacity16_cdb(32);
  c16.data_in_length = 32;
  CommandResult r = execute(std::move(c16)).get();
  Capacity cap;
  if (r.good() && r.data_in.size() >= 12) {
    cap.num_blocks = proto::bytes::load_be64(r.data_in.data()) + 1;
    cap.block_size = proto::bytes::load_be32(r.data_in.data() + 8);
    cap.thin = r.data_in.size() >= 15 && (r.data_in[14] & 0x80) != 0;
    cap.unmapped_reads_zero = r.data_in.size() >= 15 && (r.data_in[14] & 0x40) != 0;
  } else {
    const scsi::SenseInfo s = scsi::parse_sense(r.sense);
    if (r.error != CompletionError::kNone || !(s.valid && s.key == 0x05 && s.asc != 0x25))
      return Unexpected{error_of(r, "READ CAPACITY(16) of LUN " + std::to_string(lun))};
    // Not supported: fall back to READ CAPACITY(10).
    ScsiCommand c10;
    c10.lun = lun;
    c10.cdb = scsi::read_capacity10_cdb();
    c10.data_in_length = 8;
    r = execute(std::move(c10)).get();
    if (!r.good() || r.data_in.size() < 8)
      return Unexpected{error_of(r, "READ CAPACITY(10) of LUN " + std::to_string(lun))};
    cap.num_blocks = uint64_t{proto::bytes::load_be32(r.data_in.data())} + 1;
    cap.block_size = proto::bytes::load_be32(r.data_in.data() + 4);
  }
  if (cap.block_size == 0 || cap.block_size > (1u << 20))
    return Unexpected{Error{ErrorKind::kScsi, "LUN " + std::to_string(lun) +
                                                  " reports an unusable block size of " +
                                                  std::to_string(cap.block_size)}};
  // Write protection: the WP bit of MODE SENSE(6)'s device-specific
  // parameter; where MODE SENSE is not supported, what discovery said.
  bool read_only = false;
  for (const auto& l : t.luns)
    if (l.lun == lun) read_only = l.read_only;
  ScsiCommand ms;
  ms.lun = lun;
  ms.cdb = scsi::mode_sense6_cdb(192);
  ms.data_in_length = 192;
  r = execute(std::move(ms)).get();
  if (r.good() && r.data_in.size() >= 4) read_only = (r.data_in[2] & 0x80) != 0;
  // Its identity, checked after every re-login (a target without VPD 0x83
  // designators gets no check).
  ScsiCommand id;
  id.lun = lun;
  id.cdb = scsi::inquiry_vpd_cdb(0x83, 255);
  id.data_in_length = 255;
  r = execute(std::move(id)).get();
  remember_identity(lun, r.good() ? scsi::lu_identity(r.data_in) : std::string());
  return Lun(*this, lun, cap, read_only);
}

}  // namespace hyperscsi::initiator

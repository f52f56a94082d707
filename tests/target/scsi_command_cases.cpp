// Per-command tests of the SCSI layer with hand-built CDBs, parameterised
// over the backing store (scsi_command_cases.h; instantiated by
// scsi_command_test.cpp on RAM and files, by tests/ceph on an rbd image).
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "hyperscsi/scsi/opcodes.h"
#include "scsi_command_cases.h"

namespace hyperscsi::scsi::testing {

namespace {

using store::StoreOptions;

TEST_P(ScsiCommand, ReadWriteAllSizesRoundTrip) {
  auto& lu = *lu_;
  struct Case {
    Bytes write_cdb, read_cdb;
    std::uint64_t lba, n;
  };
  const std::vector<Case> cases = {
      {cdb_rw6(op::kWrite6, 3, 2), cdb_rw6(op::kRead6, 3, 2), 3, 2},
      {cdb_rw10(op::kWrite10, 100, 8), cdb_rw10(op::kRead10, 100, 8), 100, 8},
      {cdb_rw12(op::kWrite12, 200, 16), cdb_rw12(op::kRead12, 200, 16), 200, 16},
      {cdb_rw16(op::kWrite16, blocks() - 4, 4), cdb_rw16(op::kRead16, blocks() - 4, 4),
       blocks() - 4, 4},
  };
  std::uint32_t seed = 1;
  for (const auto& c : cases) {
    const Bytes data = pattern(c.n * bs(), seed++);
    auto w = run(lu, c.write_cdb, data);
    EXPECT_GOOD(w);
    EXPECT_EQ(w.residual, Residual::kNone);
    auto r = run(lu, c.read_cdb, {}, static_cast<std::uint32_t>(data.size()));
    EXPECT_GOOD(r);
    EXPECT_EQ(r.data_in, data);
    EXPECT_EQ(r.residual, Residual::kNone);
  }
  // READ(6) with transfer length 0 means 256 blocks.
  auto r = run(lu, cdb_rw6(op::kRead6, 0, 0), {}, 256 * bs());
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_in.size(), 256u * bs());
  // Zero-length READ(10) is GOOD with no data.
  auto z = run(lu, cdb_rw10(op::kRead10, 5, 0));
  EXPECT_GOOD(z);
  EXPECT_TRUE(z.data_in.empty());
}

TEST_P(ScsiCommand, FuaAndWriteCacheOffReachTheStoreAsFua) {
  auto& lu = *lu_;
  const Bytes data = pattern(bs(), 4);
  const auto before = lu.store().counters().fua_writes;
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 1, 1, 0x08), data));
  EXPECT_EQ(lu.store().counters().fua_writes, before + 1);
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 1, 1, 0x00), data));
  EXPECT_EQ(lu.store().counters().fua_writes, before + 1);
}

TEST_P(ScsiCommand, LbaOutOfRangeAndOverflow) {
  auto& lu = *lu_;
  const std::uint64_t n = blocks();
  EXPECT_SENSE(run(lu, cdb_rw16(op::kRead16, n, 1), {}, bs()), SenseKey::kIllegalRequest, 0x21, 0);
  EXPECT_SENSE(run(lu, cdb_rw16(op::kRead16, n - 1, 2), {}, 2 * bs()), SenseKey::kIllegalRequest,
               0x21, 0);
  // LBA + length wraps around 64 bits.
  EXPECT_SENSE(run(lu, cdb_rw16(op::kRead16, UINT64_MAX, 2), {}, 2 * bs()),
               SenseKey::kIllegalRequest, 0x21, 0);
  EXPECT_SENSE(run(lu, cdb_rw16(op::kWrite16, UINT64_MAX - 1, 4), pattern(4 * bs(), 1)),
               SenseKey::kIllegalRequest, 0x21, 0);
  EXPECT_SENSE(run(lu, cdb_rw10(op::kWrite10, 0xFFFFFFFF, 1), pattern(bs(), 1)),
               SenseKey::kIllegalRequest, 0x21, 0);
  // Zero length at the end of the medium is fine, one past is not.
  EXPECT_GOOD(run(lu, cdb_rw16(op::kRead16, n, 0)));
  EXPECT_SENSE(run(lu, cdb_rw16(op::kRead16, n + 1, 0)), SenseKey::kIllegalRequest, 0x21, 0);
  EXPECT_GOOD(run(lu, cdb_rw16(op::kRead16, n - 1, 1), {}, bs()));
  // Transfer longer than the configured maximum.
  const auto too_many = static_cast<std::uint32_t>((1 << 20) / bs() + 1);
  auto big = run(lu, cdb_rw16(op::kRead16, 0, too_many), {}, too_many * bs());
  EXPECT_SENSE(big, SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_EQ(sense_of(big)->field_byte, std::optional<std::uint16_t>(10));
}

TEST_P(ScsiCommand, MalformedCdbs) {
  auto& lu = *lu_;
  EXPECT_SENSE(run(lu, {}), SenseKey::kIllegalRequest, 0x20, 0);
  EXPECT_SENSE(run(lu, {0xC5, 0, 0, 0, 0, 0}), SenseKey::kIllegalRequest, 0x20, 0);
  EXPECT_SENSE(run(lu, {0x7F, 0, 0, 0, 0, 0, 0, 0}), SenseKey::kIllegalRequest, 0x20, 0);
  // Truncated CDBs.
  EXPECT_SENSE(run(lu, {op::kRead10, 0, 0, 0, 0}), SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_SENSE(run(lu, {op::kRead16}), SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_SENSE(run(lu, {op::kInquiry, 0, 0}), SenseKey::kIllegalRequest, 0x24, 0);
  // NACA / LINK in the control byte.
  Bytes naca = cdb_rw10(op::kRead10, 0, 1);
  naca[9] = 0x04;
  EXPECT_SENSE(run(lu, naca, {}, bs()), SenseKey::kIllegalRequest, 0x24, 0);
  // RDPROTECT without protection information.
  EXPECT_SENSE(run(lu, cdb_rw10(op::kRead10, 0, 1, 0x20), {}, bs()), SenseKey::kIllegalRequest,
               0x24, 0);
  // Padding after a valid CDB is ignored (transports pad to 16 bytes).
  Bytes padded = cdb_rw10(op::kRead10, 0, 1);
  padded.resize(16, 0);
  EXPECT_GOOD(run(lu, padded, {}, bs()));
}

TEST_P(ScsiCommand, Residuals) {
  auto& lu = *lu_;
  // Data-in: initiator expects less than the command moves -> overflow.
  auto over = run(lu, cdb_rw10(op::kRead10, 0, 4), {}, 2 * bs());
  EXPECT_GOOD(over);
  EXPECT_EQ(over.data_in.size(), 2u * bs());
  EXPECT_EQ(over.residual, Residual::kOverflow);
  EXPECT_EQ(over.residual_count, 2u * bs());
  // Expects more -> underflow.
  auto under = run(lu, cdb_rw10(op::kRead10, 0, 1), {}, 4 * bs());
  EXPECT_EQ(under.residual, Residual::kUnderflow);
  EXPECT_EQ(under.residual_count, 3u * bs());
  // Allocation length truncates silently, then underflow against the expected length.
  auto inq = run(lu, cdb_inquiry(false, 0, 5), {}, 255);
  EXPECT_GOOD(inq);
  EXPECT_EQ(inq.data_in.size(), 5u);
  EXPECT_EQ(inq.residual, Residual::kUnderflow);
  EXPECT_EQ(inq.residual_count, 250u);
  // Data-out shorter than the CDB needs: rejected, overflow.
  auto short_w = run(lu, cdb_rw10(op::kWrite10, 0, 2), pattern(bs(), 1));
  EXPECT_SENSE(short_w, SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_EQ(short_w.residual, Residual::kOverflow);
  EXPECT_EQ(short_w.residual_count, bs());
  // Longer: the CDB's amount is written, underflow.
  const Bytes data = pattern(3 * bs(), 2);
  auto long_w = run(lu, cdb_rw10(op::kWrite10, 10, 2), data);
  EXPECT_GOOD(long_w);
  EXPECT_EQ(long_w.residual, Residual::kUnderflow);
  EXPECT_EQ(long_w.residual_count, bs());
  auto back = run(lu, cdb_rw10(op::kRead10, 10, 3), {}, 3 * bs());
  EXPECT_TRUE(std::equal(data.begin(), data.begin() + 2 * bs(), back.data_in.begin()));
}

TEST_P(ScsiCommand, InquiryStandardAndVpd) {
  auto& lu = *lu_;
  auto std_inq = run(lu, cdb_inquiry(false, 0, 255), {}, 255);
  EXPECT_GOOD(std_inq);
  ASSERT_GE(std_inq.data_in.size(), 36u);
  EXPECT_EQ(std_inq.data_in[0], 0x00);
  EXPECT_EQ(std_inq.data_in[2], 0x06);
  EXPECT_EQ(std_inq.data_in[7] & 0x02, 0x02);
  EXPECT_EQ(std::string(std_inq.data_in.begin() + 8, std_inq.data_in.begin() + 16), "HYPERSCS");
  EXPECT_SENSE(run(lu, cdb_inquiry(false, 0x80, 255), {}, 255), SenseKey::kIllegalRequest, 0x24, 0);
  Bytes cmddt = cdb_inquiry(false, 0, 255);
  cmddt[1] = 0x02;
  EXPECT_SENSE(run(lu, cmddt, {}, 255), SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_SENSE(run(lu, cdb_inquiry(true, 0x99, 255), {}, 255), SenseKey::kIllegalRequest, 0x24, 0);

  auto p0 = run(lu, cdb_inquiry(true, 0x00, 255), {}, 255);
  EXPECT_GOOD(p0);
  EXPECT_EQ(Bytes(p0.data_in.begin() + 4, p0.data_in.end()),
            (Bytes{0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2}));
  auto p80 = run(lu, cdb_inquiry(true, 0x80, 255), {}, 255);
  EXPECT_EQ(std::string(p80.data_in.begin() + 4, p80.data_in.end()), "SER123");

  auto p83 = run(lu, cdb_inquiry(true, 0x83, 255), {}, 255);
  EXPECT_GOOD(p83);
  ASSERT_GE(p83.data_in.size(), 16u);
  EXPECT_EQ(p83.data_in[5] & 0x0F, 0x03);  // NAA designator
  EXPECT_EQ(p83.data_in[8] >> 4, 0x3);     // NAA 3
  const auto naa = lu.naa_identifier();
  EXPECT_TRUE(std::equal(naa.begin(), naa.end(), p83.data_in.begin() + 8));
  // Designator 2: the store's identity as a UUID (SPC-5 type 0Ah, RFC 4122 type).
  ASSERT_GE(p83.data_in.size(), 16u + 22u);
  EXPECT_EQ(p83.data_in[17] & 0x0F, 0x0A);
  EXPECT_EQ(p83.data_in[19], 18);
  EXPECT_EQ(p83.data_in[20] >> 4, 0x1);
  const auto id = lu.store().identity();
  EXPECT_TRUE(std::equal(id.uuid.begin(), id.uuid.end(), p83.data_in.begin() + 22));
  // The identity belongs to the data: the same configuration over another
  // RAM disk is another device.
  LuConfig other;
  other.target_name = "iqn.test:target";
  other.serial = "SER123";
  LogicalUnit same(other, std::move(store::open_store("ram:1M", {})).value());
  EXPECT_NE(same.naa_identifier(), naa);

  auto b0 = run(lu, cdb_inquiry(true, 0xB0, 255), {}, 255);
  EXPECT_GOOD(b0);
  EXPECT_EQ(load_be(b0.data_in, 8, 4), (1u << 20) / bs());  // max transfer length
  EXPECT_EQ(load_be(b0.data_in, 24, 4), 256u);              // max unmap descriptors
  auto b1 = run(lu, cdb_inquiry(true, 0xB1, 255), {}, 255);
  EXPECT_EQ(load_be(b1.data_in, 4, 2), 1u);  // non-rotating
  auto b2 = run(lu, cdb_inquiry(true, 0xB2, 255), {}, 255);
  EXPECT_EQ(b2.data_in[5] & 0xE0, 0xE0);  // LBPU, LBPWS, LBPWS10
}

TEST_P(ScsiCommand, ReadCapacity) {
  auto& lu = *lu_;
  auto r10 = run(lu, {op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {}, 8);
  EXPECT_GOOD(r10);
  EXPECT_EQ(load_be(r10.data_in, 0, 4), blocks() - 1);
  EXPECT_EQ(load_be(r10.data_in, 4, 4), bs());
  // LBA without PMI is invalid.
  EXPECT_SENSE(run(lu, {op::kReadCapacity10, 0, 0, 0, 0, 1, 0, 0, 0, 0}, {}, 8),
               SenseKey::kIllegalRequest, 0x24, 0);
  Bytes c16(16, 0);
  c16[0] = op::kServiceActionIn16;
  c16[1] = op::kSaReadCapacity16;
  c16[13] = 32;
  auto r16 = run(lu, c16, {}, 32);
  EXPECT_GOOD(r16);
  EXPECT_EQ(load_be(r16.data_in, 0, 8), blocks() - 1);
  EXPECT_EQ(load_be(r16.data_in, 8, 4), bs());
  EXPECT_EQ(r16.data_in[14] & 0xC0, 0xC0);  // LBPME + LBPRZ
  c16[1] = 0x11;                            // unknown service action
  EXPECT_SENSE(run(lu, c16, {}, 32), SenseKey::kIllegalRequest, 0x24, 0);
}

TEST_P(ScsiCommand, VerifyWithAndWithoutByteCheck) {
  auto& lu = *lu_;
  const Bytes data = pattern(4 * bs(), 8);
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 20, 4), data));
  EXPECT_GOOD(run(lu, cdb_rw10(op::kVerify10, 20, 4, 0x00)));
  EXPECT_GOOD(run(lu, cdb_rw16(op::kVerify16, 20, 4, 0x02), data));
  Bytes wrong = data;
  wrong[2 * bs() + 17] ^= 0xFF;
  auto mis = run(lu, cdb_rw10(op::kVerify10, 20, 4, 0x02), wrong);
  EXPECT_SENSE(mis, SenseKey::kMiscompare, 0x1D, 0);
  EXPECT_EQ(sense_of(mis)->information, std::optional<std::uint64_t>(2 * bs() + 17));
  // BYTCHK 11b: one block compared against every block.
  const Bytes block = pattern(bs(), 3);
  Bytes same(3 * bs());
  for (int i = 0; i < 3; ++i) std::copy(block.begin(), block.end(), same.begin() + i * bs());
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 40, 3), same));
  EXPECT_GOOD(run(lu, cdb_rw10(op::kVerify10, 40, 3, 0x06), block));
  EXPECT_SENSE(run(lu, cdb_rw10(op::kVerify10, 40, 3, 0x04), block), SenseKey::kIllegalRequest,
               0x24, 0);
  EXPECT_SENSE(run(lu, cdb_rw10(op::kVerify10, 0xFFFFFFF0, 3)), SenseKey::kIllegalRequest, 0x21, 0);
}

TEST_P(ScsiCommand, SynchronizeCacheIsHonoured) {
  auto& lu = *lu_;
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 0, 1), pattern(bs(), 1)));
  const auto before = lu.store().counters().flushes;
  EXPECT_GOOD(run(lu, cdb_rw10(op::kSynchronizeCache10, 0, 0)));
  EXPECT_GOOD(run(lu, cdb_rw16(op::kSynchronizeCache16, 0, 8)));
  EXPECT_EQ(lu.store().counters().flushes, before + 2);
  EXPECT_SENSE(run(lu, cdb_rw16(op::kSynchronizeCache16, blocks(), 1)), SenseKey::kIllegalRequest,
               0x21, 0);
}

Bytes mode_sense6(std::uint8_t pc_page, std::uint8_t alloc = 255, bool dbd = false) {
  return {op::kModeSense6, static_cast<std::uint8_t>(dbd ? 0x08 : 0), pc_page, 0, alloc, 0};
}

// Returns the bytes of `page` inside MODE SENSE(6) data, or empty.
Bytes find_page(const Bytes& d, std::uint8_t page) {
  if (d.size() < 4) return {};
  std::size_t at = 4 + d[3];
  while (at + 2 <= d.size()) {
    const std::size_t len = d[at + 1] + 2u;
    if ((d[at] & 0x3F) == page)
      return Bytes(d.begin() + at, d.begin() + std::min(d.size(), at + len));
    at += len;
  }
  return {};
}

TEST_P(ScsiCommand, ModeSenseAndSelect) {
  auto& lu = *lu_;
  auto all = run(lu, mode_sense6(0x3F), {}, 255);
  EXPECT_GOOD(all);
  EXPECT_EQ(all.data_in[0] + 1u, all.data_in.size());
  EXPECT_EQ(all.data_in[3], 8);  // block descriptor
  EXPECT_EQ(load_be(all.data_in, 4 + 5, 3), bs());
  const Bytes caching = find_page(all.data_in, 0x08);
  ASSERT_EQ(caching.size(), 20u);
  EXPECT_EQ(caching[2] & 0x04, 0x04);  // WCE on
  EXPECT_EQ(find_page(all.data_in, 0x0A).size(), 12u);
  EXPECT_EQ(find_page(all.data_in, 0x1C).size(), 12u);
  // Changeable values: only WCE.
  auto chg = run(lu, mode_sense6(0x40 | 0x08), {}, 255);
  EXPECT_EQ(find_page(chg.data_in, 0x08)[2], 0x04);
  // MODE SENSE(10) with long LBA descriptor.
  Bytes ms10 = {op::kModeSense10, 0x10, 0x08, 0, 0, 0, 0, 0, 255, 0};
  auto r10 = run(lu, ms10, {}, 255);
  EXPECT_GOOD(r10);
  EXPECT_EQ(r10.data_in[4] & 1, 1);
  EXPECT_EQ(load_be(r10.data_in, 6, 2), 16u);
  EXPECT_EQ(load_be(r10.data_in, 8, 8), blocks());
  // Errors.
  EXPECT_SENSE(run(lu, mode_sense6(0xC0 | 0x08), {}, 255), SenseKey::kIllegalRequest, 0x39, 0);
  EXPECT_SENSE(run(lu, mode_sense6(0x19), {}, 255), SenseKey::kIllegalRequest, 0x24, 0);

  // MODE SELECT(6): turn the write cache off.
  auto cur = run(lu, mode_sense6(0x08, 255, true), {}, 255);
  Bytes params = cur.data_in;  // header + caching page, no block descriptor
  params[0] = 0;
  params[4 + 2] &= static_cast<std::uint8_t>(~0x04);
  Bytes sel = {op::kModeSelect6, 0x10, 0, 0, static_cast<std::uint8_t>(params.size()), 0};
  EXPECT_GOOD(run(lu, sel, params));
  EXPECT_FALSE(lu.write_cache_enabled());
  auto after = run(lu, mode_sense6(0x08), {}, 255);
  EXPECT_EQ(find_page(after.data_in, 0x08)[2] & 0x04, 0);
  // Write cache off: plain writes are write-through (FUA).
  const auto fua_before = lu.store().counters().fua_writes;
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 0, 1), pattern(bs(), 1)));
  EXPECT_EQ(lu.store().counters().fua_writes, fua_before + 1);
  // Another nexus hears about it.
  clear_power_on_ua(lu, kNexusB);  // first command gets the power-on UA ...
  // ... the mode-change UA was queued for B only if B existed; create B first, then change.
  params[4 + 2] |= 0x04;
  EXPECT_GOOD(run(lu, sel, params));
  EXPECT_SENSE(run(lu, Bytes(6, 0), {}, 0, kNexusB), SenseKey::kUnitAttention, 0x2A, 0x01);
  EXPECT_GOOD(run(lu, Bytes(6, 0)));

  // Changing something not changeable -> invalid field in parameter list.
  Bytes bad = params;
  bad[4 + 3] ^= 0x01;
  EXPECT_SENSE(run(lu, sel, bad), SenseKey::kIllegalRequest, 0x26, 0);
  // Truncated page -> parameter list length error.
  Bytes trunc(params.begin(), params.begin() + 8);
  Bytes sel_trunc = sel;
  sel_trunc[4] = static_cast<std::uint8_t>(trunc.size());
  EXPECT_SENSE(run(lu, sel_trunc, trunc), SenseKey::kIllegalRequest, 0x1A, 0);
  // SP (save pages) is not supported.
  Bytes sp = sel;
  sp[1] |= 0x01;
  EXPECT_SENSE(run(lu, sp, params), SenseKey::kIllegalRequest, 0x24, 0);
  // Unknown page.
  Bytes unknown = {0, 0, 0, 0, 0x19, 2, 0, 0};
  Bytes sel_unknown = sel;
  sel_unknown[4] = static_cast<std::uint8_t>(unknown.size());
  EXPECT_SENSE(run(lu, sel_unknown, unknown), SenseKey::kIllegalRequest, 0x26, 0);
}

TEST_P(ScsiCommand, StartStopUnit) {
  auto& lu = *lu_;
  Bytes stop = {op::kStartStopUnit, 0, 0, 0, 0x00, 0};
  Bytes start = {op::kStartStopUnit, 0, 0, 0, 0x01, 0};
  const auto flushes = lu.store().counters().flushes;
  EXPECT_GOOD(run(lu, stop));
  EXPECT_EQ(lu.store().counters().flushes, flushes + 1);
  EXPECT_SENSE(run(lu, Bytes(6, 0)), SenseKey::kNotReady, 0x04, 0x02);
  EXPECT_SENSE(run(lu, cdb_rw10(op::kRead10, 0, 1), {}, bs()), SenseKey::kNotReady, 0x04, 0x02);
  auto rs = run(lu, {op::kRequestSense, 0, 0, 0, 18, 0}, {}, 18);
  EXPECT_EQ(decode_fixed_sense(rs.data_in)->key, SenseKey::kNotReady);
  EXPECT_GOOD(run(lu, cdb_inquiry(false, 0, 36), {}, 36));
  EXPECT_GOOD(run(lu, start));
  EXPECT_GOOD(run(lu, Bytes(6, 0)));
  EXPECT_SENSE(run(lu, {op::kStartStopUnit, 0, 0, 0, 0x10, 0}), SenseKey::kIllegalRequest, 0x24, 0);
}

Bytes unmap_params(const std::vector<std::pair<std::uint64_t, std::uint32_t>>& ext) {
  Bytes p(8 + 16 * ext.size(), 0);
  const std::size_t n = p.size();
  p[0] = static_cast<std::uint8_t>((n - 2) >> 8);
  p[1] = static_cast<std::uint8_t>(n - 2);
  p[2] = static_cast<std::uint8_t>((16 * ext.size()) >> 8);
  p[3] = static_cast<std::uint8_t>(16 * ext.size());
  for (std::size_t i = 0; i < ext.size(); ++i) {
    for (int b = 0; b < 8; ++b)
      p[8 + 16 * i + b] = static_cast<std::uint8_t>(ext[i].first >> (56 - 8 * b));
    for (int b = 0; b < 4; ++b)
      p[16 + 16 * i + b] = static_cast<std::uint8_t>(ext[i].second >> (24 - 8 * b));
  }
  return p;
}
Bytes cdb_unmap(std::size_t len) {
  return {op::kUnmap,
          0,
          0,
          0,
          0,
          0,
          0,
          static_cast<std::uint8_t>(len >> 8),
          static_cast<std::uint8_t>(len),
          0};
}

std::uint64_t st_blocks(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return static_cast<std::uint64_t>(st.st_blocks);
}

TEST_P(ScsiCommand, UnmapDeallocatesAndReadsZeros) {
  auto& lu = *lu_;
  const std::uint32_t n = (1 << 20) / bs();
  EXPECT_GOOD(run(lu, cdb_rw16(op::kWrite16, 0, n), pattern(n * bs(), 5)));
  EXPECT_GOOD(run(lu, cdb_rw10(op::kSynchronizeCache10, 0, 0)));
  const auto before = is_file() ? st_blocks(dir_.file("disk.img")) : 0;
  const auto p = unmap_params({{0, n / 2}, {n / 2, n / 4}});
  EXPECT_GOOD(run(lu, cdb_unmap(p.size()), p));
  if (is_file()) {
    EXPECT_LT(st_blocks(dir_.file("disk.img")), before);
  }
  auto r = run(lu, cdb_rw16(op::kRead16, 0, n), {}, n * bs());
  EXPECT_TRUE(std::all_of(r.data_in.begin(), r.data_in.begin() + (3 * n / 4) * bs(),
                          [](std::uint8_t b) { return b == 0; }));
  EXPECT_FALSE(std::all_of(r.data_in.begin() + (3 * n / 4) * bs(), r.data_in.end(),
                           [](std::uint8_t b) { return b == 0; }));
  // Parameter list errors.
  EXPECT_GOOD(run(lu, cdb_unmap(0)));
  Bytes four(4, 0);
  EXPECT_SENSE(run(lu, cdb_unmap(4), four), SenseKey::kIllegalRequest, 0x1A, 0);
  const auto oob = unmap_params({{blocks() - 1, 2}});
  EXPECT_SENSE(run(lu, cdb_unmap(oob.size()), oob), SenseKey::kIllegalRequest, 0x21, 0);
  const auto wrap = unmap_params({{UINT64_MAX, 2}});
  EXPECT_SENSE(run(lu, cdb_unmap(wrap.size()), wrap), SenseKey::kIllegalRequest, 0x21, 0);
  // Descriptor length larger than the data actually sent is clipped, not overread.
  Bytes lying = unmap_params({{0, 1}});
  lying[2] = 0x7F;
  EXPECT_GOOD(run(lu, cdb_unmap(lying.size()), lying));
  // Data-out shorter than the parameter list length.
  EXPECT_SENSE(run(lu, cdb_unmap(p.size() + 16), p), SenseKey::kIllegalRequest, 0x24, 0);
}

Bytes cdb_ws(bool sixteen, std::uint64_t lba, std::uint32_t n, std::uint8_t flags) {
  return sixteen ? cdb_rw16(op::kWriteSame16, lba, n, flags)
                 : cdb_rw10(op::kWriteSame10, static_cast<std::uint32_t>(lba),
                            static_cast<std::uint16_t>(n), flags);
}

TEST_P(ScsiCommand, WriteSame) {
  auto& lu = *lu_;
  const Bytes block = pattern(bs(), 77);
  const auto n = static_cast<std::uint32_t>(blocks() / 2);  // spans several internal chunks
  EXPECT_GOOD(run(lu, cdb_ws(true, 10, n, 0), block));
  auto r = run(lu, cdb_rw16(op::kRead16, 10, 64), {}, 64 * bs());
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(std::equal(block.begin(), block.end(), r.data_in.begin() + i * bs())) << i;
  }
  auto tail = run(lu, cdb_rw16(op::kRead16, 10 + n - 1, 2), {}, 2 * bs());
  EXPECT_TRUE(std::equal(block.begin(), block.end(), tail.data_in.begin()));
  EXPECT_NE(Bytes(tail.data_in.begin() + bs(), tail.data_in.end()), block);
  EXPECT_GOOD(run(lu, cdb_ws(false, 5, 2, 0), block));

  // UNMAP bit with zeros deallocates (punches a hole in the file).
  EXPECT_GOOD(run(lu, cdb_rw10(op::kSynchronizeCache10, 0, 0)));
  const auto before = is_file() ? st_blocks(dir_.file("disk.img")) : 0;
  const auto unmaps = lu.store().counters().unmaps;
  EXPECT_GOOD(run(lu, cdb_ws(false, 10, n, 0x08), Bytes(bs(), 0)));
  EXPECT_EQ(lu.store().counters().unmaps, unmaps + 1);
  if (is_file()) {
    EXPECT_LT(st_blocks(dir_.file("disk.img")), before);
  }
  auto z = run(lu, cdb_rw16(op::kRead16, 10, 64), {}, 64 * bs());
  EXPECT_TRUE(
      std::all_of(z.data_in.begin(), z.data_in.end(), [](std::uint8_t b) { return b == 0; }));
  // NDOB (no data-out buffer) with UNMAP.
  EXPECT_GOOD(run(lu, cdb_ws(true, 5, 2, 0x09)));
  // UNMAP with non-zero data must write the data.
  EXPECT_GOOD(run(lu, cdb_ws(true, 100, 4, 0x08), block));
  auto w = run(lu, cdb_rw16(op::kRead16, 100, 1), {}, bs());
  EXPECT_EQ(w.data_in, block);
  // Errors.
  EXPECT_SENSE(run(lu, cdb_ws(true, 0, 0, 0), block), SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_SENSE(run(lu, cdb_ws(true, blocks() - 1, 2, 0), block), SenseKey::kIllegalRequest, 0x21,
               0);
  EXPECT_SENSE(run(lu, cdb_ws(false, 0, 1, 0x01), block), SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_SENSE(run(lu, cdb_ws(true, 0, 1, 0)), SenseKey::kIllegalRequest, 0x24, 0);  // no data
}

Bytes cdb_caw(std::uint64_t lba, std::uint8_t n) {
  Bytes c = cdb_rw16(op::kCompareAndWrite, lba, 0);
  c[13] = n;
  return c;
}

TEST_P(ScsiCommand, CompareAndWrite) {
  auto& lu = *lu_;
  const Bytes old_data = pattern(bs(), 1), new_data = pattern(bs(), 2);
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 7, 1), old_data));
  Bytes both = old_data;
  both.insert(both.end(), new_data.begin(), new_data.end());
  EXPECT_GOOD(run(lu, cdb_caw(7, 1), both));
  EXPECT_EQ(run(lu, cdb_rw10(op::kRead10, 7, 1), {}, bs()).data_in, new_data);
  // Now the compare fails: miscompare with the offset, nothing written.
  Bytes stale = both;
  auto mis = run(lu, cdb_caw(7, 1), stale);
  EXPECT_SENSE(mis, SenseKey::kMiscompare, 0x1D, 0);
  std::size_t first_diff = 0;
  while (old_data[first_diff] == new_data[first_diff]) ++first_diff;
  EXPECT_EQ(sense_of(mis)->information, std::optional<std::uint64_t>(first_diff));
  EXPECT_EQ(run(lu, cdb_rw10(op::kRead10, 7, 1), {}, bs()).data_in, new_data);
  EXPECT_SENSE(run(lu, cdb_caw(7, 2), Bytes(4 * bs(), 0)), SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_SENSE(run(lu, cdb_caw(blocks(), 1), both), SenseKey::kIllegalRequest, 0x21, 0);
  EXPECT_SENSE(run(lu, cdb_caw(7, 1), old_data), SenseKey::kIllegalRequest, 0x24, 0);  // short
}

TEST_P(ScsiCommand, CompareAndWriteIsAtomicAgainstOverlappingWrites) {
  auto& lu = *lu_;
  const Bytes a = pattern(bs(), 10), b = pattern(bs(), 11), c = pattern(bs(), 12);
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 50, 1), a));
  Bytes caw = a;
  caw.insert(caw.end(), b.begin(), b.end());
  // Issue CAW(a->b) and an overlapping WRITE(c) back to back, before any I/O completes.
  std::vector<int> order;
  CommandResult caw_r, w_r;
  const Bytes caw_cdb = cdb_caw(50, 1), w_cdb = cdb_rw10(op::kWrite10, 50, 1);
  lu.execute({caw_cdb, caw, 0, kNexusA}, [&](CommandResult r) {
    caw_r = std::move(r);
    order.push_back(1);
  });
  lu.execute({w_cdb, c, 0, kNexusA}, [&](CommandResult r) {
    w_r = std::move(r);
    order.push_back(2);
  });
  EXPECT_EQ(lu.commands_in_flight(), 2u);
  for (int i = 0; i < 100 && order.size() < 2; ++i) lu.store().drain();
  ASSERT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_GOOD(caw_r);
  EXPECT_GOOD(w_r);
  EXPECT_EQ(run(lu, cdb_rw10(op::kRead10, 50, 1), {}, bs()).data_in, c);
}

TEST_P(ScsiCommand, ManyCommandsInFlight) {
  auto& lu = *lu_;
  std::vector<Bytes> bufs, cdbs;
  int done = 0, good = 0;
  for (int i = 0; i < 64; ++i) {
    bufs.push_back(pattern(2 * bs(), static_cast<std::uint32_t>(100 + i)));
    cdbs.push_back(cdb_rw10(op::kWrite10, static_cast<std::uint32_t>(2 * i), 2));
  }
  for (int i = 0; i < 64; ++i) {
    lu.execute({cdbs[i], bufs[i], 0, kNexusA}, [&](CommandResult r) {
      ++done;
      good += r.status == status::kGood;
    });
  }
  EXPECT_EQ(lu.commands_in_flight(), 64u);
  for (int i = 0; i < 100 && done < 64; ++i) lu.store().drain();
  EXPECT_EQ(good, 64);
  auto r = run(lu, cdb_rw10(op::kRead10, 0, 128), {}, 128 * bs());
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(std::equal(bufs[i].begin(), bufs[i].end(), r.data_in.begin() + 2 * i * bs())) << i;
  }
}

TEST_P(ScsiCommand, ReadOnlyExport) {
  lu_.reset();
  auto lu = make_lu(true);
  const Bytes block = pattern(bs(), 1);
  EXPECT_SENSE(run(*lu, cdb_rw10(op::kWrite10, 0, 1), block), SenseKey::kDataProtect, 0x27, 0);
  EXPECT_SENSE(run(*lu, cdb_rw6(op::kWrite6, 0, 1), block), SenseKey::kDataProtect, 0x27, 0);
  EXPECT_SENSE(run(*lu, cdb_ws(true, 0, 1, 0), block), SenseKey::kDataProtect, 0x27, 0);
  EXPECT_SENSE(run(*lu, cdb_caw(0, 1), Bytes(2 * bs(), 0)), SenseKey::kDataProtect, 0x27, 0);
  const auto p = unmap_params({{0, 1}});
  EXPECT_SENSE(run(*lu, cdb_unmap(p.size()), p), SenseKey::kDataProtect, 0x27, 0);
  EXPECT_GOOD(run(*lu, cdb_rw10(op::kRead10, 0, 1), {}, bs()));
  auto ms = run(*lu, mode_sense6(0x08), {}, 255);
  EXPECT_EQ(ms.data_in[2] & 0x80, 0x80);  // WP
}

TEST_P(ScsiCommand, ReportSupportedOperationCodes) {
  auto& lu = *lu_;
  Bytes all = {op::kMaintenanceIn, op::kSaReportSupportedOpcodes, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0};
  auto r = run(lu, all, {}, 4096);
  EXPECT_GOOD(r);
  const std::size_t len = load_be(r.data_in, 0, 4);
  ASSERT_EQ(len + 4, r.data_in.size());
  bool saw_read10 = false, saw_rc16 = false;
  for (std::size_t at = 4; at + 8 <= r.data_in.size(); at += 8) {
    if (r.data_in[at] == op::kRead10) saw_read10 = load_be(r.data_in, at + 6, 2) == 10;
    if (r.data_in[at] == op::kServiceActionIn16 && load_be(r.data_in, at + 2, 2) == 0x10) {
      saw_rc16 = (r.data_in[at + 5] & 1) == 1;
    }
  }
  EXPECT_TRUE(saw_read10);
  EXPECT_TRUE(saw_rc16);
  // One command without service action: READ(10) with its usage map.
  Bytes one = {
      op::kMaintenanceIn, op::kSaReportSupportedOpcodes, 1, op::kRead10, 0, 0, 0, 0, 0, 64, 0, 0};
  auto o = run(lu, one, {}, 64);
  EXPECT_GOOD(o);
  EXPECT_EQ(o.data_in[1] & 0x07, 0x03);
  EXPECT_EQ(load_be(o.data_in, 2, 2), 10u);
  EXPECT_EQ((Bytes(o.data_in.begin() + 4, o.data_in.end())),
            (Bytes{op::kRead10, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0x00}));
  // With service action: READ CAPACITY(16).
  Bytes sa = {op::kMaintenanceIn,
              op::kSaReportSupportedOpcodes,
              2,
              op::kServiceActionIn16,
              0,
              0x10,
              0,
              0,
              0,
              64,
              0,
              0};
  auto s = run(lu, sa, {}, 64);
  EXPECT_GOOD(s);
  EXPECT_EQ(load_be(s.data_in, 2, 2), 16u);
  EXPECT_EQ(s.data_in[5], 0x10);
  // Unsupported opcode reports "not supported"; option 1 on an SA opcode is an error.
  Bytes unsup = one;
  unsup[3] = 0xC7;
  EXPECT_EQ(run(lu, unsup, {}, 64).data_in[1] & 0x07, 0x01);
  Bytes bad = one;
  bad[3] = op::kServiceActionIn16;
  EXPECT_SENSE(run(lu, bad, {}, 64), SenseKey::kIllegalRequest, 0x24, 0);
}

Bytes cdb_get_lba_status(std::uint64_t lba, std::uint32_t alloc) {
  Bytes c(16, 0);
  c[0] = op::kServiceActionIn16;
  c[1] = op::kSaGetLbaStatus;
  for (int b = 0; b < 8; ++b) c[2 + b] = static_cast<std::uint8_t>(lba >> (56 - 8 * b));
  for (int b = 0; b < 4; ++b) c[10 + b] = static_cast<std::uint8_t>(alloc >> (24 - 8 * b));
  return c;
}

struct LbaStatus {
  std::uint64_t lba;
  std::uint64_t blocks;
  std::uint8_t provisioning;  // 0 mapped, 1 deallocated
};
// One GET LBA STATUS: GOOD, one descriptor, for the LBA asked.
LbaStatus lba_status(LogicalUnit& lu, std::uint64_t lba) {
  auto r = run(lu, cdb_get_lba_status(lba, 64), {}, 64);
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_in.size(), 24u);
  if (r.data_in.size() < 24) return {};
  EXPECT_EQ(load_be(r.data_in, 0, 4), 20u);  // one descriptor follows
  return {load_be(r.data_in, 8, 8), load_be(r.data_in, 16, 4),
          static_cast<std::uint8_t>(r.data_in[20] & 0x0F)};
}

// GET LBA STATUS (SBC-3 5.7), where READ CAPACITY(16) reports thin
// provisioning (LBPME): never-written and unmapped blocks are deallocated,
// written ones mapped; a store that cannot tell reports mapped.
TEST_P(ScsiCommand, GetLbaStatusFollowsWritesAndUnmaps) {
  auto& lu = *lu_;
  auto rc16 = run(
      lu,
      {op::kServiceActionIn16, op::kSaReadCapacity16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0},
      {}, 32);
  ASSERT_EQ(rc16.data_in[14] & 0x80, 0x80);  // LBPME: thin provisioning is reported
  // Stores the test knows the allocation of (an rbd: image may not say).
  const bool knows = std::string(GetParam().kind) == "ram" || is_file();
  const std::uint32_t n = (1 << 20) / bs();

  const LbaStatus fresh = lba_status(lu, 0);
  EXPECT_EQ(fresh.lba, 0u);
  if (knows) {
    EXPECT_EQ(fresh.provisioning, 1) << "a new disk holds nothing";
  }
  EXPECT_GE(fresh.blocks, 1u);

  EXPECT_GOOD(run(lu, cdb_rw16(op::kWrite16, 0, n), pattern(n * bs(), 3)));
  EXPECT_GOOD(run(lu, cdb_rw10(op::kSynchronizeCache10, 0, 0)));
  const LbaStatus written = lba_status(lu, 0);
  EXPECT_EQ(written.provisioning, 0);
  if (knows) {
    EXPECT_EQ(written.blocks, n);
  }

  const auto p = unmap_params({{0, n / 2}});
  EXPECT_GOOD(run(lu, cdb_unmap(p.size()), p));
  const LbaStatus unmapped = lba_status(lu, 0);
  if (knows) {
    EXPECT_EQ(unmapped.provisioning, 1);
    EXPECT_EQ(unmapped.blocks, n / 2);
  }
  const LbaStatus rest = lba_status(lu, n / 2);
  EXPECT_EQ(rest.lba, n / 2);
  EXPECT_EQ(rest.provisioning, 0);
  if (knows) {
    EXPECT_EQ(rest.blocks, n / 2);
  }

  const LbaStatus last = lba_status(lu, blocks() - 1);
  EXPECT_EQ(last.lba, blocks() - 1);
  EXPECT_EQ(last.blocks, 1u);
  if (knows) {
    EXPECT_EQ(last.provisioning, 1);
  }

  // Beyond the end; the allocation length truncates; NACA is refused.
  EXPECT_SENSE(run(lu, cdb_get_lba_status(blocks(), 64), {}, 64), SenseKey::kIllegalRequest, 0x21,
               0);
  auto shortr = run(lu, cdb_get_lba_status(0, 8), {}, 64);
  EXPECT_GOOD(shortr);
  EXPECT_EQ(shortr.data_in.size(), 8u);
  EXPECT_EQ(load_be(shortr.data_in, 0, 4), 20u);
  Bytes naca = cdb_get_lba_status(0, 64);
  naca[15] = 0x04;
  EXPECT_SENSE(run(lu, naca, {}, 64), SenseKey::kIllegalRequest, 0x24, 0);
}

TEST_P(ScsiCommand, GetLbaStatusOnAReadOnlyExportReportsMapped) {
  lu_.reset();
  auto lu = make_lu(true);
  ASSERT_TRUE(lu);
  const LbaStatus all = lba_status(*lu, 0);
  EXPECT_EQ(all.provisioning, 0);  // not thin provisioned: every block is mapped
  EXPECT_EQ(all.blocks, blocks());
}

// A disk's medium cannot be removed: PREVENT ALLOW MEDIUM REMOVAL is a no-op
// with GOOD status for every PREVENT value, and changes nothing.
TEST_P(ScsiCommand, PreventAllowMediumRemovalIsGoodOnADisk) {
  auto& lu = *lu_;
  const Bytes data = pattern(bs(), 9);
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 3, 1), data));
  for (std::uint8_t prevent : {0x01, 0x00, 0x02, 0x03})
    EXPECT_GOOD(run(lu, {op::kPreventAllowMediumRemoval, 0, 0, 0, prevent, 0}));
  auto r = run(lu, cdb_rw10(op::kRead10, 3, 1), {}, bs());
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_in, data);
  EXPECT_GOOD(run(lu, Bytes(6, 0)));  // still ready
  EXPECT_SENSE(run(lu, {op::kPreventAllowMediumRemoval, 0, 0, 0, 1, 0x04}),
               SenseKey::kIllegalRequest, 0x24, 0);  // NACA
  // Listed by REPORT SUPPORTED OPERATION CODES with its usage map.
  Bytes one = {op::kMaintenanceIn,
               op::kSaReportSupportedOpcodes,
               1,
               op::kPreventAllowMediumRemoval,
               0,
               0,
               0,
               0,
               0,
               64,
               0,
               0};
  auto o = run(lu, one, {}, 64);
  EXPECT_GOOD(o);
  EXPECT_EQ(o.data_in[1] & 0x07, 0x03);
  EXPECT_EQ((Bytes(o.data_in.begin() + 4, o.data_in.end())),
            (Bytes{op::kPreventAllowMediumRemoval, 0, 0, 0, 0x03, 0}));
}

TEST_P(ScsiCommand, UnitAttentionsOncePerNexus) {
  auto& lu = *lu_;
  // INQUIRY, REPORT LUNS and REQUEST SENSE do not consume the power-on UA.
  EXPECT_GOOD(run(lu, cdb_inquiry(false, 0, 36), {}, 36, kNexusB));
  auto rs = run(lu, {op::kRequestSense, 0, 0, 0, 18, 0}, {}, 18, kNexusB);
  EXPECT_GOOD(rs);
  auto s = decode_fixed_sense(rs.data_in);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->key, SenseKey::kUnitAttention);  // REQUEST SENSE reports and clears it
  EXPECT_EQ(s->asc, 0x29);
  EXPECT_GOOD(run(lu, Bytes(6, 0), {}, 0, kNexusB));
  // Same initiator, new session: a new nexus, a new power-on UA.
  const Nexus b2{kNexusB.initiator, 99};
  EXPECT_SENSE(run(lu, Bytes(6, 0), {}, 0, b2), SenseKey::kUnitAttention, 0x29, 0);
  EXPECT_GOOD(run(lu, Bytes(6, 0), {}, 0, b2));
  // Reset: one UA per nexus.
  lu.reset();
  EXPECT_SENSE(run(lu, Bytes(6, 0)), SenseKey::kUnitAttention, 0x29, 0x03);
  EXPECT_GOOD(run(lu, Bytes(6, 0)));
  EXPECT_SENSE(run(lu, cdb_rw10(op::kRead10, 0, 1), {}, bs(), kNexusB), SenseKey::kUnitAttention,
               0x29, 0x03);
  EXPECT_GOOD(run(lu, Bytes(6, 0), {}, 0, kNexusB));
  lu.capacity_changed();
  EXPECT_SENSE(run(lu, Bytes(6, 0)), SenseKey::kUnitAttention, 0x2A, 0x09);
  EXPECT_GOOD(run(lu, Bytes(6, 0)));
  lu.nexus_gone(kNexusA);
  EXPECT_SENSE(run(lu, Bytes(6, 0)), SenseKey::kUnitAttention, 0x29, 0x00);
}

}  // namespace

std::string lu_param_name(const ::testing::TestParamInfo<LuParam>& p) {
  return std::string(p.param.kind) + std::to_string(p.param.block_size);
}

}  // namespace hyperscsi::scsi::testing

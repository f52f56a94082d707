// Per-command tests of the SCSI layer: the parameterised cases of
// scsi_command_cases.cpp on a RAM store and a file store, and store errors.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "hyperscsi/scsi/lun_map.h"
#include "hyperscsi/scsi/opcodes.h"
#include "hyperscsi/store/fault_store.h"
#include "hyperscsi/store/forwarding_store.h"
#include "hyperscsi/store/ram_store.h"
#include "scsi_command_cases.h"
#include "scsi_test_util.h"

namespace hyperscsi::scsi::testing {

INSTANTIATE_TEST_SUITE_P(Stores, ScsiCommand,
                         ::testing::Values(LuParam{"ram", 512}, LuParam{"file", 512},
                                           LuParam{"ram", 4096}, LuParam{"file", 4096}),
                         lu_param_name);

namespace {

// Store failures become MEDIUM ERROR / space allocation sense.
TEST(ScsiErrors, StoreErrorsBecomeSense) {
  auto inner = store::open_store("ram:1M", {});
  ASSERT_TRUE(inner.ok());
  auto fault = std::make_unique<store::FaultStore>(std::move(inner).value());
  store::FaultStore* f = fault.get();
  f->add_rule({store::FaultStore::kRead, 0, 512, store::IoStatus::kMediumError});
  f->add_rule({store::FaultStore::kWrite, 4096, 512, store::IoStatus::kMediumError});
  f->add_rule({store::FaultStore::kWrite, 8192, 512, store::IoStatus::kNoSpace});
  LogicalUnit lu({}, std::move(fault));
  clear_power_on_ua(lu);
  EXPECT_SENSE(run(lu, cdb_rw10(op::kRead10, 0, 1), {}, 512), SenseKey::kMediumError, 0x11, 0);
  EXPECT_GOOD(run(lu, cdb_rw10(op::kRead10, 1, 1), {}, 512));
  EXPECT_SENSE(run(lu, cdb_rw10(op::kWrite10, 8, 1), pattern(512, 1)), SenseKey::kMediumError, 0x0C,
               0);
  EXPECT_SENSE(run(lu, cdb_rw10(op::kWrite10, 16, 1), pattern(512, 1)), SenseKey::kDataProtect,
               0x27, 0x07);
  EXPECT_SENSE(run(lu, cdb_rw10(op::kVerify10, 0, 1)), SenseKey::kMediumError, 0x11, 0);
  f->add_rule({store::FaultStore::kFlush, 0, 0, store::IoStatus::kMediumError});
  EXPECT_SENSE(run(lu, cdb_rw10(op::kSynchronizeCache10, 0, 0)), SenseKey::kMediumError, 0x0C, 0);
}

// A READ on a unit with reply headroom leaves that room in front of its
// data (the engine writes the reply header there and sends the buffer without
// copying the data); the expected length still truncates after it, and the
// residuals count data only.
TEST(ReplyHeadroom, ReadLeavesRoomBeforeItsDataAndTruncatesAfterIt) {
  LuConfig cfg;
  cfg.reply_headroom = 16;
  LogicalUnit lu(cfg, std::move(store::open_store("ram:1M", {})).value());
  clear_power_on_ua(lu);
  const Bytes data = pattern(8 * 512, 7);
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 16, 8), data));

  CommandResult whole = run(lu, cdb_rw10(op::kRead10, 16, 8), {}, 8 * 512);
  ASSERT_EQ(whole.status, status::kGood);
  EXPECT_EQ(whole.data_in_offset, 16u);
  // In a buffer of its own that was never zero-filled (issue 20), not data_in;
  // the room is zeroed, so no byte of the buffer is left unset.
  ASSERT_NE(whole.read_buffer, nullptr);
  EXPECT_TRUE(whole.data_in.empty());
  EXPECT_EQ(whole.buffer().size(), 16u + 8 * 512);
  EXPECT_EQ(std::count(whole.buffer().begin(), whole.buffer().begin() + 16, 0), 16);
  EXPECT_TRUE(std::equal(whole.data().begin(), whole.data().end(), data.begin(), data.end()));
  EXPECT_EQ(whole.residual, Residual::kNone);

  CommandResult shorter = run(lu, cdb_rw10(op::kRead10, 16, 8), {}, 1024);
  ASSERT_EQ(shorter.status, status::kGood);
  EXPECT_EQ(shorter.data_size(), 1024u);
  EXPECT_TRUE(
      std::equal(shorter.data().begin(), shorter.data().end(), data.begin(), data.begin() + 1024));
  EXPECT_EQ(shorter.residual, Residual::kOverflow);
  EXPECT_EQ(shorter.residual_count, 8u * 512 - 1024);

  CommandResult longer = run(lu, cdb_rw10(op::kRead10, 16, 8), {}, 16 * 512);
  ASSERT_EQ(longer.status, status::kGood);
  EXPECT_EQ(longer.data_size(), 8u * 512);
  EXPECT_EQ(longer.residual, Residual::kUnderflow);
  EXPECT_EQ(longer.residual_count, 8u * 512);

  // Other commands carry no room.
  CommandResult inquiry = run(lu, Bytes{0x12, 0, 0, 0, 96, 0}, {}, 96);
  ASSERT_EQ(inquiry.status, status::kGood);
  EXPECT_EQ(inquiry.data_in_offset, 0u);
  // A failed READ neither.
  CommandResult beyond = run(lu, cdb_rw10(op::kRead10, 4096, 1), {}, 512);
  EXPECT_EQ(beyond.data_in_offset, 0u);
  EXPECT_TRUE(beyond.data_in.empty());
  EXPECT_EQ(beyond.read_buffer, nullptr);
  EXPECT_TRUE(beyond.buffer().empty());
}

// A READ with reply headroom whose store read fails returns sense and no
// buffer: the one that was never zero-filled is dropped unsent.
TEST(ReplyHeadroom, AFailedReadDropsItsBuffer) {
  auto inner = store::open_store("ram:1M", {});
  ASSERT_TRUE(inner.ok());
  auto fault = std::make_unique<store::FaultStore>(std::move(inner).value());
  fault->add_rule({store::FaultStore::kRead, 4096, 512, store::IoStatus::kMediumError});
  LuConfig cfg;
  cfg.reply_headroom = 16;
  LogicalUnit lu(cfg, std::move(fault));
  clear_power_on_ua(lu);
  CommandResult r = run(lu, cdb_rw10(op::kRead10, 8, 1), {}, 512);
  EXPECT_SENSE(r, SenseKey::kMediumError, 0x11, 0);
  EXPECT_EQ(r.read_buffer, nullptr);
  EXPECT_TRUE(r.buffer().empty());
  EXPECT_EQ(r.data_in_offset, 0u);
  EXPECT_NE(run(lu, cdb_rw10(op::kRead10, 9, 1), {}, 512).read_buffer, nullptr);
}

// Records the read-offload hint in force at each read (BlockStore::set_read_offload).
class HintProbe final : public store::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  void set_read_offload(bool prefer) override {
    hint_ = prefer;
    ForwardingStore::set_read_offload(prefer);
  }
  void submit_read(std::uint64_t offset, std::span<std::byte> buf, store::IoCallback cb) override {
    hints_at_read.push_back(hint_);
    ForwardingStore::submit_read(offset, buf, std::move(cb));
  }
  std::vector<bool> hints_at_read;

 private:
  bool hint_ = false;
};

// A READ carries the transport's "sender busy" to the store as the offload
// hint for that read, whether its reply has headroom or not; other commands
// do not read the medium.
TEST(ReadOffloadHint, ReachesTheStoreWithEachRead) {
  for (const std::uint32_t headroom : {0u, 16u}) {
    auto inner = store::open_store("ram:1M", {});
    ASSERT_TRUE(inner.ok());
    auto probe = std::make_unique<HintProbe>(std::move(inner).value());
    HintProbe* p = probe.get();
    LuConfig cfg;
    cfg.reply_headroom = headroom;
    LogicalUnit lu(cfg, std::move(probe));
    clear_power_on_ua(lu);
    for (const bool busy : {true, false, true}) {
      const Bytes cdb = cdb_rw10(op::kRead10, 0, 256);
      CommandRequest req{cdb, {}, 256 * 512, kNexusA};
      req.sender_busy = busy;
      bool done = false;
      CommandResult out;
      lu.execute(req, [&](CommandResult r) {
        out = std::move(r);
        done = true;
      });
      for (int i = 0; i < 100 && !done; ++i) lu.store().drain();
      ASSERT_TRUE(done);
      EXPECT_GOOD(out);
    }
    EXPECT_EQ(p->hints_at_read, (std::vector<bool>{true, false, true})) << "headroom " << headroom;
  }
}

// SYNCHRONIZE CACHE through the SCSI layer really fsyncs the file.
TEST(ScsiErrors, SynchronizeCacheReachesTheFile) {
  TempDir dir;
  store::StoreOptions o;
  o.create_size = 1 << 20;
  auto s = store::open_store(dir.file("d.img"), o);
  ASSERT_TRUE(s.ok());
  LogicalUnit lu({}, std::move(s).value());
  clear_power_on_ua(lu);
  const Bytes data = pattern(8 * 512, 42);
  EXPECT_GOOD(run(lu, cdb_rw10(op::kWrite10, 16, 8), data));
  const auto flushes = lu.store().counters().flushes;
  EXPECT_GOOD(run(lu, cdb_rw10(op::kSynchronizeCache10, 0, 0)));
  EXPECT_EQ(lu.store().counters().flushes, flushes + 1);
  FILE* fp = std::fopen(dir.file("d.img").c_str(), "rb");
  ASSERT_NE(fp, nullptr);
  ::posix_fadvise(fileno(fp), 0, 0, POSIX_FADV_DONTNEED);
  Bytes back(data.size());
  std::fseek(fp, 16 * 512, SEEK_SET);
  EXPECT_EQ(std::fread(back.data(), 1, back.size(), fp), back.size());
  std::fclose(fp);
  EXPECT_EQ(back, data);
}

TEST(LunMapTest, ReportLunsAndAbsentLuns) {
  LunMap map;
  for (std::uint64_t lun : {0u, 5u, 300u}) {
    LuConfig cfg;
    cfg.lun = lun;
    ASSERT_TRUE(map.add(lun, std::make_unique<LogicalUnit>(
                                 cfg, std::move(store::open_store("ram:1M", {})).value()))
                    .ok());
  }
  auto dup = map.add(5, std::make_unique<LogicalUnit>(
                            LuConfig{}, std::move(store::open_store("ram:1M", {})).value()));
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().find("duplicate"), std::string::npos);
  EXPECT_FALSE(map.add(20000, nullptr).ok());

  Bytes rl = {op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  for (std::uint64_t lun : {0u, 7u}) {  // answered for present and absent LUNs
    auto r = run(map, lun, rl, {}, 256);
    EXPECT_GOOD(r);
    ASSERT_EQ(r.data_in.size(), 32u);
    EXPECT_EQ(load_be(r.data_in, 0, 4), 24u);
    EXPECT_EQ(decode_lun(std::span(r.data_in).subspan(8, 8)), std::optional<std::uint64_t>(0));
    EXPECT_EQ(decode_lun(std::span(r.data_in).subspan(16, 8)), std::optional<std::uint64_t>(5));
    EXPECT_EQ(decode_lun(std::span(r.data_in).subspan(24, 8)), std::optional<std::uint64_t>(300));
    EXPECT_EQ(r.data_in[24], 0x41);  // flat space addressing
  }
  // Truncated by allocation length.
  rl[9] = 16;
  rl[8] = 0;
  auto trunc = run(map, 0, rl, {}, 256);
  EXPECT_EQ(trunc.data_in.size(), 16u);
  EXPECT_EQ(load_be(trunc.data_in, 0, 4), 24u);

  EXPECT_SENSE(run(map, 7, Bytes(6, 0)), SenseKey::kIllegalRequest, 0x25, 0);
  EXPECT_SENSE(run(map, 7, cdb_rw10(op::kRead10, 0, 1), {}, 512), SenseKey::kIllegalRequest, 0x25,
               0);
  auto inq = run(map, 7, cdb_inquiry(false, 0, 36), {}, 36);
  EXPECT_GOOD(inq);
  EXPECT_EQ(inq.data_in[0], 0x7F);
  auto rs = run(map, 7, {op::kRequestSense, 0, 0, 0, 18, 0}, {}, 18);
  EXPECT_EQ(decode_fixed_sense(rs.data_in)->asc, 0x25);
  // Present LUN works through the map.
  EXPECT_SENSE(run(map, 5, Bytes(6, 0)), SenseKey::kUnitAttention, 0x29, 0);
  EXPECT_GOOD(run(map, 5, Bytes(6, 0)));
  auto removed = map.remove(5);
  ASSERT_NE(removed, nullptr);
  EXPECT_SENSE(run(map, 5, Bytes(6, 0)), SenseKey::kIllegalRequest, 0x25, 0);
  EXPECT_EQ(map.luns(), (std::vector<std::uint64_t>{0, 300}));
}

// REPORT LUNS is built by one function (scsi::report_luns) for the map, a
// unit on its own and the engine: each refuses NACA/LINK the same way.
TEST(ReportLuns, OneBuilderForTheMapAUnitAndTheEngine) {
  LunMap map;
  LuConfig cfg;
  cfg.lun = 9;
  ASSERT_TRUE(map.add(9, std::make_unique<LogicalUnit>(
                             cfg, std::move(store::open_store("ram:1M", {})).value()))
                  .ok());
  const Bytes rl = {op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  for (std::uint8_t control : {0x04, 0x01}) {  // NACA, LINK
    Bytes bad = rl;
    bad[11] = control;
    EXPECT_SENSE(run(map, 9, bad, {}, 256), SenseKey::kIllegalRequest, 0x24, 0);
    EXPECT_SENSE(run(*map.find(9), bad, {}, 256), SenseKey::kIllegalRequest, 0x24, 0);
    const std::uint64_t luns[] = {9};
    const CommandResult direct = report_luns(bad, luns, 256);
    EXPECT_EQ(direct.status, status::kCheckCondition);
    EXPECT_EQ(direct.residual, Residual::kUnderflow);
    EXPECT_EQ(direct.residual_count, 256u);
  }
  // The unit alone reports itself; the map and the builder agree byte for byte.
  const CommandResult via_map = run(map, 9, rl, {}, 256);
  const CommandResult via_unit = run(*map.find(9), rl, {}, 256);
  const std::uint64_t nine[] = {9};
  const CommandResult built = report_luns(rl, nine, 256);
  EXPECT_GOOD(via_map);
  EXPECT_EQ(via_map.data_in, built.data_in);
  EXPECT_EQ(via_unit.data_in, built.data_in);
  EXPECT_EQ(built.data_in.size(), 16u);
  EXPECT_EQ(decode_lun(std::span(built.data_in).subspan(8, 8)), std::optional<std::uint64_t>(9));
  EXPECT_EQ(built.residual, Residual::kUnderflow);
  EXPECT_EQ(built.residual_count, 240u);
  // The expected length clips too (overflow), and a short CDB is refused.
  const CommandResult clipped = report_luns(rl, nine, 12);
  EXPECT_EQ(clipped.data_in.size(), 12u);
  EXPECT_EQ(clipped.residual, Residual::kOverflow);
  EXPECT_EQ(clipped.residual_count, 4u);
  EXPECT_EQ(report_luns(Bytes(6, 0xA0), nine, 16).status, status::kCheckCondition);
}

// The opcode table decides what a reply cache may run again.
TEST(OpcodeTable, ReexecutableCommandsAreTheReadOnlyOnes) {
  for (std::uint8_t o : {op::kTestUnitReady, op::kRead6, op::kRead10, op::kRead12, op::kRead16,
                         op::kInquiry, op::kModeSense6, op::kModeSense10, op::kReadCapacity10,
                         op::kServiceActionIn16, op::kReportLuns})
    EXPECT_TRUE(is_reexecutable(o)) << int(o);
  for (std::uint8_t o :
       {op::kWrite10, op::kWrite16, op::kUnmap, op::kRequestSense, op::kPersistentReserveIn,
        op::kPersistentReserveOut, op::kMaintenanceIn, op::kStartStopUnit,
        op::kPreventAllowMediumRemoval, op::kCompareAndWrite, std::uint8_t{0xC7}})
    EXPECT_FALSE(is_reexecutable(o)) << int(o);
  // Every entry's usage map starts with its opcode's CDB length.
  for (const OpcodeInfo& e : supported_opcodes()) EXPECT_GE(e.usage.size(), 6u) << int(e.opcode);
}

}  // namespace
}  // namespace hyperscsi::scsi::testing

namespace hyperscsi::scsi::testing {
namespace {

std::unique_ptr<LogicalUnit> exclusive_lu() {
  LuConfig cfg;
  cfg.exclusive = true;
  return std::make_unique<LogicalUnit>(cfg, std::move(store::open_store("ram:1M", {})).value());
}

TEST(ExclusiveLun, OneSessionAtATimeOthersGetReservationConflict) {
  auto lu = exclusive_lu();
  clear_power_on_ua(*lu, kNexusA);  // A's TEST UNIT READY claims it
  const Bytes tur(6, 0);
  EXPECT_SENSE(run(*lu, tur, {}, 0, kNexusB), SenseKey::kUnitAttention, 0x29, 0);  // B's UA first
  EXPECT_EQ(run(*lu, tur, {}, 0, kNexusB).status, status::kReservationConflict);   // then refused
  EXPECT_EQ(run(*lu, cdb_rw10(op::kRead10, 0, 1), {}, 512, kNexusB).status,
            status::kReservationConflict);
  // Identification stays open to everyone (discovery shows the LUN).
  EXPECT_GOOD(run(*lu, cdb_inquiry(true, 0x83, 255), {}, 255, kNexusB));
  EXPECT_GOOD(run(*lu, cdb_rw10(op::kRead10, 0, 1), {}, 512, kNexusA));
  ASSERT_TRUE(lu->owner().has_value());
  EXPECT_EQ(*lu->owner(), kNexusA);
  // A's session ends: B may take it.
  lu->nexus_gone(kNexusA);
  EXPECT_GOOD(run(*lu, tur, {}, 0, kNexusB));
  EXPECT_EQ(*lu->owner(), kNexusB);
  EXPECT_EQ(run(*lu, tur, {}, 0, kNexusC).status, status::kCheckCondition);  // C's UA
  EXPECT_EQ(run(*lu, tur, {}, 0, kNexusC).status, status::kReservationConflict);
}

TEST(Succession, AnotherDiskFencesTheOldSessionsTheSameDiskGetsUnitAttention) {
  LuConfig cfg;
  auto old_lu =
      std::make_unique<LogicalUnit>(cfg, std::move(store::open_store("ram:1M", {})).value());
  clear_power_on_ua(*old_lu, kNexusA);
  clear_power_on_ua(*old_lu, kNexusB);
  const auto users = old_lu->nexuses();
  ASSERT_EQ(users.size(), 2u);
  const Bytes tur(6, 0);

  // Another disk behind the number: the old sessions never reach its data.
  LogicalUnit other(cfg, std::move(store::open_store("ram:1M", {})).value());
  other.succeed(users, std::nullopt, Succession::kOtherData, false);
  EXPECT_SENSE(run(other, cdb_rw10(op::kRead10, 0, 1), {}, 512, kNexusA), SenseKey::kIllegalRequest,
               0x25, 0);
  EXPECT_SENSE(run(other, tur, {}, 0, kNexusB), SenseKey::kIllegalRequest, 0x25, 0);
  EXPECT_GOOD(run(other, cdb_inquiry(true, 0x83, 255), {}, 255, kNexusA));  // it may look
  clear_power_on_ua(other, kNexusC);  // a new session may use it
  EXPECT_GOOD(run(other, tur, {}, 0, kNexusC));
  other.nexus_gone(kNexusA);  // after its session ended, A's next login is a new nexus anyway
  EXPECT_EQ(other.nexuses().size(), 2u);  // B (fenced) and C

  // The same disk, grown: CAPACITY DATA HAS CHANGED for the old sessions.
  LogicalUnit grown(cfg, std::move(store::open_store("ram:2M", {})).value());
  grown.succeed(users, std::nullopt, Succession::kSameData, true);
  EXPECT_SENSE(run(grown, tur, {}, 0, kNexusA), SenseKey::kUnitAttention, 0x2A, 0x09);
  EXPECT_GOOD(run(grown, tur, {}, 0, kNexusA));
}

// The opcode table's CDB lengths (its usage maps) are the ones the opcode
// groups give, which the initiator's CDB builders use (base/scsi_opcodes.h).
TEST(OpcodeTable, CdbLengthsAreTheOpcodeGroups) {
  for (const OpcodeInfo& e : supported_opcodes()) {
    EXPECT_EQ(e.usage.size(), op::cdb_length(e.opcode)) << "opcode " << int(e.opcode);
    EXPECT_EQ(e.usage.at(0), 0xFF);
  }
  EXPECT_EQ(op::cdb_length(op::kTestUnitReady), 6u);
  EXPECT_EQ(op::cdb_length(op::kWriteSame10), 10u);
  EXPECT_EQ(op::cdb_length(op::kPersistentReserveOut), 10u);
  EXPECT_EQ(op::cdb_length(op::kServiceActionIn16), 16u);
  EXPECT_EQ(op::cdb_length(op::kMaintenanceIn), 12u);
  EXPECT_EQ(op::cdb_length(0x7F), 0u);  // variable length
  EXPECT_EQ(op::cdb_length(0xC0), 0u);  // vendor specific
}

}  // namespace
}  // namespace hyperscsi::scsi::testing

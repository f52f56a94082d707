// Persistent reservations and RESERVE(6)/RELEASE(6) with several nexuses.
#include "hyperscsi/scsi/opcodes.h"
#include "scsi_test_util.h"

namespace hyperscsi::scsi::testing {
namespace {

constexpr std::uint8_t kRegister = 0, kReserve = 1, kRelease = 2, kClear = 3, kPreempt = 4,
                       kRegisterIgnore = 6;
constexpr std::uint8_t kWE = 1, kEA = 3, kWERO = 5, kEARO = 6;

class Pr : public ::testing::Test {
 protected:
  void SetUp() override {
    lu_ = std::make_unique<LogicalUnit>(LuConfig{},
                                        std::move(store::open_store("ram:1M", {})).value());
    for (const Nexus* n : {&kNexusA, &kNexusB, &kNexusC}) clear_power_on_ua(*lu_, *n);
  }
  CommandResult out(const Nexus& n, std::uint8_t sa, std::uint8_t type, std::uint64_t key,
                    std::uint64_t sa_key) {
    const Bytes p = pr_out_params(key, sa_key);
    return run(*lu_, cdb_pr_out(sa, type), p, 0, n);
  }
  CommandResult read(const Nexus& n) { return run(*lu_, cdb_rw10(op::kRead10, 0, 1), {}, 512, n); }
  CommandResult write(const Nexus& n) {
    const Bytes d(512, 0xAB);
    return run(*lu_, cdb_rw10(op::kWrite10, 0, 1), d, 0, n);
  }
  std::vector<std::uint64_t> keys() {
    auto r = run(*lu_, cdb_pr_in(0), {}, 1024, kNexusC);
    EXPECT_GOOD(r);
    std::vector<std::uint64_t> k;
    const std::size_t len = load_be(r.data_in, 4, 4);
    for (std::size_t at = 8; at + 8 <= 8 + len && at + 8 <= r.data_in.size(); at += 8) {
      k.push_back(load_be(r.data_in, at, 8));
    }
    return k;
  }
  std::uint32_t generation() {
    return static_cast<std::uint32_t>(
        load_be(run(*lu_, cdb_pr_in(0), {}, 1024, kNexusC).data_in, 0, 4));
  }
  // (key, type) of the reservation, or (0, 0).
  std::pair<std::uint64_t, std::uint8_t> reservation() {
    auto r = run(*lu_, cdb_pr_in(1), {}, 1024, kNexusC);
    EXPECT_GOOD(r);
    if (load_be(r.data_in, 4, 4) == 0) return {0, 0};
    return {load_be(r.data_in, 8, 8), static_cast<std::uint8_t>(r.data_in[21] & 0x0F)};
  }
  std::unique_ptr<LogicalUnit> lu_;
};

#define EXPECT_CONFLICT(r) EXPECT_EQ((r).status, status::kReservationConflict)

TEST_F(Pr, RegisterAndReadKeys) {
  EXPECT_EQ(generation(), 0u);
  EXPECT_GOOD(out(kNexusA, kRegister, 0, 0, 0xA));
  EXPECT_GOOD(out(kNexusB, kRegister, 0, 0, 0xB));
  EXPECT_EQ(keys(), (std::vector<std::uint64_t>{0xA, 0xB}));
  EXPECT_EQ(generation(), 2u);
  // Wrong current key -> conflict; register-and-ignore replaces anyway.
  EXPECT_CONFLICT(out(kNexusA, kRegister, 0, 0x99, 0xAA));
  EXPECT_CONFLICT(out(kNexusC, kRegister, 0, 0x5, 0xC));  // unregistered with non-zero key
  EXPECT_GOOD(out(kNexusA, kRegisterIgnore, 0, 0x99, 0xAA));
  EXPECT_EQ(keys(), (std::vector<std::uint64_t>{0xAA, 0xB}));
  // Unregister with sa key 0.
  EXPECT_GOOD(out(kNexusB, kRegister, 0, 0xB, 0));
  EXPECT_EQ(keys(), (std::vector<std::uint64_t>{0xAA}));
  // Parameter list must be 24 bytes.
  const Bytes p23(23, 0);
  EXPECT_SENSE(run(*lu_, cdb_pr_out(kRegister, 0, 23), p23), SenseKey::kIllegalRequest, 0x1A, 0);
  // Unknown service actions.
  EXPECT_SENSE(run(*lu_, cdb_pr_in(7), {}, 1024), SenseKey::kIllegalRequest, 0x24, 0);
  EXPECT_SENSE(out(kNexusA, 0x1F, 0, 0xAA, 0), SenseKey::kIllegalRequest, 0x24, 0);
}

TEST_F(Pr, WriteExclusiveAndExclusiveAccess) {
  EXPECT_GOOD(out(kNexusA, kRegister, 0, 0, 0xA));
  EXPECT_GOOD(out(kNexusB, kRegister, 0, 0, 0xB));
  EXPECT_CONFLICT(out(kNexusA, kReserve, kWE, 0xB, 0));  // wrong key
  EXPECT_GOOD(out(kNexusA, kReserve, kWE, 0xA, 0));
  EXPECT_EQ(reservation(), (std::pair<std::uint64_t, std::uint8_t>{0xA, kWE}));
  EXPECT_GOOD(out(kNexusA, kReserve, kWE, 0xA, 0));      // same again is fine
  EXPECT_CONFLICT(out(kNexusB, kReserve, kWE, 0xB, 0));  // held by A
  EXPECT_GOOD(read(kNexusB));
  EXPECT_CONFLICT(write(kNexusB));
  EXPECT_CONFLICT(write(kNexusC));
  EXPECT_GOOD(write(kNexusA));
  EXPECT_GOOD(run(*lu_, Bytes(6, 0), {}, 0, kNexusC));  // TUR is allowed
  EXPECT_GOOD(run(*lu_, cdb_inquiry(false, 0, 36), {}, 36, kNexusC));
  // Release with the wrong type.
  EXPECT_SENSE(out(kNexusA, kRelease, kEA, 0xA, 0), SenseKey::kIllegalRequest, 0x26, 0x04);
  EXPECT_GOOD(out(kNexusA, kRelease, kWE, 0xA, 0));
  EXPECT_EQ(reservation().second, 0);
  EXPECT_GOOD(write(kNexusB));

  EXPECT_GOOD(out(kNexusA, kReserve, kEA, 0xA, 0));
  EXPECT_CONFLICT(read(kNexusB));
  EXPECT_CONFLICT(write(kNexusB));
  EXPECT_GOOD(read(kNexusA));
  // Unregistering the holder releases the reservation.
  EXPECT_GOOD(out(kNexusA, kRegister, 0, 0xA, 0));
  EXPECT_EQ(reservation().second, 0);
  EXPECT_GOOD(read(kNexusB));
}

TEST_F(Pr, RegistrantsOnlyTypes) {
  EXPECT_GOOD(out(kNexusA, kRegister, 0, 0, 0xA));
  EXPECT_GOOD(out(kNexusB, kRegister, 0, 0, 0xB));
  EXPECT_GOOD(out(kNexusA, kReserve, kWERO, 0xA, 0));
  EXPECT_GOOD(write(kNexusB));  // registered: allowed
  EXPECT_GOOD(read(kNexusC));
  EXPECT_CONFLICT(write(kNexusC));
  EXPECT_GOOD(out(kNexusA, kRelease, kWERO, 0xA, 0));
  // B was told its access changed.
  EXPECT_SENSE(run(*lu_, Bytes(6, 0), {}, 0, kNexusB), SenseKey::kUnitAttention, 0x2A, 0x04);
  EXPECT_GOOD(out(kNexusA, kReserve, kEARO, 0xA, 0));
  EXPECT_GOOD(read(kNexusB));
  EXPECT_CONFLICT(read(kNexusC));
}

TEST_F(Pr, PreemptAndClear) {
  EXPECT_GOOD(out(kNexusA, kRegister, 0, 0, 0xA));
  EXPECT_GOOD(out(kNexusB, kRegister, 0, 0, 0xB));
  EXPECT_GOOD(out(kNexusA, kReserve, kWE, 0xA, 0));
  const auto gen = generation();
  // B preempts A: A's registration and reservation go, B holds an EA reservation.
  EXPECT_GOOD(out(kNexusB, kPreempt, kEA, 0xB, 0xA));
  EXPECT_EQ(keys(), (std::vector<std::uint64_t>{0xB}));
  EXPECT_EQ(reservation(), (std::pair<std::uint64_t, std::uint8_t>{0xB, kEA}));
  EXPECT_GT(generation(), gen);
  EXPECT_SENSE(read(kNexusA), SenseKey::kUnitAttention, 0x2A, 0x05);
  EXPECT_CONFLICT(read(kNexusA));
  EXPECT_GOOD(read(kNexusB));
  // Preempting a key nobody has is a conflict; key 0 is invalid here.
  EXPECT_CONFLICT(out(kNexusB, kPreempt, kEA, 0xB, 0x77));
  EXPECT_SENSE(out(kNexusB, kPreempt, kEA, 0xB, 0), SenseKey::kIllegalRequest, 0x26, 0);
  // Unregistered nexus cannot preempt.
  EXPECT_CONFLICT(out(kNexusC, kPreempt, kEA, 0xC, 0xB));
  // CLEAR removes everything.
  EXPECT_GOOD(out(kNexusA, kRegister, 0, 0, 0xA2));
  EXPECT_GOOD(out(kNexusB, kClear, 0, 0xB, 0));
  EXPECT_TRUE(keys().empty());
  EXPECT_EQ(reservation().second, 0);
  EXPECT_SENSE(read(kNexusA), SenseKey::kUnitAttention, 0x2A, 0x05);
  EXPECT_GOOD(write(kNexusA));
}

TEST_F(Pr, ReportCapabilities) {
  auto r = run(*lu_, cdb_pr_in(2), {}, 8);
  EXPECT_GOOD(r);
  ASSERT_EQ(r.data_in.size(), 8u);
  EXPECT_EQ(load_be(r.data_in, 0, 2), 8u);
  EXPECT_EQ(r.data_in[3] & 0x80, 0x80);  // type mask valid
  EXPECT_EQ(r.data_in[4], 0x6A);         // WR_EX, EX_AC, WR_EX_RO, EX_AC_RO
}

TEST_F(Pr, RegistrationsSurviveReconnectOfTheSameInitiator) {
  EXPECT_GOOD(out(kNexusA, kRegister, 0, 0, 0xA));
  EXPECT_GOOD(out(kNexusA, kReserve, kEA, 0xA, 0));
  const Nexus a2{kNexusA.initiator, 77};
  clear_power_on_ua(*lu_, a2);
  EXPECT_GOOD(read(a2));
  EXPECT_CONFLICT(read(kNexusB));
}

TEST_F(Pr, LegacyReserveRelease) {
  const Bytes reserve = {op::kReserve6, 0, 0, 0, 0, 0}, release = {op::kRelease6, 0, 0, 0, 0, 0};
  EXPECT_GOOD(run(*lu_, reserve, {}, 0, kNexusA));
  EXPECT_CONFLICT(run(*lu_, reserve, {}, 0, kNexusB));
  EXPECT_CONFLICT(run(*lu_, Bytes(6, 0), {}, 0, kNexusB));
  EXPECT_CONFLICT(read(kNexusB));
  EXPECT_GOOD(run(*lu_, cdb_inquiry(false, 0, 36), {}, 36, kNexusB));
  EXPECT_GOOD(run(*lu_, release, {}, 0, kNexusB));  // not the holder: no-op
  EXPECT_CONFLICT(read(kNexusB));
  EXPECT_GOOD(write(kNexusA));
  EXPECT_GOOD(run(*lu_, release, {}, 0, kNexusA));
  EXPECT_GOOD(read(kNexusB));
  // LU reset drops it too.
  EXPECT_GOOD(run(*lu_, reserve, {}, 0, kNexusA));
  lu_->reset();
  EXPECT_SENSE(read(kNexusB), SenseKey::kUnitAttention, 0x29, 0x03);
  EXPECT_GOOD(read(kNexusB));
  // With persistent registrations, RESERVE(6) conflicts.
  EXPECT_SENSE(read(kNexusC), SenseKey::kUnitAttention, 0x29, 0x03);
  EXPECT_GOOD(out(kNexusC, kRegister, 0, 0, 0xC));
  EXPECT_CONFLICT(run(*lu_, reserve, {}, 0, kNexusC));
}

}  // namespace
}  // namespace hyperscsi::scsi::testing

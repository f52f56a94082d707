// scsi::Device: the LUN list with a per-LUN access rule, REPORT LUNS as each
// initiator sees it, routing to a unit or to the absent-LUN answers, and the
// copy-on-write snapshots that keep an entry (and its store) alive while held.
#include "hyperscsi/scsi/device.h"

#include <set>
#include <string>

#include "hyperscsi/store/block_store.h"
#include "scsi_test_util.h"

namespace hyperscsi::scsi::testing {
namespace {

struct Who {
  std::string name;
  bool authenticated = false;
};

// A rule by initiator name, optionally wanting an authenticated session.
struct NameRule {
  std::set<std::string> names;  // empty: everyone
  bool needs_auth = false;
  Admission admission(const Who& w) const {
    if (!names.empty() && names.count(w.name) == 0) return Admission::kHidden;
    if (needs_auth && !w.authenticated) return Admission::kNeedsAuth;
    return Admission::kAdmitted;
  }
};

using TestDevice = Device<NameRule>;

void add(TestDevice& d, std::uint64_t lun, NameRule rule) {
  LuConfig cfg;
  cfg.lun = lun;
  auto unit =
      std::make_unique<LogicalUnit>(cfg, std::move(store::open_store("ram:1M", {})).value());
  auto entry = std::make_shared<LunEntry>(lun, std::move(unit));
  auto access = std::make_shared<const NameRule>(std::move(rule));
  ASSERT_TRUE(d.update([&](TestDevice::Map& m) {
    return m.emplace(lun, TestDevice::Slot{entry, access}).second;
  }));
}

struct Ran {
  CommandResult result;
  Routed how;
};

Ran run_on(const TestDevice& d, const Who& who, std::uint64_t lun, const Bytes& cdb,
           std::span<const std::uint8_t> out = {}, std::uint32_t expected_in = 0) {
  const auto luns = d.luns();
  CommandRequest req{cdb, out, expected_in, Nexus{who.name, 1}};
  CommandResult got;
  bool done = false;
  std::shared_ptr<LunEntry> entry;
  const Routed how = luns->execute(
      who, lun, req,
      [&](CommandResult r) {
        EXPECT_FALSE(done) << "completion ran twice";
        got = std::move(r);
        done = true;
      },
      &entry);
  EXPECT_EQ(entry != nullptr, how == Routed::kUnit);
  for (int i = 0; i < 1000 && !done && entry; ++i) {
    std::lock_guard lock(entry->mu);
    entry->unit->store().drain();
  }
  EXPECT_TRUE(done) << "command never completed";
  return {std::move(got), how};
}

std::vector<std::uint64_t> listed(const CommandResult& r) {
  std::vector<std::uint64_t> out;
  for (std::size_t at = 8; at + 8 <= r.data_in.size(); at += 8)
    out.push_back(decode_lun(std::span(r.data_in).subspan(at, 8)).value_or(~0ull));
  return out;
}

const Bytes kReportLuns = {op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};

TEST(ScsiDevice, ReportLunsListsWhatEachInitiatorMaySee) {
  TestDevice d;
  add(d, 0, {});
  add(d, 4, {{"a"}, false});
  add(d, 9, {{"b"}, true});
  const Who a{"a"}, b{"b"}, b_auth{"b", true}, c{"c"};
  auto ra = run_on(d, a, 0, kReportLuns, {}, 256);
  EXPECT_EQ(ra.how, Routed::kReportLuns);
  EXPECT_GOOD(ra.result);
  EXPECT_EQ(listed(ra.result), (std::vector<std::uint64_t>{0, 4}));
  EXPECT_EQ(listed(run_on(d, b, 0, kReportLuns, {}, 256).result), (std::vector<std::uint64_t>{0}));
  EXPECT_EQ(listed(run_on(d, b_auth, 7, kReportLuns, {}, 256).result),
            (std::vector<std::uint64_t>{0, 9}));
  EXPECT_EQ(listed(run_on(d, c, 0, kReportLuns, {}, 256).result), (std::vector<std::uint64_t>{0}));
  // Built by scsi::report_luns: NACA and LINK are refused here too.
  for (std::uint8_t control : {0x04, 0x01}) {
    Bytes bad = kReportLuns;
    bad[11] = control;
    EXPECT_SENSE(run_on(d, a, 0, bad, {}, 256).result, SenseKey::kIllegalRequest, 0x24, 0);
  }
}

TEST(ScsiDevice, HiddenLunsAnswerAsAbsentOnes) {
  TestDevice d;
  add(d, 4, {{"a"}, false});
  add(d, 9, {{}, true});
  const Bytes tur(6, 0);
  // Admitted: the unit runs it (its power-on unit attention first).
  auto first = run_on(d, {"a"}, 4, tur);
  EXPECT_EQ(first.how, Routed::kUnit);
  EXPECT_SENSE(first.result, SenseKey::kUnitAttention, 0x29, 0);
  EXPECT_GOOD(run_on(d, {"a"}, 4, tur).result);
  // Hidden, needing authentication, absent: the same SPC-4 answers.
  struct Case {
    Who who;
    std::uint64_t lun;
    Routed how;
  };
  for (const Case& k : {Case{{"x"}, 4, Routed::kHidden}, Case{{"x"}, 9, Routed::kNeedsAuth},
                        Case{{"a"}, 5, Routed::kAbsent}}) {
    auto r = run_on(d, k.who, k.lun, tur);
    EXPECT_EQ(r.how, k.how);
    EXPECT_SENSE(r.result, SenseKey::kIllegalRequest, 0x25, 0);
    auto inq = run_on(d, k.who, k.lun, cdb_inquiry(false, 0, 36), {}, 36);
    EXPECT_GOOD(inq.result);
    ASSERT_FALSE(inq.result.data_in.empty());
    EXPECT_EQ(inq.result.data_in[0], 0x7F);  // qualifier 011b: no unit here
  }
  // The authenticated session sees LUN 9 and writes and reads it back.
  const Who auth{"y", true};
  run_on(d, auth, 9, tur);  // power-on unit attention
  const Bytes data = pattern(512, 7);
  EXPECT_GOOD(run_on(d, auth, 9, cdb_rw10(op::kWrite10, 3, 1), data).result);
  auto back = run_on(d, auth, 9, cdb_rw10(op::kRead10, 3, 1), {}, 512);
  EXPECT_GOOD(back.result);
  EXPECT_TRUE(
      std::equal(data.begin(), data.end(), back.result.data().begin(), back.result.data().end()));
}

TEST(ScsiDevice, SnapshotsKeepARemovedLunUntilReleased) {
  TestDevice d;
  add(d, 1, {});
  const std::uint64_t g = d.generation();
  EXPECT_FALSE(d.update([](TestDevice::Map&) { return false; }));
  EXPECT_EQ(d.generation(), g);  // an update that changes nothing publishes nothing

  auto held = d.luns();
  std::weak_ptr<const bool> closed = held->find(1)->second.entry->closed_marker;
  EXPECT_TRUE(d.update([](TestDevice::Map& m) { return m.erase(1) != 0; }));
  EXPECT_GT(d.generation(), g);
  EXPECT_EQ(d.luns()->count(1), 0u);
  EXPECT_EQ(held->count(1), 1u);  // the old snapshot still routes to it
  run_on(d, {"a"}, 1, Bytes(6, 0));
  EXPECT_EQ(run_on(d, {"a"}, 1, Bytes(6, 0)).how, Routed::kAbsent);
  EXPECT_FALSE(closed.expired());
  held.reset();  // the last holder flushes and closes the unit
  EXPECT_TRUE(closed.expired());
}

}  // namespace
}  // namespace hyperscsi::scsi::testing

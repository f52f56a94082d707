// The per-command SCSI cases (scsi_command_cases.cpp) as a fixture
// parameterised over the backing store, so every store runs the same cases:
// tests/target instantiates them on RAM and file stores, tests/ceph on an
// rbd: image (LuParam::maker opens stores of kinds this file does not know).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <ostream>
#include <string>

#include "hyperscsi/store/block_store.h"
#include "scsi_test_util.h"

namespace hyperscsi::scsi::testing {

inline constexpr std::uint64_t kCapacity = 8 << 20;

struct LuParam {
  const char* kind;  // "ram", "file", or what `maker` opens
  std::uint32_t block_size;
  // Opens a store of kCapacity bytes for `key` (the same backing object for
  // every call with that key, created on first use); nullptr for ram/file.
  // A maker that cannot run here (no cluster) records GTEST_SKIP and fails.
  using Maker = Result<std::unique_ptr<store::BlockStore>, store::StoreError> (*)(
      const std::string& key, const store::StoreOptions& options);
  Maker maker = nullptr;
};

class ScsiCommand : public ::testing::TestWithParam<LuParam> {
 protected:
  void SetUp() override {
    lu_ = make_lu(false);
    if (IsSkipped()) return;
    ASSERT_TRUE(lu_) << "cannot open the " << GetParam().kind << " store";
  }

  std::unique_ptr<LogicalUnit> make_lu(bool read_only, LuConfig cfg = {}) {
    store::StoreOptions o;
    o.block_size = GetParam().block_size;
    o.read_only = read_only;
    std::string spec = "ram:8M";
    Result<std::unique_ptr<store::BlockStore>, store::StoreError> s =
        Unexpected(store::StoreError{});
    if (GetParam().maker) {
      s = GetParam().maker(dir_.file("disk.img"), o);
    } else {
      if (std::string(GetParam().kind) == "file") {
        spec = dir_.file("disk.img");
        o.create_size = kCapacity;
        if (read_only) {
          store::StoreOptions rw = o;
          rw.read_only = false;
          auto created = store::open_store(spec, rw);  // make sure it exists
          EXPECT_TRUE(created.ok());
        }
      }
      s = store::open_store(spec, o);
    }
    if (!s.ok()) {
      if (!IsSkipped()) ADD_FAILURE() << s.error().message;
      return nullptr;
    }
    cfg.target_name = "iqn.test:target";
    cfg.serial = "SER123";
    cfg.max_transfer_bytes = 1 << 20;
    auto lu = std::make_unique<LogicalUnit>(cfg, std::move(s).value());
    clear_power_on_ua(*lu);
    return lu;
  }
  std::uint32_t bs() const { return GetParam().block_size; }
  std::uint64_t blocks() const { return kCapacity / bs(); }
  bool is_file() const { return std::string(GetParam().kind) == "file"; }

  TempDir dir_;
  std::unique_ptr<LogicalUnit> lu_;
};

// How gtest prints a parameter (in ctest's test names): "rbd 512", not bytes.
inline void PrintTo(const LuParam& p, std::ostream* os) {
  *os << p.kind << " " << p.block_size;
}

// "ram512", "file4096", "rbd512"...
std::string lu_param_name(const ::testing::TestParamInfo<LuParam>& p);

}  // namespace hyperscsi::scsi::testing

#include "scsi_test_util.h"

#include <unistd.h>

#include <filesystem>
#include <random>

namespace hyperscsi::scsi::testing {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string tmpl =
      (fs::temp_directory_path() / ("hs-scsi-" + std::to_string(::getpid()) + "-XXXXXX")).string();
  path_ = ::mkdtemp(tmpl.data());
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}
std::string TempDir::file(const std::string& name) const {
  return (fs::path(path_) / name).string();
}

namespace {
template <typename Exec>
CommandResult run_until_done(store::BlockStore* store, Exec exec) {
  CommandResult out;
  bool done = false;
  exec([&](CommandResult r) {
    EXPECT_FALSE(done) << "completion ran twice";
    out = std::move(r);
    done = true;
  });
  for (int i = 0; i < 1000 && !done && store != nullptr; ++i) store->drain();
  EXPECT_TRUE(done) << "command never completed";
  return out;
}
}  // namespace

CommandResult run(LogicalUnit& lu, const Bytes& cdb, std::span<const std::uint8_t> data_out,
                  std::uint32_t expected_in, const Nexus& nexus) {
  CommandRequest req{cdb, data_out, expected_in, nexus};
  return run_until_done(&lu.store(), [&](CommandCallback cb) { lu.execute(req, std::move(cb)); });
}

CommandResult run(LunMap& map, std::uint64_t lun, const Bytes& cdb,
                  std::span<const std::uint8_t> data_out, std::uint32_t expected_in,
                  const Nexus& nexus) {
  CommandRequest req{cdb, data_out, expected_in, nexus};
  LogicalUnit* lu = map.find(lun);
  CommandResult out;
  bool done = false;
  map.execute(lun, req, [&](CommandResult r) {
    out = std::move(r);
    done = true;
  });
  for (int i = 0; i < 1000 && !done && lu != nullptr; ++i) lu->store().drain();
  EXPECT_TRUE(done);
  return out;
}

void clear_power_on_ua(LogicalUnit& lu, const Nexus& nexus) {
  auto r = run(lu, Bytes(6, 0), {}, 0, nexus);
  EXPECT_SENSE(r, SenseKey::kUnitAttention, 0x29, 0x00);
  EXPECT_GOOD(run(lu, Bytes(6, 0), {}, 0, nexus));
}

std::optional<Sense> sense_of(const CommandResult& r) {
  return decode_fixed_sense(r.sense);
}

namespace {
void put(Bytes& b, std::size_t at, std::uint64_t v, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) {
    b[at + i] = static_cast<std::uint8_t>(v >> (8 * (width - 1 - i)));
  }
}
}  // namespace

std::uint64_t load_be(std::span<const std::uint8_t> b, std::size_t at, std::size_t width) {
  std::uint64_t v = 0;
  if (at > b.size() || width > b.size() - at) {
    ADD_FAILURE() << "load_be past the end: " << at << "+" << width << " > " << b.size();
    return 0;
  }
  for (std::size_t i = 0; i < width; ++i) v = (v << 8) | b[at + i];
  return v;
}

Bytes cdb_rw6(std::uint8_t opcode, std::uint32_t lba, std::uint8_t blocks) {
  Bytes c(6, 0);
  c[0] = opcode;
  put(c, 1, lba & 0x1FFFFF, 3);
  c[4] = blocks;
  return c;
}
Bytes cdb_rw10(std::uint8_t opcode, std::uint32_t lba, std::uint16_t blocks, std::uint8_t byte1) {
  Bytes c(10, 0);
  c[0] = opcode;
  c[1] = byte1;
  put(c, 2, lba, 4);
  put(c, 7, blocks, 2);
  return c;
}
Bytes cdb_rw12(std::uint8_t opcode, std::uint32_t lba, std::uint32_t blocks, std::uint8_t byte1) {
  Bytes c(12, 0);
  c[0] = opcode;
  c[1] = byte1;
  put(c, 2, lba, 4);
  put(c, 6, blocks, 4);
  return c;
}
Bytes cdb_rw16(std::uint8_t opcode, std::uint64_t lba, std::uint32_t blocks, std::uint8_t byte1) {
  Bytes c(16, 0);
  c[0] = opcode;
  c[1] = byte1;
  put(c, 2, lba, 8);
  put(c, 10, blocks, 4);
  return c;
}
Bytes cdb_inquiry(bool evpd, std::uint8_t page, std::uint16_t alloc) {
  Bytes c(6, 0);
  c[0] = 0x12;
  c[1] = evpd ? 1 : 0;
  c[2] = page;
  put(c, 3, alloc, 2);
  return c;
}
Bytes cdb_pr_out(std::uint8_t sa, std::uint8_t type, std::uint32_t len) {
  Bytes c(10, 0);
  c[0] = 0x5F;
  c[1] = sa;
  c[2] = type;
  put(c, 5, len, 4);
  return c;
}
Bytes pr_out_params(std::uint64_t key, std::uint64_t sa_key) {
  Bytes p(24, 0);
  put(p, 0, key, 8);
  put(p, 8, sa_key, 8);
  return p;
}
Bytes cdb_pr_in(std::uint8_t sa, std::uint16_t alloc) {
  Bytes c(10, 0);
  c[0] = 0x5E;
  c[1] = sa;
  put(c, 7, alloc, 2);
  return c;
}
Bytes pattern(std::size_t n, std::uint32_t seed) {
  Bytes v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

}  // namespace hyperscsi::scsi::testing

// Fuzzes the SCSI command layer: a sequence of arbitrary CDBs with data-out,
// expected lengths, initiators and LUNs against a LUN map over a RAM store, so
// state (reservations, mode pages, unit attentions) carries between commands.
// Invariants: each command completes exactly once with GOOD, CHECK CONDITION
// (with decodable fixed sense) or RESERVATION CONFLICT, never returns more
// data-in than expected, and nothing is left in flight.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "hyperscsi/scsi/logical_unit.h"
#include "hyperscsi/scsi/lun_map.h"
#include "hyperscsi/scsi/sense.h"
#include "hyperscsi/store/block_store.h"

namespace hs = hyperscsi::scsi;

namespace {

// Reads the input as: one byte (bit 0: 4096-byte blocks), then commands, each
// ctl(1) expected_data_in(3, big-endian) data_out_length(2) cdb_length(1) cdb
// data_out. A plain layout so seeds in the corpus are readable CDBs.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  size_t left() const { return static_cast<size_t>(end_ - p_); }
  uint32_t be(size_t n) {
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | (left() > 0 ? *p_++ : 0u);
    return v;
  }
  std::vector<uint8_t> bytes(size_t n) {
    n = std::min(n, left());
    std::vector<uint8_t> v(p_, p_ + n);
    p_ += n;
    return v;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Reader in(data, size);
  hs::LuConfig cfg;
  cfg.max_transfer_bytes = 64 * 1024;
  cfg.max_write_same_blocks = 512;
  cfg.max_unmap_blocks = 512;
  cfg.max_compare_and_write_blocks = 2;
  hyperscsi::store::StoreOptions options;
  options.block_size = (in.be(1) & 1) ? 4096 : 512;
  auto store = hyperscsi::store::open_store("ram:256K", options);
  FUZZ_CHECK(store.ok(), "cannot open the RAM store");
  hs::LunMap map;
  FUZZ_CHECK(map.add(0, std::make_unique<hs::LogicalUnit>(cfg, std::move(store).value())).ok(),
             "cannot add LUN 0");
  hs::LogicalUnit* lu = map.find(0);

  for (int i = 0; i < 32 && in.left() > 0; ++i) {
    const uint32_t ctl = in.be(1);
    const hs::Nexus nexus{"iqn.fuzz:" + std::to_string(std::min(ctl & 3u, 2u)), (ctl >> 2) & 1u};
    const uint64_t lun = (ctl & 0x18) == 0x18 ? 1 : 0;  // LUN 1 does not exist
    const uint32_t expected = in.be(3) % 70001;
    const size_t data_length = in.be(2) % 8193;
    const std::vector<uint8_t> cdb = in.bytes(in.be(1) % 33);
    const std::vector<uint8_t> data_out = in.bytes(data_length);

    int calls = 0;
    hs::CommandResult result;
    map.execute(lun, hs::CommandRequest{cdb, data_out, expected, nexus}, [&](hs::CommandResult r) {
      ++calls;
      result = std::move(r);
    });
    for (int k = 0; k < 1000 && calls == 0; ++k) lu->store().drain();
    FUZZ_CHECK(calls == 1, "a command did not complete exactly once");
    FUZZ_CHECK(result.data_in.size() <= expected, "more data-in than the initiator expected");
    switch (result.status) {
      case hs::status::kGood:
      case hs::status::kReservationConflict:
        break;
      case hs::status::kCheckCondition:
        FUZZ_CHECK(hs::decode_fixed_sense(result.sense).has_value(),
                   "CHECK CONDITION without valid fixed sense");
        break;
      default:
        FUZZ_CHECK(false, "unexpected SCSI status");
    }
    FUZZ_CHECK(lu->commands_in_flight() == 0, "a command is still in flight after completing");
  }
  return 0;
}

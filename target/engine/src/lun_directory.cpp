#include "lun_directory.h"

#include <spdlog/spdlog.h>

namespace hyperscsi::engine {

namespace {
proto::LunInfo describe(uint16_t lun, scsi::LogicalUnit& u) {
  proto::LunInfo i;
  i.lun = lun;
  i.read_only = u.store().read_only();
  i.block_size = u.store().block_size();
  i.num_blocks = u.store().num_blocks();
  return i;
}
}  // namespace

LunEntry::LunEntry(uint16_t number, std::unique_ptr<scsi::LogicalUnit> u)
    : lun(number),
      info(describe(number, *u)),
      completion_fd(u->store().completion_fd()),
      unit(std::move(u)) {}

LunEntry::~LunEntry() {
  std::lock_guard lock(mu);
  if (!unit) return;
  if (!flush_locked()) spdlog::error("LUN {}: final flush failed", lun);
  unit.reset();
}

bool LunEntry::flush_locked() {
  if (!unit) return true;
  store::BlockStore& s = unit->store();
  if (s.read_only()) {
    s.drain();
    return true;
  }
  bool ok = false;
  bool done = false;
  s.submit_flush([&](store::IoStatus st) {
    ok = st == store::IoStatus::kOk;
    done = true;
  });
  s.drain();  // runs every pending callback, the flush's included
  return done && ok;
}

}  // namespace hyperscsi::engine

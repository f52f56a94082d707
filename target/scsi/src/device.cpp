#include "hyperscsi/scsi/device.h"

#include <spdlog/spdlog.h>

#include "hyperscsi/scsi/sense.h"

namespace hyperscsi::scsi {

LunEntry::LunEntry(std::uint64_t number, std::unique_ptr<LogicalUnit> u)
    : lun(number),
      read_only(u->store().read_only()),
      block_size(u->store().block_size()),
      num_blocks(u->store().num_blocks()),
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

void LunEntry::execute(const CommandRequest& req, CommandCallback done) {
  std::lock_guard lock(mu);
  if (!unit) {  // flushed away by a racing shutdown
    CommandResult r;
    r.status = status::kCheckCondition;
    r.sense = encode_fixed_sense(sense::lun_not_supported());
    done(std::move(r));
    return;
  }
  unit->execute(req, std::move(done));
  unit->store().submit();
}

}  // namespace hyperscsi::scsi

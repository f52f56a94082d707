#include "hyperscsi/store/fault_store.h"

#include <vector>

namespace hyperscsi::store {

IoStatus FaultStore::match(unsigned op, std::uint64_t offset, std::uint64_t length) const {
  for (const Rule& r : rules_) {
    if ((r.ops & op) == 0) continue;
    if (op == kFlush) return r.status;
    if (offset < r.offset + r.length && r.offset < offset + length) return r.status;
  }
  return IoStatus::kOk;
}

// The request still goes to the inner store (so completion ordering and
// in_flight() stay real); only the reported status is replaced.
IoCallback FaultStore::wrap(IoCallback cb, IoStatus forced) {
  if (forced == IoStatus::kOk) return cb;
  return [cb = std::move(cb), forced](IoStatus) {
    if (cb) cb(forced);
  };
}

void FaultStore::submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) {
  inner_->submit_read(offset, buf, wrap(std::move(cb), match(kRead, offset, buf.size())));
}

void FaultStore::submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                              IoCallback cb) {
  const IoStatus forced = match(kWrite, offset, buf.size());
  if (forced != IoStatus::kOk) {
    // A failed write must not change the medium: send a harmless flush through
    // the inner store instead so the completion still arrives via poll().
    inner_->submit_flush(wrap(std::move(cb), forced));
    return;
  }
  inner_->submit_write(offset, buf, fua, std::move(cb));
}

void FaultStore::submit_flush(IoCallback cb) {
  inner_->submit_flush(wrap(std::move(cb), match(kFlush, 0, 0)));
}

void FaultStore::submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) {
  const IoStatus forced = match(kUnmap, offset, length);
  if (forced != IoStatus::kOk) {
    inner_->submit_flush(wrap(std::move(cb), forced));
    return;
  }
  inner_->submit_unmap(offset, length, std::move(cb));
}

}  // namespace hyperscsi::store

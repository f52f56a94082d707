// ForwardingStore: the base of a decorator (FaultStore, the tests' probes)
// that owns another store and passes every call through to it; a decorator
// overrides only what it changes. The offloads (write-same,
// compare-and-write) are deliberately not passed on: a decorator that sees
// plain writes sees every byte written, so the SCSI layer emulates them
// through submit_write here.
// Ownership: owns `inner`. Threading: as BlockStore (one owner thread).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "hyperscsi/store/block_store.h"

namespace hyperscsi::store {

class ForwardingStore : public BlockStore {
 public:
  explicit ForwardingStore(std::unique_ptr<BlockStore> inner) : inner_(std::move(inner)) {}
  BlockStore& inner() { return *inner_; }

  std::uint32_t block_size() const override { return inner_->block_size(); }
  std::uint64_t num_blocks() const override { return inner_->num_blocks(); }
  bool read_only() const override { return inner_->read_only(); }
  bool supports_unmap() const override { return inner_->supports_unmap(); }
  bool unmapped_reads_zero() const override { return inner_->unmapped_reads_zero(); }
  std::optional<Allocation> allocation_at(std::uint64_t offset) const override {
    return inner_->allocation_at(offset);
  }
  std::string describe() const override { return inner_->describe(); }
  StoreIdentity identity() const override { return inner_->identity(); }

  void submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) override {
    inner_->submit_read(offset, buf, std::move(cb));
  }
  void submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                    IoCallback cb) override {
    inner_->submit_write(offset, buf, fua, std::move(cb));
  }
  void submit_flush(IoCallback cb) override { inner_->submit_flush(std::move(cb)); }
  void submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) override {
    inner_->submit_unmap(offset, length, std::move(cb));
  }

  bool take_capacity_change() override { return inner_->take_capacity_change(); }
  void set_read_offload(bool prefer) override { inner_->set_read_offload(prefer); }
  void submit() override { inner_->submit(); }
  int completion_fd() const override { return inner_->completion_fd(); }
  std::size_t poll() override { return inner_->poll(); }
  void drain() override { inner_->drain(); }
  std::size_t in_flight() const override { return inner_->in_flight(); }
  StoreCounters counters() const override { return inner_->counters(); }

 protected:
  std::unique_ptr<BlockStore> inner_;
};

}  // namespace hyperscsi::store

// FaultStore: a decorator that fails chosen requests with a chosen status
// (like dm-error / dm-flakey), for exercising error paths of the layers above
// without a failing disk. Everything else is forwarded to the wrapped store.
// Threading: as BlockStore (one owner thread).
#pragma once

#include <memory>
#include <vector>

#include "hyperscsi/store/block_store.h"

namespace hyperscsi::store {

class FaultStore final : public BlockStore {
 public:
  enum Ops : unsigned { kRead = 1, kWrite = 2, kFlush = 4, kUnmap = 8 };
  struct Rule {
    unsigned ops;          // mask of Ops
    std::uint64_t offset;  // byte range that triggers the fault (ignored for flush)
    std::uint64_t length;
    IoStatus status;
  };

  explicit FaultStore(std::unique_ptr<BlockStore> inner) : inner_(std::move(inner)) {}
  void add_rule(Rule r) { rules_.push_back(r); }
  void clear_rules() { rules_.clear(); }
  BlockStore& inner() { return *inner_; }

  std::uint32_t block_size() const override { return inner_->block_size(); }
  std::uint64_t num_blocks() const override { return inner_->num_blocks(); }
  bool read_only() const override { return inner_->read_only(); }
  bool supports_unmap() const override { return inner_->supports_unmap(); }
  bool unmapped_reads_zero() const override { return inner_->unmapped_reads_zero(); }
  std::string describe() const override { return "fault(" + inner_->describe() + ")"; }
  StoreIdentity identity() const override { return inner_->identity(); }

  void submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) override;
  void submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                    IoCallback cb) override;
  void submit_flush(IoCallback cb) override;
  void submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) override;
  bool take_capacity_change() override { return inner_->take_capacity_change(); }
  void submit() override { inner_->submit(); }
  int completion_fd() const override { return inner_->completion_fd(); }
  std::size_t poll() override { return inner_->poll(); }
  void drain() override { inner_->drain(); }
  std::size_t in_flight() const override { return inner_->in_flight(); }
  StoreCounters counters() const override { return inner_->counters(); }

 private:
  // Status to inject for this request, or kOk.
  IoStatus match(unsigned op, std::uint64_t offset, std::uint64_t length) const;
  static IoCallback wrap(IoCallback cb, IoStatus forced);

  std::unique_ptr<BlockStore> inner_;
  std::vector<Rule> rules_;
};

}  // namespace hyperscsi::store

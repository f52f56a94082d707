// FaultStore: a decorator that fails chosen requests with a chosen status
// (like dm-error / dm-flakey), for exercising error paths of the layers above
// without a failing disk. Everything else is forwarded to the wrapped store
// (ForwardingStore).
// Threading: as BlockStore (one owner thread).
#pragma once

#include <memory>
#include <vector>

#include "hyperscsi/store/forwarding_store.h"

namespace hyperscsi::store {

class FaultStore final : public ForwardingStore {
 public:
  enum Ops : unsigned { kRead = 1, kWrite = 2, kFlush = 4, kUnmap = 8 };
  struct Rule {
    unsigned ops;          // mask of Ops
    std::uint64_t offset;  // byte range that triggers the fault (ignored for flush)
    std::uint64_t length;
    IoStatus status;
  };

  explicit FaultStore(std::unique_ptr<BlockStore> inner) : ForwardingStore(std::move(inner)) {}
  void add_rule(Rule r) { rules_.push_back(r); }
  void clear_rules() { rules_.clear(); }

  std::string describe() const override { return "fault(" + inner_->describe() + ")"; }
  void submit_read(std::uint64_t offset, std::span<std::byte> buf, IoCallback cb) override;
  void submit_write(std::uint64_t offset, std::span<const std::byte> buf, bool fua,
                    IoCallback cb) override;
  void submit_flush(IoCallback cb) override;
  void submit_unmap(std::uint64_t offset, std::uint64_t length, IoCallback cb) override;

 private:
  // Status to inject for this request, or kOk.
  IoStatus match(unsigned op, std::uint64_t offset, std::uint64_t length) const;
  static IoCallback wrap(IoCallback cb, IoStatus forced);

  std::vector<Rule> rules_;
};

}  // namespace hyperscsi::store

// The identity check after a fresh login during recovery: each remembered
// LUN's VPD 0x83 designator is read again (one probe at a time, tag
// kProbeTag) before anything is reissued; a LUN that is another disk now,
// or gone, is fenced: its commands fail with kIdentityMismatch.
//
// Thread-safety: remember_identity() and lun_identity() are called from any
// thread (target_mutex_ guards identities_); the rest runs on the loop
// thread.
#include "initiator_impl.h"

namespace hyperscsi::initiator {

// After a fresh login: read each remembered LUN's identity again before
// anything is reissued (send_unsent holds the rest back meanwhile).
void Initiator::Impl::start_identity_check(TimePoint now) {
  if (!verify_queue_.empty()) return;  // a check is under way; its probe is resent
  {
    std::lock_guard lock(target_mutex_);
    for (const auto& [lun, id] : identities_)
      if (!id.empty() && fenced_.count(lun) == 0) verify_queue_.push_back(lun);
  }
  if (!verify_queue_.empty()) issue_probe(now);
}

void Initiator::Impl::issue_probe(TimePoint now) {
  auto p = std::make_unique<Pending>();
  const uint16_t lun = verify_queue_.front();
  p->cmd.lun = lun;
  p->cmd.cdb = scsi::inquiry_vpd_cdb(0x83, 255);
  p->cmd.data_in_length = 255;
  p->probe = true;
  p->deadline = now + options_.dead_time;
  p->seq = next_seq_++;
  p->tag = kProbeTag;
  p->done = [this, lun](CommandResult&& r) { on_probe(lun, r); };
  by_tag_[kProbeTag] = p->seq;
  inflight_.emplace(p->seq, std::move(p));
}

void Initiator::Impl::on_probe(uint16_t lun, const CommandResult& r) {
  if (r.error == CompletionError::kShutdown) {  // disconnected or destroyed
    verify_queue_.clear();
    return;
  }
  if (r.error == CompletionError::kDeadTime) {  // no target yet: ask again after the next login
    issue_probe(SteadyClock::now());
    return;
  }
  std::string expected;
  {
    std::lock_guard lock(target_mutex_);
    expected = identities_[lun];
  }
  const std::string found = r.good() ? scsi::lu_identity(r.data_in) : std::string();
  const std::string name = "LUN " + std::to_string(lun) + " of " + who();
  if (r.good() && found == expected) {
    log(LogLevel::kInfo, name + " is the same disk (identity " + expected + ")");
  } else {
    fence(lun, name +
                   (!r.good() ? " cannot be identified after the re-login (" + r.describe() + ")"
                    : found.empty() ? " reports no identity after the re-login"
                                    : " is another disk after the re-login (identity " + found +
                                          ", attached " + expected + ")") +
                   ": its I/O fails so that no other disk's data is served; attach it again "
                   "to use it");
  }
  verify_queue_.pop_front();
  if (!verify_queue_.empty()) issue_probe(SteadyClock::now());
}

// Fails the LUN's pending commands and every later one with `why`.
void Initiator::Impl::fence(uint16_t lun, const std::string& why) {
  fenced_[lun] = why;
  ++stats_.identity_mismatches;
  log(LogLevel::kError, "identity mismatch: " + why);
  std::vector<std::unique_ptr<Pending>> doomed;
  for (auto it = inflight_.begin(); it != inflight_.end();) {
    const auto next = std::next(it);
    if (!it->second->probe && it->second->cmd.lun == lun) {
      std::unique_ptr<Pending> p = std::move(it->second);
      release(it, p->tag);
      doomed.push_back(std::move(p));
    }
    it = next;
  }
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->cmd.lun == lun) {
      doomed.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& p : doomed) finish_failed(std::move(p), CompletionError::kIdentityMismatch, why);
}

void Initiator::Impl::remember_identity(uint16_t lun, std::string id) {
  std::lock_guard lock(target_mutex_);
  identities_[lun] = std::move(id);
}

std::string Initiator::Impl::lun_identity(uint16_t lun) const {
  std::lock_guard lock(target_mutex_);
  auto it = identities_.find(lun);
  return it == identities_.end() ? std::string() : it->second;
}

}  // namespace hyperscsi::initiator

// Recovery of the initiator's session: when it died or the target ended
// it, resume it if the target offers that, else log in afresh with backoff;
// what was sent on the lost session is sent again (command_table.cpp).
//
// Thread-safety: loop thread only.
#include <algorithm>

#include "initiator_impl.h"

namespace hyperscsi::initiator {

// True when the session failed or died since recover() last left it (in this
// iteration's poll()), or failed with no login timed: recover() acts on it at
// once. A state recover() left as it is (a backed-off login waits for
// next_login_) never spins the loop.
bool Initiator::Impl::recovery_due() const {
  if (!session_ || !connected_) return false;
  using S = proto::InitiatorState;
  const S s = session_->state();
  return (s != recover_seen_ && (s == S::kDead || s == S::kDisconnected || s == S::kFailed)) ||
         (s == S::kFailed && next_login_ == proto::kNever);
}

void Initiator::Impl::recover(TimePoint now) {
  if (!session_ || !connected_) return;
  using S = proto::InitiatorState;
  const S s = session_->state();
  switch (s) {
    case S::kEstablished:
      if (recovering_) {
        recovering_ = false;
        if (last_attempt_resume_)
          ++stats_.resumes;
        else
          ++stats_.relogins;
        backoff_ = options_.login_timeout;
        update_negotiated();
        log(LogLevel::kInfo,
            std::string(last_attempt_resume_ ? "session resumed with " : "logged in again to ") +
                who() + ": session " + hex32(session_->session_id()) + " epoch " +
                std::to_string(session_->epoch()) + ", " + std::to_string(inflight_.size()) +
                " command(s) to reissue");
        // A fresh login may reach a restarted target with other disks.
        if (!last_attempt_resume_) start_identity_check(now);
      }
      break;
    case S::kDead:
    case S::kDisconnected:
      log(LogLevel::kWarning, who() + " lost: " + session_->failure().describe() + "; " +
                                  std::to_string(inflight_.size() + waiting_.size()) +
                                  " command(s) pending");
      lost_session();
      if ((session_->negotiated().features & proto::kFeatureSessionResume) != 0 &&
          session_->resume(now).ok()) {
        last_attempt_resume_ = true;
        log(LogLevel::kInfo, "re-login started: resuming session " + hex32(session_->session_id()) +
                                 " with " + who());
      } else {
        last_attempt_resume_ = false;
        next_login_ = now;
        log(LogLevel::kInfo, "re-login started: logging in to " + who() + " afresh");
      }
      break;
    case S::kFailed:
      if (!recovering_) lost_session();
      if (last_attempt_resume_) {
        last_attempt_resume_ = false;
        next_login_ = now;  // the target forgot the session: log in afresh at once
        log(LogLevel::kInfo, "resume failed (" + session_->failure().describe() +
                                 "): logging in to " + who() + " afresh");
      }
      if (next_login_ == proto::kNever) {
        ++stats_.relogin_failures;
        if (now - last_relogin_log_ >= std::chrono::seconds(10)) {
          log(LogLevel::kWarning,
              "re-login to " + who() + " failed: " + session_->failure().describe() + " (" +
                  std::to_string(stats_.relogin_failures) + " failed attempt(s) so far); retrying");
          last_relogin_log_ = now;
        }
        next_login_ = now + backoff_;
        backoff_ = std::min<proto::Duration>(backoff_ * 2, options_.reconnect_backoff_max);
      }
      if (now >= next_login_) {
        next_login_ = proto::kNever;
        (void)session_->login(target_.mac, target_.name, now);
      }
      break;
    default:
      break;
  }
  recover_seen_ = session_->state();
}

// The session is gone: nothing we sent on it counts any more, and no
// reply on it may write into a command's buffer (each command registers its
// buffer again when it is sent anew).
void Initiator::Impl::lost_session() {
  session_->forget_reply_placements();
  if (!recovering_) {
    recovering_ = true;
    backoff_ = options_.login_timeout;
  }
  for (auto& [seq, p] : inflight_) {
    if (p->sent) ++stats_.reissued;
    p->sent = false;
  }
}

void Initiator::Impl::update_negotiated() {
  const uint32_t mt = session_->negotiated().max_transfer;
  const uint32_t overhead = 512;  // command/reply headers with the largest CDB and sense
  uint32_t data = mt > overhead ? mt - overhead : 0;
  data &= ~4095u;
  if (data == 0) data = 4096;
  max_data_.store(data);
}

}  // namespace hyperscsi::initiator

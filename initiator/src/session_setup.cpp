// Discovery, login and disconnect of the initiator: the public calls post
// the work to the loop thread and wait on a promise that finish_waits()
// fulfils once the state machine got there (or failed; login failures are
// mapped to typed errors).
//
// Thread-safety: discover(), connect() and disconnect() are called from any
// thread other than the loop thread; finish_waits() runs on it.
#include <algorithm>

#include "initiator_impl.h"

namespace hyperscsi::initiator {

namespace {

Error map_session_failure(const proto::SessionFailure& f, const TargetInfo& target,
                          size_t our_mtu) {
  using proto::LoginStatus;
  using proto::SessionError;
  const std::string who = "target '" + target.name + "' (" + io::to_string(target.mac) + ")";
  switch (f.error) {
    case SessionError::kNoAnswer:
      return {ErrorKind::kNoTarget, who + " did not answer the login"};
    case SessionError::kMtuMismatch:
      return {ErrorKind::kMtuMismatch,
              "MTU mismatch with " + who + ": frames of the negotiated MTU " +
                  std::to_string(f.mtu) +
                  " do not pass (small frames do); set the same MTU on both ends and every "
                  "switch between them"};
    case SessionError::kLoginRejected:
      switch (f.login_status) {
        case LoginStatus::kAccessDenied:
          return {ErrorKind::kAccessDenied, who + " denied access to this initiator"};
        case LoginStatus::kAuthFailed:
          return {ErrorKind::kAccessDenied,
                  "authentication with " + who +
                      " failed: wrong or missing shared secret on one side (or a target "
                      "that could not prove it knows the secret)"};
        case LoginStatus::kUnknownTarget:
          return {ErrorKind::kNoTarget, who + " does not know that target name"};
        case LoginStatus::kMtuMismatch:
          return {ErrorKind::kMtuMismatch, "MTU mismatch with " + who + ": our MTU is " +
                                               std::to_string(our_mtu) + ", the target's is " +
                                               std::to_string(target.mtu)};
        default:
          return {ErrorKind::kLoginRejected,
                  who + " rejected the login: " + std::string(proto::to_string(f.login_status))};
      }
    default:
      return {ErrorKind::kLoginRejected, who + ": " + f.describe()};
  }
}

}  // namespace

Result<std::vector<TargetInfo>, Error> Initiator::Impl::discover(std::string_view filter) {
  auto p = std::make_shared<std::promise<std::vector<TargetInfo>>>();
  auto f = p->get_future();
  post([this, p, name = std::string(filter)] {
    proto::DiscoveryConfig cfg;
    cfg.local_mac = port_->mac();
    cfg.initiator_name = options_.initiator_name;
    cfg.target_filter = name;
    cfg.window = options_.discovery_window;
    cfg.seed = options_.seed + (++rounds_);
    if (discovery_wait_) discovery_wait_->set_value({});
    discovery_ = std::make_unique<proto::DiscoveryClient>(cfg);
    discovery_->start(SteadyClock::now());
    discovery_wait_ = p;
  });
  std::vector<TargetInfo> found = f.get();
  if (found.empty()) {
    std::string msg = "no target answered discovery on " + std::string(port_->spec());
    if (!filter.empty()) msg += " (looking for '" + std::string(filter) + "')";
    msg += " within " +
           std::to_string(
               std::chrono::duration_cast<std::chrono::milliseconds>(options_.discovery_window)
                   .count()) +
           " ms";
    return Unexpected{Error{ErrorKind::kNoTarget, msg}};
  }
  return found;
}

Status<Error> Initiator::Impl::connect(const TargetInfo& target) {
  auto p = std::make_shared<std::promise<Status<Error>>>();
  auto f = p->get_future();
  post([this, p, target] {
    fail_all(CompletionError::kShutdown, "replaced by a new session");
    if (connect_wait_)
      connect_wait_->set_value(Unexpected{Error{ErrorKind::kNotConnected, "superseded"}});
    {
      std::lock_guard lock(target_mutex_);  // written only here, on the loop thread
      target_ = target;
      identities_.clear();  // another target's LUNs
    }
    fenced_.clear();
    verify_queue_.clear();
    proto::InitiatorConfig cfg;
    cfg.local_mac = port_->mac();
    cfg.initiator_name = options_.initiator_name;
    cfg.mtu = static_cast<uint16_t>(std::min<size_t>(port_->mtu(), 65535));
    cfg.window = proto::window_for_mtu(cfg.mtu, cfg.window);
    cfg.max_transfer = options_.max_transfer;
    cfg.auth = options_.auth;
    cfg.secret = options_.secret;
    cfg.protection = options_.protection;
    if (!options_.checksum) cfg.features &= ~proto::kFeatureChecksum;
    if (!extra_.empty()) cfg.features |= proto::kFeatureMultipath;
    paths_.reset();
    cfg.login_timeout = options_.login_timeout;
    cfg.login_attempts = options_.login_attempts;
    cfg.seed = options_.seed + (++rounds_);
    session_ = std::make_unique<proto::InitiatorSession>(cfg);
    connected_ = false;
    recovering_ = false;
    (void)session_->login(target.mac, target.name, SteadyClock::now());
    connect_wait_ = p;
  });
  return f.get();
}

void Initiator::Impl::disconnect() {
  auto p = std::make_shared<std::promise<void>>();
  auto f = p->get_future();
  post([this, p] {
    connected_ = false;
    recovering_ = false;
    fail_all(CompletionError::kShutdown, "disconnected");
    if (session_ && session_->disconnect(SteadyClock::now()).ok()) {
      disconnect_wait_ = p;
      disconnect_deadline_ = SteadyClock::now() + std::chrono::seconds(2);
    } else {
      p->set_value();
    }
  });
  f.get();
}

void Initiator::Impl::finish_waits(TimePoint now) {
  if (discovery_ && discovery_->done(now)) {
    std::vector<TargetInfo> out;
    for (const auto& t : discovery_->results())
      out.push_back(TargetInfo{t.mac, t.name, t.mtu, t.features, t.luns});
    if (discovery_wait_) discovery_wait_->set_value(std::move(out));
    discovery_wait_.reset();
    discovery_.reset();
  }
  if (connect_wait_ && session_) {
    const auto s = session_->state();
    if (s == proto::InitiatorState::kEstablished) {
      connected_ = true;
      update_negotiated();
      connect_wait_->set_value({});
      connect_wait_.reset();
    } else if (s != proto::InitiatorState::kLoggingIn &&
               s != proto::InitiatorState::kVerifyingMtu) {
      connect_wait_->set_value(
          Unexpected{map_session_failure(session_->failure(), target_, port_->mtu())});
      connect_wait_.reset();
    }
  }
  if (disconnect_wait_ && session_) {
    const auto s = session_->state();
    if (s != proto::InitiatorState::kDisconnecting || now >= disconnect_deadline_) {
      disconnect_wait_->set_value();
      disconnect_wait_.reset();
    }
  }
}

}  // namespace hyperscsi::initiator

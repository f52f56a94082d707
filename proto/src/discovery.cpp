#include "hyperscsi/proto/discovery.h"

#include <utility>

#include "session_util.h"

namespace hyperscsi::proto {

DiscoveryClient::DiscoveryClient(DiscoveryConfig config)
    : config_(std::move(config)), rng_(config_.seed) {
  if (config_.transmissions == 0) config_.transmissions = 1;
}

void DiscoveryClient::start(TimePoint now) {
  results_.clear();
  do {
    nonce_ = static_cast<uint32_t>(rng_());
  } while (nonce_ == 0);  // 0 marks announcements
  started_ = true;
  active_ = true;
  start_ = now;
  end_ = now + config_.window;
  next_send_ = now;
  sent_ = 0;
}

void DiscoveryClient::on_frame(const FrameView& frame, TimePoint now) {
  if (frame.header.common.opcode != Opcode::kDiscoveryReply) return;
  if (!active_ || now >= end_) {
    ++stats_.replies_ignored;
    return;
  }
  auto decoded = decode_discovery_reply(frame.payload);
  if (!decoded) {
    ++stats_.malformed;
    return;
  }
  DiscoveryReply& r = decoded.value();
  const bool nonce_ok = r.nonce == nonce_ || r.nonce == 0;
  const bool name_ok = config_.target_filter.empty() || config_.target_filter == r.target_name;
  if (!nonce_ok || !name_ok) {
    ++stats_.replies_ignored;
    return;
  }
  ++stats_.replies_accepted;
  DiscoveredTarget t{frame.header.src, std::move(r.target_name), r.mtu,
                     r.features,       std::move(r.luns),        r.nonce == 0};
  for (DiscoveredTarget& existing : results_) {
    if (existing.mac == t.mac && existing.name == t.name) {
      existing = std::move(t);
      return;
    }
  }
  results_.push_back(std::move(t));
}

void DiscoveryClient::poll(TimePoint now, FrameSink& sink) {
  if (!active_) return;
  if (now >= end_) {
    active_ = false;
    next_send_ = kNever;
    return;
  }
  if (now < next_send_) return;
  detail::Outbox out(1);
  std::vector<uint8_t> body;
  encode(DiscoveryRequest{nonce_, config_.initiator_name, config_.target_filter}, body);
  out.push(detail::raw_control_header(config_.local_mac, kBroadcastMac, Opcode::kDiscoveryRequest),
           std::move(body));
  out.flush(sink);
  if (!out.empty()) return;  // no buffer now: retry at the next poll
  ++stats_.requests_sent;
  ++sent_;
  // Spread the transmissions over the first half of the window, so late
  // answers to the last request still arrive in time.
  if (sent_ >= config_.transmissions) {
    next_send_ = kNever;
  } else {
    next_send_ = start_ + (config_.window / 2) * sent_ / config_.transmissions;
  }
}

TimePoint DiscoveryClient::next_deadline() const {
  if (!active_) return kNever;
  return detail::earliest(next_send_, end_);
}

}  // namespace hyperscsi::proto

#include "hyperscsi/proto/negotiation.h"

#include <algorithm>

namespace hyperscsi::proto {

uint16_t window_for_mtu(size_t mtu, uint16_t cap) {
  constexpr size_t kWindowBytes = 400u * 1024u;
  const size_t frames = kWindowBytes / (mtu + 14);  // + the Ethernet header
  return static_cast<uint16_t>(std::max<size_t>(16, std::min<size_t>(frames, cap)));
}

LoginReply negotiate(const LoginRequest& request, const TargetLimits& limits) {
  LoginReply reply;
  reply.nonce = request.nonce;
  reply.keepalive_ms = limits.keepalive_ms;
  reply.dead_time_ms = limits.dead_time_ms;
  reply.mtu = std::min(request.mtu, limits.mtu);
  reply.window = std::min(request.window, limits.window);
  reply.max_transfer = std::min(request.max_transfer, limits.max_transfer);
  reply.features = request.features & limits.features;

  const bool acceptable = reply.mtu >= kMinNegotiatedMtu &&
                          reply.max_transfer >= kMinNegotiatedMaxTransfer && reply.window > 0;
  if (!acceptable) {
    reply.status = LoginStatus::kParameterRejected;
    reply.mtu = limits.mtu;
    reply.window = limits.window;
    reply.max_transfer = limits.max_transfer;
    reply.features = limits.features;
  }
  return reply;
}

TransportParams transport_params_for(const LoginReply& reply, const TransportParams& base) {
  TransportParams p = base;
  p.mtu = reply.mtu;
  p.receive_window = reply.window;
  p.max_pdu = reply.max_transfer;
  p.checksum = (reply.features & kFeatureChecksum) != 0;
  p.sack = (reply.features & kFeatureSack) != 0;
  if ((reply.features & kFeatureDelayedAck) == 0) p.delayed_ack = Duration::zero();
  return p;
}

}  // namespace hyperscsi::proto

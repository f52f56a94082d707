// Login negotiation: what the target accepts, and the pure function that turns
// an initiator's LoginRequest into the target's LoginReply parameters.
//
// negotiate() is pure: no state, no allocation beyond the reply, no clock.
// It fills nonce, status and the negotiated values; session_id, epoch and
// auth are the caller's (TargetEndpoint) to fill.
// Thread-safety: plain values and free functions; safe from any thread.
#pragma once

#include <cstdint>

#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/messages.h"

namespace hyperscsi::proto {

// Below these the protocol cannot work well: a 576-byte MTU is the smallest
// any IP-era link guarantees, and 64 KiB is the smallest transfer SCSI hosts
// commonly assume without splitting.
inline constexpr uint16_t kMinNegotiatedMtu = 576;
inline constexpr uint32_t kMinNegotiatedMaxTransfer = 64u * 1024u;

// The receive window (frames) to offer at an MTU: about 400 KiB of frames,
// at most `cap`, at least 16. Measured on a veth pair shaped to 1 Gbit/s
// (docs/benchmarks.md): deeper windows only lengthen the shaper's queue, and
// with it the round trip of the lightly loaded direction (commands during
// reads), whose late acks then stall the pipeline; 256 frames at MTU 1500
// and 45-48 at 9000 reached the line rate, 512 at 9000 overflowed tbf's queue.
uint16_t window_for_mtu(size_t mtu, uint16_t cap);

// What one target port offers.
struct TargetLimits {
  uint16_t mtu = 1500;  // the target port's L3 MTU
  // Frames the target can receive beyond its ack, at most (see window_for_mtu).
  uint16_t window = 256;
  uint32_t max_transfer = (1u << 20) + 4096;  // largest PDU the target accepts, bytes
  uint32_t features = kFeaturesV2;            // features the target offers
  // The initiator probes after this much silence. A third of the dead time:
  // two lost probes in a row still do not kill a session, and an idle
  // session costs each side one wake-up per 3 s (docs/operations.md "Many
  // LUNs on one client"); 1 s before issue 14.
  uint32_t keepalive_ms = 3000;
  uint32_t dead_time_ms = 10000;  // either side declares the peer dead after this
};

// mtu, window and max_transfer become the minimum of both offers, features
// the intersection. Refused with kParameterRejected when the negotiated MTU is
// below kMinNegotiatedMtu, max_transfer below kMinNegotiatedMaxTransfer, or
// the window is 0. A refused reply carries the status and the target's own
// offer (so the initiator can say what the target wanted).
LoginReply negotiate(const LoginRequest& request, const TargetLimits& limits);

// Transport parameters for a Connection built from a successful LoginReply.
// `base` supplies what is not negotiated (RTO bounds, congestion start, queue
// limits, delayed-ack time); the negotiated values override the rest.
TransportParams transport_params_for(const LoginReply& reply, const TransportParams& base = {});

}  // namespace hyperscsi::proto

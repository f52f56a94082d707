// Bodies of control frames and the command/reply PDU headers. Byte layouts:
// docs/protocol.md ("Frame bodies"). Encoders clamp strings and vectors to
// their limits (callers validate names and sizes when they are configured);
// decoders are bounded, reject bytes they cannot account for and return a
// typed error.
#include "hyperscsi/proto/messages.h"

#include <algorithm>

#include "hyperscsi/proto/bytes.h"

namespace hyperscsi::proto {
namespace {

using bytes::BoundedReader;
using bytes::VectorWriter;
using Err = Unexpected<DecodeError>;

constexpr uint8_t kLunFlagReadOnly = 0x01;
constexpr size_t kLunInfoSize = 16;
constexpr size_t kMinCdbLength = 6;
constexpr uint8_t kTaskAttributeMax = 2;  // simple, ordered, head of queue
constexpr size_t kKeepaliveBodySize = 4;

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

void put_string(VectorWriter& w, const std::string& s) {
  const size_t n = std::min(s.size(), kMaxNameLength);
  w.u8(static_cast<uint8_t>(n));
  w.bytes(as_bytes(s).first(n));
}

void put_auth(VectorWriter& w, const std::vector<uint8_t>& a) {
  const size_t n = std::min(a.size(), kMaxAuthLength);
  w.be16(static_cast<uint16_t>(n));
  w.bytes(std::span<const uint8_t>(a).first(n));
}

// Readers of length-prefixed fields: false (with `err` set) when the field
// runs past the body or exceeds its limit.
bool get_string(BoundedReader& r, std::string& s, DecodeError& err) {
  uint8_t n = 0;
  std::span<const uint8_t> b;
  if (!r.u8(n)) return err = DecodeError::kTruncated, false;
  if (n > kMaxNameLength) return err = DecodeError::kBadField, false;
  if (!r.bytes(n, b)) return err = DecodeError::kTruncated, false;
  s.assign(b.begin(), b.end());
  return true;
}

bool get_auth(BoundedReader& r, std::vector<uint8_t>& a, DecodeError& err) {
  uint16_t n = 0;
  std::span<const uint8_t> b;
  if (!r.be16(n)) return err = DecodeError::kTruncated, false;
  if (n > kMaxAuthLength) return err = DecodeError::kBadField, false;
  if (!r.bytes(n, b)) return err = DecodeError::kTruncated, false;
  a.assign(b.begin(), b.end());
  return true;
}

bool valid_login_status(uint8_t v) {
  return v <= static_cast<uint8_t>(LoginStatus::kAuthContinue);
}
bool valid_disconnect_reason(uint8_t v) {
  return v <= static_cast<uint8_t>(DisconnectReason::kStaleEpoch);
}
bool valid_command_response(uint8_t v) {
  return v <= static_cast<uint8_t>(CommandResponse::kRejected);
}

}  // namespace

std::string_view to_string(LoginStatus s) {
  switch (s) {
    case LoginStatus::kOk:
      return "ok";
    case LoginStatus::kUnknownTarget:
      return "unknown target";
    case LoginStatus::kAccessDenied:
      return "access denied";
    case LoginStatus::kAuthFailed:
      return "authentication failed";
    case LoginStatus::kMtuMismatch:
      return "MTU mismatch";
    case LoginStatus::kParameterRejected:
      return "parameter rejected";
    case LoginStatus::kTooManySessions:
      return "too many sessions";
    case LoginStatus::kResumeFailed:
      return "resume failed";
    case LoginStatus::kAuthContinue:
      return "authentication continues";
  }
  return "unknown login status";
}

std::string_view to_string(DisconnectReason r) {
  switch (r) {
    case DisconnectReason::kNormal:
      return "normal";
    case DisconnectReason::kUnknownSession:
      return "unknown session";
    case DisconnectReason::kDeadPeer:
      return "dead peer";
    case DisconnectReason::kShutdown:
      return "shutdown";
    case DisconnectReason::kProtocolError:
      return "protocol error";
    case DisconnectReason::kStaleEpoch:
      return "stale epoch";
  }
  return "unknown disconnect reason";
}

// ---- encoders ----

void encode(const DiscoveryRequest& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  w.be32(m.nonce);
  put_string(w, m.initiator_name);
  put_string(w, m.target_filter);
}

void encode(const DiscoveryReply& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  w.be32(m.nonce);
  w.be16(m.mtu);
  w.be32(m.features);
  put_string(w, m.target_name);
  const size_t count = std::min(m.luns.size(), kMaxLunsInDiscovery);
  w.be16(static_cast<uint16_t>(count));
  for (size_t i = 0; i < count; ++i) {
    const LunInfo& l = m.luns[i];
    w.be16(l.lun);
    w.u8(l.read_only ? kLunFlagReadOnly : 0);
    w.u8(0);  // reserved
    w.be32(l.block_size);
    w.be64(l.num_blocks);
  }
}

void encode(const LoginRequest& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  w.be32(m.nonce);
  w.be16(m.mtu);
  w.be16(m.window);
  w.be32(m.max_transfer);
  w.be32(m.features);
  w.be32(m.resume_session_id);
  w.be16(m.resume_epoch);
  put_string(w, m.initiator_name);
  put_string(w, m.target_name);
  put_auth(w, m.auth);
}

void encode(const LoginReply& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  w.be32(m.nonce);
  w.u8(static_cast<uint8_t>(m.status));
  w.u8(0);  // reserved
  w.be16(m.mtu);
  w.be16(m.window);
  w.be32(m.max_transfer);
  w.be32(m.features);
  w.be32(m.session_id);
  w.be16(m.epoch);
  w.be32(m.keepalive_ms);
  w.be32(m.dead_time_ms);
  put_auth(w, m.auth);
}

void encode(const Disconnect& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  w.u8(static_cast<uint8_t>(m.reason));
}

void encode(const Keepalive& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  w.be32(m.probe_id);
  const size_t frame_l3 = kHeaderSize + kKeepaliveBodySize;
  if (m.pad_to > frame_l3) w.zeros(m.pad_to - frame_l3);
}

void encode(const CommandHeader& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  const uint8_t cdb_length = std::min<uint8_t>(m.cdb_length, kMaxCdbLength);
  w.be32(m.cmd_sn);
  w.be32(m.reply_ack_sn);
  w.be16(m.lun);
  w.u8(m.flags);
  w.u8(m.task_attribute);
  w.be32(m.expected_data_in);
  w.be32(m.data_out_length);
  w.u8(cdb_length);
  w.zeros(3);  // reserved
  w.bytes(std::span<const uint8_t>(m.cdb.data(), cdb_length));
}

void encode(const ReplyHeader& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  const size_t sense_length = std::min(m.sense.size(), kMaxSenseLength);
  w.be32(m.cmd_sn);
  w.u8(m.status);
  w.u8(static_cast<uint8_t>(m.response));
  w.u8(static_cast<uint8_t>(sense_length));
  w.u8(m.flags);
  w.be32(m.residual);
  w.be32(m.data_in_length);
  w.bytes(std::span<const uint8_t>(m.sense).first(sense_length));
}

// ---- decoders ----

Result<DiscoveryRequest, DecodeError> decode_discovery_request(std::span<const uint8_t> body) {
  BoundedReader r(body);
  DiscoveryRequest m;
  DecodeError err{};
  if (!r.be32(m.nonce)) return Err{DecodeError::kTruncated};
  if (!get_string(r, m.initiator_name, err)) return Err{err};
  if (!get_string(r, m.target_filter, err)) return Err{err};
  if (r.remaining() != 0) return Err{DecodeError::kBadLength};
  return m;
}

Result<DiscoveryReply, DecodeError> decode_discovery_reply(std::span<const uint8_t> body) {
  BoundedReader r(body);
  DiscoveryReply m;
  DecodeError err{};
  if (!r.be32(m.nonce) || !r.be16(m.mtu) || !r.be32(m.features)) {
    return Err{DecodeError::kTruncated};
  }
  if (!get_string(r, m.target_name, err)) return Err{err};
  uint16_t count = 0;
  if (!r.be16(count)) return Err{DecodeError::kTruncated};
  if (count > kMaxLunsInDiscovery) return Err{DecodeError::kBadField};
  if (r.remaining() < size_t{count} * kLunInfoSize) return Err{DecodeError::kTruncated};
  m.luns.reserve(count);
  for (uint16_t i = 0; i < count; ++i) {
    LunInfo l;
    uint8_t flags = 0;
    uint8_t reserved = 0;
    // Length checked above; these cannot fail.
    (void)(r.be16(l.lun) && r.u8(flags) && r.u8(reserved) && r.be32(l.block_size) &&
           r.be64(l.num_blocks));
    if ((flags & ~kLunFlagReadOnly) != 0 || l.block_size == 0) return Err{DecodeError::kBadField};
    l.read_only = (flags & kLunFlagReadOnly) != 0;
    m.luns.push_back(l);
  }
  if (r.remaining() != 0) return Err{DecodeError::kBadLength};
  return m;
}

Result<LoginRequest, DecodeError> decode_login_request(std::span<const uint8_t> body) {
  BoundedReader r(body);
  LoginRequest m;
  DecodeError err{};
  if (!(r.be32(m.nonce) && r.be16(m.mtu) && r.be16(m.window) && r.be32(m.max_transfer) &&
        r.be32(m.features) && r.be32(m.resume_session_id) && r.be16(m.resume_epoch))) {
    return Err{DecodeError::kTruncated};
  }
  if (!get_string(r, m.initiator_name, err)) return Err{err};
  if (!get_string(r, m.target_name, err)) return Err{err};
  if (!get_auth(r, m.auth, err)) return Err{err};
  if (r.remaining() != 0) return Err{DecodeError::kBadLength};
  return m;
}

Result<LoginReply, DecodeError> decode_login_reply(std::span<const uint8_t> body) {
  BoundedReader r(body);
  LoginReply m;
  DecodeError err{};
  uint8_t status = 0;
  uint8_t reserved = 0;
  if (!(r.be32(m.nonce) && r.u8(status) && r.u8(reserved) && r.be16(m.mtu) && r.be16(m.window) &&
        r.be32(m.max_transfer) && r.be32(m.features) && r.be32(m.session_id) && r.be16(m.epoch) &&
        r.be32(m.keepalive_ms) && r.be32(m.dead_time_ms))) {
    return Err{DecodeError::kTruncated};
  }
  if (!valid_login_status(status)) return Err{DecodeError::kBadField};
  m.status = static_cast<LoginStatus>(status);
  if (!get_auth(r, m.auth, err)) return Err{err};
  if (r.remaining() != 0) return Err{DecodeError::kBadLength};
  return m;
}

Result<Disconnect, DecodeError> decode_disconnect(std::span<const uint8_t> body) {
  BoundedReader r(body);
  uint8_t reason = 0;
  if (!r.u8(reason)) return Err{DecodeError::kTruncated};
  if (!valid_disconnect_reason(reason)) return Err{DecodeError::kBadField};
  if (r.remaining() != 0) return Err{DecodeError::kBadLength};
  return Disconnect{static_cast<DisconnectReason>(reason)};
}

Result<Keepalive, DecodeError> decode_keepalive(std::span<const uint8_t> body) {
  BoundedReader r(body);
  Keepalive m;
  if (!r.be32(m.probe_id)) return Err{DecodeError::kTruncated};
  return m;  // padding ignored; pad_to is a send-side request only
}

Result<DecodedCommand, DecodeError> decode_command(std::span<const uint8_t> pdu) {
  BoundedReader r(pdu);
  DecodedCommand d;
  CommandHeader& m = d.header;
  uint8_t cdb_length = 0;
  if (!(r.be32(m.cmd_sn) && r.be32(m.reply_ack_sn) && r.be16(m.lun) && r.u8(m.flags) &&
        r.u8(m.task_attribute) && r.be32(m.expected_data_in) && r.be32(m.data_out_length) &&
        r.u8(cdb_length) && r.skip(3))) {
    return Err{DecodeError::kTruncated};
  }
  if ((m.flags & ~(kCommandFlagDataIn | kCommandFlagDataOut)) != 0) {
    return Err{DecodeError::kBadField};
  }
  if (m.task_attribute > kTaskAttributeMax) return Err{DecodeError::kBadField};
  if (cdb_length < kMinCdbLength || cdb_length > kMaxCdbLength) {
    return Err{DecodeError::kBadField};
  }
  std::span<const uint8_t> cdb;
  if (!r.bytes(cdb_length, cdb)) return Err{DecodeError::kTruncated};
  std::copy(cdb.begin(), cdb.end(), m.cdb.begin());
  m.cdb_length = cdb_length;
  if (r.remaining() != m.data_out_length) return Err{DecodeError::kBadLength};
  d.data_out = r.rest();
  return d;
}

namespace {

// The reply's fixed header from `head`, then sense and data-in from `tail`
// (the same span as the header's for a reassembled PDU).
Result<DecodedReply, DecodeError> decode_reply_parts(BoundedReader& head, BoundedReader& tail) {
  DecodedReply d;
  ReplyHeader& m = d.header;
  uint8_t response = 0;
  uint8_t sense_length = 0;
  if (!(head.be32(m.cmd_sn) && head.u8(m.status) && head.u8(response) && head.u8(sense_length) &&
        head.u8(m.flags) && head.be32(m.residual) && head.be32(m.data_in_length))) {
    return Err{DecodeError::kTruncated};
  }
  if (!valid_command_response(response)) return Err{DecodeError::kBadField};
  m.response = static_cast<CommandResponse>(response);
  if ((m.flags & ~(kReplyFlagOverflow | kReplyFlagUnderflow)) != 0 ||
      m.flags == (kReplyFlagOverflow | kReplyFlagUnderflow)) {
    return Err{DecodeError::kBadField};
  }
  if (sense_length > kMaxSenseLength) return Err{DecodeError::kBadField};
  std::span<const uint8_t> sense;
  if (!tail.bytes(sense_length, sense)) return Err{DecodeError::kTruncated};
  m.sense.assign(sense.begin(), sense.end());
  if (tail.remaining() != m.data_in_length) return Err{DecodeError::kBadLength};
  d.data_in = tail.rest();
  return d;
}

}  // namespace

Result<DecodedReply, DecodeError> decode_reply(std::span<const uint8_t> pdu) {
  BoundedReader r(pdu);
  return decode_reply_parts(r, r);
}

Result<DecodedReply, DecodeError> decode_placed_reply(std::span<const uint8_t> header,
                                                      std::span<const uint8_t> placed) {
  if (header.size() != kReplyHeaderFixedSize) return Err{DecodeError::kBadLength};
  BoundedReader head(header);
  BoundedReader tail(placed);
  return decode_reply_parts(head, tail);
}

}  // namespace hyperscsi::proto

// Multipath wire messages. Byte layouts: docs/protocol.md section 14.
#include "hyperscsi/proto/multipath.h"

#include <algorithm>

#include "hyperscsi/proto/bytes.h"

namespace hyperscsi::proto {
namespace {

using bytes::BoundedReader;
using bytes::VectorWriter;
using Err = Unexpected<DecodeError>;

constexpr size_t kPortEntrySize = 8;
constexpr size_t kLoginReplyFixedSize = 32;  // before the auth field (7.4)
constexpr uint8_t kMaxAction = static_cast<uint8_t>(PathAction::kLeave);
constexpr uint8_t kMaxStatus = static_cast<uint8_t>(PathStatus::kUnknownPath);

void put_body(VectorWriter& w, uint32_t nonce, uint8_t byte4, uint8_t byte5, uint8_t path_id,
              uint8_t path_gen, uint16_t mtu, uint16_t window, const std::vector<uint8_t>& proof) {
  w.be32(nonce);
  w.u8(byte4);
  w.u8(byte5);
  w.u8(path_id);
  w.u8(path_gen);
  w.be16(mtu);
  w.be16(window);
  // Encoders clamp; a proof is either absent or exactly one HMAC.
  const size_t n = proof.size() >= kPathProofSize ? kPathProofSize : 0;
  w.u8(static_cast<uint8_t>(n));
  w.bytes(std::span<const uint8_t>(proof).first(n));
}

struct RawBody {
  uint32_t nonce = 0;
  uint8_t byte4 = 0, byte5 = 0, path_id = 0, path_gen = 0;
  uint16_t mtu = 0, window = 0;
  std::vector<uint8_t> proof;
};

Result<RawBody, DecodeError> get_body(std::span<const uint8_t> body) {
  BoundedReader r(body);
  RawBody b;
  uint8_t proof_length = 0;
  if (!(r.be32(b.nonce) && r.u8(b.byte4) && r.u8(b.byte5) && r.u8(b.path_id) && r.u8(b.path_gen) &&
        r.be16(b.mtu) && r.be16(b.window) && r.u8(proof_length))) {
    return Err{DecodeError::kTruncated};
  }
  if (b.path_id > kMaxPathId) return Err{DecodeError::kBadField};
  if (proof_length != 0 && proof_length != kPathProofSize) return Err{DecodeError::kBadField};
  std::span<const uint8_t> proof;
  if (!r.bytes(proof_length, proof)) return Err{DecodeError::kTruncated};
  b.proof.assign(proof.begin(), proof.end());
  if (r.remaining() != 0) return Err{DecodeError::kBadLength};
  return b;
}

}  // namespace

std::string_view to_string(PathAction a) {
  switch (a) {
    case PathAction::kJoin:
      return "join";
    case PathAction::kActivate:
      return "activate";
    case PathAction::kLeave:
      return "leave";
  }
  return "?";
}

std::string_view to_string(PathStatus s) {
  switch (s) {
    case PathStatus::kOk:
      return "ok";
    case PathStatus::kNotMultipath:
      return "session is not multipath";
    case PathStatus::kAccessDenied:
      return "access denied";
    case PathStatus::kAuthFailed:
      return "authentication failed";
    case PathStatus::kStaleGeneration:
      return "stale path generation";
    case PathStatus::kTooManyPaths:
      return "too many paths";
    case PathStatus::kDuplicatePath:
      return "duplicate path";
    case PathStatus::kMtuRejected:
      return "path MTU rejected";
    case PathStatus::kUnknownPath:
      return "unknown path";
  }
  return "?";
}

void encode_port_list(std::span<const TargetPort> ports, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  const size_t n = std::min(ports.size(), kMaxTargetPorts);
  w.u8(static_cast<uint8_t>(n));
  for (size_t i = 0; i < n; ++i) {
    w.bytes(ports[i].mac);
    w.be16(ports[i].mtu);
  }
}

Result<std::vector<TargetPort>, DecodeError> decode_port_list(std::span<const uint8_t> ext) {
  BoundedReader r(ext);
  uint8_t count = 0;
  if (!r.u8(count)) return Err{DecodeError::kTruncated};
  if (count == 0 || count > kMaxTargetPorts) return Err{DecodeError::kBadField};
  if (r.remaining() < size_t{count} * kPortEntrySize) return Err{DecodeError::kTruncated};
  std::vector<TargetPort> ports(count);
  for (TargetPort& p : ports) {
    std::span<const uint8_t> mac;
    (void)(r.bytes(6, mac) && r.be16(p.mtu));  // length checked above
    std::copy(mac.begin(), mac.end(), p.mac.begin());
    if (p.mtu == 0) return Err{DecodeError::kBadField};
  }
  if (r.remaining() != 0) return Err{DecodeError::kBadLength};
  return ports;
}

void encode(const MultipathLoginReply& m, std::vector<uint8_t>& out) {
  encode(m.reply, out);
  if (m.reply.status == LoginStatus::kOk && (m.reply.features & kFeatureMultipath) != 0)
    encode_port_list(m.ports, out);
}

Result<MultipathLoginReply, DecodeError> decode_multipath_login_reply(
    std::span<const uint8_t> body) {
  // The base reply ends after its auth field; what follows is the port list.
  if (body.size() < kLoginReplyFixedSize + 2) return Err{DecodeError::kTruncated};
  const size_t auth_length = bytes::load_be16(body.data() + kLoginReplyFixedSize);
  const size_t base = std::min(body.size(), kLoginReplyFixedSize + 2 + auth_length);
  auto reply = decode_login_reply(body.first(base));
  if (!reply) return Err{reply.error()};
  MultipathLoginReply m;
  m.reply = std::move(reply.value());
  const std::span<const uint8_t> ext = body.subspan(base);
  const bool multipath =
      m.reply.status == LoginStatus::kOk && (m.reply.features & kFeatureMultipath) != 0;
  if (!multipath) {
    if (!ext.empty()) return Err{DecodeError::kBadLength};
    return m;
  }
  auto ports = decode_port_list(ext);
  if (!ports) return Err{ports.error()};
  m.ports = std::move(ports.value());
  return m;
}

void encode(const PathRequest& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  put_body(w, m.nonce, static_cast<uint8_t>(m.action), 0, m.path_id, m.path_gen, m.mtu, m.window,
           m.proof);
}

void encode(const PathReply& m, std::vector<uint8_t>& out) {
  VectorWriter w(out);
  put_body(w, m.nonce, static_cast<uint8_t>(m.status), static_cast<uint8_t>(m.action), m.path_id,
           m.path_gen, m.mtu, m.window, m.proof);
}

Result<PathRequest, DecodeError> decode_path_request(std::span<const uint8_t> body) {
  auto b = get_body(body);
  if (!b) return Err{b.error()};
  if (b->byte4 > kMaxAction) return Err{DecodeError::kBadField};  // byte 5 reserved
  PathRequest m;
  m.nonce = b->nonce;
  m.action = static_cast<PathAction>(b->byte4);
  m.path_id = b->path_id;
  m.path_gen = b->path_gen;
  m.mtu = b->mtu;
  m.window = b->window;
  m.proof = std::move(b->proof);
  return m;
}

Result<PathReply, DecodeError> decode_path_reply(std::span<const uint8_t> body) {
  auto b = get_body(body);
  if (!b) return Err{b.error()};
  if (b->byte4 > kMaxStatus || b->byte5 > kMaxAction) return Err{DecodeError::kBadField};
  PathReply m;
  m.nonce = b->nonce;
  m.status = static_cast<PathStatus>(b->byte4);
  m.action = static_cast<PathAction>(b->byte5);
  m.path_id = b->path_id;
  m.path_gen = b->path_gen;
  m.mtu = b->mtu;
  m.window = b->window;
  m.proof = std::move(b->proof);
  return m;
}

}  // namespace hyperscsi::proto

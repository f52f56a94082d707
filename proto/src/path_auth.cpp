// Path proofs and per-path frame keys; the derivations are spelled out in
// path_auth.h and docs/protocol.md 14.6.
#include "hyperscsi/proto/path_auth.h"

#include <algorithm>
#include <string_view>
#include <vector>

#include "hyperscsi/proto/bytes.h"

namespace hyperscsi::proto {
namespace {

constexpr std::string_view kProofKeyInfo = "hyperscsi path proof v1";
constexpr std::string_view kFrameKeyInfo = "hyperscsi path keys v1";

void put(std::vector<uint8_t>& v, std::string_view s) {
  v.insert(v.end(), s.begin(), s.end());
}
void put(std::vector<uint8_t>& v, std::span<const uint8_t> b) {
  v.insert(v.end(), b.begin(), b.end());
}
void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  v.resize(v.size() + 4);
  bytes::store_be32(v.data() + v.size() - 4, x);
}
void put_be16(std::vector<uint8_t>& v, uint16_t x) {
  v.resize(v.size() + 2);
  bytes::store_be16(v.data() + v.size() - 2, x);
}

std::string_view label(PathRole sender, bool request) {
  if (request)
    return sender == PathRole::kInitiator ? "path request from initiator"
                                          : "path request from target";
  return sender == PathRole::kInitiator ? "path reply from initiator" : "path reply from target";
}

// label || binding || the body's 12 fixed bytes (the proof excluded).
template <typename M>
std::optional<crypto::Digest> proof_of(std::span<const uint8_t> key, PathRole sender,
                                       const PathBinding& b, const M& m, bool request) {
  if (key.size() != crypto::kSha256Size) return std::nullopt;
  M bare = m;
  bare.proof.clear();
  std::vector<uint8_t> body;
  encode(bare, body);
  std::vector<uint8_t> data;
  put(data, label(sender, request));
  put_be32(data, b.session_id);
  put_be16(data, b.epoch);
  data.push_back(b.path_id);
  data.push_back(b.path_gen);
  put(data, b.src);
  put(data, b.dst);
  put(data, std::span<const uint8_t>(body).first(kPathBodyFixedSize));
  return crypto::hmac_sha256(key, data);
}

bool verify(const std::optional<crypto::Digest>& want, const std::vector<uint8_t>& got) {
  return want.has_value() && got.size() == kPathProofSize && crypto::equal_ct(*want, got);
}

}  // namespace

std::optional<crypto::SecretBytes> derive_path_proof_key(const SessionKeys& keys,
                                                         uint32_t session_id) {
  if (keys.initiator_to_target.size() != crypto::kAeadKeySize ||
      keys.target_to_initiator.size() != crypto::kAeadKeySize)
    return std::nullopt;
  crypto::SecretBytes ikm(2 * crypto::kAeadKeySize);
  std::copy_n(keys.initiator_to_target.span().begin(), crypto::kAeadKeySize, ikm.span().begin());
  std::copy_n(keys.target_to_initiator.span().begin(), crypto::kAeadKeySize,
              ikm.span().begin() + crypto::kAeadKeySize);
  std::vector<uint8_t> info;
  put(info, kProofKeyInfo);
  put_be32(info, session_id);
  crypto::SecretBytes out(crypto::kSha256Size);
  if (!crypto::hkdf_sha256({}, ikm.span(), info, out.span())) return std::nullopt;
  return out;
}

std::optional<crypto::Digest> path_request_proof(std::span<const uint8_t> proof_key,
                                                 PathRole sender, const PathBinding& binding,
                                                 const PathRequest& m) {
  return proof_of(proof_key, sender, binding, m, true);
}

std::optional<crypto::Digest> path_reply_proof(std::span<const uint8_t> proof_key, PathRole sender,
                                               const PathBinding& binding, const PathReply& m) {
  return proof_of(proof_key, sender, binding, m, false);
}

bool verify_path_request(std::span<const uint8_t> proof_key, PathRole sender,
                         const PathBinding& binding, const PathRequest& m) {
  return verify(path_request_proof(proof_key, sender, binding, m), m.proof);
}

bool verify_path_reply(std::span<const uint8_t> proof_key, PathRole sender,
                       const PathBinding& binding, const PathReply& m) {
  return verify(path_reply_proof(proof_key, sender, binding, m), m.proof);
}

std::optional<SessionKeys> derive_path_frame_keys(const SessionKeys& session, uint32_t session_id,
                                                  uint16_t epoch, uint8_t path_id,
                                                  uint8_t path_gen) {
  SessionKeys out;
  out.protection = session.protection;
  std::vector<uint8_t> info;
  put(info, kFrameKeyInfo);
  put_be32(info, session_id);
  put_be16(info, epoch);
  info.push_back(path_id);
  info.push_back(path_gen);
  auto one = [&](const crypto::SecretBytes& key, crypto::SecretBytes& out_key,
                 std::array<uint8_t, kSaltSize>& out_salt) {
    if (key.size() != crypto::kAeadKeySize) return false;
    crypto::SecretBytes okm(crypto::kAeadKeySize + kSaltSize);
    if (!crypto::hkdf_sha256({}, key.span(), info, okm.span())) return false;
    out_key = crypto::SecretBytes(okm.span().first(crypto::kAeadKeySize));
    std::copy_n(okm.span().begin() + crypto::kAeadKeySize, kSaltSize, out_salt.begin());
    return true;
  };
  if (!one(session.initiator_to_target, out.initiator_to_target, out.salt_i2t) ||
      !one(session.target_to_initiator, out.target_to_initiator, out.salt_t2i))
    return std::nullopt;
  return out;
}

}  // namespace hyperscsi::proto

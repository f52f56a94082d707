// Login authentication blobs and key schedule; see auth.h and docs/protocol.md.
#include "hyperscsi/proto/auth.h"

#include <algorithm>
#include <cstring>

namespace hyperscsi::proto {

namespace {

using Err = Unexpected<DecodeError>;
constexpr std::string_view kKdfLabel = "hyperscsi auth v1";
constexpr std::string_view kInitiatorLabel = "initiator";
constexpr std::string_view kTargetLabel = "target";
constexpr size_t kHelloSize = 2 + 1 + kAuthNonceSize + crypto::kX25519KeySize;
constexpr size_t kChallengeSize = kHelloSize;
constexpr size_t kProofSize = 2 + kAuthNonceSize + crypto::kSha256Size;
constexpr size_t kConfirmSize = 2 + 1 + crypto::kSha256Size;

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

void put(std::vector<uint8_t>& out, std::span<const uint8_t> b) {
  out.insert(out.end(), b.begin(), b.end());
}

std::vector<uint8_t> start_blob(AuthStep step, size_t size) {
  std::vector<uint8_t> out;
  out.reserve(size);
  out.push_back(kAuthVersion);
  out.push_back(static_cast<uint8_t>(step));
  return out;
}

bool valid_protection(uint8_t v) {
  return v <= static_cast<uint8_t>(Protection::kEncrypt);
}

// Checks version, step and exact size of a blob.
bool shaped(std::span<const uint8_t> b, AuthStep step, size_t size) {
  return b.size() == size && b[0] == kAuthVersion && b[1] == static_cast<uint8_t>(step);
}

template <size_t N>
void take(std::span<const uint8_t> b, size_t at, std::array<uint8_t, N>& out) {
  std::memcpy(out.data(), b.data() + at, N);
}

crypto::Digest proof_of(std::span<const uint8_t> key, std::string_view label,
                        const crypto::Digest& transcript) {
  std::vector<uint8_t> msg(as_bytes(label).begin(), as_bytes(label).end());
  put(msg, transcript);
  return crypto::hmac_sha256(key, msg).value_or(crypto::Digest{});
}

void put_name(std::vector<uint8_t>& out, std::string_view name) {
  out.push_back(static_cast<uint8_t>(std::min<size_t>(name.size(), 255)));
  put(out, as_bytes(name.substr(0, 255)));
}

}  // namespace

std::string_view to_string(Protection p) {
  switch (p) {
    case Protection::kOff:
      return "off";
    case Protection::kIntegrity:
      return "integrity";
    case Protection::kEncrypt:
      return "encrypt";
  }
  return "?";
}

std::optional<Protection> parse_protection(std::string_view s) {
  if (s == "off") return Protection::kOff;
  if (s == "integrity") return Protection::kIntegrity;
  if (s == "encrypt") return Protection::kEncrypt;
  return std::nullopt;
}

std::vector<uint8_t> encode(const AuthHello& m) {
  auto out = start_blob(AuthStep::kHello, kHelloSize);
  out.push_back(static_cast<uint8_t>(m.wanted));
  put(out, m.nonce);
  put(out, m.public_key);
  return out;
}
std::vector<uint8_t> encode(const AuthChallenge& m) {
  auto out = start_blob(AuthStep::kChallenge, kChallengeSize);
  out.push_back(static_cast<uint8_t>(m.chosen));
  put(out, m.nonce);
  put(out, m.public_key);
  return out;
}
std::vector<uint8_t> encode(const AuthProof& m) {
  auto out = start_blob(AuthStep::kProof, kProofSize);
  put(out, m.target_nonce);
  put(out, m.proof);
  return out;
}
std::vector<uint8_t> encode(const AuthConfirm& m) {
  auto out = start_blob(AuthStep::kConfirm, kConfirmSize);
  out.push_back(static_cast<uint8_t>(m.chosen));
  put(out, m.proof);
  return out;
}

Result<AuthStep, DecodeError> auth_step(std::span<const uint8_t> blob) {
  if (blob.size() < 2) return Err{DecodeError::kTruncated};
  if (blob[0] != kAuthVersion || blob[1] < 1 || blob[1] > 4) return Err{DecodeError::kBadField};
  return static_cast<AuthStep>(blob[1]);
}

Result<AuthHello, DecodeError> decode_auth_hello(std::span<const uint8_t> b) {
  if (!shaped(b, AuthStep::kHello, kHelloSize) || !valid_protection(b[2]))
    return Err{DecodeError::kBadField};
  AuthHello m;
  m.wanted = static_cast<Protection>(b[2]);
  take(b, 3, m.nonce);
  take(b, 3 + kAuthNonceSize, m.public_key);
  return m;
}
Result<AuthChallenge, DecodeError> decode_auth_challenge(std::span<const uint8_t> b) {
  if (!shaped(b, AuthStep::kChallenge, kChallengeSize) || !valid_protection(b[2]))
    return Err{DecodeError::kBadField};
  AuthChallenge m;
  m.chosen = static_cast<Protection>(b[2]);
  take(b, 3, m.nonce);
  take(b, 3 + kAuthNonceSize, m.public_key);
  return m;
}
Result<AuthProof, DecodeError> decode_auth_proof(std::span<const uint8_t> b) {
  if (!shaped(b, AuthStep::kProof, kProofSize)) return Err{DecodeError::kBadField};
  AuthProof m;
  take(b, 2, m.target_nonce);
  take(b, 2 + kAuthNonceSize, m.proof);
  return m;
}
Result<AuthConfirm, DecodeError> decode_auth_confirm(std::span<const uint8_t> b) {
  if (!shaped(b, AuthStep::kConfirm, kConfirmSize) || !valid_protection(b[2]))
    return Err{DecodeError::kBadField};
  AuthConfirm m;
  m.chosen = static_cast<Protection>(b[2]);
  take(b, 3, m.proof);
  return m;
}

std::optional<HandshakeSecrets> derive_handshake(std::span<const uint8_t> shared,
                                                 std::span<const uint8_t> secret,
                                                 std::string_view initiator_name,
                                                 std::string_view target_name,
                                                 std::span<const uint8_t> hello_blob,
                                                 std::span<const uint8_t> challenge_blob) {
  auto hello = decode_auth_hello(hello_blob);
  auto challenge = decode_auth_challenge(challenge_blob);
  if (!hello || !challenge) return std::nullopt;

  std::vector<uint8_t> transcript_input;
  put_name(transcript_input, initiator_name);
  put_name(transcript_input, target_name);
  put(transcript_input, hello_blob);
  put(transcript_input, challenge_blob);
  const crypto::Digest transcript = crypto::sha256(transcript_input);

  std::vector<uint8_t> salt;
  put(salt, hello->nonce);
  put(salt, challenge->nonce);
  crypto::SecretBytes ikm(shared.size() + secret.size());
  std::copy(shared.begin(), shared.end(), ikm.span().begin());
  std::copy(secret.begin(), secret.end(), ikm.span().begin() + static_cast<long>(shared.size()));
  std::vector<uint8_t> info(as_bytes(kKdfLabel).begin(), as_bytes(kKdfLabel).end());
  put(info, transcript);

  // Output: initiator proof key, target proof key, two AEAD keys, two salts.
  constexpr size_t kKey = crypto::kAeadKeySize;
  crypto::SecretBytes okm(4 * kKey + 2 * kSaltSize);
  if (!crypto::hkdf_sha256(salt, ikm.span(), info, okm.span())) return std::nullopt;
  std::span<const uint8_t> o = okm.span();

  HandshakeSecrets s;
  s.initiator_proof = proof_of(o.subspan(0, kKey), kInitiatorLabel, transcript);
  s.target_proof = proof_of(o.subspan(kKey, kKey), kTargetLabel, transcript);
  s.keys.protection = challenge->chosen;
  s.keys.initiator_to_target = crypto::SecretBytes(o.subspan(2 * kKey, kKey));
  s.keys.target_to_initiator = crypto::SecretBytes(o.subspan(3 * kKey, kKey));
  std::copy_n(o.begin() + 4 * kKey, kSaltSize, s.keys.salt_i2t.begin());
  std::copy_n(o.begin() + 4 * kKey + kSaltSize, kSaltSize, s.keys.salt_t2i.begin());
  return s;
}

std::optional<InitiatorHandshake> InitiatorHandshake::start(crypto::SecretBytes secret,
                                                            Protection wanted) {
  InitiatorHandshake h;
  auto kp = crypto::x25519_generate();
  AuthHello hello;
  if (!kp || !crypto::random_bytes(hello.nonce)) return std::nullopt;
  hello.wanted = wanted;
  hello.public_key = kp->public_key;
  h.secret_ = std::move(secret);
  h.wanted_ = wanted;
  h.ephemeral_ = std::move(*kp);
  h.hello_ = encode(hello);
  return h;
}

std::optional<std::vector<uint8_t>> InitiatorHandshake::answer(
    std::span<const uint8_t> challenge_blob, std::string_view initiator_name,
    std::string_view target_name) {
  auto challenge = decode_auth_challenge(challenge_blob);
  if (!challenge || challenge->chosen < wanted_) return std::nullopt;
  auto shared = crypto::x25519_derive(ephemeral_, challenge->public_key);
  if (!shared) return std::nullopt;
  secrets_ = derive_handshake(shared->span(), secret_.span(), initiator_name, target_name, hello_,
                              challenge_blob);
  ephemeral_.private_key.wipe();  // single use
  if (!secrets_) return std::nullopt;
  AuthProof proof;
  proof.target_nonce = challenge->nonce;
  proof.proof = secrets_->initiator_proof;
  return encode(proof);
}

bool InitiatorHandshake::confirm(std::span<const uint8_t> confirm_blob) {
  auto c = decode_auth_confirm(confirm_blob);
  if (!c || !secrets_ || c->chosen != secrets_->keys.protection) return false;
  confirmed_ = crypto::equal_ct(c->proof, secrets_->target_proof);
  return confirmed_;
}

std::optional<TargetHandshake> TargetHandshake::start(std::span<const uint8_t> hello_blob,
                                                      const crypto::SecretBytes& secret,
                                                      Protection required,
                                                      std::string_view initiator_name,
                                                      std::string_view target_name) {
  auto hello = decode_auth_hello(hello_blob);
  if (!hello) return std::nullopt;
  auto kp = crypto::x25519_generate();
  if (!kp) return std::nullopt;
  auto shared = crypto::x25519_derive(*kp, hello->public_key);
  if (!shared) return std::nullopt;
  TargetHandshake h;
  AuthChallenge challenge;
  if (!crypto::random_bytes(challenge.nonce)) return std::nullopt;
  challenge.chosen = std::max(hello->wanted, required);
  challenge.public_key = kp->public_key;
  h.nonce_ = challenge.nonce;
  h.chosen_ = challenge.chosen;
  h.challenge_ = encode(challenge);
  auto secrets = derive_handshake(shared->span(), secret.span(), initiator_name, target_name,
                                  hello_blob, h.challenge_);
  if (!secrets) return std::nullopt;
  h.secrets_ = std::move(*secrets);
  return h;
}

bool TargetHandshake::verify(const AuthProof& proof) const {
  return crypto::equal_ct(proof.target_nonce, nonce_) &&
         crypto::equal_ct(proof.proof, secrets_.initiator_proof);
}

std::vector<uint8_t> TargetHandshake::confirm_blob() const {
  AuthConfirm c;
  c.chosen = chosen_;
  c.proof = secrets_.target_proof;
  return encode(c);
}

}  // namespace hyperscsi::proto

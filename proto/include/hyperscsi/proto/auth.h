// Mutual authentication at login from a pre-shared secret, and the session
// keys it yields. docs/protocol.md ("Authentication") is the normative
// description; in short, carried in LoginRequest.auth / LoginReply.auth:
//
//   I -> T  LoginRequest  auth = Hello   {wanted protection, nonce_i, X25519 pub_i}
//   T -> I  LoginReply    kAuthContinue, auth = Challenge {chosen protection, nonce_t, pub_t}
//   I -> T  LoginRequest  auth = Proof   {nonce_t, HMAC(K_i, "initiator" || H)}
//   T -> I  LoginReply    kOk, auth = Confirm {chosen, HMAC(K_t, "target" || H)}
//
// H = SHA-256 over both names and the exact Hello and Challenge bytes; the
// keys come from HKDF-SHA256(salt = nonce_i || nonce_t, ikm = X25519 shared ||
// secret, info = label || H). Both sides' ephemeral keys and nonces are fresh
// per attempt, so a recorded Proof does not verify against any later attempt.
//
// Pure functions and small value types: no I/O, no clock. Thread-safety: the
// handshake objects are used by one thread; free functions are thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hyperscsi/proto/crypto.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::proto {

// Per-frame protection of a session, weakest to strongest.
enum class Protection : uint8_t {
  kOff = 0,        // no per-frame protection (the login may still be authenticated)
  kIntegrity = 1,  // AES-256-GCM tag over header and payload (GMAC), payload in clear
  kEncrypt = 2,    // AES-256-GCM: payload encrypted, header authenticated
};
std::string_view to_string(Protection p);
std::optional<Protection> parse_protection(std::string_view s);

inline constexpr uint8_t kAuthVersion = 1;
inline constexpr size_t kAuthNonceSize = 16;
inline constexpr size_t kMinSecretSize = 16;  // shorter secrets are refused by the config
inline constexpr size_t kSaltSize = 4;

enum class AuthStep : uint8_t { kHello = 1, kChallenge = 2, kProof = 3, kConfirm = 4 };
using AuthNonce = std::array<uint8_t, kAuthNonceSize>;

struct AuthHello {
  Protection wanted = Protection::kOff;
  AuthNonce nonce{};
  crypto::PublicKey public_key{};
};
struct AuthChallenge {
  Protection chosen = Protection::kOff;
  AuthNonce nonce{};
  crypto::PublicKey public_key{};
};
struct AuthProof {
  AuthNonce target_nonce{};  // names the attempt the proof answers
  crypto::Digest proof{};
};
struct AuthConfirm {
  Protection chosen = Protection::kOff;
  crypto::Digest proof{};
};

std::vector<uint8_t> encode(const AuthHello& m);
std::vector<uint8_t> encode(const AuthChallenge& m);
std::vector<uint8_t> encode(const AuthProof& m);
std::vector<uint8_t> encode(const AuthConfirm& m);
// The step of an auth blob (after checking the version), or kBadField.
Result<AuthStep, DecodeError> auth_step(std::span<const uint8_t> blob);
Result<AuthHello, DecodeError> decode_auth_hello(std::span<const uint8_t> blob);
Result<AuthChallenge, DecodeError> decode_auth_challenge(std::span<const uint8_t> blob);
Result<AuthProof, DecodeError> decode_auth_proof(std::span<const uint8_t> blob);
Result<AuthConfirm, DecodeError> decode_auth_confirm(std::span<const uint8_t> blob);

// What a successful handshake yields for one session.
struct SessionKeys {
  Protection protection = Protection::kOff;
  crypto::SecretBytes initiator_to_target;  // AES-256-GCM key, 32 bytes
  crypto::SecretBytes target_to_initiator;
  std::array<uint8_t, kSaltSize> salt_i2t{};  // nonce prefix per direction
  std::array<uint8_t, kSaltSize> salt_t2i{};
};

// Keys and proofs of one attempt, computed identically on both sides.
struct HandshakeSecrets {
  SessionKeys keys;
  crypto::Digest initiator_proof{};
  crypto::Digest target_proof{};
};
std::optional<HandshakeSecrets> derive_handshake(std::span<const uint8_t> shared,
                                                 std::span<const uint8_t> secret,
                                                 std::string_view initiator_name,
                                                 std::string_view target_name,
                                                 std::span<const uint8_t> hello_blob,
                                                 std::span<const uint8_t> challenge_blob);

// The initiator's side of one attempt.
class InitiatorHandshake {
 public:
  // Starts an attempt: fresh nonce and ephemeral key. nullopt if the RNG fails.
  static std::optional<InitiatorHandshake> start(crypto::SecretBytes secret, Protection wanted);
  const std::vector<uint8_t>& hello() const { return hello_; }
  // Answers the target's Challenge with a Proof blob; nullopt if the blob is
  // malformed or offers less protection than wanted.
  std::optional<std::vector<uint8_t>> answer(std::span<const uint8_t> challenge_blob,
                                             std::string_view initiator_name,
                                             std::string_view target_name);
  // Checks the target's Confirm; on success the session keys are ready.
  bool confirm(std::span<const uint8_t> confirm_blob);
  bool confirmed() const { return confirmed_; }
  const SessionKeys& keys() const { return secrets_->keys; }
  Protection wanted() const { return wanted_; }

 private:
  crypto::SecretBytes secret_;
  Protection wanted_ = Protection::kOff;
  crypto::X25519KeyPair ephemeral_;
  std::vector<uint8_t> hello_;
  std::optional<HandshakeSecrets> secrets_;
  bool confirmed_ = false;
};

// The target's side of one attempt: built from the Hello, answers with a
// Challenge, then checks the Proof once.
class TargetHandshake {
 public:
  static std::optional<TargetHandshake> start(std::span<const uint8_t> hello_blob,
                                              const crypto::SecretBytes& secret,
                                              Protection required, std::string_view initiator_name,
                                              std::string_view target_name);
  const std::vector<uint8_t>& challenge() const { return challenge_; }
  const AuthNonce& nonce() const { return nonce_; }
  Protection chosen() const { return chosen_; }
  // True when the Proof verifies; then confirm_blob() and keys() are valid.
  bool verify(const AuthProof& proof) const;
  std::vector<uint8_t> confirm_blob() const;
  const SessionKeys& keys() const { return secrets_.keys; }

 private:
  AuthNonce nonce_{};
  Protection chosen_ = Protection::kOff;
  std::vector<uint8_t> challenge_;
  HandshakeSecrets secrets_;
};

}  // namespace hyperscsi::proto

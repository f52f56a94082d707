// Thin wrappers over OpenSSL libcrypto (EVP) for the authentication handshake
// and per-frame protection: X25519, HKDF-SHA256, HMAC-SHA256, SHA-256 and
// AES-256-GCM. No primitive is implemented here; these functions only adapt
// OpenSSL's API to spans and typed results.
//
// Secrets (private keys, derived keys) live in base::SecretBytes, which wipes
// its memory with OPENSSL_cleanse when destroyed.
// Thread-safety: free functions are thread-safe; an Aead object is used by one
// thread at a time (it keeps an EVP_CIPHER_CTX).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "hyperscsi/base/secret.h"

namespace hyperscsi::proto::crypto {

inline constexpr size_t kX25519KeySize = 32;
inline constexpr size_t kSha256Size = 32;
inline constexpr size_t kAeadKeySize = 32;    // AES-256
inline constexpr size_t kAeadNonceSize = 12;  // GCM's 96-bit IV
inline constexpr size_t kAeadTagSize = 16;

using PublicKey = std::array<uint8_t, kX25519KeySize>;
using Digest = std::array<uint8_t, kSha256Size>;

// SecretBytes and cleanse() live in base/ (hyperscsi/base/secret.h).
using base::cleanse;
using base::SecretBytes;

// Fills `out` from OpenSSL's CSPRNG. False only if the RNG failed.
bool random_bytes(std::span<uint8_t> out);

// An ephemeral X25519 key pair (the private key is wiped with the object).
struct X25519KeyPair {
  SecretBytes private_key;
  PublicKey public_key{};
};
std::optional<X25519KeyPair> x25519_generate();
// Key pair from a given private key (known-answer tests).
std::optional<X25519KeyPair> x25519_from_private(std::span<const uint8_t> private_key);
// The shared secret; nullopt for an invalid (e.g. all-zero result) peer key.
std::optional<SecretBytes> x25519_derive(const X25519KeyPair& own, const PublicKey& peer);

// HKDF-SHA256 (RFC 5869) extract-and-expand into `out` (<= 255*32 bytes).
bool hkdf_sha256(std::span<const uint8_t> salt, std::span<const uint8_t> ikm,
                 std::span<const uint8_t> info, std::span<uint8_t> out);

std::optional<Digest> hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data);
Digest sha256(std::span<const uint8_t> data);

// Constant-time comparison (CRYPTO_memcmp); false if sizes differ.
bool equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b);

// AES-256-GCM with a fixed key. seal() encrypts `inout` in place (may be
// empty: then the tag authenticates `aad` only, i.e. GMAC) and writes the tag;
// open() verifies the tag and decrypts `in` into `out` (same size; may alias).
class Aead {
 public:
  // nullptr-like (valid() false) if the key is not 32 bytes or OpenSSL fails.
  explicit Aead(std::span<const uint8_t> key);
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;
  bool valid() const { return ctx_ != nullptr; }

  bool seal(std::span<const uint8_t, kAeadNonceSize> nonce, std::span<const uint8_t> aad,
            std::span<uint8_t> inout, std::span<uint8_t, kAeadTagSize> tag);
  bool open(std::span<const uint8_t, kAeadNonceSize> nonce, std::span<const uint8_t> aad,
            std::span<const uint8_t> in, std::span<uint8_t> out,
            std::span<const uint8_t, kAeadTagSize> tag);

 private:
  struct CtxDeleter {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, CtxDeleter> ctx_;
};

}  // namespace hyperscsi::proto::crypto

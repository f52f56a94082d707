// OpenSSL libcrypto adapters; see crypto.h. Every EVP call's result is checked:
// a failure becomes a false/nullopt result, never an exception.
#include "hyperscsi/proto/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <climits>
#include <utility>

namespace hyperscsi::proto::crypto {

namespace {

EVP_CIPHER_CTX* as_ctx(void* p) {
  return static_cast<EVP_CIPHER_CTX*>(p);
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;

bool fits_int(size_t n) {
  return n <= static_cast<size_t>(INT_MAX);
}

std::optional<X25519KeyPair> pair_from(EVP_PKEY* key) {
  X25519KeyPair kp;
  kp.private_key = SecretBytes(kX25519KeySize);
  size_t priv_len = kX25519KeySize;
  size_t pub_len = kX25519KeySize;
  if (EVP_PKEY_get_raw_private_key(key, kp.private_key.span().data(), &priv_len) != 1 ||
      EVP_PKEY_get_raw_public_key(key, kp.public_key.data(), &pub_len) != 1 ||
      priv_len != kX25519KeySize || pub_len != kX25519KeySize)
    return std::nullopt;
  return kp;
}

}  // namespace

bool random_bytes(std::span<uint8_t> out) {
  return fits_int(out.size()) && RAND_bytes(out.data(), static_cast<int>(out.size())) == 1;
}

std::optional<X25519KeyPair> x25519_generate() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr));
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1) return std::nullopt;
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_keygen(ctx.get(), &raw) != 1) return std::nullopt;
  PkeyPtr key(raw);
  return pair_from(key.get());
}

std::optional<X25519KeyPair> x25519_from_private(std::span<const uint8_t> private_key) {
  if (private_key.size() != kX25519KeySize) return std::nullopt;
  PkeyPtr key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(),
                                           private_key.size()));
  if (!key) return std::nullopt;
  return pair_from(key.get());
}

std::optional<SecretBytes> x25519_derive(const X25519KeyPair& own, const PublicKey& peer) {
  if (own.private_key.size() != kX25519KeySize) return std::nullopt;
  PkeyPtr priv(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, own.private_key.span().data(),
                                            kX25519KeySize));
  PkeyPtr pub(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer.data(), peer.size()));
  if (!priv || !pub) return std::nullopt;
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(priv.get(), nullptr));
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), pub.get()) != 1)
    return std::nullopt;
  SecretBytes shared(kX25519KeySize);
  size_t len = shared.size();
  // OpenSSL rejects an all-zero shared secret (a low-order peer key) here.
  if (EVP_PKEY_derive(ctx.get(), shared.span().data(), &len) != 1 || len != kX25519KeySize)
    return std::nullopt;
  return shared;
}

bool hkdf_sha256(std::span<const uint8_t> salt, std::span<const uint8_t> ikm,
                 std::span<const uint8_t> info, std::span<uint8_t> out) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  if (!ctx || !fits_int(salt.size()) || !fits_int(ikm.size()) || !fits_int(info.size()))
    return false;
  static const uint8_t kEmpty = 0;
  if (EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), salt.empty() ? &kEmpty : salt.data(),
                                  static_cast<int>(salt.size())) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), ikm.empty() ? &kEmpty : ikm.data(),
                                 static_cast<int>(ikm.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), info.empty() ? &kEmpty : info.data(),
                                  static_cast<int>(info.size())) != 1)
    return false;
  size_t len = out.size();
  return EVP_PKEY_derive(ctx.get(), out.data(), &len) == 1 && len == out.size();
}

std::optional<Digest> hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  Digest d{};
  unsigned int len = 0;
  static const uint8_t kEmpty = 0;
  if (!fits_int(key.size())) return std::nullopt;
  if (HMAC(EVP_sha256(), key.empty() ? &kEmpty : key.data(), static_cast<int>(key.size()),
           data.empty() ? &kEmpty : data.data(), data.size(), d.data(), &len) == nullptr ||
      len != d.size())
    return std::nullopt;
  return d;
}

Digest sha256(std::span<const uint8_t> data) {
  Digest d{};
  unsigned int len = 0;
  static const uint8_t kEmpty = 0;
  EVP_Digest(data.empty() ? &kEmpty : data.data(), data.size(), d.data(), &len, EVP_sha256(),
             nullptr);
  return d;
}

bool equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void Aead::CtxDeleter::operator()(void* p) const {
  EVP_CIPHER_CTX_free(as_ctx(p));
}

Aead::Aead(std::span<const uint8_t> key) {
  if (key.size() != kAeadKeySize) return;
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) return;
  ctx_.reset(ctx);
  // The key schedule once; each seal/open only sets the nonce.
  if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), nullptr, -1) != 1)
    ctx_.reset();
}

Aead::~Aead() = default;

bool Aead::seal(std::span<const uint8_t, kAeadNonceSize> nonce, std::span<const uint8_t> aad,
                std::span<uint8_t> inout, std::span<uint8_t, kAeadTagSize> tag) {
  EVP_CIPHER_CTX* ctx = as_ctx(ctx_.get());
  if (ctx == nullptr || !fits_int(aad.size()) || !fits_int(inout.size())) return false;
  int len = 0;
  if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data(), 1) != 1) return false;
  if (!aad.empty() &&
      EVP_CipherUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1)
    return false;
  if (!inout.empty() &&
      EVP_CipherUpdate(ctx, inout.data(), &len, inout.data(), static_cast<int>(inout.size())) != 1)
    return false;
  uint8_t scratch[16];
  if (EVP_CipherFinal_ex(ctx, scratch, &len) != 1) return false;
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag.size()), tag.data()) ==
         1;
}

bool Aead::open(std::span<const uint8_t, kAeadNonceSize> nonce, std::span<const uint8_t> aad,
                std::span<const uint8_t> in, std::span<uint8_t> out,
                std::span<const uint8_t, kAeadTagSize> tag) {
  EVP_CIPHER_CTX* ctx = as_ctx(ctx_.get());
  if (ctx == nullptr || out.size() != in.size() || !fits_int(aad.size()) || !fits_int(in.size()))
    return false;
  int len = 0;
  if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data(), 0) != 1) return false;
  if (!aad.empty() &&
      EVP_CipherUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1)
    return false;
  if (!in.empty() &&
      EVP_CipherUpdate(ctx, out.data(), &len, in.data(), static_cast<int>(in.size())) != 1)
    return false;
  // OpenSSL takes a non-const pointer for the expected tag but does not modify it.
  std::array<uint8_t, kAeadTagSize> expected{};
  std::copy(tag.begin(), tag.end(), expected.begin());
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(expected.size()),
                          expected.data()) != 1)
    return false;
  uint8_t scratch[16];
  return EVP_CipherFinal_ex(ctx, scratch, &len) == 1;
}

}  // namespace hyperscsi::proto::crypto

// The libcrypto wrappers against published vectors (so a mis-wired call shows
// up as a wrong answer), and the login handshake between two in-test parties.
#include <gtest/gtest.h>

#include <string>

#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/crypto.h"

namespace hyperscsi::proto {
namespace {

std::vector<uint8_t> hex(std::string_view s) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16)));
  return out;
}

std::vector<uint8_t> bytes_of(std::string_view s) {
  return {s.begin(), s.end()};
}

template <typename C>
std::vector<uint8_t> vec(const C& c) {
  return {c.begin(), c.end()};
}

TEST(Crypto, X25519MatchesRfc7748) {
  auto alice = crypto::x25519_from_private(
      hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
  auto bob = crypto::x25519_from_private(
      hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
  ASSERT_TRUE(alice && bob);
  EXPECT_EQ(vec(alice->public_key),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
  EXPECT_EQ(vec(bob->public_key),
            hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
  auto k1 = crypto::x25519_derive(*alice, bob->public_key);
  auto k2 = crypto::x25519_derive(*bob, alice->public_key);
  ASSERT_TRUE(k1 && k2);
  const auto shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_EQ(vec(k1->span()), shared);
  EXPECT_EQ(vec(k2->span()), shared);
  // A low-order peer key (all zeros) gives no shared secret.
  EXPECT_FALSE(crypto::x25519_derive(*alice, crypto::PublicKey{}));
}

TEST(Crypto, HkdfMatchesRfc5869Case1) {
  const auto ikm = std::vector<uint8_t>(22, 0x0b);
  const auto salt = hex("000102030405060708090a0b0c");
  const auto info = hex("f0f1f2f3f4f5f6f7f8f9");
  std::vector<uint8_t> okm(42);
  ASSERT_TRUE(crypto::hkdf_sha256(salt, ikm, info, okm));
  EXPECT_EQ(okm, hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b"
                     "887185865"));
}

TEST(Crypto, HmacAndShaMatchPublishedVectors) {
  auto mac = crypto::hmac_sha256(bytes_of("Jefe"), bytes_of("what do ya want for nothing?"));
  ASSERT_TRUE(mac);
  EXPECT_EQ(vec(*mac), hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
  EXPECT_EQ(vec(crypto::sha256(bytes_of("abc"))),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}

TEST(Crypto, AesGcmMatchesGcmSpecAndRejectsTampering) {
  crypto::Aead aead(std::vector<uint8_t>(32, 0));
  ASSERT_TRUE(aead.valid());
  std::array<uint8_t, 12> iv{};
  std::array<uint8_t, 16> tag{};
  // GCM specification test cases 13 and 14 (256-bit zero key, zero IV).
  ASSERT_TRUE(aead.seal(iv, {}, {}, tag));
  EXPECT_EQ(vec(tag), hex("530f8afbc74536b9a963b4f1c4cb738b"));
  std::vector<uint8_t> block(16, 0);
  ASSERT_TRUE(aead.seal(iv, {}, block, tag));
  EXPECT_EQ(block, hex("cea7403d4d606b6e074ec5d3baf39d18"));
  EXPECT_EQ(vec(tag), hex("d0d1c8a799996bf0265b98b5d48ab919"));

  std::vector<uint8_t> plain(16);
  EXPECT_TRUE(aead.open(iv, {}, block, plain, tag));
  EXPECT_EQ(plain, std::vector<uint8_t>(16, 0));
  block[3] ^= 1;
  EXPECT_FALSE(aead.open(iv, {}, block, plain, tag));
  block[3] ^= 1;
  const auto aad = bytes_of("header");
  EXPECT_FALSE(aead.open(iv, aad, block, plain, tag));  // AAD is authenticated too
  EXPECT_FALSE(crypto::Aead(std::vector<uint8_t>(16, 0)).valid());
}

TEST(Crypto, SecretBytesAreWipedAndComparedInConstantTime) {
  crypto::SecretBytes s(bytes_of("0123456789abcdef"));
  EXPECT_EQ(s.size(), 16u);
  s.wipe();
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(crypto::equal_ct(bytes_of("abc"), bytes_of("abc")));
  EXPECT_FALSE(crypto::equal_ct(bytes_of("abc"), bytes_of("abd")));
  EXPECT_FALSE(crypto::equal_ct(bytes_of("abc"), bytes_of("ab")));
}

// ------------------------------------------------------------------ handshake

crypto::SecretBytes secret(std::string_view s) {
  return crypto::SecretBytes(bytes_of(s));
}

struct Attempt {
  std::optional<InitiatorHandshake> ini;
  std::optional<TargetHandshake> tgt;
  std::optional<std::vector<uint8_t>> proof;
};

Attempt handshake(std::string_view ini_secret, std::string_view tgt_secret, Protection wanted,
                  Protection required) {
  Attempt r;
  r.ini = InitiatorHandshake::start(secret(ini_secret), wanted);
  EXPECT_TRUE(r.ini);
  r.tgt = TargetHandshake::start(r.ini->hello(), secret(tgt_secret), required, "iqn.i", "iqn.t");
  EXPECT_TRUE(r.tgt);
  r.proof = r.ini->answer(r.tgt->challenge(), "iqn.i", "iqn.t");
  return r;
}

TEST(Handshake, SameSecretAuthenticatesBothSidesAndAgreesOnKeys) {
  Attempt r = handshake("a-long-shared-secret", "a-long-shared-secret", Protection::kIntegrity,
                        Protection::kEncrypt);
  ASSERT_TRUE(r.proof);
  auto proof = decode_auth_proof(*r.proof);
  ASSERT_TRUE(proof);
  ASSERT_TRUE(r.tgt->verify(*proof));
  EXPECT_EQ(r.tgt->chosen(), Protection::kEncrypt);  // the stronger of wanted and required
  ASSERT_TRUE(r.ini->confirm(r.tgt->confirm_blob()));
  const SessionKeys& a = r.ini->keys();
  const SessionKeys& b = r.tgt->keys();
  EXPECT_EQ(a.protection, Protection::kEncrypt);
  EXPECT_EQ(vec(a.initiator_to_target.span()), vec(b.initiator_to_target.span()));
  EXPECT_EQ(vec(a.target_to_initiator.span()), vec(b.target_to_initiator.span()));
  EXPECT_NE(vec(a.initiator_to_target.span()), vec(a.target_to_initiator.span()));
  EXPECT_EQ(a.salt_i2t, b.salt_i2t);
}

TEST(Handshake, WrongSecretFailsOnBothSides) {
  Attempt r =
      handshake("the-initiators-guess", "the-real-secret-xx", Protection::kOff, Protection::kOff);
  ASSERT_TRUE(r.proof);  // the initiator cannot tell before the target answers
  EXPECT_FALSE(r.tgt->verify(*decode_auth_proof(*r.proof)));
  // And a target with the wrong secret cannot produce a confirmation.
  EXPECT_FALSE(r.ini->confirm(r.tgt->confirm_blob()));
}

TEST(Handshake, ARecordedProofDoesNotVerifyAgainstALaterAttempt) {
  Attempt first =
      handshake("a-long-shared-secret", "a-long-shared-secret", Protection::kOff, Protection::kOff);
  ASSERT_TRUE(first.proof);
  auto replayed = decode_auth_proof(*first.proof);
  ASSERT_TRUE(replayed);
  // The attacker replays the initiator's Hello: the target answers with a
  // fresh nonce and key, so the old proof names another attempt...
  auto second = TargetHandshake::start(first.ini->hello(), secret("a-long-shared-secret"),
                                       Protection::kOff, "iqn.i", "iqn.t");
  ASSERT_TRUE(second);
  EXPECT_FALSE(second->verify(*replayed));
  // ...and even with the nonce patched in, the MAC is over another transcript.
  AuthProof patched = *replayed;
  patched.target_nonce = second->nonce();
  EXPECT_FALSE(second->verify(patched));
}

TEST(Handshake, ADowngradedChallengeIsDetected) {
  auto ini = InitiatorHandshake::start(secret("a-long-shared-secret"), Protection::kOff);
  auto tgt = TargetHandshake::start(ini->hello(), secret("a-long-shared-secret"),
                                    Protection::kEncrypt, "iqn.i", "iqn.t");
  ASSERT_TRUE(ini && tgt);
  auto challenge = tgt->challenge();
  challenge[2] = static_cast<uint8_t>(Protection::kOff);  // a MITM lowers the level
  auto proof = ini->answer(challenge, "iqn.i", "iqn.t");
  ASSERT_TRUE(proof);
  EXPECT_FALSE(tgt->verify(*decode_auth_proof(*proof)));
}

TEST(Handshake, LessThanWantedProtectionIsRefusedByTheInitiator) {
  auto ini = InitiatorHandshake::start(secret("a-long-shared-secret"), Protection::kEncrypt);
  ASSERT_TRUE(ini);
  AuthChallenge c;
  c.chosen = Protection::kIntegrity;
  c.public_key = crypto::x25519_generate()->public_key;
  EXPECT_FALSE(ini->answer(encode(c), "iqn.i", "iqn.t"));
}

TEST(Handshake, MalformedBlobsAreTypedErrors) {
  EXPECT_FALSE(auth_step(std::vector<uint8_t>{}));
  EXPECT_FALSE(auth_step(std::vector<uint8_t>{9, 1}));             // unknown version
  EXPECT_FALSE(auth_step(std::vector<uint8_t>{1, 7}));             // unknown step
  EXPECT_FALSE(decode_auth_hello(std::vector<uint8_t>{1, 1, 0}));  // short
  AuthHello h;
  auto blob = encode(h);
  blob[2] = 3;  // no such protection level
  EXPECT_FALSE(decode_auth_hello(blob));
  EXPECT_EQ(parse_protection("encrypt"), Protection::kEncrypt);
  EXPECT_FALSE(parse_protection("strong"));
}

}  // namespace
}  // namespace hyperscsi::proto

// Authenticated logins and protected sessions between a real InitiatorSession
// and TargetEndpoint exchanging encoded frames over the in-test channel
// (tests/proto/session_lab.h): each attack is rejected and counted, and the
// session it aimed at keeps working with correct data.
#include <gtest/gtest.h>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/initiator_paths.h"
#include "hyperscsi/proto/initiator_session.h"
#include "hyperscsi/proto/path_auth.h"
#include "hyperscsi/proto/target_session.h"
#include "session_lab.h"

namespace hyperscsi::proto {
namespace {

using test::Executor;
using test::Lab;
using test::mac;
using test::Node;
using test::node_of;
using test::read_command;

const MacAddress kInitMac = mac(0x01);
const MacAddress kTargetMac = mac(0x10);
const MacAddress kOtherMac = mac(0x66);
constexpr std::string_view kInitiatorName = "iqn.test:client";
constexpr std::string_view kSecret = "correct horse battery staple";

crypto::SecretBytes secret(std::string_view s) {
  return crypto::SecretBytes(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

// The target's policy: kInitiatorName shares kSecret; authenticated sessions
// need `level`; unauthenticated ones see nothing unless `open` is set.
SecurityPolicy policy(Protection level, bool open = false) {
  SecurityPolicy p;
  p.secret_for = [](std::string_view name) -> std::optional<crypto::SecretBytes> {
    if (name == kInitiatorName) return secret(kSecret);
    return std::nullopt;
  };
  p.required_protection = [level, open](std::string_view, const MacAddress&,
                                        bool authenticated) -> std::optional<Protection> {
    if (authenticated) return level;
    if (open) return Protection::kOff;
    return std::nullopt;
  };
  return p;
}

struct Secured {
  Secured(std::string_view ini_secret, Protection wanted, SecurityPolicy sp,
          LoginPolicy login_policy = {}, bool multipath = false)
      : initiator(initiator_config(ini_secret, wanted, multipath)),
        target(target_config(multipath), std::move(login_policy)) {
    target.set_security(std::move(sp));
    lab.add(node_of(kInitMac, initiator));
    lab.add(node_of(kTargetMac, target));
    exec.target = &target;
    lab.after_step = [this] { exec.run(); };
    // Every frame on the channel, as sent (for replays and tampering).
    lab.drop_if = [this](const FrameView& f) {
      wire.emplace_back(f.raw.begin(), f.raw.end());
      if (hold_next && f.header.common.opcode == *hold_next) {
        held.assign(f.raw.begin(), f.raw.end());  // intercepted before delivery
        hold_next.reset();
        return true;
      }
      return false;
    };
  }
  static InitiatorConfig initiator_config(std::string_view s, Protection wanted,
                                          bool multipath = false) {
    InitiatorConfig c;
    if (multipath) c.features |= kFeatureMultipath;
    c.local_mac = kInitMac;
    c.initiator_name = std::string(kInitiatorName);
    c.mtu = 1500;
    c.seed = 7;
    if (!s.empty()) c.secret = secret(s);
    c.protection = wanted;
    return c;
  }
  static TargetConfig target_config(bool multipath = false) {
    TargetConfig c;
    if (multipath) c.multipath_ports = {{kTargetMac, 1500}, {kOtherMac, 1500}};
    c.local_mac = kTargetMac;
    c.target_name = "iqn.2026-11.test:disk";
    c.limits.mtu = 1500;
    c.seed = 42;
    return c;
  }
  bool login() {
    if (!initiator.login(kTargetMac, target.config().target_name, lab.now)) return false;
    lab.run_until(
        [&] {
          return initiator.state() != InitiatorState::kLoggingIn &&
                 initiator.state() != InitiatorState::kVerifyingMtu;
        },
        seconds(10));
    return initiator.established();
  }
  // A READ of `length` bytes answered by the executor; true if the data is right.
  bool read_ok(uint32_t cmd_sn, uint32_t length) {
    if (!initiator.send_command(static_cast<uint16_t>(cmd_sn % 500),
                                read_command(cmd_sn, cmd_sn, length)))
      return false;
    std::optional<ReceivedPdu> reply;
    if (!lab.run_until([&] { return (reply = initiator.pop_reply()).has_value(); }, seconds(5)))
      return false;
    return reply->bytes == Executor::reply_for(cmd_sn, length);
  }
  // Hands raw bytes to the target as if they arrived on its port.
  void deliver_to_target(const std::vector<uint8_t>& bytes) {
    auto d = decode_frame(bytes);
    ASSERT_TRUE(d);
    target.on_frame(d.value(), lab.now);
  }
  std::vector<std::vector<uint8_t>> frames(Opcode op, const MacAddress& src) const {
    std::vector<std::vector<uint8_t>> out;
    for (const auto& f : wire) {
      auto d = decode_frame(f);
      if (d && d->header.common.opcode == op && d->header.src == src) out.push_back(f);
    }
    return out;
  }

  Lab lab;
  InitiatorSession initiator;
  TargetEndpoint target;
  Executor exec;
  std::vector<std::vector<uint8_t>> wire;
  std::optional<Opcode> hold_next;  // intercept the next frame with this opcode
  std::vector<uint8_t> held;
};

class Levels : public ::testing::TestWithParam<Protection> {};

TEST_P(Levels, CorrectSecretLogsInAndMovesData) {
  Secured s(kSecret, GetParam(), policy(GetParam()));
  ASSERT_TRUE(s.login()) << s.initiator.failure().describe();
  EXPECT_TRUE(s.initiator.authenticated());
  EXPECT_EQ(s.initiator.protection(), GetParam());
  auto info = s.target.sessions();
  ASSERT_EQ(info.size(), 1u);
  EXPECT_TRUE(info[0].authenticated);
  EXPECT_EQ(info[0].protection, GetParam());
  EXPECT_EQ(s.target.stats().auth_challenges, 1u);
  EXPECT_EQ(s.target.stats().auth_successes, 1u);
  // Single- and multi-frame replies, each byte checked.
  for (uint32_t sn = 1; sn <= 20; ++sn) ASSERT_TRUE(s.read_ok(sn, sn % 2 ? 512 : 64 * 1024)) << sn;
  // What crossed the wire: protected frames (when asked), and no payload in
  // clear when encrypting.
  const auto replies = s.frames(Opcode::kCommandReply, kTargetMac);
  ASSERT_FALSE(replies.empty());
  const auto expected = Executor::reply_for(2, 64 * 1024);
  const std::vector<uint8_t> probe(expected.end() - 64, expected.end() - 32);
  bool clear_seen = false;
  for (const auto& f : replies) {
    auto d = decode_frame(f);
    ASSERT_TRUE(d);
    EXPECT_EQ((d->header.ext.flags & kFlagProtected) != 0, GetParam() != Protection::kOff);
    if (std::search(f.begin(), f.end(), probe.begin(), probe.end()) != f.end()) clear_seen = true;
  }
  EXPECT_EQ(clear_seen, GetParam() != Protection::kEncrypt);
  EXPECT_EQ(s.target.stats().frames_bad_tag + s.target.stats().frames_replayed +
                s.target.stats().frames_unprotected,
            0u);
  // Full-size frames with the trailer still fit the MTU (the probe passed),
  // and an orderly disconnect is protected too.
  ASSERT_TRUE(s.initiator.disconnect(s.lab.now));
  ASSERT_TRUE(
      s.lab.run_until([&] { return s.initiator.state() == InitiatorState::kClosed; }, seconds(2)));
  EXPECT_EQ(s.target.session_count(), 0u);
  EXPECT_EQ(s.target.stats().disconnects, 1u);
}

INSTANTIATE_TEST_SUITE_P(Protection, Levels,
                         ::testing::Values(Protection::kOff, Protection::kIntegrity,
                                           Protection::kEncrypt));

// A protected multipath session (docs/protocol.md 14.6): its login path seals
// with path 0 generation 0's derived keys, never with the login's keys (the
// root of every path's keys), and the initiator keeps that root for its paths.
TEST_P(Levels, MultipathSessionSealsItsLoginPathWithThePathsOwnKeys) {
  Secured s(kSecret, GetParam(), policy(GetParam()), {}, /*multipath=*/true);
  ASSERT_TRUE(s.login()) << s.initiator.failure().describe();
  ASSERT_TRUE(s.initiator.multipath());
  EXPECT_EQ(s.initiator.target_ports().size(), 2u);
  ASSERT_TRUE(s.initiator.multipath_keys().has_value());
  for (uint32_t sn = 1; sn <= 6; ++sn) ASSERT_TRUE(s.read_ok(sn, sn % 2 ? 512 : 64 * 1024)) << sn;
  if (GetParam() == Protection::kOff) return;
  const SessionKeys& root = *s.initiator.multipath_keys();
  const auto path0 =
      derive_path_frame_keys(root, s.initiator.session_id(), s.initiator.epoch(), 0, 0);
  ASSERT_TRUE(path0.has_value());
  const auto replies = s.frames(Opcode::kCommandReply, kTargetMac);
  ASSERT_FALSE(replies.empty());
  for (const auto& f : replies) {
    auto d = decode_frame(f);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->header.ext.path_id, 0);
    EXPECT_EQ(d->header.ext.path_gen, 0);
    std::vector<uint8_t> scratch;
    FrameView out;
    FrameOpener with_root(GetParam(), root.target_to_initiator.span(), root.salt_t2i);
    EXPECT_EQ(with_root.open(d.value(), scratch, out), OpenVerdict::kBadTag);
    FrameOpener with_path(GetParam(), path0->target_to_initiator.span(), path0->salt_t2i);
    EXPECT_EQ(with_path.open(d.value(), scratch, out), OpenVerdict::kOk);
  }
}

// The goodbyes of a protected session are protected too, single-path and
// multipath, whichever side ends it: the target's answer to a Disconnect
// and its own Disconnect leave sealed (a multipath session's with its path's
// keys), so the initiator closes on the answer at once instead of ignoring
// an unprotected frame and giving up after its retries (the bug: the
// session was freed before its answer left, and a multipath session had no
// session-level sealer at all).
class Goodbyes : public ::testing::TestWithParam<std::tuple<Protection, bool>> {};

TEST_P(Goodbyes, TheDisconnectAnswerIsSealedAndClosesTheInitiatorAtOnce) {
  const auto [level, multipath] = GetParam();
  Secured s(kSecret, level, policy(level), {}, multipath);
  ASSERT_TRUE(s.login()) << s.initiator.failure().describe();
  ASSERT_EQ(s.initiator.multipath(), multipath);
  for (uint32_t sn = 1; sn <= 4; ++sn) ASSERT_TRUE(s.read_ok(sn, 64 * 1024)) << sn;
  const TimePoint start = s.lab.now;
  ASSERT_TRUE(s.initiator.disconnect(s.lab.now));
  ASSERT_TRUE(
      s.lab.run_until([&] { return s.initiator.state() == InitiatorState::kClosed; }, seconds(2)));
  // Closed by the answer, not by giving up after its retries.
  EXPECT_EQ(s.initiator.stats().disconnects_sent, 1u);
  EXPECT_LT(s.lab.now - start, milliseconds(100));
  // The answer (RESPONSE) went out sealed. (The initiator's last ack,
  // arriving after the session closed, gets the unprotected rejection of
  // 10.6: rejections are never protected, and a protected session ignores it.)
  std::vector<std::vector<uint8_t>> answers;
  for (const auto& f : s.frames(Opcode::kDisconnect, kTargetMac))
    if ((decode_frame(f)->header.ext.flags & kFlagResponse) != 0) answers.push_back(f);
  ASSERT_EQ(answers.size(), 1u);
  const auto d = decode_frame(answers[0]);
  ASSERT_TRUE(d);
  EXPECT_NE(d->header.ext.flags & kFlagProtected, 0) << "the answer left unprotected";
  EXPECT_EQ(s.target.session_count(), 0u);
}

TEST_P(Goodbyes, TheTargetsOwnDisconnectIsSealedAndEndsTheSession) {
  const auto [level, multipath] = GetParam();
  Secured s(kSecret, level, policy(level), {}, multipath);
  ASSERT_TRUE(s.login()) << s.initiator.failure().describe();
  for (uint32_t sn = 1; sn <= 4; ++sn) ASSERT_TRUE(s.read_ok(sn, 64 * 1024)) << sn;
  ASSERT_TRUE(
      s.target.disconnect(s.initiator.session_id(), DisconnectReason::kShutdown, s.lab.now));
  ASSERT_TRUE(s.lab.run_until([&] { return s.initiator.state() == InitiatorState::kDisconnected; },
                              seconds(1)))
      << "the initiator ignored the target's Disconnect (unprotected: "
      << s.initiator.stats().frames_unprotected << ")";
  EXPECT_EQ(s.initiator.failure().error, SessionError::kDisconnectedByPeer);
  EXPECT_EQ(s.initiator.failure().reason, DisconnectReason::kShutdown);
  // Its own Disconnect left sealed; any unprotected one is a rejection
  // (reason 1) of the initiator's frames that came after the close.
  size_t sealed = 0;
  for (const auto& f : s.frames(Opcode::kDisconnect, kTargetMac)) {
    const auto d = decode_frame(f);
    ASSERT_TRUE(d);
    if ((d->header.ext.flags & kFlagProtected) != 0) {
      ++sealed;
      continue;
    }
    const auto body = decode_disconnect(d->payload);
    ASSERT_TRUE(body);
    EXPECT_EQ(body->reason, DisconnectReason::kUnknownSession) << "sent in clear";
  }
  EXPECT_EQ(sealed, 1u);
}

INSTANTIATE_TEST_SUITE_P(Protected, Goodbyes,
                         ::testing::Combine(::testing::Values(Protection::kIntegrity,
                                                              Protection::kEncrypt),
                                            ::testing::Bool()));

// The initiator's login path of a protected multipath session is sealed by
// its login session first (MTU verification, and its Disconnect at the
// end) and by the PathSet's path 0 in between, on the same keys: the path
// must go on with the session's sealer and opener (SharedProtection), or it
// starts its counter at 1 again, using nonces twice (AES-GCM then gives its
// authentication key away) and the target drops those frames as replays,
// the final Disconnect included (the session was left to its dead time).
TEST(MultipathProtection, TheLoginPathGoesOnWithTheLoginSessionsCounters) {
  Secured s(kSecret, Protection::kEncrypt, policy(Protection::kEncrypt), {}, /*multipath=*/true);
  ASSERT_TRUE(s.login()) << s.initiator.failure().describe();
  for (uint32_t sn = 1; sn <= 3; ++sn) ASSERT_TRUE(s.read_ok(sn, 4096)) << sn;
  const SharedProtection prot = s.initiator.login_path_protection();
  ASSERT_TRUE(prot.sealer && prot.opener);
  const uint64_t used = prot.sealer->frames_sealed();
  ASSERT_GT(used, 0u);

  for (const bool shared : {true, false}) {
    InitiatorPathsConfig ic;
    ic.transport.role = PathRole::kInitiator;
    ic.transport.session_id = s.initiator.session_id();
    ic.transport.epoch = s.initiator.epoch();
    ic.keys = s.initiator.multipath_keys();
    if (shared) ic.login_protection = prot;
    PathSpec login;
    login.local = kInitMac;
    login.peer = kTargetMac;
    login.mtu = 1500;
    InitiatorPaths paths(ic, login, s.lab.now);
    ASSERT_NE(paths.transport().send_probe(0, 0), 0u);
    test::VecSink sink;
    paths.poll(s.lab.now, sink);
    ASSERT_EQ(sink.frames.size(), 1u);
    const std::vector<uint8_t>& f = sink.frames[0];
    // The trailer: u64 counter, then the 16-byte tag.
    const uint64_t counter = bytes::load_be64(f.data() + f.size() - kProtectionTrailerSize);
    if (shared) {
      EXPECT_EQ(counter, used + 1) << "the path's first frame must follow the session's last";
      // The target's path 0 takes it (a fresh counter, not a replay).
      const auto before = s.target.sessions().at(0).paths.at(0).counters.protection_drops;
      s.deliver_to_target(f);
      const auto after = s.target.sessions().at(0).paths.at(0).counters.protection_drops;
      EXPECT_EQ(after.replayed, before.replayed);
      EXPECT_EQ(after.bad_tag, before.bad_tag);
    } else {
      EXPECT_EQ(counter, 1u);  // what happened before: a nonce the session had used
    }
  }
  // The session's own Disconnect, after the path's frame, still gets through.
  ASSERT_TRUE(s.initiator.disconnect(s.lab.now));
  ASSERT_TRUE(
      s.lab.run_until([&] { return s.initiator.state() == InitiatorState::kClosed; }, seconds(2)));
  EXPECT_EQ(s.initiator.stats().disconnects_sent, 1u);
  EXPECT_EQ(s.target.session_count(), 0u);
}

TEST(Auth, WrongSecretIsRefusedAndCounted) {
  Secured s("not the secret at all", Protection::kEncrypt, policy(Protection::kEncrypt));
  EXPECT_FALSE(s.login());
  EXPECT_EQ(s.initiator.state(), InitiatorState::kFailed);
  EXPECT_EQ(s.initiator.failure().error, SessionError::kLoginRejected);
  EXPECT_EQ(s.initiator.failure().login_status, LoginStatus::kAuthFailed);
  EXPECT_EQ(s.target.stats().auth_failures, 1u);
  EXPECT_EQ(s.target.session_count(), 0u);
}

TEST(Auth, MissingSecretWhereTheTargetRequiresOneIsRefused) {
  Secured s("", Protection::kOff, policy(Protection::kIntegrity));
  EXPECT_FALSE(s.login());
  EXPECT_EQ(s.initiator.failure().login_status, LoginStatus::kAuthFailed);
  EXPECT_EQ(s.target.stats().auth_failures, 1u);
  // Where the policy lets unauthenticated initiators see something, they log
  // in unprotected and unauthenticated.
  Secured open("", Protection::kOff, policy(Protection::kIntegrity, /*open=*/true));
  ASSERT_TRUE(open.login());
  EXPECT_FALSE(open.initiator.authenticated());
  EXPECT_FALSE(open.target.sessions()[0].authenticated);
}

TEST(Auth, UnknownInitiatorNameIsRefused) {
  Secured s(kSecret, Protection::kOff, policy(Protection::kOff));
  s.initiator.~InitiatorSession();
  InitiatorConfig c = Secured::initiator_config(kSecret, Protection::kOff);
  c.initiator_name = "iqn.test:stranger";
  new (&s.initiator) InitiatorSession(c);
  EXPECT_FALSE(s.login());
  EXPECT_EQ(s.initiator.failure().login_status, LoginStatus::kAuthFailed);
  EXPECT_EQ(s.target.stats().auth_failures, 1u);
}

TEST(Auth, AnImpostorTargetIsDetectedByTheInitiator) {
  // The target knows another secret for this name: the initiator's proof
  // fails there, and had the target accepted, its confirmation would not verify.
  SecurityPolicy sp = policy(Protection::kOff);
  sp.secret_for = [](std::string_view) -> std::optional<crypto::SecretBytes> {
    return secret("the impostor's guess at it");
  };
  Secured s(kSecret, Protection::kOff, std::move(sp));
  EXPECT_FALSE(s.login());
  EXPECT_EQ(s.initiator.failure().login_status, LoginStatus::kAuthFailed);
  EXPECT_EQ(s.target.session_count(), 0u);
}

TEST(Auth, ReplayedLoginIsRejectedAndCounted) {
  Secured s(kSecret, Protection::kIntegrity, policy(Protection::kIntegrity));
  ASSERT_TRUE(s.login());
  const auto logins = s.frames(Opcode::kLoginRequest, kInitMac);
  ASSERT_EQ(logins.size(), 2u);  // Hello, Proof
  ASSERT_TRUE(s.initiator.disconnect(s.lab.now));
  ASSERT_TRUE(s.lab.run_until([&] { return s.target.session_count() == 0; }, seconds(2)));

  // An attacker re-sends the whole recorded login.
  s.deliver_to_target(logins[0]);
  s.deliver_to_target(logins[1]);
  s.lab.run_for(milliseconds(10));
  EXPECT_EQ(s.target.session_count(), 0u);
  EXPECT_EQ(s.target.stats().auth_replays, 1u);
  EXPECT_EQ(s.target.stats().auth_successes, 1u);
  // The replayed Hello only got a fresh challenge the attacker cannot answer.
  EXPECT_EQ(s.target.stats().auth_challenges, 2u);
  // The real initiator still logs in afterwards.
  ASSERT_TRUE(s.login());
  EXPECT_TRUE(s.read_ok(1, 4096));
}

TEST(Auth, ChallengesAreBoundedInNumberAndAge) {
  SecurityPolicy sp = policy(Protection::kOff);
  sp.max_pending = 4;
  Secured s(kSecret, Protection::kOff, std::move(sp));
  ASSERT_TRUE(s.login());
  const auto hello = s.frames(Opcode::kLoginRequest, kInitMac).at(0);
  ASSERT_TRUE(s.initiator.disconnect(s.lab.now));
  s.lab.run_for(milliseconds(50));
  for (int i = 0; i < 20; ++i) s.deliver_to_target(hello);  // a flood of Hellos
  EXPECT_EQ(s.target.stats().auth_evicted, 20u - 4u);
  // A proof arriving after the lifetime names a void challenge.
  s.lab.run_for(seconds(6));
  ASSERT_TRUE(s.login());
  EXPECT_TRUE(s.initiator.authenticated());
}

class Attacks : public ::testing::TestWithParam<Protection> {};

TEST_P(Attacks, ForgedModifiedAndReplayedFramesAreDroppedAndTheSessionGoesOn) {
  Secured s(kSecret, GetParam(), policy(GetParam()));
  ASSERT_TRUE(s.login());
  ASSERT_TRUE(s.read_ok(1, 8192));
  // Intercept the next command frame before the target sees it.
  s.hold_next = Opcode::kCommandRequest;
  ASSERT_TRUE(s.initiator.send_command(2, read_command(2, 2, 4096)));
  ASSERT_TRUE(s.lab.run_until([&] { return !s.hold_next; }, seconds(1)));
  const std::vector<uint8_t> original = s.held;
  const TargetStats before = s.target.stats();

  // 1. A byte of the payload flipped on the way.
  auto modified = original;
  modified[kEthernetHeaderSize + kHeaderSize + 2] ^= 0x01;
  s.deliver_to_target(modified);
  // 2. A header field changed (the advertised window).
  auto header = original;
  header[kEthernetHeaderSize + 14] ^= 0x40;
  s.deliver_to_target(header);
  // 3. A guessed tag.
  auto guessed = original;
  const size_t trailer_at =
      kEthernetHeaderSize + kHeaderSize + decode_frame(original).value().payload.size();
  for (size_t i = trailer_at + 8; i < trailer_at + 24; ++i) guessed[i] = 0xAB;
  s.deliver_to_target(guessed);
  EXPECT_EQ(s.target.stats().frames_bad_tag, before.frames_bad_tag + 3);
  EXPECT_EQ(s.target.stats().frames_replayed, before.frames_replayed);
  // 4. The genuine frame passes once; a second copy is a replay.
  s.deliver_to_target(original);
  s.deliver_to_target(original);
  EXPECT_EQ(s.target.stats().frames_replayed, before.frames_replayed + 1);
  EXPECT_EQ(s.target.stats().frames_bad_tag, before.frames_bad_tag + 3);
  // 5. An unprotected frame with the session's id and epoch (as a spoofer
  //    who sniffed them would send): the disconnect it asks for is ignored.
  FrameHeader h;
  h.src = kInitMac;
  h.dst = kTargetMac;
  h.common.opcode = Opcode::kDisconnect;
  h.ext.session_id = s.initiator.session_id();
  h.ext.epoch = s.initiator.epoch();
  std::vector<uint8_t> body;
  encode(Disconnect{DisconnectReason::kNormal}, body);
  s.lab.inject(1, h, body);
  EXPECT_EQ(s.target.stats().frames_unprotected, before.frames_unprotected + 1);
  EXPECT_EQ(s.target.session_count(), 1u);

  std::optional<ReceivedPdu> reply;
  ASSERT_TRUE(
      s.lab.run_until([&] { return (reply = s.initiator.pop_reply()).has_value(); }, seconds(5)));
  EXPECT_EQ(reply->bytes, Executor::reply_for(2, 4096));

  // The same against the initiator: a modified reply frame, then a replay.
  s.hold_next = Opcode::kCommandReply;
  ASSERT_TRUE(s.initiator.send_command(3, read_command(3, 3, 512)));
  ASSERT_TRUE(s.lab.run_until([&] { return !s.hold_next; }, seconds(1)));
  auto bad_reply = s.held;
  bad_reply[kEthernetHeaderSize + kHeaderSize + 1] ^= 0x80;
  s.initiator.on_frame(decode_frame(bad_reply).value(), s.lab.now);
  EXPECT_EQ(s.initiator.stats().frames_bad_tag, 1u);
  s.initiator.on_frame(decode_frame(s.held).value(), s.lab.now);
  s.initiator.on_frame(decode_frame(s.held).value(), s.lab.now);
  EXPECT_EQ(s.initiator.stats().frames_replayed, 1u);
  ASSERT_TRUE(
      s.lab.run_until([&] { return (reply = s.initiator.pop_reply()).has_value(); }, seconds(5)));
  EXPECT_EQ(reply->bytes, Executor::reply_for(3, 512));

  // Nothing of that harmed the session: more commands, correct data.
  for (uint32_t sn = 4; sn <= 8; ++sn) ASSERT_TRUE(s.read_ok(sn, 32 * 1024)) << sn;
  EXPECT_TRUE(s.initiator.established());
  EXPECT_EQ(s.target.stats().disconnects, 0u);
}

INSTANTIATE_TEST_SUITE_P(Protection, Attacks,
                         ::testing::Values(Protection::kIntegrity, Protection::kEncrypt));

TEST(AccessList, AFrameFromAMacNotAllowedIsNotServedAndCounted) {
  // MAC-based admission (spoofable, but kept): only kInitMac may log in.
  LoginPolicy by_mac = [](const LoginRequest&, const MacAddress& m) {
    return m == kInitMac ? LoginStatus::kOk : LoginStatus::kAccessDenied;
  };
  Secured s(kSecret, Protection::kEncrypt, policy(Protection::kEncrypt), by_mac);
  ASSERT_TRUE(s.login());
  // Another station sends the session's frames from its own MAC: not served.
  auto stolen = s.frames(Opcode::kCommandRequest, kInitMac);
  ASSERT_TRUE(s.read_ok(1, 512));
  stolen = s.frames(Opcode::kCommandRequest, kInitMac);
  auto from_other = stolen.back();
  std::copy(kOtherMac.begin(), kOtherMac.end(), from_other.begin() + 6);
  const uint64_t executed = s.exec.executions.size();
  s.deliver_to_target(from_other);
  s.lab.run_for(milliseconds(5));
  EXPECT_EQ(s.target.stats().unknown_session, 1u);
  EXPECT_EQ(s.exec.executions.size(), executed);
  // And its own login is refused by the access list.
  LoginRequest req;
  req.nonce = 99;
  req.mtu = 1500;
  req.window = 64;
  req.max_transfer = 1u << 20;
  req.initiator_name = std::string(kInitiatorName);
  std::vector<uint8_t> body;
  encode(req, body);
  FrameHeader h;
  h.src = kOtherMac;
  h.dst = kTargetMac;
  h.common.opcode = Opcode::kLoginRequest;
  s.lab.inject(1, h, body);
  EXPECT_EQ(s.target.stats().logins_refused, 1u);
  EXPECT_EQ(s.target.session_count(), 1u);
  EXPECT_TRUE(s.read_ok(2, 512));
}

}  // namespace
}  // namespace hyperscsi::proto

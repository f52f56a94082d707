// Session state machines end to end: DiscoveryClient, InitiatorSession and
// TargetEndpoint exchanging real encoded frames through an in-test channel
// (session_lab.h) under a virtual clock.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>

#include "hyperscsi/proto/discovery.h"
#include "hyperscsi/proto/initiator_session.h"
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

TargetConfig target_config(const std::string& name = "iqn.2026-11.test:disk",
                           const MacAddress& m = kTargetMac) {
  TargetConfig c;
  c.local_mac = m;
  c.target_name = name;
  c.limits.mtu = 9000;
  c.limits.keepalive_ms = 1000;
  c.limits.dead_time_ms = 5000;
  c.seed = 42;
  return c;
}

InitiatorConfig initiator_config(uint16_t mtu = 1500, const std::string& name = "iqn.test:client") {
  InitiatorConfig c;
  c.local_mac = kInitMac;
  c.initiator_name = name;
  c.mtu = mtu;
  c.seed = 7;
  return c;
}

// One initiator and one target on one channel, with the target's executor.
struct Pair {
  explicit Pair(InitiatorConfig ic = initiator_config(), TargetConfig tc = target_config(),
                LoginPolicy policy = {})
      : initiator(std::move(ic)),
        target(std::make_unique<TargetEndpoint>(std::move(tc), std::move(policy))) {
    lab.add(node_of(kInitMac, initiator));
    lab.add(Node{kTargetMac, [this](const FrameView& f, TimePoint t) { target->on_frame(f, t); },
                 [this](TimePoint t, FrameSink& s) { target->poll(t, s); }});
    exec.target = target.get();
    lab.after_step = [this] { exec.run(); };
  }
  bool login() {
    if (!initiator.login(kTargetMac, target->config().target_name, lab.now)) return false;
    return lab.run_until(
        [&] {
          return initiator.state() != InitiatorState::kLoggingIn &&
                 initiator.state() != InitiatorState::kVerifyingMtu;
        },
        seconds(10));
  }
  // Restarts the target process: all its sessions are forgotten.
  void restart_target(TargetConfig tc) {
    target = std::make_unique<TargetEndpoint>(std::move(tc));
    exec = Executor{};
    exec.target = target.get();
  }
  std::vector<TargetEvent> events() {
    std::vector<TargetEvent> v;
    while (auto e = target->pop_event()) v.push_back(*e);
    return v;
  }

  Lab lab;
  InitiatorSession initiator;
  std::unique_ptr<TargetEndpoint> target;
  Executor exec;
};

// ---------------------------------------------------------------- discovery

TEST(Discovery, FindsTwoTargetsAndHonoursTheNameFilter) {
  auto luns_a = [](std::string_view initiator, const MacAddress&) {
    std::vector<LunInfo> v{{0, false, 512, 1000}, {1, true, 4096, 50}};
    if (initiator == "iqn.test:restricted") v.pop_back();  // an access list hides LUN 1
    return v;
  };
  TargetEndpoint a(target_config("iqn.test:a", mac(0x10)), {}, luns_a);
  TargetEndpoint b(target_config("iqn.test:b", mac(0x11)), {},
                   [](std::string_view, const MacAddress&) {
                     return std::vector<LunInfo>{{7, false, 4096, 123}};
                   });
  DiscoveryConfig dc;
  dc.local_mac = kInitMac;
  dc.initiator_name = "iqn.test:client";
  DiscoveryClient all(dc);
  dc.target_filter = "iqn.test:b";
  dc.local_mac = mac(0x02);
  DiscoveryClient only_b(dc);
  dc.target_filter.clear();
  dc.initiator_name = "iqn.test:restricted";
  dc.local_mac = mac(0x03);
  DiscoveryClient restricted(dc);

  Lab lab;
  lab.add(node_of(mac(0x10), a));
  lab.add(node_of(mac(0x11), b));
  lab.add(node_of(kInitMac, all));
  lab.add(node_of(mac(0x02), only_b));
  lab.add(node_of(mac(0x03), restricted));
  all.start(lab.now);
  only_b.start(lab.now);
  restricted.start(lab.now);
  ASSERT_TRUE(lab.run_until([&] { return all.done(lab.now) && only_b.done(lab.now); }, seconds(3)));

  ASSERT_EQ(all.results().size(), 2u);
  for (const auto& t : all.results()) {
    if (t.name == "iqn.test:a") {
      EXPECT_EQ(t.mac, mac(0x10));
      EXPECT_EQ(t.mtu, 9000);
      EXPECT_EQ(t.luns.size(), 2u);
    } else {
      EXPECT_EQ(t.name, "iqn.test:b");
      EXPECT_EQ(t.mac, mac(0x11));
      ASSERT_EQ(t.luns.size(), 1u);
      EXPECT_EQ(t.luns[0].lun, 7);
      EXPECT_EQ(t.luns[0].num_blocks, 123u);
    }
  }
  ASSERT_EQ(only_b.results().size(), 1u);
  EXPECT_EQ(only_b.results()[0].name, "iqn.test:b");
  for (const auto& t : restricted.results())
    if (t.name == "iqn.test:a") {
      EXPECT_EQ(t.luns.size(), 1u);
    }
  // The request is retransmitted within the window; results stay deduplicated.
  EXPECT_EQ(all.stats().requests_sent, 3u);
  EXPECT_EQ(a.stats().discovery_replies, 3u * 2u);  // `all` and `restricted`; b filtered
  EXPECT_GE(all.stats().replies_accepted, 6u);
}

TEST(Discovery, RecordsAnnouncementsAndIgnoresOtherNonces) {
  TargetEndpoint a(target_config("iqn.test:a", mac(0x10)));
  DiscoveryConfig dc;
  dc.local_mac = kInitMac;
  DiscoveryClient client(dc);
  Lab lab;
  lab.add(node_of(mac(0x10), a));
  lab.add(node_of(kInitMac, client));
  lab.drop_if = [](const FrameView& f) {
    return f.header.common.opcode == Opcode::kDiscoveryRequest;  // only announcements arrive
  };
  client.start(lab.now);
  a.announce(lab.now);
  // A reply to somebody else's request (another nonce) must be ignored.
  DiscoveryReply other;
  other.nonce = client.nonce() + 1;
  other.target_name = "iqn.test:other";
  std::vector<uint8_t> body;
  encode(other, body);
  FrameHeader h;
  h.dst = kInitMac;
  h.src = mac(0x20);
  h.common.opcode = Opcode::kDiscoveryReply;
  lab.inject(1, h, body);
  lab.run_until([&] { return client.done(lab.now); }, seconds(3));
  ASSERT_EQ(client.results().size(), 1u);
  EXPECT_TRUE(client.results()[0].announced);
  EXPECT_EQ(client.results()[0].name, "iqn.test:a");
  EXPECT_EQ(client.stats().replies_ignored, 1u);
}

// ---------------------------------------------------------------- login

TEST(Login, EstablishesWithNegotiatedParameters) {
  Pair p;
  ASSERT_TRUE(p.login());
  ASSERT_EQ(p.initiator.state(), InitiatorState::kEstablished) << p.initiator.failure().describe();
  EXPECT_EQ(p.initiator.negotiated().mtu, 1500);  // min(1500, 9000)
  EXPECT_NE(p.initiator.session_id(), 0u);
  EXPECT_EQ(p.initiator.epoch(), 1);
  ASSERT_EQ(p.target->session_count(), 1u);
  auto info = p.target->session(p.initiator.session_id());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->initiator_name, "iqn.test:client");
  EXPECT_EQ(info->initiator_mac, kInitMac);
  auto ev = p.events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, TargetEventKind::kSessionEstablished);
  EXPECT_EQ(ev[0].session_id, p.initiator.session_id());

  // Commands flow and replies come back over the session's Connection.
  ASSERT_TRUE(p.initiator.send_command(3, read_command(1, 1, 4096)));
  std::optional<ReceivedPdu> reply;
  ASSERT_TRUE(
      p.lab.run_until([&] { return (reply = p.initiator.pop_reply()).has_value(); }, seconds(5)));
  auto decoded = decode_reply(reply->bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->header.cmd_sn, 1u);
  EXPECT_EQ(decoded->data_in.size(), 4096u);
  EXPECT_EQ(reply->tag, 3);
  EXPECT_EQ(p.target->session(p.initiator.session_id())->commands, 1u);
}

// Multipath negotiation (docs/protocol.md 14.1, 14.3): only when both offer
// it, and then the login reply carries the target's port list; a peer that
// does not offer it sees the protocol of sections 1-13.
TEST(Login, MultipathIsNegotiatedOnlyWhenBothOfferItAndBringsThePortList) {
  const std::vector<TargetPort> ports = {{kTargetMac, 9000}, {mac(0x11), 1500}};
  InitiatorConfig offering = initiator_config();
  offering.features |= kFeatureMultipath;
  TargetConfig serving = target_config();
  serving.multipath_ports = ports;
  serving.limits.features = kFeaturesV2;  // the endpoint adds MULTIPATH itself

  {
    Pair p(offering, serving);
    ASSERT_TRUE(p.login());
    ASSERT_EQ(p.initiator.state(), InitiatorState::kEstablished)
        << p.initiator.failure().describe();
    EXPECT_TRUE(p.initiator.multipath());
    EXPECT_EQ(p.initiator.target_ports(), ports);
    EXPECT_FALSE(p.initiator.multipath_keys().has_value()) << "unauthenticated";
    // The login path is an ordinary session (header bytes 34-35 are 0).
    ASSERT_TRUE(p.initiator.send_command(3, read_command(1, 1, 4096)));
    std::optional<ReceivedPdu> reply;
    ASSERT_TRUE(
        p.lab.run_until([&] { return (reply = p.initiator.pop_reply()).has_value(); }, seconds(5)));
    EXPECT_EQ(decode_reply(reply->bytes)->data_in.size(), 4096u);
  }
  {
    Pair p(initiator_config(), serving);  // a single-path initiator
    p.lab.drop_if = [](const FrameView& f) {
      EXPECT_EQ(f.header.ext.path_id, 0);
      EXPECT_EQ(f.header.ext.path_gen, 0);
      return false;
    };
    ASSERT_TRUE(p.login());
    ASSERT_EQ(p.initiator.state(), InitiatorState::kEstablished);
    EXPECT_FALSE(p.initiator.multipath());
    EXPECT_TRUE(p.initiator.target_ports().empty());
    EXPECT_EQ(p.initiator.negotiated().features & kFeatureMultipath, 0u);
  }
  {
    TargetConfig single = target_config();
    single.limits.features |= kFeatureMultipath;  // no port list: the endpoint withdraws it
    Pair p(offering, single);
    ASSERT_TRUE(p.login());
    ASSERT_EQ(p.initiator.state(), InitiatorState::kEstablished);
    EXPECT_FALSE(p.initiator.multipath());
    EXPECT_TRUE(p.initiator.target_ports().empty());
  }
}

// A target that grants MULTIPATH although the initiator did not offer it
// (or any other feature it did not offer) is refused, not half-used.
TEST(Login, AFeatureTheInitiatorDidNotOfferIsRefused) {
  Pair p;
  // Direct: hand the initiator a forged reply for its pending login.
  ASSERT_TRUE(p.initiator.login(kTargetMac, p.target->config().target_name, p.lab.now));
  test::VecSink out;
  p.initiator.poll(p.lab.now, out);
  ASSERT_EQ(out.frames.size(), 1u);
  auto req_frame = decode_frame(out.frames[0]);
  ASSERT_TRUE(req_frame.ok());
  auto req = decode_login_request(req_frame->payload);
  ASSERT_TRUE(req.ok());
  MultipathLoginReply m;
  m.reply = negotiate(req.value(), target_config().limits);
  m.reply.session_id = 0x1234;
  m.reply.epoch = 1;
  m.reply.features |= kFeatureMultipath;
  m.ports = {{kTargetMac, 1500}};
  std::vector<uint8_t> body;
  encode(m, body);
  FrameHeader h;
  h.src = kTargetMac;
  h.dst = kInitMac;
  h.common.opcode = Opcode::kLoginReply;
  h.common.last_fragment = true;
  h.ext.flags = kFlagResponse;
  h.ext.session_id = 0x1234;
  h.ext.epoch = 1;
  std::vector<uint8_t> frame(encoded_size(h, body.size()));
  ASSERT_GT(encode_frame(frame, h, body), 0u);
  auto view = decode_frame(frame);
  ASSERT_TRUE(view.ok());
  p.initiator.on_frame(view.value(), p.lab.now);
  EXPECT_EQ(p.initiator.state(), InitiatorState::kFailed);
  EXPECT_EQ(p.initiator.failure().error, SessionError::kLoginRejected);
  EXPECT_FALSE(p.initiator.multipath());
}

TEST(Login, SurvivesLossAndAnswersARepeatedRequestIdempotently) {
  Pair p;
  int login_replies_dropped = 0;
  p.lab.drop_if = [&](const FrameView& f) {
    // Lose the first LoginReply: the initiator repeats the same request.
    if (f.header.common.opcode == Opcode::kLoginReply && login_replies_dropped == 0) {
      ++login_replies_dropped;
      return true;
    }
    return false;
  };
  ASSERT_TRUE(p.login());
  ASSERT_EQ(p.initiator.state(), InitiatorState::kEstablished) << p.initiator.failure().describe();
  EXPECT_EQ(p.initiator.stats().login_requests_sent, 2u);
  EXPECT_EQ(p.target->stats().duplicate_logins, 1u);
  EXPECT_EQ(p.target->stats().logins_accepted, 1u);
  EXPECT_EQ(p.target->session_count(), 1u);  // one session, not two
}

TEST(Login, EstablishesOverALossyChannel) {
  uint64_t lost = 0;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    InitiatorConfig ic = initiator_config();
    ic.login_attempts = 8;
    ic.probe_attempts = 8;
    Pair p(ic);
    p.lab.seed(seed);
    p.lab.loss_percent = 20;
    ASSERT_TRUE(p.login());
    EXPECT_EQ(p.initiator.state(), InitiatorState::kEstablished)
        << "seed " << seed << ": " << p.initiator.failure().describe();
    lost += p.lab.dropped;
  }
  EXPECT_GT(lost, 0u);  // the channel really lost login or probe frames
}

TEST(Login, RefusedByPolicyReportsTheStatus) {
  Pair p(initiator_config(1500, "iqn.test:intruder"), target_config(),
         [](const LoginRequest& r, const MacAddress&) {
           return r.initiator_name == "iqn.test:intruder" ? LoginStatus::kAccessDenied
                                                          : LoginStatus::kOk;
         });
  ASSERT_TRUE(p.login());
  EXPECT_EQ(p.initiator.state(), InitiatorState::kFailed);
  EXPECT_EQ(p.initiator.failure().error, SessionError::kLoginRejected);
  EXPECT_EQ(p.initiator.failure().login_status, LoginStatus::kAccessDenied);
  EXPECT_EQ(p.target->session_count(), 0u);
  EXPECT_EQ(p.target->stats().logins_refused, 1u);
}

TEST(Login, WrongTargetNameIsRefused) {
  Pair p;
  ASSERT_TRUE(p.initiator.login(kTargetMac, "iqn.test:nonexistent", p.lab.now));
  p.lab.run_until([&] { return p.initiator.state() == InitiatorState::kFailed; }, seconds(5));
  EXPECT_EQ(p.initiator.failure().login_status, LoginStatus::kUnknownTarget);
}

TEST(Login, NoAnswerAfterBoundedRetries) {
  Pair p;
  p.lab.link_up = false;
  ASSERT_TRUE(p.login());
  EXPECT_EQ(p.initiator.state(), InitiatorState::kFailed);
  EXPECT_EQ(p.initiator.failure().error, SessionError::kNoAnswer);
  EXPECT_EQ(p.initiator.stats().login_requests_sent, 6u);
}

TEST(Login, TooManySessions) {
  TargetConfig tc = target_config();
  tc.max_sessions = 1;
  Pair p(initiator_config(), tc);
  ASSERT_TRUE(p.login());
  ASSERT_EQ(p.initiator.state(), InitiatorState::kEstablished);
  InitiatorConfig ic = initiator_config();
  ic.local_mac = mac(0x05);
  ic.seed = 99;
  InitiatorSession second(ic);
  p.lab.add(node_of(mac(0x05), second));
  ASSERT_TRUE(second.login(kTargetMac, tc.target_name, p.lab.now));
  p.lab.run_until([&] { return second.state() == InitiatorState::kFailed; }, seconds(5));
  EXPECT_EQ(second.failure().login_status, LoginStatus::kTooManySessions);
}

// ---------------------------------------------------------------- MTU

TEST(Mtu, MismatchIsDetectedAndNamed) {
  Pair p(initiator_config(9000));
  p.lab.max_frame = 1514;  // a 1500-byte switch between two 9000-byte hosts
  ASSERT_TRUE(p.login());
  EXPECT_EQ(p.initiator.state(), InitiatorState::kFailed);
  EXPECT_EQ(p.initiator.failure().error, SessionError::kMtuMismatch);
  EXPECT_EQ(p.initiator.failure().mtu, 9000);
  EXPECT_NE(p.initiator.failure().describe().find("9000"), std::string::npos);
  EXPECT_GT(p.lab.dropped_too_big, 0u);
}

TEST(Mtu, FullSizeProbePassesOnAJumboPath) {
  Pair p(initiator_config(9000));
  p.lab.max_frame = 9014;
  ASSERT_TRUE(p.login());
  EXPECT_EQ(p.initiator.state(), InitiatorState::kEstablished) << p.initiator.failure().describe();
  EXPECT_EQ(p.initiator.negotiated().mtu, 9000);
  EXPECT_EQ(p.lab.dropped_too_big, 0u);
}

// ---------------------------------------------------------------- liveness

TEST(Liveness, KeepalivesHoldAnIdleSession) {
  Pair p;
  ASSERT_TRUE(p.login());
  ASSERT_EQ(p.initiator.state(), InitiatorState::kEstablished);
  p.lab.run_for(seconds(30), milliseconds(10));  // six dead times of idleness
  EXPECT_EQ(p.initiator.state(), InitiatorState::kEstablished);
  EXPECT_EQ(p.target->session_count(), 1u);
  EXPECT_GE(p.initiator.stats().keepalives_sent, 20u);
  EXPECT_GE(p.target->stats().keepalives_answered, 20u);
}

TEST(Liveness, DeadPeerDetectedOnBothSides) {
  Pair p;
  ASSERT_TRUE(p.login());
  const uint32_t id = p.initiator.session_id();
  p.events();
  p.lab.link_up = false;
  ASSERT_TRUE(p.lab.run_until(
      [&] {
        return p.initiator.state() == InitiatorState::kDead && p.target->session_count() == 0;
      },
      seconds(20), milliseconds(10)));
  EXPECT_EQ(p.initiator.failure().error, SessionError::kDeadPeer);
  EXPECT_EQ(p.target->stats().sessions_reclaimed, 1u);
  auto ev = p.events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, TargetEventKind::kSessionClosed);
  EXPECT_EQ(ev[0].reason, DisconnectReason::kDeadPeer);
  EXPECT_EQ(ev[0].session_id, id);
  EXPECT_FALSE(p.target->session(id).has_value());
}

// ---------------------------------------------------------------- disconnect

TEST(Disconnect, InitiatorEndsTheSessionOrderly) {
  Pair p;
  ASSERT_TRUE(p.login());
  p.events();
  ASSERT_TRUE(p.initiator.disconnect(p.lab.now));
  ASSERT_TRUE(
      p.lab.run_until([&] { return p.initiator.state() == InitiatorState::kClosed; }, seconds(5)));
  EXPECT_EQ(p.initiator.stats().disconnects_sent, 1u);  // answered the first time
  EXPECT_EQ(p.target->session_count(), 0u);
  auto ev = p.events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, DisconnectReason::kNormal);
}

TEST(Disconnect, InitiatorGivesUpAfterBoundedRetries) {
  Pair p;
  ASSERT_TRUE(p.login());
  p.lab.link_up = false;
  ASSERT_TRUE(p.initiator.disconnect(p.lab.now));
  ASSERT_TRUE(
      p.lab.run_until([&] { return p.initiator.state() == InitiatorState::kClosed; }, seconds(5)));
  EXPECT_EQ(p.initiator.stats().disconnects_sent, 3u);
}

TEST(Disconnect, TargetEndsTheSession) {
  Pair p;
  ASSERT_TRUE(p.login());
  ASSERT_TRUE(
      p.target->disconnect(p.initiator.session_id(), DisconnectReason::kShutdown, p.lab.now));
  ASSERT_TRUE(p.lab.run_until([&] { return p.initiator.state() == InitiatorState::kDisconnected; },
                              seconds(5)));
  EXPECT_EQ(p.initiator.failure().error, SessionError::kDisconnectedByPeer);
  EXPECT_EQ(p.initiator.failure().reason, DisconnectReason::kShutdown);
  EXPECT_EQ(p.target->session_count(), 0u);
  // The owner can log in again at once.
  ASSERT_TRUE(p.login());
  EXPECT_EQ(p.initiator.state(), InitiatorState::kEstablished);
}

// ---------------------------------------------------------------- routing

std::optional<Disconnect> only_disconnect(const std::vector<std::vector<uint8_t>>& frames,
                                          const MacAddress& to, uint32_t session_id,
                                          uint16_t epoch) {
  std::optional<Disconnect> found;
  for (const auto& bytes : frames) {
    auto f = decode_frame(bytes);
    if (!f || f->header.common.opcode != Opcode::kDisconnect) continue;
    if (f->header.dst != to || f->header.ext.session_id != session_id ||
        f->header.ext.epoch != epoch)
      continue;
    auto d = decode_disconnect(f->payload);
    if (d) found = *d;
  }
  return found;
}

TEST(Routing, UnknownSessionAndStaleEpochAreAnsweredRateLimited) {
  Pair p;
  ASSERT_TRUE(p.login());
  const uint32_t id = p.initiator.session_id();
  std::vector<uint8_t> body;
  encode(Keepalive{1, 0}, body);
  FrameHeader h;
  h.src = mac(0x33);
  h.dst = kTargetMac;
  h.common.opcode = Opcode::kKeepalive;
  h.ext.session_id = id + 1;
  h.ext.epoch = 1;
  auto out = p.lab.inject(1, h, body);
  auto d = only_disconnect(out, mac(0x33), id + 1, 1);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->reason, DisconnectReason::kUnknownSession);
  // A second one at once is suppressed; after the interval it is answered.
  EXPECT_FALSE(only_disconnect(p.lab.inject(1, h, body), mac(0x33), id + 1, 1).has_value());
  EXPECT_EQ(p.target->stats().rejections_suppressed, 1u);
  p.lab.now += milliseconds(150);
  EXPECT_TRUE(only_disconnect(p.lab.inject(1, h, body), mac(0x33), id + 1, 1).has_value());

  // A frame of the right session from another MAC is not let in either.
  p.lab.now += milliseconds(150);
  h.ext.session_id = id;
  d = only_disconnect(p.lab.inject(1, h, body), mac(0x33), id, 1);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->reason, DisconnectReason::kUnknownSession);

  // Old epoch, from the right MAC.
  h.src = kInitMac;
  h.ext.epoch = 0;
  d = only_disconnect(p.lab.inject(1, h, body), kInitMac, id, 0);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->reason, DisconnectReason::kStaleEpoch);
  EXPECT_EQ(p.target->stats().stale_epoch, 1u);
  EXPECT_EQ(p.target->session_count(), 1u);  // the live session is untouched
}

TEST(Routing, InitiatorLearnsOfATargetRestartAndLogsInAgain) {
  Pair p;
  ASSERT_TRUE(p.login());
  const uint32_t old_id = p.initiator.session_id();
  p.restart_target(target_config());
  // The next keepalive reaches a target that no longer knows the session.
  ASSERT_TRUE(p.lab.run_until([&] { return p.initiator.state() == InitiatorState::kDisconnected; },
                              seconds(5)));
  EXPECT_EQ(p.initiator.failure().reason, DisconnectReason::kUnknownSession);
  ASSERT_TRUE(p.login());
  EXPECT_EQ(p.initiator.state(), InitiatorState::kEstablished);
  EXPECT_NE(p.initiator.session_id(), 0u);
  (void)old_id;
}

TEST(Routing, MalformedBodiesAreCountedAndDropped) {
  Pair p;
  const std::vector<uint8_t> garbage{0xff, 0x01, 0x02};
  FrameHeader h;
  h.src = kInitMac;
  h.dst = kTargetMac;
  for (Opcode op : {Opcode::kLoginRequest, Opcode::kDiscoveryRequest}) {
    h.common.opcode = op;
    EXPECT_TRUE(p.lab.inject(1, h, garbage).empty());
  }
  EXPECT_EQ(p.target->stats().malformed, 2u);
  EXPECT_EQ(p.target->session_count(), 0u);
}

// ---------------------------------------------------------------- resume

TEST(Resume, KeepsTheSessionIdAndBumpsTheEpoch) {
  Pair p;
  ASSERT_TRUE(p.login());
  const uint32_t id = p.initiator.session_id();
  p.events();
  p.lab.link_up = false;  // an outage shorter than the dead time
  p.lab.run_for(seconds(2), milliseconds(10));
  p.lab.link_up = true;
  ASSERT_TRUE(p.initiator.resume(p.lab.now));
  ASSERT_TRUE(p.lab.run_until([&] { return p.initiator.established(); }, seconds(5)));
  EXPECT_EQ(p.initiator.session_id(), id);
  EXPECT_EQ(p.initiator.epoch(), 2);
  EXPECT_EQ(p.target->session(id)->epoch, 2);
  auto ev = p.events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, TargetEventKind::kSessionResumed);
  EXPECT_EQ(p.target->stats().resumes, 1u);
}

TEST(Resume, UnknownSessionFailsAndAFreshLoginWorks) {
  Pair p;
  ASSERT_TRUE(p.login());
  p.restart_target(target_config());
  ASSERT_TRUE(p.initiator.resume(p.lab.now));
  p.lab.run_until([&] { return p.initiator.state() == InitiatorState::kFailed; }, seconds(5));
  EXPECT_EQ(p.initiator.failure().login_status, LoginStatus::kResumeFailed);
  ASSERT_TRUE(p.login());
  EXPECT_EQ(p.initiator.state(), InitiatorState::kEstablished);
  EXPECT_EQ(p.initiator.epoch(), 1);
}

// ---------------------------------------------------------------- exactly once

TEST(ExactlyOnce, CommandResentAfterResumeIsReplayedNotReexecuted) {
  Pair p;
  ASSERT_TRUE(p.login());
  const uint32_t id = p.initiator.session_id();
  // The reply is lost on the way back, and the link then goes away.
  p.lab.drop_if = [](const FrameView& f) {
    return f.header.common.opcode == Opcode::kCommandReply;
  };
  const auto cmd = read_command(5, 5, 2048);
  ASSERT_TRUE(p.initiator.send_command(1, cmd));
  ASSERT_TRUE(p.lab.run_until([&] { return p.exec.executions.size() == 1; }, seconds(5)));
  p.lab.run_for(milliseconds(50));
  p.lab.link_up = false;
  p.lab.run_for(seconds(1), milliseconds(10));
  p.lab.link_up = true;
  p.lab.drop_if = nullptr;

  ASSERT_TRUE(p.initiator.resume(p.lab.now));
  ASSERT_TRUE(p.lab.run_until([&] { return p.initiator.established(); }, seconds(5)));
  ASSERT_EQ(p.initiator.session_id(), id);
  // The initiator resends the unanswered command with the same cmd_sn.
  ASSERT_TRUE(p.initiator.send_command(2, cmd));
  std::optional<ReceivedPdu> reply;
  ASSERT_TRUE(
      p.lab.run_until([&] { return (reply = p.initiator.pop_reply()).has_value(); }, seconds(5)));
  EXPECT_EQ(reply->bytes, Executor::reply_for(5, 2048));
  EXPECT_EQ(reply->tag, 2);
  EXPECT_EQ((p.exec.executions[{id, 5u}]), 1);  // executed once
  ASSERT_FALSE(p.exec.decisions.empty());
  EXPECT_EQ(p.exec.decisions.back(), CacheDecision::kReplay);
  EXPECT_EQ(p.target->session(id)->cache.replays, 1u);
}

TEST(ExactlyOnce, DuplicateOfACommandStillExecutingWaitsForItsReply) {
  Pair p;
  ASSERT_TRUE(p.login());
  const uint32_t id = p.initiator.session_id();
  p.exec.hold = true;  // a slow disk
  const auto cmd = read_command(9, 9, 512);
  ASSERT_TRUE(p.initiator.send_command(4, cmd));
  ASSERT_TRUE(p.lab.run_until([&] { return p.exec.held.size() == 1; }, seconds(5)));
  p.lab.link_up = false;
  p.lab.run_for(seconds(1), milliseconds(10));
  p.lab.link_up = true;
  ASSERT_TRUE(p.initiator.resume(p.lab.now));
  ASSERT_TRUE(p.lab.run_until([&] { return p.initiator.established(); }, seconds(5)));
  ASSERT_TRUE(p.initiator.send_command(4, cmd));
  ASSERT_TRUE(p.lab.run_until([&] { return p.exec.decisions.size() == 2; }, seconds(5)));
  EXPECT_EQ(p.exec.decisions.back(), CacheDecision::kInProgress);
  p.exec.release_held();  // the disk finishes: the reply goes over the new Connection
  std::optional<ReceivedPdu> reply;
  ASSERT_TRUE(
      p.lab.run_until([&] { return (reply = p.initiator.pop_reply()).has_value(); }, seconds(5)));
  EXPECT_EQ(reply->bytes, Executor::reply_for(9, 512));
  EXPECT_EQ((p.exec.executions[{id, 9u}]), 1);
}

}  // namespace
}  // namespace hyperscsi::proto

namespace hyperscsi::proto {
namespace {

TEST(ExactlyOnce, ReadWhoseCachedDataWasDroppedIsReexecuted) {
  TargetConfig tc = target_config();
  tc.reply_cache.data_budget_bytes = 1000;  // smaller than one read's data
  Pair p(initiator_config(), tc);
  ASSERT_TRUE(p.login());
  const uint32_t id = p.initiator.session_id();
  p.lab.drop_if = [](const FrameView& f) {
    return f.header.common.opcode == Opcode::kCommandReply;
  };
  const auto cmd = read_command(20, 20, 2048);
  ASSERT_TRUE(p.initiator.send_command(1, cmd));
  ASSERT_TRUE(p.lab.run_until([&] { return p.exec.executions.size() == 1; }, seconds(5)));
  EXPECT_GT(p.target->session(id)->cache.data_dropped_bytes, 0u);
  p.lab.link_up = false;
  p.lab.run_for(seconds(1), milliseconds(10));
  p.lab.link_up = true;
  p.lab.drop_if = nullptr;
  ASSERT_TRUE(p.initiator.resume(p.lab.now));
  ASSERT_TRUE(p.lab.run_until([&] { return p.initiator.established(); }, seconds(5)));
  ASSERT_TRUE(p.initiator.send_command(2, cmd));
  std::optional<ReceivedPdu> reply;
  ASSERT_TRUE(
      p.lab.run_until([&] { return (reply = p.initiator.pop_reply()).has_value(); }, seconds(5)));
  EXPECT_EQ(reply->bytes, Executor::reply_for(20, 2048));
  EXPECT_EQ(p.exec.decisions.back(), CacheDecision::kReexecuteIdempotent);
  EXPECT_EQ((p.exec.executions[{id, 20u}]), 2);  // a read may run twice; it has no side effect
}

TEST(ExactlyOnce, StaleAndFarOutCommandsAreDroppedNotExecuted) {
  Pair p;
  ASSERT_TRUE(p.login());
  const uint32_t id = p.initiator.session_id();
  ASSERT_TRUE(p.initiator.send_command(1, read_command(100, 100, 512)));
  ASSERT_TRUE(p.initiator.send_command(2, read_command(101, 101, 512)));  // confirms reply 100
  ASSERT_TRUE(p.initiator.send_command(3, read_command(100, 101, 512)));  // late duplicate
  ASSERT_TRUE(p.initiator.send_command(4, read_command(101 + 100000, 101, 512)));
  ASSERT_TRUE(
      p.lab.run_until([&] { return p.target->stats().command_protocol_errors == 2; }, seconds(5)));
  EXPECT_EQ(p.exec.executions.size(), 2u);
  EXPECT_EQ((p.exec.executions[{id, 100u}]), 1);
  EXPECT_EQ(p.target->session(id)->cache.stale, 1u);
  EXPECT_EQ(p.target->session(id)->cache.out_of_window, 1u);
}

}  // namespace
}  // namespace hyperscsi::proto

namespace hyperscsi::proto {
namespace {

// Whatever arrives from the wire, the session objects neither crash nor
// lose their live session: random bodies under every opcode, with the live
// session's id and epoch and with random ones.
TEST(Robustness, RandomBodiesNeverCrashOrKillTheSession) {
  Pair p;
  ASSERT_TRUE(p.login());
  const uint32_t id = p.initiator.session_id();
  std::mt19937 rng(2026);
  const Opcode ops[] = {Opcode::kDiscoveryRequest, Opcode::kDiscoveryReply, Opcode::kLoginRequest,
                        Opcode::kLoginReply,       Opcode::kKeepalive,      Opcode::kAck};
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> body(rng() % 64);
    for (auto& b : body) b = static_cast<uint8_t>(rng());
    FrameHeader h;
    h.common.opcode = ops[rng() % std::size(ops)];
    const bool to_target = rng() % 2 == 0;
    h.src = to_target ? kInitMac : kTargetMac;
    h.dst = to_target ? kTargetMac : kInitMac;
    h.ext.session_id = rng() % 2 ? id : static_cast<uint32_t>(rng());
    h.ext.epoch = rng() % 2 ? p.initiator.epoch() : static_cast<uint16_t>(rng());
    h.ext.flags = static_cast<uint8_t>(rng() & (kFlagResponse | kFlagAckNow));
    (void)p.lab.inject(to_target ? 1 : 0, h, body);
  }
  EXPECT_GT(p.target->stats().malformed, 0u);
  EXPECT_GT(p.initiator.stats().malformed, 0u);
  EXPECT_EQ(p.initiator.state(), InitiatorState::kEstablished);
  EXPECT_TRUE(p.target->session(id).has_value());
  // And the session still carries commands.
  ASSERT_TRUE(p.initiator.send_command(1, read_command(1, 1, 100)));
  EXPECT_TRUE(p.lab.run_until([&] { return p.initiator.pop_reply().has_value(); }, seconds(5)));
}

// docs/protocol.md: a keepalive probe (0x20) is answered by 0x21 with RESPONSE
// and the probe's id, padded to the probe's size.
TEST(Keepalive, ProbeIsAnsweredWithAckResponseOfTheSameSize) {
  Pair p;
  ASSERT_TRUE(p.login());
  std::vector<uint8_t> body;
  encode(Keepalive{77, 600}, body);
  FrameHeader h = p.initiator.connection()->control_header(Opcode::kKeepalive);
  const size_t probe_l3 = kHeaderSize + h.sacks.count * kSackBlockSize + body.size();
  size_t answers = 0;
  for (const auto& bytes : p.lab.inject(1, h, body)) {
    auto f = decode_frame(bytes);
    ASSERT_TRUE(f.ok());
    if (f->header.common.opcode != Opcode::kAck || (f->header.ext.flags & kFlagResponse) == 0)
      continue;
    auto k = decode_keepalive(f->payload);
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(k->probe_id, 77u);
    EXPECT_EQ(kHeaderSize + f->header.sacks.count * kSackBlockSize + f->payload.size(), probe_l3);
    ++answers;
  }
  EXPECT_EQ(answers, 1u);
}

// ------------------------------------------------------- receive sharing

std::vector<uint8_t> write_command(uint32_t cmd_sn, uint32_t length) {
  CommandHeader h;
  h.cmd_sn = cmd_sn;
  h.reply_ack_sn = cmd_sn;
  h.flags = kCommandFlagDataOut;
  h.data_out_length = length;
  h.cdb_length = 10;
  h.cdb[0] = 0x2A;  // WRITE(10)
  h.cdb[8] = static_cast<uint8_t>(length / 512);
  std::vector<uint8_t> pdu;
  encode(h, pdu);
  pdu.resize(pdu.size() + length, static_cast<uint8_t>(cmd_sn));
  return pdu;
}

// Issue 21: the target shares its receive capacity among the sessions that
// send to it. With five writers and a budget of two windows, every session
// advertises 2/5 of a window (an idle session does not count as a sender);
// when only one writer is left, it gets its whole window back.
TEST(ReceiveSharing, ActiveSendersShareTheBudgetAndGetItBackWhenAlone) {
  TargetConfig tc = target_config();
  tc.limits.window = 200;
  tc.receive_budget_windows = 2;
  tc.share_interval = milliseconds(20);
  tc.share_active_frames = 4;
  TargetEndpoint target(tc);
  Executor exec;
  exec.target = &target;
  Lab lab;
  lab.add(Node{kTargetMac, [&](const FrameView& f, TimePoint t) { target.on_frame(f, t); },
               [&](TimePoint t, FrameSink& s) { target.poll(t, s); }});
  lab.after_step = [&] { exec.run(); };
  // The window the target last advertised to each initiator.
  std::map<MacAddress, uint16_t> advertised;
  lab.drop_if = [&](const FrameView& f) {
    if (f.header.src == kTargetMac && (f.header.ext.flags & kFlagAck) != 0)
      advertised[f.header.dst] = f.header.ext.window;
    return false;
  };
  std::vector<std::unique_ptr<InitiatorSession>> inits;
  for (uint8_t i = 0; i < 6; ++i) {
    InitiatorConfig ic = initiator_config(1500, "iqn.test:client" + std::to_string(i));
    ic.local_mac = mac(uint8_t(0x20 + i));
    ic.window = 200;
    ic.seed = 100 + i;
    inits.push_back(std::make_unique<InitiatorSession>(ic));
    lab.add(node_of(ic.local_mac, *inits.back()));
    ASSERT_TRUE(inits.back()->login(kTargetMac, tc.target_name, lab.now));
  }
  ASSERT_TRUE(lab.run_until(
      [&] {
        return std::all_of(inits.begin(), inits.end(),
                           [](auto& i) { return i->state() == InitiatorState::kEstablished; });
      },
      seconds(10)));
  // Writers 0..4 keep two 64 KiB writes outstanding; initiator 5 stays idle.
  std::vector<uint32_t> next_sn(6, 1), outstanding(6, 0);
  size_t writers = 5;
  auto keep_writing = [&] {
    for (size_t i = 0; i < inits.size(); ++i) {
      while (inits[i]->pop_reply()) --outstanding[i];
      while (i < writers && outstanding[i] < 2) {
        ASSERT_TRUE(inits[i]->send_command(uint16_t(next_sn[i]), write_command(next_sn[i], 65536)));
        ++next_sn[i];
        ++outstanding[i];
      }
    }
  };
  for (int k = 0; k < 200; ++k) {
    keep_writing();
    lab.step(microseconds(500));
  }
  // 5 senders, not 6: the idle session does not count (it hears of the
  // window with its next ack, having sent nothing).
  const uint16_t share = 2 * 200 / 5;
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(advertised[mac(uint8_t(0x20 + i))], share) << "initiator " << i;
    EXPECT_EQ(inits[i]->connection()->stats().peer_window, share) << "initiator " << i;
    EXPECT_GT(next_sn[i], 20u) << "initiator " << i;  // still writing at its share
  }

  writers = 1;
  for (int k = 0; k < 200; ++k) {
    keep_writing();
    lab.step(microseconds(500));
  }
  EXPECT_EQ(advertised[mac(0x20)], 200);
  EXPECT_EQ(inits[0]->connection()->stats().peer_window, 200);
}

}  // namespace
}  // namespace hyperscsi::proto

// Multipath building blocks: wire messages and the examples of
// docs/protocol.md section 14, path proofs and keys, the failure detector,
// the scheduler and rate estimator, the command orderer, Connection's
// failover hand-back, and the target's answers to path requests.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/command_order.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/multipath.h"
#include "hyperscsi/proto/path_auth.h"
#include "hyperscsi/proto/path_health.h"
#include "hyperscsi/proto/path_scheduler.h"
#include "hyperscsi/proto/path_set.h"
#include "hyperscsi/proto/target_paths.h"

namespace hyperscsi::proto {
namespace {

constexpr MacAddress kI0 = {0x02, 0, 0, 0, 0, 0x01};
constexpr MacAddress kT0 = {0x02, 0, 0, 0, 0, 0x02};
constexpr MacAddress kI1 = {0x02, 0, 0, 0, 0, 0x11};
constexpr MacAddress kT1 = {0x02, 0, 0, 0, 0, 0x12};
constexpr uint32_t kSession = 0x5e551001;

std::vector<uint8_t> frame_of(const FrameHeader& h, std::span<const uint8_t> body) {
  std::vector<uint8_t> out(encoded_size(h, body.size()));
  out.resize(encode_frame(out, h, body));
  return out;
}

FrameHeader header(Opcode op, const MacAddress& dst, const MacAddress& src, uint8_t path_id = 0,
                   uint8_t path_gen = 0) {
  FrameHeader h;
  h.dst = dst;
  h.src = src;
  h.common.opcode = op;
  h.ext.session_id = kSession;
  h.ext.epoch = 1;
  h.ext.path_id = path_id;
  h.ext.path_gen = path_gen;
  return h;
}

std::string hex_dump(const std::vector<uint8_t>& b) {
  std::string out;
  char buf[32];
  for (size_t i = 0; i < b.size(); ++i) {
    if (i % 16 == 0) {
      std::snprintf(buf, sizeof buf, "%04zx ", i);
      out += buf;
    }
    std::snprintf(buf, sizeof buf, " %02x", b[i]);
    out += buf;
    if (i % 16 == 15 || i + 1 == b.size()) out += "\n";
  }
  return out;
}

std::vector<uint8_t> from_hex(const std::string& s) {
  std::vector<uint8_t> out;
  std::istringstream in(s);
  std::string tok;
  while (in >> tok) out.push_back(static_cast<uint8_t>(std::stoul(tok, nullptr, 16)));
  return out;
}

// ------------------------------------------------------------ messages --

TEST(MultipathWire, PortListRoundTripAndLimits) {
  const std::vector<TargetPort> ports = {{kT0, 9000}, {kT1, 1500}};
  std::vector<uint8_t> b;
  encode_port_list(ports, b);
  ASSERT_EQ(b.size(), 1u + 2 * 8);
  auto d = decode_port_list(b);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value(), ports);

  EXPECT_EQ(decode_port_list({}).error(), DecodeError::kTruncated);
  const std::vector<uint8_t> zero = {0};
  EXPECT_EQ(decode_port_list(zero).error(), DecodeError::kBadField);
  std::vector<uint8_t> seventeen = {17};
  seventeen.resize(1 + 17 * 8, 1);
  EXPECT_EQ(decode_port_list(seventeen).error(), DecodeError::kBadField);
  auto short_list = b;
  short_list.pop_back();
  EXPECT_EQ(decode_port_list(short_list).error(), DecodeError::kTruncated);
  auto long_list = b;
  long_list.push_back(0);
  EXPECT_EQ(decode_port_list(long_list).error(), DecodeError::kBadLength);
  auto zero_mtu = b;
  zero_mtu[7] = zero_mtu[8] = 0;
  EXPECT_EQ(decode_port_list(zero_mtu).error(), DecodeError::kBadField);
}

TEST(MultipathWire, LoginReplyCarriesThePortListOnlyWhenMultipath) {
  MultipathLoginReply m;
  m.reply.nonce = 0x1234;
  m.reply.mtu = 9000;
  m.reply.window = 45;
  m.reply.max_transfer = 1u << 20;
  m.reply.features = kFeaturesV2 | kFeatureMultipath;
  m.reply.session_id = kSession;
  m.reply.epoch = 1;
  m.reply.auth = {1, 2, 3};
  m.ports = {{kT0, 9000}, {kT1, 9000}};
  std::vector<uint8_t> b;
  encode(m, b);
  auto d = decode_multipath_login_reply(b);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->reply, m.reply);
  EXPECT_EQ(d->ports, m.ports);
  // An old initiator's decoder stops at what it does not know: it never
  // gets this reply (it did not offer multipath).
  EXPECT_EQ(decode_login_reply(b).error(), DecodeError::kBadLength);
  // Multipath without the list, or a list without multipath: malformed.
  std::vector<uint8_t> base;
  encode(m.reply, base);
  EXPECT_FALSE(decode_multipath_login_reply(base).ok());
  MultipathLoginReply plain = m;
  plain.reply.features = kFeaturesV2;
  std::vector<uint8_t> pb;
  encode(plain, pb);
  EXPECT_EQ(pb.size(), base.size());  // no list written
  auto pd = decode_multipath_login_reply(pb);
  ASSERT_TRUE(pd.ok());
  EXPECT_TRUE(pd->ports.empty());
  auto with_extra = pb;
  with_extra.push_back(1);
  EXPECT_EQ(decode_multipath_login_reply(with_extra).error(), DecodeError::kBadLength);
  // A refused login carries no list even with the feature bit.
  MultipathLoginReply refused = m;
  refused.reply.status = LoginStatus::kAccessDenied;
  std::vector<uint8_t> rb;
  encode(refused, rb);
  EXPECT_TRUE(decode_multipath_login_reply(rb).ok());
  for (size_t n = 0; n < b.size(); ++n)
    EXPECT_FALSE(decode_multipath_login_reply(std::span(b).first(n)).ok()) << n;
}

TEST(MultipathWire, PathRequestAndReplyRoundTripAndValidation) {
  PathRequest q;
  q.nonce = 0xdeadbeef;
  q.action = PathAction::kJoin;
  q.path_id = 15;
  q.path_gen = 200;
  q.mtu = 9000;
  q.window = 45;
  q.proof.assign(kPathProofSize, 0x5A);
  std::vector<uint8_t> b;
  encode(q, b);
  ASSERT_EQ(b.size(), kPathBodyFixedSize + 1 + kPathProofSize);
  auto d = decode_path_request(b);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value(), q);
  for (size_t n = 0; n < b.size(); ++n)
    EXPECT_EQ(decode_path_request(std::span(b).first(n)).error(), DecodeError::kTruncated) << n;
  auto extra = b;
  extra.push_back(0);
  EXPECT_EQ(decode_path_request(extra).error(), DecodeError::kBadLength);
  auto bad = b;
  bad[4] = 3;  // action
  EXPECT_EQ(decode_path_request(bad).error(), DecodeError::kBadField);
  bad = b;
  bad[6] = 16;  // path id
  EXPECT_EQ(decode_path_request(bad).error(), DecodeError::kBadField);
  bad = b;
  bad[12] = 5;  // proof length other than 0 or 32
  EXPECT_EQ(decode_path_request(bad).error(), DecodeError::kBadField);
  bad = b;
  bad[5] = 0x77;  // reserved: ignored
  EXPECT_TRUE(decode_path_request(bad).ok());

  PathReply r;
  r.nonce = 7;
  r.status = PathStatus::kStaleGeneration;
  r.action = PathAction::kLeave;
  r.path_id = 3;
  r.path_gen = 4;
  std::vector<uint8_t> rb;
  encode(r, rb);
  ASSERT_EQ(rb.size(), kPathBodyFixedSize + 1);
  auto rd = decode_path_reply(rb);
  ASSERT_TRUE(rd.ok());
  EXPECT_EQ(rd.value(), r);
  rb[4] = 9;  // status
  EXPECT_EQ(decode_path_reply(rb).error(), DecodeError::kBadField);
  rb[4] = 0;
  rb[5] = 3;  // action
  EXPECT_EQ(decode_path_reply(rb).error(), DecodeError::kBadField);
}

TEST(MultipathWire, GenerationsCompareSerially) {
  EXPECT_TRUE(path_gen_newer(1, 0));
  EXPECT_TRUE(path_gen_newer(0, 255));
  EXPECT_TRUE(path_gen_newer(100, 1));
  EXPECT_FALSE(path_gen_newer(1, 1));
  EXPECT_FALSE(path_gen_newer(0, 1));
  EXPECT_FALSE(path_gen_newer(200, 1));  // 199 ahead: behind, really
}

TEST(MultipathWire, ConnectionStampsItsPathIntoEveryFrame) {
  Endpoint e;
  e.local = kI1;
  e.peer = kT1;
  e.session_id = kSession;
  e.epoch = 3;
  e.path_id = 7;
  e.path_gen = 9;
  Connection c({}, e);
  ASSERT_TRUE(c.send_pdu(Opcode::kCommandRequest, 1, std::vector<uint8_t>(3000, 1)));
  struct Sink : FrameSink {
    std::vector<std::vector<uint8_t>> frames;
    std::vector<uint8_t> buf;
    std::span<uint8_t> acquire(size_t n) override {
      buf.assign(n, 0);
      return buf;
    }
    void commit(size_t n) override {
      buf.resize(n);
      frames.push_back(buf);
    }
  } sink;
  c.poll(TimePoint{} + seconds(1), sink);
  ASSERT_EQ(sink.frames.size(), 3u);
  for (const auto& f : sink.frames) {
    auto v = decode_frame(f);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->header.ext.path_id, 7);
    EXPECT_EQ(v->header.ext.path_gen, 9);
  }
  const FrameHeader ch = c.control_header(Opcode::kKeepalive);
  EXPECT_EQ(ch.ext.path_id, 7);
  EXPECT_EQ(ch.ext.path_gen, 9);
}

// release_unacked hands back exactly the PDUs the peer does not have whole,
// oldest first, and leaves the Connection empty.
TEST(MultipathWire, ConnectionReleasesUndeliveredPdusForFailover) {
  Endpoint ea;
  ea.local = kI0;
  ea.peer = kT0;
  ea.peer_window = 512;
  Endpoint eb = ea;
  std::swap(eb.local, eb.peer);
  TransportParams p;
  p.delayed_ack = Duration::zero();
  Connection a(p, ea), b(p, eb);
  struct Sink : FrameSink {
    std::vector<std::vector<uint8_t>> frames;
    std::vector<uint8_t> buf;
    std::span<uint8_t> acquire(size_t n) override {
      buf.assign(n, 0);
      return buf;
    }
    void commit(size_t n) override {
      buf.resize(n);
      frames.push_back(buf);
    }
  };
  auto pdu = [](uint8_t v, size_t n) { return std::vector<uint8_t>(n, v); };
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 1, pdu(1, 1000)));    // 1 frame
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 2, pdu(2, 5000)));    // 4 frames
  ASSERT_TRUE(a.send_pdu(Opcode::kCommandRequest, 3, pdu(3, 100000)));  // 69 frames
  TimePoint now = TimePoint{} + seconds(1);
  Sink s;
  a.poll(now, s);
  ASSERT_GE(s.frames.size(), 5u);  // initial window: 16 frames
  // The peer gets PDU 1 whole and PDU 2 but for its last frame.
  for (size_t i = 0; i < 4; ++i) b.on_frame(decode_frame(s.frames[i]).value(), now);
  Sink back;
  b.poll(now, back);
  for (const auto& f : back.frames) a.on_frame(decode_frame(f).value(), now);
  EXPECT_GE(a.stats().frames_acked, 4u);
  auto released = a.release_unacked();
  ASSERT_EQ(released.size(), 2u);
  EXPECT_EQ(released[0].tag, 2);
  EXPECT_EQ(released[0].bytes, pdu(2, 5000));
  EXPECT_EQ(released[1].tag, 3);
  EXPECT_EQ(released[1].bytes, pdu(3, 100000));
  EXPECT_EQ(a.send_queue_bytes(), 0u);
  EXPECT_EQ(a.in_flight(), 0u);
  // Still a receiver: the peer's data is acknowledged as before.
  ASSERT_TRUE(b.send_pdu(Opcode::kCommandReply, 9, pdu(9, 10)));
  Sink bs;
  b.poll(now, bs);
  for (const auto& f : bs.frames) a.on_frame(decode_frame(f).value(), now);
  auto got = a.pop_pdu();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->tag, 9);
}

// ------------------------------------------------------- docs examples --

struct Example {
  std::string name;
  std::vector<uint8_t> frame;
};

SessionKeys example_keys() {
  SessionKeys k;
  k.protection = Protection::kIntegrity;
  k.initiator_to_target = crypto::SecretBytes(std::vector<uint8_t>(32, 0x11));
  k.target_to_initiator = crypto::SecretBytes(std::vector<uint8_t>(32, 0x22));
  return k;
}

std::vector<Example> multipath_examples() {
  std::vector<Example> ex;
  {
    // Login reply of a multipath session: the target serves it through two ports.
    MultipathLoginReply m;
    m.reply.nonce = 0x1234;
    m.reply.mtu = 9000;
    m.reply.window = 45;
    m.reply.max_transfer = 1u << 20;
    m.reply.features = kFeaturesV2 | kFeatureMultipath;
    m.reply.session_id = kSession;
    m.reply.epoch = 1;
    m.reply.keepalive_ms = 1000;
    m.reply.dead_time_ms = 10000;
    m.ports = {{kT0, 9000}, {kT1, 9000}};
    FrameHeader h = header(Opcode::kLoginReply, kI0, kT0);
    h.ext.flags = kFlagResponse;
    std::vector<uint8_t> body;
    encode(m, body);
    ex.push_back({"multipath-login-reply", frame_of(h, body)});
  }
  {
    // Join of path 1 generation 1 from initiator port kI1 to target port kT1.
    PathRequest q;
    q.nonce = 0x0a0b0c0d;
    q.action = PathAction::kJoin;
    q.path_id = 1;
    q.path_gen = 1;
    q.mtu = 9000;
    q.window = 45;
    std::vector<uint8_t> body;
    encode(q, body);
    ex.push_back(
        {"path-join-request", frame_of(header(Opcode::kPathRequest, kT1, kI1, 1, 1), body)});
  }
  {
    PathReply r;
    r.nonce = 0x0a0b0c0d;
    r.action = PathAction::kJoin;
    r.path_id = 1;
    r.path_gen = 1;
    r.mtu = 9000;
    r.window = 45;
    FrameHeader h = header(Opcode::kPathReply, kI1, kT1, 1, 1);
    h.ext.flags = kFlagResponse;
    std::vector<uint8_t> body;
    encode(r, body);
    ex.push_back({"path-join-reply", frame_of(h, body)});
  }
  {
    // The same join in an authenticated session: with its proof.
    PathRequest q;
    q.nonce = 0x0a0b0c0d;
    q.action = PathAction::kJoin;
    q.path_id = 1;
    q.path_gen = 1;
    q.mtu = 9000;
    q.window = 45;
    const auto key = derive_path_proof_key(example_keys(), kSession);
    const PathBinding bind{kSession, 1, 1, 1, kI1, kT1};
    const auto proof = path_request_proof(key->span(), PathRole::kInitiator, bind, q);
    q.proof.assign(proof->begin(), proof->end());
    std::vector<uint8_t> body;
    encode(q, body);
    ex.push_back(
        {"path-join-request-proof", frame_of(header(Opcode::kPathRequest, kT1, kI1, 1, 1), body)});
  }
  {
    // Leave notice from the target for path 1 gen 1, carried on path 0.
    PathRequest q;
    q.nonce = 0x00000042;
    q.action = PathAction::kLeave;
    q.path_id = 1;
    q.path_gen = 1;
    std::vector<uint8_t> body;
    encode(q, body);
    ex.push_back({"path-leave", frame_of(header(Opcode::kPathRequest, kI0, kT0, 0, 0), body)});
  }
  {
    // A reply fragment on path 1 generation 1: its own seq 0, ack 0.
    FrameHeader h = header(Opcode::kCommandReply, kI1, kT1, 1, 1);
    h.common.tag = 7;
    h.ext.flags = kFlagAck | kFlagChecksum;
    h.ext.window = 45;
    h.ext.pdu_length = 16;
    ReplyHeader r;
    r.cmd_sn = 9;
    std::vector<uint8_t> body;
    encode(r, body);
    ex.push_back({"path-data", frame_of(h, body)});
  }
  return ex;
}

TEST(MultipathWire, ProtocolDocExamplesMatchEncoder) {
  const std::string path = std::string(HYPERSCSI_SOURCE_DIR) + "/docs/protocol.md";
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  if (std::getenv("HYPERSCSI_PRINT_EXAMPLES"))
    for (const Example& e : multipath_examples())
      std::printf("<!-- example:%s -->\n```text\n%s```\n\n", e.name.c_str(),
                  hex_dump(e.frame).c_str());
  for (const Example& e : multipath_examples()) {
    ASSERT_TRUE(decode_frame(e.frame).ok()) << e.name;
    const std::string marker = "<!-- example:" + e.name + " -->";
    const size_t at = doc.find(marker);
    ASSERT_NE(at, std::string::npos) << "docs/protocol.md lacks example " << e.name;
    const size_t begin = doc.find("```text\n", at);
    const size_t end = doc.find("```", begin + 8);
    ASSERT_NE(end, std::string::npos);
    std::vector<uint8_t> bytes;
    std::istringstream lines(doc.substr(begin + 8, end - begin - 8));
    std::string line;
    while (std::getline(lines, line))
      if (line.size() > 6) {
        auto b = from_hex(line.substr(6));
        bytes.insert(bytes.end(), b.begin(), b.end());
      }
    EXPECT_EQ(bytes, e.frame) << "docs/protocol.md example " << e.name
                              << " is stale; encoder writes:\n"
                              << hex_dump(e.frame);
  }
}

// ------------------------------------------------------------ security --

TEST(PathAuth, ProofsBindEverythingAndVerifyOnlyWithTheKey) {
  const SessionKeys k = example_keys();
  const auto key = derive_path_proof_key(k, kSession);
  ASSERT_TRUE(key);
  EXPECT_EQ(key->size(), 32u);
  const auto other_session = derive_path_proof_key(k, kSession + 1);
  EXPECT_FALSE(crypto::equal_ct(key->span(), other_session->span()));

  PathRequest q;
  q.nonce = 5;
  q.path_id = 2;
  q.path_gen = 3;
  q.mtu = 9000;
  q.window = 45;
  const PathBinding bind{kSession, 1, 2, 3, kI1, kT1};
  auto proof = path_request_proof(key->span(), PathRole::kInitiator, bind, q);
  ASSERT_TRUE(proof);
  q.proof.assign(proof->begin(), proof->end());
  EXPECT_TRUE(verify_path_request(key->span(), PathRole::kInitiator, bind, q));
  // The target's role label, any binding field, any body field: no longer valid.
  EXPECT_FALSE(verify_path_request(key->span(), PathRole::kTarget, bind, q));
  auto b2 = bind;
  b2.epoch = 2;
  EXPECT_FALSE(verify_path_request(key->span(), PathRole::kInitiator, b2, q));
  b2 = bind;
  b2.src = kI0;
  EXPECT_FALSE(verify_path_request(key->span(), PathRole::kInitiator, b2, q));
  b2 = bind;
  b2.path_gen = 4;
  EXPECT_FALSE(verify_path_request(key->span(), PathRole::kInitiator, b2, q));
  auto q2 = q;
  q2.path_gen = 4;
  EXPECT_FALSE(verify_path_request(key->span(), PathRole::kInitiator, bind, q2));
  q2 = q;
  q2.action = PathAction::kLeave;
  EXPECT_FALSE(verify_path_request(key->span(), PathRole::kInitiator, bind, q2));
  q2 = q;
  q2.proof.clear();
  EXPECT_FALSE(verify_path_request(key->span(), PathRole::kInitiator, bind, q2));
  // A request's proof is not a reply's.
  PathReply r;
  r.nonce = 5;
  r.path_id = 2;
  r.path_gen = 3;
  r.proof = q.proof;
  EXPECT_FALSE(verify_path_reply(key->span(), PathRole::kInitiator, bind, r));
}

TEST(PathAuth, EachPathGenerationHasItsOwnFrameKeys) {
  const SessionKeys k = example_keys();
  auto p00 = derive_path_frame_keys(k, kSession, 1, 0, 0);
  auto p01 = derive_path_frame_keys(k, kSession, 1, 0, 1);
  auto p11 = derive_path_frame_keys(k, kSession, 1, 1, 1);
  auto p12 = derive_path_frame_keys(k, kSession, 1, 1, 2);
  auto p11e2 = derive_path_frame_keys(k, kSession, 2, 1, 1);
  ASSERT_TRUE(p01 && p11 && p12 && p11e2);
  ASSERT_TRUE(p00);
  // The login's keys are only the root: even path 0 generation 0 differs.
  const std::vector<const SessionKeys*> all = {&k, &*p00, &*p01, &*p11, &*p12, &*p11e2};
  for (size_t i = 0; i < all.size(); ++i)
    for (size_t j = i + 1; j < all.size(); ++j) {
      EXPECT_FALSE(
          crypto::equal_ct(all[i]->initiator_to_target.span(), all[j]->initiator_to_target.span()))
          << i << " " << j;
      EXPECT_FALSE(
          crypto::equal_ct(all[i]->target_to_initiator.span(), all[j]->target_to_initiator.span()));
    }
  EXPECT_FALSE(crypto::equal_ct(p11->initiator_to_target.span(), p11->target_to_initiator.span()));
  EXPECT_EQ(p11->protection, Protection::kIntegrity);
  auto again = derive_path_frame_keys(k, kSession, 1, 1, 1);
  EXPECT_TRUE(crypto::equal_ct(again->initiator_to_target.span(), p11->initiator_to_target.span()));
  EXPECT_EQ(again->salt_i2t, p11->salt_i2t);
}

// -------------------------------------------------- failure detection --

TEST(PathHealth, TimeoutIsFourRtosWithinTwoHundredAndFiveHundredMs) {
  PathHealthConfig c;
  EXPECT_EQ(failure_timeout(c, milliseconds(1)), milliseconds(200));
  EXPECT_EQ(failure_timeout(c, milliseconds(50)), milliseconds(200));
  EXPECT_EQ(failure_timeout(c, milliseconds(80)), milliseconds(320));
  EXPECT_EQ(failure_timeout(c, milliseconds(2000)), milliseconds(500));
}

TEST(PathHealth, StuckSilentAndKeepalives) {
  PathHealthConfig c;
  TimePoint t0 = TimePoint{} + seconds(10);
  PathHealth h(c, t0);
  h.set_rto(milliseconds(5));  // T_fail 200 ms
  // Frames outstanding, acks progressing: healthy.
  for (int i = 1; i <= 10; ++i) {
    h.on_heard(t0 + milliseconds(100 * i));
    h.on_ack_state(t0 + milliseconds(100 * i), i, 5);
    EXPECT_EQ(h.check(t0 + milliseconds(100 * i + 50), true), PathVerdict::kHealthy);
  }
  const TimePoint last = t0 + milliseconds(1000);
  // Heard (keepalive answers), but no ack news while frames are out: stuck.
  h.on_heard(last + milliseconds(150));
  h.on_ack_state(last + milliseconds(150), 10, 5);
  EXPECT_EQ(h.check(last + milliseconds(199), true), PathVerdict::kHealthy);
  EXPECT_EQ(h.check(last + milliseconds(200), true), PathVerdict::kStuck);
  EXPECT_EQ(h.next_deadline(true), last + milliseconds(200));
  // Nothing outstanding: never stuck; silent only where silence is watched.
  PathHealth idle(c, t0);
  idle.set_rto(milliseconds(5));
  idle.on_ack_state(t0, 0, 0);
  EXPECT_FALSE(idle.keepalive_due(t0 + milliseconds(49)));
  EXPECT_TRUE(idle.keepalive_due(t0 + milliseconds(50)));
  idle.keepalive_sent(t0 + milliseconds(50));
  EXPECT_FALSE(idle.keepalive_due(t0 + milliseconds(99)));
  EXPECT_TRUE(idle.keepalive_due(t0 + milliseconds(100)));
  EXPECT_EQ(idle.check(t0 + milliseconds(300), false), PathVerdict::kHealthy);
  EXPECT_EQ(idle.check(t0 + milliseconds(199), true), PathVerdict::kHealthy);
  EXPECT_EQ(idle.check(t0 + milliseconds(200), true), PathVerdict::kSilent);
}

// ------------------------------------------------------------ scheduler --

TEST(PathScheduler, ShortestExpectedServiceTimeFollowsCapacity) {
  // 1 Gbit/s and 100 Mbit/s paths: 125 and 12.5 MB/s.
  std::vector<PathLoad> p = {{0, true, 0, 125e6, microseconds(20)},
                             {1, true, 0, 12.5e6, microseconds(20)}};
  std::vector<size_t> order;
  rank_paths(p, 131072, order);
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], 0u);
  // Keep handing 128 KiB to the best path: the slow one gets about one in 11.
  uint64_t given[2] = {0, 0};
  for (int i = 0; i < 1100; ++i) {
    rank_paths(p, 131072, order);
    p[order[0]].backlog_bytes += 131072;
    ++given[order[0]];
  }
  EXPECT_NEAR(static_cast<double>(given[1]) / 1100, 1.0 / 11, 0.01);
  // Backlogs drain in about the same time.
  EXPECT_NEAR(p[0].backlog_bytes / p[0].rate, p[1].backlog_bytes / p[1].rate, 0.011);
  // A small PDU goes to the idle slow path when the fast one's backlog would
  // keep it waiting longer (4.0 ms against 0.33 ms), else to the fast one.
  std::vector<PathLoad> q = {{0, true, 500000, 125e6, {}}, {1, true, 0, 12.5e6, {}}};
  rank_paths(q, 4096, order);
  EXPECT_EQ(q[order[0]].id, 1);
  q[0].backlog_bytes = 1000;
  rank_paths(q, 4096, order);
  EXPECT_EQ(q[order[0]].id, 0);
  q[0].usable = false;
  rank_paths(q, 4096, order);
  ASSERT_EQ(order.size(), 1u);
  EXPECT_EQ(q[order[0]].id, 1);
}

// Only its own traffic re-measures a path. One measured slow once (its first
// RTT samples taken in a loaded moment: MultipathE2e's link that came back
// and carried nothing) would lose every PDU for good. Idle and given nothing
// for kRetryIdlePath, it is ranked at the best rate and the smallest one-way
// time among the usable paths, so it gets the next PDU and is measured anew.
TEST(PathScheduler, AnIdlePathDueARetryIsRankedHopefully) {
  std::vector<PathLoad> p = {{0, true, 65536, 125e6, microseconds(20)},
                             {1, true, 0, 5e6, milliseconds(5)}};
  std::vector<size_t> order;
  // By its estimates: 26 ms + 5 ms against 1.6 ms on path 0.
  rank_paths(p, 131072, order);
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], 0u);
  p[1].retry_due = true;
  rank_paths(p, 131072, order);
  EXPECT_EQ(order[0], 1u);
  rank_paths(p, 64, order);  // a read request too
  EXPECT_EQ(order[0], 1u);
  // Hopeful means as good as the best, and it wins that tie: even an idle
  // path 0 with the best estimates ranks behind it.
  p[0].backlog_bytes = 0;
  rank_paths(p, 131072, order);
  EXPECT_EQ(order[0], 1u);
  // A path with a backlog is in use, so being measured: ranked as it is.
  p[0].backlog_bytes = 65536;
  p[1].backlog_bytes = 4096;
  rank_paths(p, 131072, order);
  EXPECT_EQ(order[0], 0u);
  // An unusable path is not tried.
  p[1].backlog_bytes = 0;
  p[1].usable = false;
  rank_paths(p, 131072, order);
  ASSERT_EQ(order.size(), 1u);
  EXPECT_EQ(order[0], 0u);
  // Two paths due a retry: both ahead of the one in use, lower id first.
  p[1].usable = true;
  std::vector<PathLoad> q = {p[0], p[1], {2, true, 0, 1e6, milliseconds(20)}};
  q[2].retry_due = true;
  rank_paths(q, 131072, order);
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0], 1u);
  EXPECT_EQ(order[1], 2u);
  EXPECT_EQ(order[2], 0u);
}

TEST(PathScheduler, DeliveryRateLearnsFromBackloggedIntervalsOnly) {
  DeliveryRate r(125e6);
  TimePoint t = TimePoint{} + seconds(1);
  uint64_t acked = 0;
  r.on_poll(t, acked, true, microseconds(100));
  EXPECT_FALSE(r.measured());
  EXPECT_EQ(r.bytes_per_second(), 125e6);  // the prior until measured
  // 12.5 MB/s while backlogged.
  for (int i = 0; i < 200; ++i) {
    t += milliseconds(1);
    acked += 12500;
    r.on_poll(t, acked, true, microseconds(100));
  }
  EXPECT_TRUE(r.measured());
  EXPECT_NEAR(r.bytes_per_second(), 12.5e6, 0.1e6);
  // Idle (application-limited) intervals carrying little do not lower it ...
  for (int i = 0; i < 1000; ++i) {
    t += milliseconds(1);
    acked += 100;
    r.on_poll(t, acked, false, microseconds(100));
  }
  EXPECT_NEAR(r.bytes_per_second(), 12.5e6, 0.1e6);
  // ... nor does a stall shorter than the sample window (a timeout) ...
  for (int i = 0; i < 200; ++i) {
    t += milliseconds(1);
    r.on_poll(t, acked, true, microseconds(100));
  }
  EXPECT_NEAR(r.bytes_per_second(), 12.5e6, 0.1e6);
  // ... but a lasting drop is learned within half a second ...
  for (int i = 0; i < 600; ++i) {
    t += milliseconds(1);
    acked += 5000;
    r.on_poll(t, acked, true, microseconds(100));
  }
  EXPECT_NEAR(r.bytes_per_second(), 5e6, 0.1e6);
  // ... and an interval that carried more than the estimate raises it.
  for (int i = 0; i < 40; ++i) {
    t += milliseconds(1);
    acked += 50000;
    r.on_poll(t, acked, false, microseconds(100));
  }
  EXPECT_GT(r.bytes_per_second(), 40e6);
}

// --------------------------------------------------------- command order --

ReceivedPdu command(uint32_t cmd_sn, uint32_t reply_ack_sn) {
  ReceivedPdu p;
  p.opcode = Opcode::kCommandRequest;
  p.tag = static_cast<uint16_t>(cmd_sn & kMaxTag);
  p.bytes.resize(24);
  bytes::store_be32(p.bytes.data(), cmd_sn);
  bytes::store_be32(p.bytes.data() + 4, reply_ack_sn);
  return p;
}

std::vector<uint32_t> drain(CommandOrderer& o, TimePoint now) {
  std::vector<uint32_t> out;
  while (auto p = o.pop(now)) out.push_back(bytes::load_be32(p->bytes.data()));
  return out;
}

TEST(CommandOrder, HandsCommandsOnInCmdSnOrder) {
  CommandOrderer o;
  const TimePoint t = TimePoint{} + seconds(1);
  o.push(command(10, 10), t);
  o.push(command(12, 10), t);
  o.push(command(13, 10), t);
  EXPECT_EQ(drain(o, t), (std::vector<uint32_t>{10}));
  EXPECT_EQ(o.held_count(), 2u);
  o.push(command(11, 10), t);
  EXPECT_EQ(drain(o, t), (std::vector<uint32_t>{11, 12, 13}));
  // A resend of an old command goes on at once (the cache answers it).
  o.push(command(11, 10), t);
  EXPECT_EQ(drain(o, t), (std::vector<uint32_t>{11}));
  EXPECT_EQ(o.stats().duplicates, 1u);
  // reply_ack_sn moves the start: nothing below it can still be missing.
  o.push(command(20, 18), t);
  EXPECT_EQ(drain(o, t), (std::vector<uint32_t>{}));
  o.push(command(18, 18), t);
  o.push(command(19, 18), t);
  EXPECT_EQ(drain(o, t), (std::vector<uint32_t>{18, 19, 20}));
  // Serial order across the wrap.
  CommandOrderer w;
  w.push(command(0, 0xFFFFFFFEu), t);
  w.push(command(0xFFFFFFFFu, 0xFFFFFFFEu), t);
  w.push(command(0xFFFFFFFEu, 0xFFFFFFFEu), t);
  EXPECT_EQ(drain(w, t), (std::vector<uint32_t>{0xFFFFFFFEu, 0xFFFFFFFFu, 0}));
}

TEST(CommandOrder, HolesAreNotWaitedForForever) {
  CommandOrderConfig c;
  c.max_hold = milliseconds(100);
  c.max_held = 4;
  CommandOrderer o(c);
  const TimePoint t = TimePoint{} + seconds(1);
  o.push(command(1, 1), t);
  o.push(command(3, 1), t);
  EXPECT_EQ(drain(o, t), (std::vector<uint32_t>{1}));
  EXPECT_EQ(o.next_deadline(), t + milliseconds(100));
  EXPECT_EQ(drain(o, t + milliseconds(99)), (std::vector<uint32_t>{}));
  EXPECT_EQ(drain(o, t + milliseconds(100)), (std::vector<uint32_t>{3}));
  EXPECT_EQ(o.stats().gaps_skipped, 1u);
  o.push(command(2, 1), t + milliseconds(101));  // late: executes anyway
  EXPECT_EQ(drain(o, t + milliseconds(101)), (std::vector<uint32_t>{2}));
  // Too many held: the lowest goes on.
  for (uint32_t sn : {6, 7, 8, 9, 10}) o.push(command(sn, 4), t + seconds(1));
  EXPECT_EQ(drain(o, t + seconds(1)), (std::vector<uint32_t>{6, 7, 8, 9, 10}));
  // Not a command, or too short: passed through untouched.
  ReceivedPdu junk;
  junk.opcode = Opcode::kCommandReply;
  o.push(junk, t);
  EXPECT_EQ(o.pop(t)->opcode, Opcode::kCommandReply);
}

// --------------------------------------------------- target path answers --

struct TargetRig {
  explicit TargetRig(std::optional<SessionKeys> keys = std::nullopt) {
    TargetPathsConfig c;
    c.transport.role = PathRole::kTarget;
    c.transport.session_id = kSession;
    c.transport.epoch = 1;
    c.ports = {{kT0, 9000}, {kT1, 9000}};
    c.keys = std::move(keys);
    c.mac_allowed = [](const MacAddress& m) { return m != MacAddress{0x02, 0, 0, 0, 0, 0x66}; };
    PathSpec login;
    login.local = kT0;
    login.peer = kI0;
    login.mtu = 9000;
    paths = std::make_unique<TargetPaths>(std::move(c), login, now);
  }
  // Sends a request; returns the reply the target queued.
  std::optional<PathReply> request(const MacAddress& from, const MacAddress& to, uint8_t hdr_id,
                                   uint8_t hdr_gen, const PathRequest& q) {
    std::vector<uint8_t> body;
    encode(q, body);
    auto f = frame_of(header(Opcode::kPathRequest, to, from, hdr_id, hdr_gen), body);
    FrameView opened;
    paths->on_frame(decode_frame(f).value(), now, opened);
    struct Sink : FrameSink {
      std::vector<std::vector<uint8_t>> frames;
      std::vector<uint8_t> buf;
      std::span<uint8_t> acquire(size_t n) override {
        buf.assign(n, 0);
        return buf;
      }
      void commit(size_t n) override {
        buf.resize(n);
        frames.push_back(buf);
      }
    } sink;
    paths->poll(now, sink);
    last_frames = sink.frames;
    for (const auto& fr : sink.frames) {
      auto v = decode_frame(fr);
      if (v && v->header.common.opcode == Opcode::kPathReply) {
        EXPECT_EQ(v->header.dst, from);
        EXPECT_EQ(v->header.ext.path_id, hdr_id);
        return decode_path_reply(v->payload).value();
      }
    }
    return std::nullopt;
  }
  static PathRequest join(uint8_t id, uint8_t gen, uint32_t nonce = 1, uint16_t mtu = 9000) {
    PathRequest q;
    q.nonce = nonce;
    q.action = PathAction::kJoin;
    q.path_id = id;
    q.path_gen = gen;
    q.mtu = mtu;
    q.window = 45;
    return q;
  }
  TimePoint now = TimePoint{} + seconds(5);
  std::unique_ptr<TargetPaths> paths;
  std::vector<std::vector<uint8_t>> last_frames;
};

TEST(TargetPaths, JoinActivateLeaveAndRefusals) {
  TargetRig r;
  auto ok = r.request(kI1, kT1, 1, 1, TargetRig::join(1, 1));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, PathStatus::kOk);
  EXPECT_EQ(ok->mtu, 9000);
  EXPECT_EQ(ok->window, 45);
  EXPECT_EQ(r.paths->transport().state(1), PathState::kStandby);
  // The same request again (our answer was lost): the same answer, no new state.
  auto again = r.request(kI1, kT1, 1, 1, TargetRig::join(1, 1));
  ASSERT_TRUE(again);
  EXPECT_EQ(again.value(), ok.value());
  EXPECT_EQ(r.paths->stats().duplicate_requests, 1u);
  EXPECT_EQ(r.paths->transport().path(1)->counters.generations, 1u);
  // Older or equal generation with a new nonce: a replay, refused.
  EXPECT_EQ(r.request(kI1, kT1, 1, 1, TargetRig::join(1, 1, 2))->status,
            PathStatus::kStaleGeneration);
  EXPECT_EQ(r.request(kI1, kT1, 1, 0, TargetRig::join(1, 0, 3))->status,
            PathStatus::kStaleGeneration);
  // Activation.
  PathRequest act;
  act.nonce = 4;
  act.action = PathAction::kActivate;
  act.path_id = 1;
  act.path_gen = 1;
  EXPECT_EQ(r.request(kI1, kT1, 1, 1, act)->status, PathStatus::kOk);
  EXPECT_EQ(r.paths->transport().state(1), PathState::kActive);
  act.path_gen = 2;
  EXPECT_EQ(r.request(kI1, kT1, 1, 1, act)->status, PathStatus::kUnknownPath);
  // The same MACs under another id; a port not ours; a MAC not allowed; a tiny MTU.
  EXPECT_EQ(r.request(kI1, kT1, 2, 1, TargetRig::join(2, 1, 5))->status,
            PathStatus::kDuplicatePath);
  EXPECT_EQ(r.request({0x02, 0, 0, 0, 0, 0x66}, kT1, 3, 1, TargetRig::join(3, 1, 6))->status,
            PathStatus::kAccessDenied);
  EXPECT_EQ(r.request(kI1, kT0, 4, 1, TargetRig::join(4, 1, 7, 500))->status,
            PathStatus::kMtuRejected);
  // A join must travel on the path it names.
  EXPECT_EQ(r.request(kI1, kT0, 4, 1, TargetRig::join(5, 1, 8))->status, PathStatus::kUnknownPath);
  // Leave: undelivered work moves, the path is failed; a newer join brings it back.
  PathRequest leave;
  leave.nonce = 9;
  leave.action = PathAction::kLeave;
  leave.path_id = 1;
  leave.path_gen = 1;
  EXPECT_EQ(r.request(kI0, kT0, 0, 0, leave)->status, PathStatus::kOk);
  EXPECT_EQ(r.paths->transport().state(1), PathState::kFailed);
  EXPECT_EQ(r.request(kI1, kT1, 1, 2, TargetRig::join(1, 2, 10))->status, PathStatus::kOk);
  EXPECT_EQ(r.paths->transport().generation(1), 2);
}

TEST(TargetPaths, AuthenticatedSessionsNeedProofs) {
  TargetRig r(example_keys());
  // No proof: refused, nothing installed.
  EXPECT_EQ(r.request(kI1, kT1, 1, 1, TargetRig::join(1, 1))->status, PathStatus::kAuthFailed);
  EXPECT_FALSE(r.paths->transport().has(1));
  // The right proof: accepted, and the reply proves the target.
  const auto key = derive_path_proof_key(example_keys(), kSession);
  PathRequest q = TargetRig::join(1, 1, 2);
  const auto proof =
      path_request_proof(key->span(), PathRole::kInitiator, {kSession, 1, 1, 1, kI1, kT1}, q);
  q.proof.assign(proof->begin(), proof->end());
  auto reply = r.request(kI1, kT1, 1, 1, q);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, PathStatus::kOk);
  EXPECT_TRUE(verify_path_reply(key->span(), PathRole::kTarget, {kSession, 1, 1, 1, kT1, kI1},
                                reply.value()));
  // The same proof from another port (a different binding): refused.
  EXPECT_EQ(r.request(kI0, kT1, 1, 1, q)->status, PathStatus::kAuthFailed);
  EXPECT_EQ(r.paths->stats().auth_failures, 2u);
  // Protected generations never wrap.
  PathRequest wrap = TargetRig::join(1, 0, 3);
  const auto wp =
      path_request_proof(key->span(), PathRole::kInitiator, {kSession, 1, 1, 0, kI1, kT1}, wrap);
  wrap.proof.assign(wp->begin(), wp->end());
  EXPECT_EQ(r.request(kI1, kT1, 1, 0, wrap)->status, PathStatus::kStaleGeneration);
}

// Frames of a generation that was replaced never reach its successor, and a
// frame with another path's MACs is dropped.
TEST(PathSetFrames, OldGenerationsAndWrongMacsAreDropped) {
  PathSetConfig c;
  c.role = PathRole::kTarget;
  c.session_id = kSession;
  c.epoch = 1;
  PathSet s(c);
  const TimePoint now = TimePoint{} + seconds(1);
  PathSpec p;
  p.id = 1;
  p.gen = 1;
  p.local = kT1;
  p.peer = kI1;
  p.mtu = 9000;
  p.state = PathState::kActive;
  ASSERT_TRUE(s.install(p, now));
  FrameHeader h = header(Opcode::kCommandRequest, kT1, kI1, 1, 1);
  h.ext.flags = kFlagAck;
  h.ext.pdu_length = 24;
  const std::vector<uint8_t> body = command(1, 1).bytes;
  FrameView opened;
  EXPECT_EQ(s.on_frame(decode_frame(frame_of(h, body)).value(), now, opened),
            PathSet::FrameResult::kHandled);
  EXPECT_TRUE(s.pop_pdu());
  p.gen = 2;
  ASSERT_TRUE(s.install(p, now));
  h.common.tag = 2;
  EXPECT_EQ(s.on_frame(decode_frame(frame_of(h, body)).value(), now, opened),
            PathSet::FrameResult::kDropped);
  EXPECT_EQ(s.path(1)->counters.frames_stale, 1u);
  h.ext.path_gen = 2;
  h.src = kI0;
  EXPECT_EQ(s.on_frame(decode_frame(frame_of(h, body)).value(), now, opened),
            PathSet::FrameResult::kDropped);
  EXPECT_EQ(s.path(1)->counters.frames_misrouted, 1u);
  h.ext.path_id = 9;
  EXPECT_EQ(s.on_frame(decode_frame(frame_of(h, body)).value(), now, opened),
            PathSet::FrameResult::kDropped);
  EXPECT_EQ(s.stats().frames_bad_path, 1u);
  EXPECT_FALSE(s.pop_pdu());
}

}  // namespace
}  // namespace hyperscsi::proto

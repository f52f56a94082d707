// Message bodies and PDU headers: byte layouts, round trips at the limits,
// every rejection, truncation and random input.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/messages.h"

namespace hyperscsi::proto {
namespace {

template <typename M>
std::vector<uint8_t> enc(const M& m) {
  std::vector<uint8_t> out;
  encode(m, out);
  return out;
}

template <typename M, typename Decode>
void expect_round_trip(const M& m, Decode decode) {
  const auto body = enc(m);
  auto d = decode(body);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(*d, m);
}

// Every strict prefix of a valid body is rejected (bodies have no optional tail).
template <typename Decode>
void expect_every_prefix_rejected(const std::vector<uint8_t>& body, Decode decode) {
  for (size_t len = 0; len < body.size(); ++len) {
    std::vector<uint8_t> cut(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_FALSE(decode(cut).ok()) << "accepted a prefix of " << len << " bytes";
  }
}

LoginRequest full_login_request() {
  LoginRequest m;
  m.nonce = 0xA1B2C3D4;
  m.mtu = 9000;
  m.window = 256;
  m.max_transfer = 4 << 20;
  m.features = kFeaturesV2;
  m.resume_session_id = 0xCAFEF00D;
  m.resume_epoch = 0xFFFF;
  m.initiator_name = std::string(kMaxNameLength, 'i');
  m.target_name = std::string(kMaxNameLength, 't');
  m.auth.assign(kMaxAuthLength, 0x5C);
  return m;
}

LoginReply full_login_reply() {
  LoginReply m;
  m.nonce = 7;
  m.status = LoginStatus::kResumeFailed;
  m.mtu = 1500;
  m.window = 32;
  m.max_transfer = 1 << 20;
  m.features = kFeatureSack;
  m.session_id = 0xFFFFFFFF;
  m.epoch = 3;
  m.keepalive_ms = 500;
  m.dead_time_ms = 5000;
  m.auth.assign(kMaxAuthLength, 0xA5);
  return m;
}

DiscoveryReply full_discovery_reply() {
  DiscoveryReply m{0xFFFFFFFF, 9000, kFeaturesV2, std::string(kMaxNameLength, 'n'), {}};
  for (size_t i = 0; i < kMaxLunsInDiscovery; ++i) {
    m.luns.push_back(
        LunInfo{static_cast<uint16_t>(i), i % 2 == 1, 4096, 0x0123456789ABCDEFull + i});
  }
  return m;
}

CommandHeader max_command() {
  CommandHeader c;
  c.cmd_sn = 0xFFFFFFFF;
  c.reply_ack_sn = 0xFFFFFFF0;
  c.lun = 0xFFFF;
  c.flags = kCommandFlagDataIn | kCommandFlagDataOut;
  c.task_attribute = 2;
  c.expected_data_in = 0x7FFFFFFF;
  c.data_out_length = 5;
  for (size_t i = 0; i < kMaxCdbLength; ++i) c.cdb[i] = static_cast<uint8_t>(0x7F + i);
  c.cdb_length = kMaxCdbLength;
  return c;
}

// ---- byte layouts ----

TEST(Messages, CommandHeaderByteExact) {
  CommandHeader c;
  c.cmd_sn = 0x01020304;
  c.reply_ack_sn = 0x05060708;
  c.lun = 0x090A;
  c.flags = kCommandFlagDataOut;
  c.task_attribute = 1;
  c.expected_data_in = 0x0B0C0D0E;
  c.data_out_length = 2;
  const uint8_t cdb[6] = {0x0A, 0, 0, 1, 1, 0};  // WRITE(6)
  std::copy(std::begin(cdb), std::end(cdb), c.cdb.begin());
  c.cdb_length = 6;
  const std::vector<uint8_t> want = {
      0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  // cmd_sn, reply_ack_sn
      0x09, 0x0A, 0x02, 0x01,                          // lun, flags, task_attribute
      0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x00, 0x00, 0x02,  // expected_data_in, data_out_length
      0x06, 0x00, 0x00, 0x00,                          // cdb_length, reserved
      0x0A, 0x00, 0x00, 0x01, 0x01, 0x00,              // cdb
  };
  EXPECT_EQ(enc(c), want);
  EXPECT_EQ(kCommandHeaderFixedSize + 6, want.size());

  std::vector<uint8_t> pdu = want;
  pdu.push_back(0xAA);
  pdu.push_back(0xBB);
  auto d = decode_command(pdu);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->header, c);
  ASSERT_EQ(d->data_out.size(), 2u);
  EXPECT_EQ(d->data_out.data(), pdu.data() + want.size());  // points into the PDU
}

TEST(Messages, ReplyHeaderByteExact) {
  ReplyHeader r;
  r.cmd_sn = 0x11223344;
  r.status = 0x02;
  r.response = CommandResponse::kCompleted;
  r.flags = kReplyFlagUnderflow;
  r.residual = 0x200;
  r.data_in_length = 3;
  r.sense = {0x70, 0x00, 0x03};
  const std::vector<uint8_t> want = {
      0x11, 0x22, 0x33, 0x44, 0x02, 0x00, 0x03, 0x02,  // cmd_sn status response sense_len flags
      0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x03,  // residual, data_in_length
      0x70, 0x00, 0x03,                                // sense
  };
  EXPECT_EQ(enc(r), want);
  EXPECT_EQ(kReplyHeaderFixedSize + 3, want.size());
  std::vector<uint8_t> pdu = want;
  pdu.insert(pdu.end(), {1, 2, 3});
  auto d = decode_reply(pdu);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->header, r);
  EXPECT_EQ(std::vector<uint8_t>(d->data_in.begin(), d->data_in.end()),
            (std::vector<uint8_t>{1, 2, 3}));
}

TEST(Messages, ControlBodiesByteExact) {
  EXPECT_EQ(enc(DiscoveryRequest{0x01020304, "ab", "c"}),
            (std::vector<uint8_t>{1, 2, 3, 4, 2, 'a', 'b', 1, 'c'}));
  EXPECT_EQ(enc(DiscoveryReply{9, 1500, 3, "t", {LunInfo{0x0102, true, 512, 0x1000}}}),
            (std::vector<uint8_t>{0,    0,    0,    9,    0x05, 0xDC, 0, 0, 0, 3, 1, 't', 0, 1,  //
                                  0x01, 0x02, 0x01, 0x00, 0,    0,    2, 0, 0, 0, 0, 0,   0, 0,
                                  0x10, 0}));
  LoginRequest lr;
  lr.nonce = 1;
  lr.mtu = 1500;
  lr.window = 2;
  lr.max_transfer = 3;
  lr.features = 4;
  lr.resume_session_id = 5;
  lr.resume_epoch = 6;
  lr.initiator_name = "i";
  lr.target_name = "t";
  lr.auth = {0xEE};
  EXPECT_EQ(enc(lr), (std::vector<uint8_t>{0, 0, 0, 1, 0x05, 0xDC, 0, 2, 0,   0, 0,   3, 0, 0,   0,
                                           4, 0, 0, 0, 5,    0,    6, 1, 'i', 1, 't', 0, 1, 0xEE}));
  LoginReply rp;
  rp.nonce = 1;
  rp.status = LoginStatus::kMtuMismatch;
  rp.mtu = 2;
  rp.window = 3;
  rp.max_transfer = 4;
  rp.features = 5;
  rp.session_id = 6;
  rp.epoch = 7;
  rp.keepalive_ms = 8;
  rp.dead_time_ms = 9;
  EXPECT_EQ(enc(rp), (std::vector<uint8_t>{0, 0, 0, 1, 4, 0, 0, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0,
                                           5, 0, 0, 0, 6, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0}));
  EXPECT_EQ(enc(Disconnect{DisconnectReason::kStaleEpoch}), (std::vector<uint8_t>{5}));
  EXPECT_EQ(enc(Keepalive{0xDEADBEEF, 0}), (std::vector<uint8_t>{0xDE, 0xAD, 0xBE, 0xEF}));
}

TEST(Messages, KeepalivePadsToTheRequestedFrameSize) {
  for (uint16_t pad_to :
       {uint16_t{0}, uint16_t{44}, uint16_t{45}, uint16_t{1500}, uint16_t{9000}}) {
    const auto body = enc(Keepalive{77, pad_to});
    const size_t want = std::max<size_t>(4, pad_to > kHeaderSize ? pad_to - kHeaderSize : 0);
    EXPECT_EQ(body.size(), want) << pad_to;
    if (pad_to >= 44) {
      EXPECT_EQ(kHeaderSize + body.size(), pad_to);
    }
    for (size_t i = 4; i < body.size(); ++i) ASSERT_EQ(body[i], 0);
    auto d = decode_keepalive(body);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->probe_id, 77u);
    EXPECT_EQ(d->pad_to, 0);  // padding is not a decoded field
  }
  // The padding's content is ignored.
  EXPECT_TRUE(decode_keepalive(std::vector<uint8_t>{0, 0, 0, 1, 0xFF, 0xFF}).ok());
}

// ---- round trips ----

TEST(Messages, RoundTripsAtTheLimits) {
  expect_round_trip(DiscoveryRequest{}, decode_discovery_request);
  expect_round_trip(
      DiscoveryRequest{1, std::string(kMaxNameLength, 'x'), std::string(kMaxNameLength, 'y')},
      decode_discovery_request);
  expect_round_trip(DiscoveryReply{}, decode_discovery_reply);  // no LUNs
  expect_round_trip(full_discovery_reply(), decode_discovery_reply);
  expect_round_trip(LoginRequest{}, decode_login_request);
  expect_round_trip(full_login_request(), decode_login_request);
  expect_round_trip(LoginReply{}, decode_login_reply);
  expect_round_trip(full_login_reply(), decode_login_reply);
  for (uint8_t r = 0; r <= 5; ++r) {
    expect_round_trip(Disconnect{static_cast<DisconnectReason>(r)}, decode_disconnect);
  }
  expect_round_trip(Keepalive{0xFFFFFFFF, 0}, decode_keepalive);

  const CommandHeader c = max_command();
  auto pdu = enc(c);
  EXPECT_EQ(pdu.size(), kCommandHeaderFixedSize + kMaxCdbLength);
  pdu.insert(pdu.end(), {9, 8, 7, 6, 5});
  auto dc = decode_command(pdu);
  ASSERT_TRUE(dc.ok()) << to_string(dc.error());
  EXPECT_EQ(dc->header, c);
  EXPECT_EQ(dc->data_out.size(), 5u);

  ReplyHeader r;
  r.cmd_sn = 0xFFFFFFFF;
  r.status = 0xFF;
  r.response = CommandResponse::kRejected;
  r.flags = kReplyFlagOverflow;
  r.residual = 0xFFFFFFFF;
  r.sense.assign(kMaxSenseLength, 0x33);
  auto rpdu = enc(r);
  EXPECT_EQ(rpdu.size(), kReplyHeaderFixedSize + kMaxSenseLength);
  auto dr = decode_reply(rpdu);
  ASSERT_TRUE(dr.ok()) << to_string(dr.error());
  EXPECT_EQ(dr->header, r);
  EXPECT_TRUE(dr->data_in.empty());
}

TEST(Messages, EncodersClampToTheLimits) {
  DiscoveryRequest m{1, std::string(300, 'a'), ""};
  auto d = decode_discovery_request(enc(m));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->initiator_name.size(), kMaxNameLength);
  DiscoveryReply rep{};
  rep.luns.resize(kMaxLunsInDiscovery + 10, LunInfo{});
  auto dr = decode_discovery_reply(enc(rep));
  ASSERT_TRUE(dr.ok());
  EXPECT_EQ(dr->luns.size(), kMaxLunsInDiscovery);
}

TEST(Messages, RandomizedRoundTrips) {
  std::mt19937 rng(1123);
  auto str = [&] {
    std::string s(rng() % (kMaxNameLength + 1), ' ');
    for (char& ch : s) ch = static_cast<char>(rng());
    return s;
  };
  auto blob = [&](size_t max) {
    std::vector<uint8_t> v(rng() % (max + 1));
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
  };
  for (int iter = 0; iter < 500; ++iter) {
    SCOPED_TRACE(iter);
    expect_round_trip(DiscoveryRequest{static_cast<uint32_t>(rng()), str(), str()},
                      decode_discovery_request);
    DiscoveryReply rep{static_cast<uint32_t>(rng()),
                       static_cast<uint16_t>(rng()),
                       static_cast<uint32_t>(rng()),
                       str(),
                       {}};
    for (size_t i = rng() % 20; i > 0; --i)
      rep.luns.push_back({static_cast<uint16_t>(rng()), rng() % 2 == 0,
                          static_cast<uint32_t>(rng() | 1), (uint64_t{rng()} << 32) | rng()});
    expect_round_trip(rep, decode_discovery_reply);
    LoginRequest lr;
    lr.nonce = static_cast<uint32_t>(rng());
    lr.mtu = static_cast<uint16_t>(rng());
    lr.window = static_cast<uint16_t>(rng());
    lr.max_transfer = static_cast<uint32_t>(rng());
    lr.features = static_cast<uint32_t>(rng());
    lr.resume_session_id = static_cast<uint32_t>(rng());
    lr.resume_epoch = static_cast<uint16_t>(rng());
    lr.initiator_name = str();
    lr.target_name = str();
    lr.auth = blob(kMaxAuthLength);
    expect_round_trip(lr, decode_login_request);
    LoginReply rp;
    rp.nonce = static_cast<uint32_t>(rng());
    rp.status = static_cast<LoginStatus>(rng() % 9);
    rp.session_id = static_cast<uint32_t>(rng());
    rp.epoch = static_cast<uint16_t>(rng());
    rp.dead_time_ms = static_cast<uint32_t>(rng());
    rp.auth = blob(kMaxAuthLength);
    expect_round_trip(rp, decode_login_reply);

    CommandHeader c;
    c.cmd_sn = static_cast<uint32_t>(rng());
    c.flags = static_cast<uint8_t>(rng() % 4);
    c.task_attribute = static_cast<uint8_t>(rng() % 3);
    c.cdb_length = static_cast<uint8_t>(6 + rng() % 27);
    for (size_t i = 0; i < c.cdb_length; ++i) c.cdb[i] = static_cast<uint8_t>(rng());
    const auto data = blob(3000);
    c.data_out_length = static_cast<uint32_t>(data.size());
    auto pdu = enc(c);
    pdu.insert(pdu.end(), data.begin(), data.end());
    auto dc = decode_command(pdu);
    ASSERT_TRUE(dc.ok()) << to_string(dc.error());
    EXPECT_EQ(dc->header, c);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), dc->data_out.begin(), dc->data_out.end()));

    ReplyHeader r;
    r.cmd_sn = static_cast<uint32_t>(rng());
    r.status = static_cast<uint8_t>(rng());
    r.response = static_cast<CommandResponse>(rng() % 3);
    r.flags = static_cast<uint8_t>(rng() % 3);
    r.sense = blob(kMaxSenseLength);
    const auto din = blob(3000);
    r.data_in_length = static_cast<uint32_t>(din.size());
    auto rpdu = enc(r);
    rpdu.insert(rpdu.end(), din.begin(), din.end());
    auto dr = decode_reply(rpdu);
    ASSERT_TRUE(dr.ok()) << to_string(dr.error());
    EXPECT_EQ(dr->header, r);
    EXPECT_TRUE(std::equal(din.begin(), din.end(), dr->data_in.begin(), dr->data_in.end()));
    if (HasFailure()) break;
  }
}

// ---- rejections ----

template <typename R>
DecodeError err(const R& r) {
  EXPECT_FALSE(r.ok());
  return r.ok() ? DecodeError::kNotHyperScsi : r.error();
}

TEST(MessagesDecode, RejectsBadValuesAndLengths) {
  using B = std::vector<uint8_t>;
  // Strings: a length over kMaxNameLength, and one running past the body.
  EXPECT_EQ(err(decode_discovery_request(B{0, 0, 0, 1, 224})), DecodeError::kBadField);
  EXPECT_EQ(err(decode_discovery_request(B{0, 0, 0, 1, 3, 'a', 'b'})), DecodeError::kTruncated);
  EXPECT_EQ(err(decode_discovery_request(B{0, 0, 0, 1, 0, 0, 0xAA})), DecodeError::kBadLength);

  // DiscoveryReply: LUN count over the limit, a LUN with unknown flags or no block size.
  B rep = enc(DiscoveryReply{1, 1500, 0, "t", {LunInfo{0, false, 512, 10}}});
  const size_t count_at = 4 + 2 + 4 + 2;
  B over = rep;
  bytes::store_be16(&over[count_at], 257);
  EXPECT_EQ(err(decode_discovery_reply(over)), DecodeError::kBadField);
  B more = rep;
  bytes::store_be16(&more[count_at], 2);  // announces two, carries one
  EXPECT_EQ(err(decode_discovery_reply(more)), DecodeError::kTruncated);
  B lunflags = rep;
  lunflags[count_at + 2 + 2] = 0x02;
  EXPECT_EQ(err(decode_discovery_reply(lunflags)), DecodeError::kBadField);
  B nobs = rep;
  bytes::store_be32(&nobs[count_at + 2 + 4], 0);
  EXPECT_EQ(err(decode_discovery_reply(nobs)), DecodeError::kBadField);
  B lunres = rep;
  lunres[count_at + 2 + 3] = 0xFF;  // reserved: ignored
  EXPECT_TRUE(decode_discovery_reply(lunres).ok());

  // Login: auth over kMaxAuthLength, unknown status, trailing bytes.
  B lr = enc(LoginRequest{});
  bytes::store_be16(&lr[lr.size() - 2], 513);
  EXPECT_EQ(err(decode_login_request(lr)), DecodeError::kBadField);
  bytes::store_be16(&lr[lr.size() - 2], 1);
  EXPECT_EQ(err(decode_login_request(lr)), DecodeError::kTruncated);
  B lr2 = enc(LoginRequest{});
  lr2.push_back(0);
  EXPECT_EQ(err(decode_login_request(lr2)), DecodeError::kBadLength);
  B rp = enc(LoginReply{});
  rp[4] = 9;  // 8 is kAuthContinue
  EXPECT_EQ(err(decode_login_reply(rp)), DecodeError::kBadField);
  rp[4] = 0;
  rp[5] = 0xFF;  // reserved: ignored
  EXPECT_TRUE(decode_login_reply(rp).ok());

  EXPECT_EQ(err(decode_disconnect(B{6})), DecodeError::kBadField);
  EXPECT_EQ(err(decode_disconnect(B{})), DecodeError::kTruncated);
  EXPECT_EQ(err(decode_disconnect(B{0, 0})), DecodeError::kBadLength);
  EXPECT_EQ(err(decode_keepalive(B{0, 0, 1})), DecodeError::kTruncated);
}

TEST(MessagesDecode, RejectsMalformedCommandPdus) {
  using B = std::vector<uint8_t>;
  CommandHeader c = max_command();
  c.data_out_length = 4;
  B base = enc(c);
  base.insert(base.end(), {1, 2, 3, 4});
  ASSERT_TRUE(decode_command(base).ok());
  auto with = [&](size_t at, uint8_t v) {
    B p = base;
    p[at] = v;
    return err(decode_command(p));
  };
  EXPECT_EQ(with(10, 0x04), DecodeError::kBadField);  // unknown flag
  EXPECT_EQ(with(11, 3), DecodeError::kBadField);     // task attribute
  EXPECT_EQ(with(20, 5), DecodeError::kBadField);     // cdb_length < 6
  EXPECT_EQ(with(20, 33), DecodeError::kBadField);    // cdb_length > 32
  EXPECT_EQ(with(20, 0), DecodeError::kBadField);
  B extra = base;
  extra.push_back(5);
  EXPECT_EQ(err(decode_command(extra)), DecodeError::kBadLength);  // more data-out
  B fewer(base.begin(), base.end() - 1);
  EXPECT_EQ(err(decode_command(fewer)), DecodeError::kBadLength);  // less data-out
  B fixed_only(base.begin(), base.begin() + 23);
  EXPECT_EQ(err(decode_command(fixed_only)), DecodeError::kTruncated);
  B cdb_cut(base.begin(), base.begin() + 30);
  EXPECT_EQ(err(decode_command(cdb_cut)), DecodeError::kTruncated);
  B reserved = base;
  reserved[21] = 0xFF;  // reserved: ignored
  EXPECT_TRUE(decode_command(reserved).ok());
}

TEST(MessagesDecode, RejectsMalformedReplyPdus) {
  using B = std::vector<uint8_t>;
  ReplyHeader r;
  r.sense = {0x70, 0, 5};
  r.data_in_length = 2;
  B base = enc(r);
  base.insert(base.end(), {7, 7});
  ASSERT_TRUE(decode_reply(base).ok());
  auto with = [&](size_t at, uint8_t v) {
    B p = base;
    p[at] = v;
    return err(decode_reply(p));
  };
  EXPECT_EQ(with(5, 3), DecodeError::kBadField);     // unknown CommandResponse
  EXPECT_EQ(with(6, 253), DecodeError::kBadField);   // sense over kMaxSenseLength
  EXPECT_EQ(with(6, 200), DecodeError::kTruncated);  // sense runs past the PDU
  EXPECT_EQ(with(7, 0x04), DecodeError::kBadField);  // unknown flag
  EXPECT_EQ(with(7, 0x03), DecodeError::kBadField);  // overflow and underflow
  EXPECT_EQ(with(15, 3), DecodeError::kBadLength);   // data_in_length disagrees
  B cut(base.begin(), base.begin() + 15);
  EXPECT_EQ(err(decode_reply(cut)), DecodeError::kTruncated);
}

TEST(MessagesDecode, EveryPrefixRejected) {
  expect_every_prefix_rejected(enc(DiscoveryRequest{1, "abc", "de"}), decode_discovery_request);
  expect_every_prefix_rejected(enc(full_discovery_reply()), decode_discovery_reply);
  expect_every_prefix_rejected(enc(full_login_request()), decode_login_request);
  expect_every_prefix_rejected(enc(full_login_reply()), decode_login_reply);
  expect_every_prefix_rejected(enc(Disconnect{}), decode_disconnect);
  expect_every_prefix_rejected(enc(Keepalive{1, 0}), decode_keepalive);
  CommandHeader c = max_command();
  c.data_out_length = 0;
  expect_every_prefix_rejected(enc(c), decode_command);
  ReplyHeader r;
  r.sense.assign(18, 1);
  expect_every_prefix_rejected(enc(r), decode_reply);
}

TEST(MessagesDecode, RandomBytesNeverCrash) {
  std::mt19937 rng(99);
  int ok = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<uint8_t> b(rng() % 96);
    for (auto& x : b) x = static_cast<uint8_t>(rng() % 4 == 0 ? rng() : rng() % 8);
    ok += decode_discovery_request(b).ok();
    ok += decode_discovery_reply(b).ok();
    ok += decode_login_request(b).ok();
    ok += decode_login_reply(b).ok();
    ok += decode_disconnect(b).ok();
    ok += decode_keepalive(b).ok();
    auto c = decode_command(b);
    if (c.ok()) {
      ++ok;
      ASSERT_LE(c->data_out.data() + c->data_out.size(), b.data() + b.size());
      ASSERT_GE(c->header.cdb_length, 6);
      ASSERT_LE(c->header.cdb_length, kMaxCdbLength);
    }
    auto r = decode_reply(b);
    if (r.ok()) {
      ++ok;
      ASSERT_LE(r->data_in.data() + r->data_in.size(), b.data() + b.size());
    }
  }
  EXPECT_GT(ok, 0);
}

TEST(Messages, EnumNames) {
  EXPECT_EQ(to_string(LoginStatus::kMtuMismatch), "MTU mismatch");
  EXPECT_EQ(to_string(static_cast<LoginStatus>(200)), "unknown login status");
  EXPECT_EQ(to_string(DisconnectReason::kStaleEpoch), "stale epoch");
  EXPECT_EQ(to_string(static_cast<DisconnectReason>(200)), "unknown disconnect reason");
}

}  // namespace
}  // namespace hyperscsi::proto

// Frame codec: byte-exact layouts, the examples of docs/protocol.md, round
// trips, every DecodeError, truncation and random corruption.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"

namespace hyperscsi::proto {
namespace {

const MacAddress kInitiatorMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
const MacAddress kTargetMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};

std::vector<uint8_t> from_hex(std::string_view hex) {
  std::vector<uint8_t> out;
  int nibble = -1;
  for (char ch : hex) {
    int v = -1;
    if (ch >= '0' && ch <= '9') v = ch - '0';
    if (ch >= 'a' && ch <= 'f') v = ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') v = ch - 'A' + 10;
    if (v < 0) continue;
    if (nibble < 0) {
      nibble = v;
    } else {
      out.push_back(static_cast<uint8_t>(nibble * 16 + v));
      nibble = -1;
    }
  }
  return out;
}

// The hex dump used in docs/protocol.md: 16 bytes a line, offset first.
std::string hex_dump(const std::vector<uint8_t>& b) {
  std::string s;
  char buf[24];
  for (size_t i = 0; i < b.size(); ++i) {
    if (i % 16 == 0) {
      std::snprintf(buf, sizeof buf, "%04zx ", i);
      s += buf;
    }
    std::snprintf(buf, sizeof buf, " %02x", b[i]);
    s += buf;
    if (i % 16 == 15 || i + 1 == b.size()) s += '\n';
  }
  return s;
}

std::vector<uint8_t> encode_to_vector(const FrameHeader& h, std::span<const uint8_t> payload) {
  std::vector<uint8_t> out(encoded_size(h, payload.size()));
  const size_t n = encode_frame(out, h, payload);
  out.resize(n);
  return out;
}

FrameHeader make_header(Opcode op, const MacAddress& dst, const MacAddress& src) {
  FrameHeader h;
  h.dst = dst;
  h.src = src;
  h.common.opcode = op;
  return h;
}

// ---- The examples of docs/protocol.md, one per opcode. ----

struct Example {
  std::string name;
  std::vector<uint8_t> frame;  // as produced by encode_frame
  std::string hex;             // the same bytes, written down (and pasted in the doc)
};

std::vector<Example> build_examples() {
  std::vector<Example> ex;
  auto add = [&](std::string name, const FrameHeader& h, const std::vector<uint8_t>& body,
                 std::string hex) {
    ex.push_back({std::move(name), encode_to_vector(h, body), std::move(hex)});
  };
  {
    FrameHeader h = make_header(Opcode::kDiscoveryRequest, kBroadcastMac, kInitiatorMac);
    std::vector<uint8_t> body;
    encode(DiscoveryRequest{0x0000abcd, "init1", ""}, body);
    add("discovery-request", h, body,
        "ff ff ff ff ff ff 02 00 00 00 00 01 88 9a 00 04"
        "00 02 30 23 00 00 00 00 00 00 00 00 00 00 00 00"
        "00 00 00 00 00 00 00 00 00 0b 00 00 00 00 00 0b"
        "00 00 00 00 00 00 00 00 ab cd 05 69 6e 69 74 31"
        "00");
  }
  {
    FrameHeader h = make_header(Opcode::kDiscoveryReply, kInitiatorMac, kTargetMac);
    DiscoveryReply m{0x0000abcd, 9000, kFeaturesV2, "tgt1", {LunInfo{0, false, 512, 2097152}}};
    std::vector<uint8_t> body;
    encode(m, body);
    add("discovery-reply", h, body,
        "02 00 00 00 00 01 02 00 00 00 00 02 88 9a 00 04"
        "00 02 10 23 00 00 00 00 00 00 00 00 00 00 00 00"
        "00 00 00 00 00 00 00 00 00 21 00 00 00 00 00 21"
        "00 00 00 00 00 00 00 00 ab cd 23 28 00 00 00 0f"
        "04 74 67 74 31 00 01 00 00 00 00 00 00 02 00 00"
        "00 00 00 00 20 00 00");
  }
  {
    FrameHeader h = make_header(Opcode::kLoginRequest, kTargetMac, kInitiatorMac);
    LoginRequest m;
    m.nonce = 0x1234;
    m.mtu = 9000;
    m.window = 64;
    m.max_transfer = 1 << 20;
    m.features = kFeaturesV2;
    m.initiator_name = "init1";
    m.target_name = "tgt1";
    std::vector<uint8_t> body;
    encode(m, body);
    add("login-request", h, body,
        "02 00 00 00 00 02 02 00 00 00 00 01 88 9a 00 04"
        "00 02 11 23 00 00 00 00 00 00 00 00 00 00 00 00"
        "00 00 00 00 00 00 00 00 00 23 00 00 00 00 00 23"
        "00 00 00 00 00 00 00 00 12 34 23 28 00 40 00 10"
        "00 00 00 00 00 0f 00 00 00 00 00 00 05 69 6e 69"
        "74 31 04 74 67 74 31 00 00");
  }
  {
    FrameHeader h = make_header(Opcode::kLoginReply, kInitiatorMac, kTargetMac);
    h.ext.session_id = 0x5e551001;
    h.ext.epoch = 1;
    LoginReply m;
    m.nonce = 0x1234;
    m.status = LoginStatus::kOk;
    m.mtu = 9000;
    m.window = 128;
    m.max_transfer = 1 << 20;
    m.features = kFeaturesV2;
    m.session_id = 0x5e551001;
    m.epoch = 1;
    m.keepalive_ms = 1000;
    m.dead_time_ms = 10000;
    std::vector<uint8_t> body;
    encode(m, body);
    add("login-reply", h, body,
        "02 00 00 00 00 01 02 00 00 00 00 02 88 9a 00 04"
        "00 02 12 23 00 00 5e 55 10 01 00 01 00 00 00 00"
        "00 00 00 00 00 00 00 00 00 22 00 00 00 00 00 22"
        "00 00 00 00 00 00 00 00 12 34 00 00 23 28 00 80"
        "00 10 00 00 00 00 00 0f 5e 55 10 01 00 01 00 00"
        "03 e8 00 00 27 10 00 00");
  }
  {
    // READ(10) of 8 blocks at LBA 0x800, one fragment, checksummed.
    FrameHeader h = make_header(Opcode::kCommandRequest, kTargetMac, kInitiatorMac);
    h.common.tag = 7;
    h.ext.flags = kFlagAck | kFlagChecksum;
    h.ext.session_id = 0x5e551001;
    h.ext.epoch = 1;
    h.ext.window = 64;
    h.ext.seq = 1;
    h.ext.ack = 1;
    CommandHeader c;
    c.cmd_sn = 1;
    c.reply_ack_sn = 1;
    c.flags = kCommandFlagDataIn;
    c.expected_data_in = 4096;
    const uint8_t cdb[10] = {0x28, 0, 0, 0, 0x08, 0, 0, 0, 0x08, 0};
    std::copy(std::begin(cdb), std::end(cdb), c.cdb.begin());
    c.cdb_length = 10;
    std::vector<uint8_t> pdu;
    encode(c, pdu);
    h.ext.pdu_length = static_cast<uint32_t>(pdu.size());
    add("command-request", h, pdu,
        "02 00 00 00 00 02 02 00 00 00 00 01 88 9a 00 3c"
        "00 02 00 23 03 00 5e 55 10 01 00 01 00 40 00 00"
        "00 01 00 00 00 01 00 00 00 22 00 00 00 00 00 22"
        "00 00 ff 68 dd 7c 00 00 00 01 00 00 00 01 00 00"
        "01 00 00 00 10 00 00 00 00 00 0a 00 00 00 28 00"
        "00 00 08 00 00 00 08 00");
  }
  {
    // CHECK CONDITION with 18 bytes of fixed-format sense; one SACK block.
    FrameHeader h = make_header(Opcode::kCommandReply, kInitiatorMac, kTargetMac);
    h.common.tag = 7;
    h.ext.flags = kFlagAck;
    h.ext.session_id = 0x5e551001;
    h.ext.epoch = 1;
    h.ext.window = 128;
    h.ext.seq = 5;
    h.ext.ack = 2;
    h.sacks.push({4, 6});
    ReplyHeader r;
    r.cmd_sn = 1;
    r.status = 0x02;
    r.sense = {0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0};
    std::vector<uint8_t> pdu;
    encode(r, pdu);
    h.ext.pdu_length = static_cast<uint32_t>(pdu.size());
    add("command-reply", h, pdu,
        "02 00 00 00 00 01 02 00 00 00 00 02 88 9a 00 3c"
        "00 02 01 23 01 01 5e 55 10 01 00 01 00 80 00 00"
        "00 05 00 00 00 02 00 00 00 22 00 00 00 00 00 22"
        "00 00 00 00 00 00 00 00 00 04 00 00 00 06 00 00"
        "00 01 02 00 12 00 00 00 00 00 00 00 00 00 70 00"
        "05 00 00 00 00 0a 00 00 00 00 24 00 00 00 00 00");
  }
  {
    FrameHeader h = make_header(Opcode::kDisconnect, kTargetMac, kInitiatorMac);
    h.ext.session_id = 0x5e551001;
    h.ext.epoch = 1;
    std::vector<uint8_t> body;
    encode(Disconnect{DisconnectReason::kNormal}, body);
    add("disconnect", h, body,
        "02 00 00 00 00 02 02 00 00 00 00 01 88 9a 00 04"
        "00 02 13 23 00 00 5e 55 10 01 00 01 00 00 00 00"
        "00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 01"
        "00 00 00 00 00 00 00 00 00 00 00 00");
  }
  {
    FrameHeader h = make_header(Opcode::kKeepalive, kTargetMac, kInitiatorMac);
    h.ext.flags = kFlagAck | kFlagAckNow;
    h.ext.session_id = 0x5e551001;
    h.ext.epoch = 1;
    h.ext.window = 64;
    h.ext.ack = 6;
    std::vector<uint8_t> body;
    encode(Keepalive{1, 0}, body);
    add("keepalive", h, body,
        "02 00 00 00 00 02 02 00 00 00 00 01 88 9a 00 04"
        "00 02 20 23 09 00 5e 55 10 01 00 01 00 40 00 00"
        "00 00 00 00 00 06 00 00 00 04 00 00 00 00 00 04"
        "00 00 00 00 00 00 00 00 00 01 00 00");
  }
  {
    // Standalone ack: next expected 42, two blocks received above it.
    FrameHeader h = make_header(Opcode::kAck, kInitiatorMac, kTargetMac);
    h.ext.flags = kFlagAck;
    h.ext.session_id = 0x5e551001;
    h.ext.epoch = 1;
    h.ext.window = 128;
    h.ext.ack = 42;
    h.sacks.push({44, 46});
    h.sacks.push({48, 49});
    add("ack", h, {},
        "02 00 00 00 00 01 02 00 00 00 00 02 88 9a 00 04"
        "00 02 21 23 01 02 5e 55 10 01 00 01 00 80 00 00"
        "00 00 00 00 00 2a 00 00 00 00 00 00 00 00 00 00"
        "00 00 00 00 00 00 00 00 00 2c 00 00 00 2e 00 00"
        "00 30 00 00 00 31");
  }
  return ex;
}

TEST(CommonHeader, ByteExact) {
  struct Case {
    CommonHeader h;
    std::array<uint8_t, 5> bytes;
  };
  const Case cases[] = {
      {{0, true, 0, 2, Opcode::kCommandRequest}, {0x00, 0x04, 0x00, 0x02, 0x00}},
      {{511, false, 1023, 2, Opcode::kCommandReply}, {0x0F, 0xFB, 0xFF, 0x02, 0x01}},
      {{511, true, 1023, 2, Opcode::kAck}, {0x0F, 0xFF, 0xFF, 0x02, 0x21}},
      {{1, true, 1, 2, Opcode::kKeepalive}, {0x00, 0x0C, 0x01, 0x02, 0x20}},
      {{32, false, 256, 2, Opcode::kDiscoveryRequest}, {0x01, 0x01, 0x00, 0x02, 0x30}},
      {{341, true, 682, 2, Opcode::kLoginReply}, {0x0A, 0xAE, 0xAA, 0x02, 0x12}},
      {{31, false, 255, 1, Opcode::kDisconnect}, {0x00, 0xF8, 0xFF, 0x01, 0x13}},
  };
  for (const Case& c : cases) {
    std::array<uint8_t, 5> out{};
    encode_common_header(out, c.h);
    EXPECT_EQ(out, c.bytes) << "tag " << c.h.tag << " frag " << c.h.fragment;
    EXPECT_EQ(decode_common_header(c.bytes), c.h) << "tag " << c.h.tag;
  }
}

TEST(CommonHeader, AllTagsAndFragmentsRoundTrip) {
  for (uint16_t tag = 0; tag <= kMaxTag; ++tag) {
    for (uint16_t frag : {0, 1, 255, 256, 512, 1023}) {
      for (bool last : {false, true}) {
        const CommonHeader h{tag, last, frag, kProtocolVersion, Opcode::kCommandRequest};
        std::array<uint8_t, 5> out{};
        encode_common_header(out, h);
        EXPECT_EQ(out[0] & 0xF0, 0);  // reserved nibble
        // The Wireshark dissector's own formulas:
        EXPECT_EQ(((out[0] & 0x0F) << 5) | (out[1] >> 3), tag);
        EXPECT_EQ(((out[1] & 0x03) << 8) | out[2], frag);
        EXPECT_EQ((out[1] & 0x04) != 0, last);
        ASSERT_EQ(decode_common_header(out), h);
      }
    }
  }
}

// A data fragment written field by field, independent of the encoder.
TEST(Frame, DataFragmentByteExactHandWritten) {
  FrameHeader h = make_header(Opcode::kCommandRequest, kTargetMac, kInitiatorMac);
  h.common.tag = 300;  // 0x12C: byte0 0x09, byte1 bits 7-3 = 0x0C
  h.common.fragment = 2;
  h.common.last_fragment = false;
  h.ext.flags = kFlagAck;
  h.ext.session_id = 0x01020304;
  h.ext.epoch = 0x0506;
  h.ext.window = 0x0708;
  h.ext.seq = 0xFFFFFFFE;
  h.ext.ack = 0x0A0B0C0D;
  h.ext.pdu_length = 100000;
  h.ext.pdu_offset = 2 * 1460;
  h.sacks.push({0x11111111, 0x22222222});
  const std::vector<uint8_t> payload = {0xde, 0xad, 0xbe, 0xef, 0x55};

  std::vector<uint8_t> want = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0x9a};
  const uint8_t hs[] = {
      0x09, 0x60, 0x02, 0x02, 0x00,  // tag 300, not last, fragment 2, v2, opcode 0x00
      35,   0x01, 0x01,              // ext_len, flags, sack_count
      0x01, 0x02, 0x03, 0x04,        // session_id
      0x05, 0x06, 0x07, 0x08,        // epoch, window
      0xFF, 0xFF, 0xFF, 0xFE,        // seq
      0x0A, 0x0B, 0x0C, 0x0D,        // ack
      0x00, 0x01, 0x86, 0xA0,        // pdu_length 100000
      0x00, 0x00, 0x0B, 0x68,        // pdu_offset 2920
      0x00, 0x05, 0x00, 0x00,        // payload_length, reserved
      0x00, 0x00, 0x00, 0x00,        // crc32 (no kFlagChecksum)
      0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22,  // SACK block
      0xde, 0xad, 0xbe, 0xef, 0x55,                    // payload
  };
  want.insert(want.end(), std::begin(hs), std::end(hs));
  want.resize(67, 0);  // already above 60: no padding
  EXPECT_EQ(encode_to_vector(h, payload), want);

  auto d = decode_frame(want);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->header.common, h.common);
  EXPECT_EQ(d->header.ext, h.ext);
  EXPECT_EQ(d->header.sacks, h.sacks);
  EXPECT_EQ(std::vector<uint8_t>(d->payload.begin(), d->payload.end()), payload);
}

TEST(Frame, ChecksumIsZlibCrc32OverHeaderSacksAndPayload) {
  FrameHeader h = make_header(Opcode::kCommandReply, kInitiatorMac, kTargetMac);
  h.ext.flags = kFlagChecksum;
  h.ext.pdu_length = 3;
  h.sacks.push({1, 2});
  const std::vector<uint8_t> payload = {1, 2, 3};
  std::vector<uint8_t> f = encode_to_vector(h, payload);
  ASSERT_EQ(f.size(), 65u);
  std::vector<uint8_t> covered(f.begin() + 14, f.begin() + 14 + 40 + 8 + 3);
  const uint32_t stored = bytes::load_be32(covered.data() + 36);
  std::fill(covered.begin() + 36, covered.begin() + 40, 0);
  EXPECT_EQ(stored, ::crc32(0, covered.data(), static_cast<uInt>(covered.size())));
  EXPECT_TRUE(decode_frame(f).ok());
}

// The codec's crc32 (ISA-L) against zlib's for every payload length up to a
// full 1500-byte frame: SIMD folding has separate paths for short inputs and
// tails, so every length is checked, not one.
TEST(Frame, ChecksumAgreesWithZlibAtEveryPayloadLength) {
  FrameHeader h = make_header(Opcode::kCommandReply, kInitiatorMac, kTargetMac);
  h.ext.flags = kFlagChecksum;
  std::vector<uint8_t> payload;
  for (size_t n = 0; n <= 1460; ++n) {
    h.ext.pdu_length = static_cast<uint32_t>(n);
    std::vector<uint8_t> f = encode_to_vector(h, payload);
    std::vector<uint8_t> covered(f.begin() + 14, f.begin() + 14 + 40 + n);
    const uint32_t stored = bytes::load_be32(covered.data() + 36);
    std::fill(covered.begin() + 36, covered.begin() + 40, 0);
    ASSERT_EQ(stored, ::crc32(0, covered.data(), static_cast<uInt>(covered.size()))) << n;
    ASSERT_TRUE(decode_frame(f).ok()) << n;
    payload.push_back(static_cast<uint8_t>(n * 151 + 13));
  }
}

TEST(Frame, ExamplesMatchHandWrittenBytes) {
  for (const Example& e : build_examples()) {
    EXPECT_EQ(e.frame, from_hex(e.hex)) << e.name << ":\n" << hex_dump(e.frame);
    auto d = decode_frame(e.frame);
    EXPECT_TRUE(d.ok()) << e.name;
  }
  if (std::getenv("HYPERSCSI_PRINT_EXAMPLES")) {
    for (const Example& e : build_examples())
      std::printf("<!-- example:%s -->\n```text\n%s```\n\n", e.name.c_str(),
                  hex_dump(e.frame).c_str());
  }
}

// docs/protocol.md must show exactly the bytes the encoder writes.
TEST(Frame, ProtocolDocExamplesMatchEncoder) {
  // From the build's definition, not __FILE__: ccache's base_dir makes
  // __FILE__ relative to the build directory.
  const std::string path = std::string(HYPERSCSI_SOURCE_DIR) + "/docs/protocol.md";
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  int checked = 0;
  for (const Example& e : build_examples()) {
    const std::string marker = "<!-- example:" + e.name + " -->";
    const size_t at = doc.find(marker);
    ASSERT_NE(at, std::string::npos) << "docs/protocol.md lacks example " << e.name;
    const size_t begin = doc.find("```text\n", at);
    ASSERT_NE(begin, std::string::npos);
    const size_t end = doc.find("```", begin + 8);
    ASSERT_NE(end, std::string::npos);
    std::vector<uint8_t> bytes;
    std::istringstream lines(doc.substr(begin + 8, end - begin - 8));
    std::string line;
    while (std::getline(lines, line)) {
      if (line.size() > 6) {
        auto b = from_hex(line.substr(6));  // skip the offset column
        bytes.insert(bytes.end(), b.begin(), b.end());
      }
    }
    EXPECT_EQ(bytes, e.frame) << "docs/protocol.md example " << e.name
                              << " is stale; encoder writes:\n"
                              << hex_dump(e.frame);
    ++checked;
  }
  EXPECT_EQ(checked, 9);
}

TEST(Frame, OpcodeNamesAndKnownSet) {
  int known = 0;
  for (int raw = 0; raw < 256; ++raw) {
    if (is_known_opcode(static_cast<uint8_t>(raw))) {
      ++known;
      EXPECT_NE(opcode_name(static_cast<Opcode>(raw)), "Unknown");
    }
  }
  EXPECT_EQ(known, 11);
  EXPECT_TRUE(is_known_opcode(0x31));  // multipath: path request / reply
  EXPECT_TRUE(is_known_opcode(0x32));
  EXPECT_FALSE(is_known_opcode(0x33));
  EXPECT_FALSE(is_known_opcode(0x80));
  EXPECT_EQ(opcode_name(Opcode::kLoginRequest), "LoginRequest");
  EXPECT_EQ(to_string(DecodeError::kBadChecksum), "bad checksum");
}

TEST(Frame, MaxPayloadFillsTheMtu) {
  EXPECT_EQ(max_payload(1500), 1460u);
  EXPECT_EQ(max_payload(9000, 8), 9000u - 40 - 64);
  EXPECT_EQ(max_payload(30), 0u);
  for (size_t mtu : {1500, 9000}) {
    FrameHeader h = make_header(Opcode::kCommandRequest, kTargetMac, kInitiatorMac);
    h.sacks.count = kMaxSackBlocks;
    const std::vector<uint8_t> payload(max_payload(mtu, kMaxSackBlocks), 0xAB);
    h.ext.pdu_length = static_cast<uint32_t>(payload.size());
    const auto f = encode_to_vector(h, payload);
    EXPECT_EQ(f.size(), kEthernetHeaderSize + mtu);
    EXPECT_TRUE(decode_frame(f).ok());
  }
}

TEST(Frame, EncoderRejectsOutOfRangeAndNeverOverruns) {
  FrameHeader good = make_header(Opcode::kCommandRequest, kTargetMac, kInitiatorMac);
  good.ext.pdu_length = 100;
  const std::vector<uint8_t> payload(100, 7);
  const size_t need = encoded_size(good, payload.size());
  ASSERT_EQ(need, 154u);

  std::vector<uint8_t> buf(need + 16, 0xCC);
  EXPECT_EQ(encode_frame(std::span(buf).first(need - 1), good, payload), 0u);
  EXPECT_EQ(buf, std::vector<uint8_t>(need + 16, 0xCC)) << "wrote into a too-small buffer";
  EXPECT_EQ(encode_frame(std::span(buf).first(need), good, payload), need);
  for (size_t i = need; i < buf.size(); ++i) ASSERT_EQ(buf[i], 0xCC) << i;

  auto rejects = [&](auto mutate) {
    FrameHeader h = good;
    std::vector<uint8_t> p = payload;
    mutate(h, p);
    std::vector<uint8_t> out(encoded_size(h, p.size()) + 64);
    return encode_frame(out, h, p) == 0;
  };
  using P = std::vector<uint8_t>;
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.common.tag = 512; }));
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.common.fragment = 1024; }));
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.sacks.count = 9; }));
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.common.version = 1; }));
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.common.opcode = static_cast<Opcode>(0x33); }));
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.ext.flags = 0x40; }));
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.ext.pdu_length = 99; }));
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.ext.pdu_length = 200; }));  // last but short
  EXPECT_TRUE(rejects([](FrameHeader&, P& p) { p.clear(); }));               // sequenced, empty
  EXPECT_FALSE(rejects([](FrameHeader& h, P& p) {  // an empty PDU is one empty frame
    p.clear();
    h.ext.pdu_length = 0;
  }));
  EXPECT_TRUE(rejects([](FrameHeader& h, P&) { h.common.fragment = 1; }));  // frag 1 at offset 0
  EXPECT_TRUE(rejects([](FrameHeader& h, P& p) {
    p.assign(65536, 0);
    h.ext.pdu_length = 65536;
  }));
  EXPECT_FALSE(rejects([](FrameHeader&, P&) {}));
}

TEST(Frame, ControlFrameFragmentFieldsAreDerived) {
  FrameHeader h = make_header(Opcode::kDisconnect, kTargetMac, kInitiatorMac);
  h.common.tag = 99;
  h.common.fragment = 5;  // meaningless for a control frame: written as 0
  h.common.last_fragment = false;
  h.ext.pdu_length = 1234;
  h.ext.pdu_offset = 77;
  const std::vector<uint8_t> body = {0};
  auto d = decode_frame(encode_to_vector(h, body));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->header.common.tag, 99);
  EXPECT_EQ(d->header.common.fragment, 0);
  EXPECT_TRUE(d->header.common.last_fragment);
  EXPECT_EQ(d->header.ext.pdu_length, 1u);
  EXPECT_EQ(d->header.ext.pdu_offset, 0u);
}

// ---- Round trips ----

void expect_round_trip(const FrameHeader& h, const std::vector<uint8_t>& payload) {
  const auto f = encode_to_vector(h, payload);
  ASSERT_FALSE(f.empty()) << "encoder refused a valid frame";
  ASSERT_EQ(f.size(), std::max<size_t>(60, 14 + 40 + 8 * h.sacks.count + payload.size()));
  auto d = decode_frame(f);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->header.dst, h.dst);
  EXPECT_EQ(d->header.src, h.src);
  EXPECT_EQ(d->header.common, h.common);
  EXPECT_EQ(d->header.ext, h.ext);
  EXPECT_EQ(d->header.sacks, h.sacks);
  ASSERT_EQ(d->payload.size(), payload.size());
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), d->payload.begin()));
}

TEST(Frame, RoundTripEveryOpcodeWithMaxSacks) {
  for (int raw = 0; raw < 256; ++raw) {
    if (!is_known_opcode(static_cast<uint8_t>(raw))) continue;
    const Opcode op = static_cast<Opcode>(raw);
    for (uint8_t flags : {uint8_t{0}, kFlagsKnown}) {
      FrameHeader h = make_header(op, kTargetMac, kInitiatorMac);
      h.common.tag = kMaxTag;
      h.ext = {flags, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0x80000000, 0, 0};
      for (uint32_t i = 0; i < kMaxSackBlocks; ++i) h.sacks.push({i * 10, i * 10 + 5});
      const std::vector<uint8_t> payload(333, static_cast<uint8_t>(raw));
      h.ext.pdu_length = 333;
      if (is_sequenced(op)) {  // a middle fragment of a large PDU
        h.common.fragment = kMaxFragment;
        h.common.last_fragment = false;
        h.ext.pdu_offset = 1000000;
        h.ext.pdu_length = 0xFFFFFFFF;
      }
      SCOPED_TRACE(opcode_name(op));
      expect_round_trip(h, payload);
    }
  }
}

TEST(Frame, RandomizedRoundTrips) {
  std::mt19937 rng(20261123);
  std::vector<Opcode> ops;
  for (int raw = 0; raw < 256; ++raw)
    if (is_known_opcode(static_cast<uint8_t>(raw))) ops.push_back(static_cast<Opcode>(raw));
  for (int iter = 0; iter < 3000; ++iter) {
    auto u32 = [&] { return static_cast<uint32_t>(rng()); };
    FrameHeader h = make_header(ops[rng() % ops.size()], kTargetMac, kInitiatorMac);
    for (auto& b : h.dst) b = static_cast<uint8_t>(rng());
    h.common.tag = static_cast<uint16_t>(rng() % 512);
    h.ext.flags = static_cast<uint8_t>(rng() & kFlagsKnown);
    h.ext.session_id = u32();
    h.ext.epoch = static_cast<uint16_t>(rng());
    h.ext.window = static_cast<uint16_t>(rng());
    h.ext.seq = u32();
    h.ext.ack = u32();
    const size_t nsack = rng() % (kMaxSackBlocks + 1);
    for (size_t i = 0; i < nsack; ++i) h.sacks.push({u32(), u32()});
    std::vector<uint8_t> payload(rng() % 9001);
    for (auto& b : payload) b = static_cast<uint8_t>(rng());
    h.ext.pdu_length = static_cast<uint32_t>(payload.size());
    if (is_sequenced(h.common.opcode)) {
      if (payload.empty()) payload.push_back(1);
      const uint32_t offset = (rng() % 2) ? 0 : u32() % 100000000;
      h.ext.pdu_offset = offset;
      h.common.fragment = offset == 0 ? 0 : static_cast<uint16_t>(1 + rng() % kMaxFragment);
      h.common.last_fragment = rng() % 2;
      h.ext.pdu_length = static_cast<uint32_t>(offset + payload.size()) +
                         (h.common.last_fragment ? 0 : 1 + rng() % 1000);
    }
    SCOPED_TRACE(iter);
    expect_round_trip(h, payload);
    if (HasFatalFailure() || HasNonfatalFailure()) break;
  }
}

// ---- Malformed input ----

// A valid 0x00 fragment (with a SACK block) to corrupt. Offsets in the
// HyperSCSI header are relative to kH.
constexpr size_t kH = kEthernetHeaderSize;
std::vector<uint8_t> valid_fragment(uint8_t flags = kFlagAck) {
  FrameHeader h = make_header(Opcode::kCommandRequest, kTargetMac, kInitiatorMac);
  h.common.tag = 5;
  h.common.fragment = 1;
  h.common.last_fragment = true;
  h.ext.flags = flags;
  h.ext.pdu_offset = 1000;
  h.ext.pdu_length = 1100;
  h.sacks.push({3, 4});
  return encode_to_vector(h, std::vector<uint8_t>(100, 0x5A));
}

// Rewrites the crc32 after a deliberate change, so that the change (not the
// checksum) is what the decoder reports.
void refresh_crc(std::vector<uint8_t>& f) {
  uint8_t* hs = f.data() + kH;
  size_t covered = size_t{hs[5]} + 5 + hs[7] * kSackBlockSize + bytes::load_be16(hs + 32);
  // Mutated lengths may point past the frame: sum only what is there.
  covered = std::clamp(covered, kHeaderSize, f.size() - kH);
  bytes::store_be32(hs + 36, 0);
  bytes::store_be32(hs + 36, static_cast<uint32_t>(::crc32(0, hs, static_cast<uInt>(covered))));
}

DecodeError error_of(const std::vector<uint8_t>& f) {
  auto d = decode_frame(f);
  EXPECT_FALSE(d.ok());
  return d.ok() ? DecodeError::kBadField : d.error();
}

TEST(FrameDecode, EveryErrorFromACraftedFrame) {
  const auto base = valid_fragment(kFlagAck | kFlagChecksum);
  ASSERT_TRUE(decode_frame(base).ok());
  auto mutated = [&](auto fn) {
    auto f = base;
    fn(f);
    refresh_crc(f);
    return error_of(f);
  };
  using V = std::vector<uint8_t>;
  EXPECT_EQ(error_of(V(base.begin(), base.begin() + 13)), DecodeError::kTruncated);
  EXPECT_EQ(error_of(V(base.begin(), base.begin() + 18)), DecodeError::kTruncated);
  EXPECT_EQ(error_of(V(base.begin(), base.begin() + kH + 39)), DecodeError::kTruncated);
  EXPECT_EQ(error_of(V(base.begin(), base.begin() + kH + 45)), DecodeError::kTruncated);  // SACK
  EXPECT_EQ(error_of(V(base.begin(), base.end() - 1)), DecodeError::kBadLength);          // payload
  EXPECT_EQ(mutated([](V& f) { f[12] = 0x08, f[13] = 0x00; }), DecodeError::kNotHyperScsi);
  EXPECT_EQ(mutated([](V& f) { f[kH + 3] = 0x01; }), DecodeError::kUnknownVersion);
  EXPECT_EQ(mutated([](V& f) { f[kH + 3] = 0x03; }), DecodeError::kUnknownVersion);
  EXPECT_EQ(mutated([](V& f) { f[kH + 4] = 0x33; }), DecodeError::kUnknownOpcode);
  EXPECT_EQ(mutated([](V& f) { f[kH + 4] = 0x80; }), DecodeError::kUnknownOpcode);
  EXPECT_EQ(mutated([](V& f) { f[kH + 5] = 34; }), DecodeError::kBadHeaderLength);
  EXPECT_EQ(mutated([](V& f) { f[kH + 5] = 0; }), DecodeError::kBadHeaderLength);
  EXPECT_EQ(mutated([](V& f) { f[kH + 7] = 9; }), DecodeError::kTooManySackBlocks);
  EXPECT_EQ(mutated([](V& f) { f[kH + 7] = 255; }), DecodeError::kTooManySackBlocks);
  EXPECT_EQ(mutated([](V& f) { bytes::store_be16(&f[kH + 32], 101); }), DecodeError::kBadLength);
  EXPECT_EQ(mutated([](V& f) { bytes::store_be16(&f[kH + 32], 0xFFFF); }), DecodeError::kBadLength);
  // Fragment consistency.
  EXPECT_EQ(mutated([](V& f) { bytes::store_be32(&f[kH + 24], 1099); }),  // offset+len > pdu
            DecodeError::kFragmentOutOfRange);
  EXPECT_EQ(mutated([](V& f) { bytes::store_be32(&f[kH + 24], 1101); }),  // last, short
            DecodeError::kFragmentOutOfRange);
  EXPECT_EQ(mutated([](V& f) { bytes::store_be32(&f[kH + 28], 0xFFFFFFF0); }),  // overflow
            DecodeError::kFragmentOutOfRange);
  EXPECT_EQ(mutated([](V& f) { f[kH + 2] = 0; }),  // fragment 0 at offset 1000
            DecodeError::kFragmentOutOfRange);
  EXPECT_EQ(mutated([](V& f) { bytes::store_be16(&f[kH + 32], 0); }),  // sequenced, empty
            DecodeError::kFragmentOutOfRange);
  EXPECT_EQ(mutated([](V& f) { f[kH + 4] = 0x13; }),  // a control frame must be whole
            DecodeError::kFragmentOutOfRange);
  EXPECT_EQ(mutated([](V& f) { f[kH + 0] = 0x10; }), DecodeError::kBadField);   // reserved
  EXPECT_EQ(mutated([](V& f) { f[kH + 6] |= 0x40; }), DecodeError::kBadField);  // unknown flag
  auto corrupt = base;
  corrupt[corrupt.size() - 10] ^= 0x01;  // payload bit, crc not refreshed
  EXPECT_EQ(error_of(corrupt), DecodeError::kBadChecksum);
  corrupt = base;
  corrupt[kH + 17] ^= 0x80;  // header bit (seq)
  EXPECT_EQ(error_of(corrupt), DecodeError::kBadChecksum);
}

TEST(FrameDecode, ToleratesPaddingReservedAndLongerExtHeader) {
  auto f = valid_fragment();
  f.resize(f.size() + 20, 0xEE);           // trailing bytes beyond the payload
  bytes::store_be16(&f[kH + 34], 0x0BEF);  // path id and generation (reserved before multipath)
  auto pd = decode_frame(f);
  ASSERT_TRUE(pd.ok());
  EXPECT_EQ(pd->header.ext.path_id, 0x0B);
  EXPECT_EQ(pd->header.ext.path_gen, 0xEF);

  // A later revision appends 4 bytes to the extended header (ext_len 39).
  FrameHeader h = make_header(Opcode::kAck, kTargetMac, kInitiatorMac);
  h.ext.flags = kFlagAck | kFlagChecksum;
  h.ext.ack = 77;
  h.sacks.push({80, 90});
  auto g = encode_to_vector(h, {});
  g.insert(g.begin() + kH + 40, {0xA1, 0xA2, 0xA3, 0xA4});
  g[kH + 5] = 39;
  refresh_crc(g);
  auto d = decode_frame(g);
  ASSERT_TRUE(d.ok()) << to_string(d.error());
  EXPECT_EQ(d->header.ext.ack, 77u);
  ASSERT_EQ(d->header.sacks.count, 1);
  EXPECT_EQ(d->header.sacks.blocks[0], (SackBlock{80, 90}));
}

TEST(FrameDecode, EveryTruncationFailsCleanly) {
  for (uint8_t flags : {kFlagAck, uint8_t(kFlagAck | kFlagChecksum)}) {
    const auto f = valid_fragment(flags);
    ASSERT_GT(f.size(), kMinEthernetFrame);  // no padding: every byte is needed
    for (size_t len = 0; len < f.size(); ++len) {
      // A fresh heap copy of exactly `len` bytes, so ASan would see an overread.
      std::vector<uint8_t> cut(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(len));
      auto d = decode_frame(cut);
      EXPECT_FALSE(d.ok()) << "accepted a frame cut to " << len << " bytes";
    }
  }
}

TEST(FrameDecode, RandomByteFlipsNeverCrash) {
  std::mt19937 rng(42);
  std::vector<std::vector<uint8_t>> bases;
  for (const Example& e : build_examples()) bases.push_back(e.frame);
  bases.push_back(valid_fragment());
  bases.push_back(valid_fragment(kFlagAck | kFlagChecksum));
  int accepted = 0;
  int rejected = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    auto f = bases[rng() % bases.size()];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) f[rng() % f.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    if (rng() % 4 == 0) f.resize(rng() % (f.size() + 1));
    auto d = decode_frame(f);
    if (d.ok()) {
      ++accepted;
      // Whatever is accepted lies within the buffer and is self-consistent.
      ASSERT_GE(d->payload.data(), f.data());
      ASSERT_LE(d->payload.data() + d->payload.size(), f.data() + f.size());
      ASSERT_LE(d->header.sacks.count, kMaxSackBlocks);
      ASSERT_LE(uint64_t{d->header.ext.pdu_offset} + d->payload.size(), d->header.ext.pdu_length);
    } else {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(accepted, 0);  // flips in MACs, seq, ack etc. are not detectable without crc
}

TEST(FrameDecode, RandomBytesNeverCrash) {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<uint8_t> f(rng() % 200);
    for (auto& b : f) b = static_cast<uint8_t>(rng());
    if (f.size() >= 19 && rng() % 2) {  // make it look like ours to get deeper
      f[12] = 0x88, f[13] = 0x9a, f[17] = 0x02, f[18] = 0x00, f[14] &= 0x0F;
      if (f.size() > 19) f[19] = 35;
    }
    auto d = decode_frame(f);
    if (d.ok()) {
      ASSERT_LE(d->payload.data() + d->payload.size(), f.data() + f.size());
    }
  }
}

// Gather (issue 20): the headers encode_frame_header writes, followed by the
// payload, are byte for byte the frame encode_frame writes, with and without
// the crc and SACK blocks, for first, middle and last fragments of MTU 1500
// and 9000 frames; a frame that needs padding is refused.
TEST(FrameGather, HeadersThenPayloadAreTheEncodedFrame) {
  std::mt19937 rng(20);
  for (size_t mtu : {size_t{1500}, size_t{9000}}) {
    for (bool crc : {false, true}) {
      for (uint8_t sacks : {uint8_t{0}, uint8_t{2}}) {
        const size_t chunk = max_payload(mtu, sacks);
        const uint32_t pdu_length = static_cast<uint32_t>(3 * chunk + 611);
        for (uint16_t frag : {uint16_t{0}, uint16_t{1}, uint16_t{3}}) {
          SCOPED_TRACE(std::to_string(mtu) + " crc " + std::to_string(crc) + " sacks " +
                       std::to_string(sacks) + " fragment " + std::to_string(frag));
          FrameHeader h;
          h.dst = kTargetMac;
          h.src = kInitiatorMac;
          h.common.opcode = Opcode::kCommandReply;
          h.common.tag = 77;
          h.common.fragment = frag;
          h.common.last_fragment = frag == 3;
          h.ext.flags = static_cast<uint8_t>(kFlagAck | (crc ? kFlagChecksum : 0));
          h.ext.session_id = 0x01020304;
          h.ext.seq = 1000 + frag;
          h.ext.ack = 55;
          h.ext.window = 512;
          h.ext.pdu_length = pdu_length;
          h.ext.pdu_offset = static_cast<uint32_t>(frag * chunk);
          for (uint8_t i = 0; i < sacks; ++i) h.sacks.push({60u + 10u * i, 65u + 10u * i});
          std::vector<uint8_t> payload(frag == 3 ? 611 : chunk);
          for (auto& b : payload) b = static_cast<uint8_t>(rng());
          const std::vector<uint8_t> whole = encode_to_vector(h, payload);
          ASSERT_FALSE(whole.empty());
          std::vector<uint8_t> head(encoded_size(h, payload.size()), 0xEE);
          const size_t n = encode_frame_header(head, h, payload);
          ASSERT_EQ(n, kEthernetHeaderSize + kHeaderSize + size_t{sacks} * kSackBlockSize);
          head.resize(n);
          head.insert(head.end(), payload.begin(), payload.end());
          EXPECT_EQ(head, whole);
          EXPECT_TRUE(decode_frame(head).ok());
        }
      }
    }
  }
  // Only the headers need room.
  FrameHeader h;
  h.common.opcode = Opcode::kCommandRequest;
  h.common.last_fragment = true;
  h.ext.pdu_length = 1000;
  std::vector<uint8_t> payload(1000, 1);
  std::vector<uint8_t> small(kEthernetHeaderSize + kHeaderSize);
  EXPECT_EQ(encode_frame_header(small, h, payload), small.size());
  small.pop_back();
  EXPECT_EQ(encode_frame_header(small, h, payload), 0u);
}

}  // namespace
}  // namespace hyperscsi::proto

// The Lua dissector tools/wireshark/hyperscsi.lua, run by tshark on captures
// this test writes: frames of every type built by proto::encode_frame and
// proto::encode decode to the values that were encoded, retransmissions are
// marked (RETRANSMIT flag, or a sequence number already seen in the same
// direction of the same session), valid frames raise no error, and broken
// frames are flagged as malformed without a Lua error.
#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"
#include "tshark_util.h"

namespace hyperscsi::proto {
namespace {

namespace fs = std::filesystem;
using namespace hyperscsi::test_wireshark;

bool write_pcap(const fs::path& file, const std::vector<std::vector<uint8_t>>& frames) {
  pcap_t* dead = pcap_open_dead(DLT_EN10MB, 65535);
  if (dead == nullptr) return false;
  pcap_dumper_t* d = pcap_dump_open(dead, file.c_str());
  if (d == nullptr) {
    pcap_close(dead);
    return false;
  }
  long usec = 0;
  for (const auto& f : frames) {
    pcap_pkthdr hdr{};
    hdr.ts.tv_sec = 1700000000;
    hdr.ts.tv_usec = usec++;
    hdr.caplen = static_cast<bpf_u_int32>(f.size());
    hdr.len = hdr.caplen;
    pcap_dump(reinterpret_cast<u_char*>(d), &hdr, f.data());
  }
  pcap_dump_close(d);
  pcap_close(dead);
  return true;
}

const MacAddress kInitiator = {0x02, 0, 0, 0, 0, 0x01};
const MacAddress kTarget = {0x02, 0, 0, 0, 0, 0x02};
constexpr uint32_t kSession = 0x5e551001;
constexpr uint16_t kEpoch = 4;

FrameHeader header(Opcode op, bool from_initiator, uint16_t tag = 0) {
  FrameHeader h;
  h.dst = from_initiator ? kTarget : kInitiator;
  h.src = from_initiator ? kInitiator : kTarget;
  h.common.opcode = op;
  h.common.tag = tag;
  return h;
}

std::vector<uint8_t> frame(const FrameHeader& h, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out(encoded_size(h, payload.size()));
  out.resize(encode_frame(out, h, payload));
  return out;
}

template <typename Body>
std::vector<uint8_t> control(const FrameHeader& h, const Body& body) {
  std::vector<uint8_t> payload;
  encode(body, payload);
  return frame(h, payload);
}

// 18 bytes of fixed-format current sense.
std::vector<uint8_t> fixed_sense(uint8_t key, uint8_t asc, uint8_t ascq) {
  std::vector<uint8_t> s(18, 0);
  s[0] = 0x70;
  s[2] = key;
  s[7] = 10;
  s[12] = asc;
  s[13] = ascq;
  return s;
}

// Everything the valid capture holds, so assertions compare with the
// values that were encoded.
struct Valid {
  DiscoveryRequest disc_req{0xabcd1234, "iqn.init-1", "tgt-A"};
  DiscoveryReply disc_rep{0xabcd1234,
                          9000,
                          kFeaturesV2,
                          "tgt-A",
                          {{0, false, 512, 2097152}, {7, true, 4096, 0x100000005ull}}};
  LoginRequest login_req{0x1234,   9000, 64,           1u << 20, 0x0b,
                         kSession, 3,    "iqn.init-1", "tgt-A",  {1, 2, 3, 4, 5}};
  LoginReply login_mtu{0x1234, LoginStatus::kMtuMismatch, 1500, 0, 0, 0, 0, 0, 0, 0, {}};
  LoginReply login_ok{0x1234,   LoginStatus::kOk, 9000, 128,   1u << 20, 0x0b,
                      kSession, kEpoch,           1000, 10000, {}};
  CommandHeader read10;   // frame 6
  CommandHeader write16;  // frames 7, 8 (two fragments)
  std::vector<uint8_t> write_pdu;
  CommandHeader tur;  // frames 13, 14
  ReplyHeader check;  // frame 9
  ReplyHeader good;   // frame 10
  std::vector<uint8_t> data_in = std::vector<uint8_t>(64, 0x5a);
  std::vector<std::vector<uint8_t>> frames;

  Valid() {
    read10.cmd_sn = 10;
    read10.reply_ack_sn = 9;
    read10.lun = 7;
    read10.flags = kCommandFlagDataIn;
    read10.task_attribute = 1;
    read10.expected_data_in = 4096;
    read10.cdb_length = 10;
    const uint8_t r10[10] = {0x28, 0, 0x00, 0x01, 0x23, 0x45, 0, 0x00, 0x08, 0};
    std::copy(std::begin(r10), std::end(r10), read10.cdb.begin());

    write16.cmd_sn = 11;
    write16.reply_ack_sn = 10;
    write16.lun = 0;
    write16.flags = kCommandFlagDataOut;
    write16.data_out_length = 1024;
    write16.cdb_length = 16;
    const uint8_t w16[16] = {0x8a, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0};
    std::copy(std::begin(w16), std::end(w16), write16.cdb.begin());
    encode(write16, write_pdu);
    for (int i = 0; i < 1024; ++i) write_pdu.push_back(static_cast<uint8_t>(i));

    tur.cmd_sn = 12;
    tur.cdb_length = 6;  // TEST UNIT READY: six zero bytes

    check.cmd_sn = 10;
    check.status = 0x02;                          // CHECK CONDITION
    check.sense = fixed_sense(0x05, 0x21, 0x00);  // ILLEGAL REQUEST, LBA out of range
    good.cmd_sn = 11;
    good.status = 0x00;
    good.flags = kReplyFlagUnderflow;
    good.residual = 4032;
    good.data_in_length = static_cast<uint32_t>(data_in.size());

    // 1 discovery request (broadcast)
    FrameHeader h = header(Opcode::kDiscoveryRequest, true, 48);
    h.dst = kBroadcastMac;
    frames.push_back(control(h, disc_req));
    // 2 discovery reply
    frames.push_back(control(header(Opcode::kDiscoveryReply, false, 16), disc_rep));
    // 3 login request (resume)
    frames.push_back(control(header(Opcode::kLoginRequest, true), login_req));
    // 4 login reply: MTU mismatch
    frames.push_back(control(header(Opcode::kLoginReply, false), login_mtu));
    // 5 login reply: OK
    h = header(Opcode::kLoginReply, false);
    h.ext.session_id = kSession;
    h.ext.epoch = kEpoch;
    frames.push_back(control(h, login_ok));
    // 6 READ(10), ACK | CHECKSUM
    frames.push_back(command(read10, {}, 7, 100, 0, kFlagAck | kFlagChecksum));
    // 7, 8 WRITE(16) in two fragments
    frames.push_back(fragment(write_pdu, 0, 500, 8, 101, 0));
    frames.push_back(fragment(write_pdu, 500, write_pdu.size() - 500, 8, 102, 1));
    // 9 CHECK CONDITION reply with two SACK blocks, checksummed
    h = sequenced(Opcode::kCommandReply, false, 7, 200, kFlagAck | kFlagChecksum);
    h.ext.ack = 103;
    h.ext.window = 128;
    h.sacks.push({105, 107});
    h.sacks.push({110, 111});
    frames.push_back(pdu_frame(h, reply_pdu(check, {})));
    // 10 GOOD reply with data-in
    frames.push_back(pdu_frame(sequenced(Opcode::kCommandReply, false, 8, 201, kFlagAck),
                               reply_pdu(good, data_in)));
    // 11 frame 6 again with RETRANSMIT
    frames.push_back(command(read10, {}, 7, 100, 0, kFlagAck | kFlagChecksum | kFlagRetransmit));
    // 12 frame 10 again, unflagged: a duplicate seq in the same direction
    frames.push_back(frames[9]);
    // 13 seq 200 in the other direction (initiator to target): new
    frames.push_back(command(tur, {}, 9, 200, 0, kFlagAck));
    // 14 seq 100 in another session: new
    frames.push_back(command(tur, {}, 9, 100, 1, kFlagAck));
    // 15 disconnect answer: shutdown, RESPONSE
    h = header(Opcode::kDisconnect, false);
    h.ext.session_id = kSession;
    h.ext.epoch = kEpoch;
    h.ext.flags = kFlagResponse;
    frames.push_back(control(h, Disconnect{DisconnectReason::kShutdown}));
    // 16 keepalive padded to 200 bytes of L3
    h = header(Opcode::kKeepalive, true);
    h.ext.session_id = kSession;
    h.ext.flags = kFlagAck | kFlagAckNow;
    frames.push_back(control(h, Keepalive{77, 200}));
    // 17 keepalive answer (0x21 with RESPONSE)
    h = header(Opcode::kAck, false);
    h.ext.session_id = kSession;
    h.ext.flags = kFlagResponse;
    frames.push_back(control(h, Keepalive{77, 200}));
    // 18 standalone ack with SACK blocks
    h = header(Opcode::kAck, false);
    h.ext.session_id = kSession;
    h.ext.flags = kFlagAck;
    h.ext.window = 128;
    h.ext.ack = 42;
    h.sacks.push({44, 46});
    h.sacks.push({48, 49});
    frames.push_back(frame(h, {}));
  }

  static FrameHeader sequenced(Opcode op, bool from_initiator, uint16_t tag, uint32_t seq,
                               uint8_t flags) {
    FrameHeader h = header(op, from_initiator, tag);
    h.ext.session_id = kSession;
    h.ext.epoch = kEpoch;
    h.ext.seq = seq;
    h.ext.flags = flags;
    h.ext.window = 64;
    h.ext.ack = 7;
    return h;
  }
  static std::vector<uint8_t> reply_pdu(const ReplyHeader& r, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> pdu;
    encode(r, pdu);
    pdu.insert(pdu.end(), data.begin(), data.end());
    return pdu;
  }
  // The whole PDU as one last fragment.
  static std::vector<uint8_t> pdu_frame(FrameHeader h, const std::vector<uint8_t>& pdu) {
    h.common.fragment = 0;
    h.common.last_fragment = true;
    h.ext.pdu_offset = 0;
    h.ext.pdu_length = static_cast<uint32_t>(pdu.size());
    return frame(h, pdu);
  }
  static std::vector<uint8_t> command(const CommandHeader& c, const std::vector<uint8_t>& data,
                                      uint16_t tag, uint32_t seq, uint32_t session_delta,
                                      uint8_t flags) {
    std::vector<uint8_t> pdu;
    encode(c, pdu);
    pdu.insert(pdu.end(), data.begin(), data.end());
    FrameHeader h = sequenced(Opcode::kCommandRequest, true, tag, seq, flags);
    h.ext.session_id += session_delta;
    return pdu_frame(h, pdu);
  }
  static std::vector<uint8_t> fragment(const std::vector<uint8_t>& pdu, size_t offset, size_t len,
                                       uint16_t tag, uint32_t seq, uint16_t index) {
    FrameHeader h = sequenced(Opcode::kCommandRequest, true, tag, seq, kFlagAck);
    h.common.fragment = index;
    h.common.last_fragment = offset + len == pdu.size();
    h.ext.pdu_offset = static_cast<uint32_t>(offset);
    h.ext.pdu_length = static_cast<uint32_t>(pdu.size());
    return frame(h, std::vector<uint8_t>(pdu.begin() + static_cast<long>(offset),
                                         pdu.begin() + static_cast<long>(offset + len)));
  }
};

// Fields read back with -T fields, one column each.
const std::vector<std::string> kFields = {"hyperscsi.tagno",
                                          "hyperscsi2.tag",
                                          "hyperscsi2.fragment",
                                          "hyperscsi2.last_fragment",
                                          "hyperscsi2.version",
                                          "hyperscsi2.opcode",
                                          "hyperscsi2.ext_len",
                                          "hyperscsi2.flags",
                                          "hyperscsi2.flags.ack",
                                          "hyperscsi2.flags.checksum",
                                          "hyperscsi2.flags.retransmit",
                                          "hyperscsi2.flags.ack_now",
                                          "hyperscsi2.flags.response",
                                          "hyperscsi2.sack_count",
                                          "hyperscsi2.session_id",
                                          "hyperscsi2.epoch",
                                          "hyperscsi2.window",
                                          "hyperscsi2.seq",
                                          "hyperscsi2.ack",
                                          "hyperscsi2.pdu_length",
                                          "hyperscsi2.pdu_offset",
                                          "hyperscsi2.payload_length",
                                          "hyperscsi2.crc32",
                                          "hyperscsi2.crc32.status",
                                          "hyperscsi2.sack.start",
                                          "hyperscsi2.sack.end",
                                          "hyperscsi2.retransmission",
                                          "hyperscsi2.retransmission.original",
                                          "hyperscsi2.nonce",
                                          "hyperscsi2.initiator_name",
                                          "hyperscsi2.target_filter",
                                          "hyperscsi2.target_name",
                                          "hyperscsi2.mtu",
                                          "hyperscsi2.features",
                                          "hyperscsi2.lun_count",
                                          "hyperscsi2.lun",
                                          "hyperscsi2.lun.read_only",
                                          "hyperscsi2.lun.block_size",
                                          "hyperscsi2.lun.num_blocks",
                                          "hyperscsi2.window",
                                          "hyperscsi2.max_transfer",
                                          "hyperscsi2.resume_session_id",
                                          "hyperscsi2.resume_epoch",
                                          "hyperscsi2.auth_length",
                                          "hyperscsi2.auth",
                                          "hyperscsi2.login.status",
                                          "hyperscsi2.login.session_id",
                                          "hyperscsi2.login.epoch",
                                          "hyperscsi2.login.keepalive_ms",
                                          "hyperscsi2.login.dead_time_ms",
                                          "hyperscsi2.disconnect.reason",
                                          "hyperscsi2.keepalive.probe_id",
                                          "hyperscsi2.keepalive.padding",
                                          "hyperscsi2.cmd.cmd_sn",
                                          "hyperscsi2.cmd.reply_ack_sn",
                                          "hyperscsi2.cmd.lun",
                                          "hyperscsi2.cmd.flags",
                                          "hyperscsi2.cmd.task_attribute",
                                          "hyperscsi2.cmd.expected_data_in",
                                          "hyperscsi2.cmd.data_out_length",
                                          "hyperscsi2.cmd.cdb_length",
                                          "hyperscsi2.cdb.opcode",
                                          "hyperscsi2.cdb.lba",
                                          "hyperscsi2.cdb.transfer_length",
                                          "hyperscsi2.data_out",
                                          "hyperscsi2.reply.cmd_sn",
                                          "hyperscsi2.reply.status",
                                          "hyperscsi2.reply.response",
                                          "hyperscsi2.reply.sense_length",
                                          "hyperscsi2.reply.flags",
                                          "hyperscsi2.reply.residual",
                                          "hyperscsi2.reply.data_in_length",
                                          "hyperscsi2.sense.key",
                                          "hyperscsi2.sense.asc",
                                          "hyperscsi2.sense.ascq",
                                          "hyperscsi2.data_in",
                                          "hyperscsi2.payload"};

using Row = std::map<std::string, std::string>;

// Parses -T fields output (tab-separated, occurrences joined by ',').
std::vector<Row> parse_rows(const std::string& out) {
  std::vector<Row> rows;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<std::string> cols;
    std::istringstream cs(line);
    std::string c;
    while (std::getline(cs, c, '\t')) cols.push_back(c);
    Row row;
    for (size_t i = 0; i < kFields.size(); ++i) row[kFields[i]] = i < cols.size() ? cols[i] : "";
    rows.push_back(std::move(row));
  }
  return rows;
}

// A numeric field: decimal or 0x-hex text; -1 when absent or not a number.
long long num(const Row& r, const std::string& field) {
  const auto it = r.find(field);
  if (it == r.end() || it->second.empty()) return -1;
  try {
    return static_cast<long long>(std::stoull(it->second, nullptr, 0));
  } catch (...) {
    return -1;
  }
}

// tshark prints booleans as 1/0 (4.x) or True/False (older).
int boolean(const Row& r, const std::string& field) {
  const std::string& s = r.at(field);
  if (s == "1" || s == "True" || s == "true") return 1;
  if (s == "0" || s == "False" || s == "false") return 0;
  return -1;
}

std::string hex(const std::vector<uint8_t>& bytes) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t b : bytes) s += {d[b >> 4], d[b & 15]};
  return s;
}

class Dissector : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_tshark()) {
      GTEST_SKIP() << "tshark is not installed (scripts/setup.sh installs it; CI must not skip)";
    }
    ASSERT_FALSE(dir_.path().empty()) << "cannot create a temporary directory";
    ASSERT_TRUE(fs::exists(HYPERSCSI_DISSECTOR_LUA)) << HYPERSCSI_DISSECTOR_LUA;
  }
  fs::path file(const std::string& name) const { return dir_.path() / name; }

  TempDir dir_;
};

TEST_F(Dissector, EveryFieldDecodesToWhatWasEncoded) {
  Valid v;
  for (const auto& f : v.frames) ASSERT_FALSE(f.empty()) << "encoder refused a sample";
  const fs::path pcap = file("valid.pcap");
  ASSERT_TRUE(write_pcap(pcap, v.frames));

  std::string args = "-T fields -E separator=/t -E occurrence=a -E aggregator=,";
  for (const auto& f : kFields) args += " -e " + f;
  const auto [out, status] = run(tshark(pcap, args, file("err1")));
  ASSERT_EQ(status, 0) << out << slurp(file("err1"));
  const std::vector<Row> rows = parse_rows(out);
  ASSERT_EQ(rows.size(), v.frames.size()) << out << slurp(file("err1"));

  // Common and extended header of every frame, against decode_frame.
  for (size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE("frame " + std::to_string(i + 1));
    const Row& r = rows[i];
    const auto d = decode_frame(v.frames[i]);
    ASSERT_TRUE(d.ok());
    const FrameHeader& h = d.value().header;
    EXPECT_EQ(num(r, "hyperscsi.tagno"), h.common.tag);
    EXPECT_EQ(num(r, "hyperscsi2.tag"), h.common.tag);
    EXPECT_EQ(num(r, "hyperscsi2.fragment"), h.common.fragment);
    EXPECT_EQ(boolean(r, "hyperscsi2.last_fragment"), h.common.last_fragment ? 1 : 0);
    EXPECT_EQ(num(r, "hyperscsi2.version"), 2);
    EXPECT_EQ(num(r, "hyperscsi2.opcode"), static_cast<int>(h.common.opcode));
    EXPECT_EQ(num(r, "hyperscsi2.ext_len"), 35);
    EXPECT_EQ(num(r, "hyperscsi2.flags"), h.ext.flags);
    EXPECT_EQ(boolean(r, "hyperscsi2.flags.ack"), (h.ext.flags & kFlagAck) ? 1 : 0);
    EXPECT_EQ(boolean(r, "hyperscsi2.flags.checksum"), (h.ext.flags & kFlagChecksum) ? 1 : 0);
    EXPECT_EQ(boolean(r, "hyperscsi2.flags.retransmit"), (h.ext.flags & kFlagRetransmit) ? 1 : 0);
    EXPECT_EQ(boolean(r, "hyperscsi2.flags.ack_now"), (h.ext.flags & kFlagAckNow) ? 1 : 0);
    EXPECT_EQ(boolean(r, "hyperscsi2.flags.response"), (h.ext.flags & kFlagResponse) ? 1 : 0);
    EXPECT_EQ(num(r, "hyperscsi2.sack_count"), h.sacks.count);
    EXPECT_EQ(num(r, "hyperscsi2.session_id"), h.ext.session_id);
    EXPECT_EQ(num(r, "hyperscsi2.epoch"), h.ext.epoch);
    EXPECT_EQ(num(r, "hyperscsi2.seq"), h.ext.seq);
    EXPECT_EQ(num(r, "hyperscsi2.ack"), h.ext.ack);
    EXPECT_EQ(num(r, "hyperscsi2.pdu_length"), h.ext.pdu_length);
    EXPECT_EQ(num(r, "hyperscsi2.pdu_offset"), h.ext.pdu_offset);
    EXPECT_EQ(num(r, "hyperscsi2.payload_length"),
              static_cast<long long>(d.value().payload.size()));
    const size_t crc_at = kEthernetHeaderSize + 36;
    const uint32_t crc =
        static_cast<uint32_t>(v.frames[i][crc_at] << 24 | v.frames[i][crc_at + 1] << 16 |
                              v.frames[i][crc_at + 2] << 8 | v.frames[i][crc_at + 3]);
    EXPECT_EQ(num(r, "hyperscsi2.crc32"), crc);
    EXPECT_EQ(num(r, "hyperscsi2.crc32.status"), (h.ext.flags & kFlagChecksum) ? 1 : 0)
        << "1 = good, 0 = not present";
    std::string starts, ends;
    for (const SackBlock& b : h.sacks.view()) {
      starts += (starts.empty() ? "" : ",") + std::to_string(b.start);
      ends += (ends.empty() ? "" : ",") + std::to_string(b.end);
    }
    EXPECT_EQ(r.at("hyperscsi2.sack.start"), starts);
    EXPECT_EQ(r.at("hyperscsi2.sack.end"), ends);
  }

  // 1 discovery request.
  EXPECT_EQ(num(rows[0], "hyperscsi2.nonce"), v.disc_req.nonce);
  EXPECT_EQ(rows[0].at("hyperscsi2.initiator_name"), v.disc_req.initiator_name);
  EXPECT_EQ(rows[0].at("hyperscsi2.target_filter"), v.disc_req.target_filter);
  // 2 discovery reply with its LUN list.
  EXPECT_EQ(num(rows[1], "hyperscsi2.nonce"), v.disc_rep.nonce);
  EXPECT_EQ(num(rows[1], "hyperscsi2.mtu"), v.disc_rep.mtu);
  EXPECT_EQ(num(rows[1], "hyperscsi2.features"), v.disc_rep.features);
  EXPECT_EQ(rows[1].at("hyperscsi2.target_name"), v.disc_rep.target_name);
  EXPECT_EQ(num(rows[1], "hyperscsi2.lun_count"), 2);
  EXPECT_EQ(rows[1].at("hyperscsi2.lun"), "0,7");
  EXPECT_EQ(rows[1].at("hyperscsi2.lun.read_only"), "0,1");
  EXPECT_EQ(rows[1].at("hyperscsi2.lun.block_size"), "512,4096");
  EXPECT_EQ(rows[1].at("hyperscsi2.lun.num_blocks"),
            std::to_string(v.disc_rep.luns[0].num_blocks) + "," +
                std::to_string(v.disc_rep.luns[1].num_blocks));
  // 3 login request.
  const Row& lr = rows[2];
  EXPECT_EQ(num(lr, "hyperscsi2.nonce"), v.login_req.nonce);
  EXPECT_EQ(num(lr, "hyperscsi2.mtu"), v.login_req.mtu);
  EXPECT_EQ(lr.at("hyperscsi2.window"), "0," + std::to_string(v.login_req.window))
      << "the extended header's window, then the body's";
  EXPECT_EQ(num(lr, "hyperscsi2.max_transfer"), v.login_req.max_transfer);
  EXPECT_EQ(num(lr, "hyperscsi2.features"), v.login_req.features);
  EXPECT_EQ(num(lr, "hyperscsi2.resume_session_id"), v.login_req.resume_session_id);
  EXPECT_EQ(num(lr, "hyperscsi2.resume_epoch"), v.login_req.resume_epoch);
  EXPECT_EQ(lr.at("hyperscsi2.initiator_name"), v.login_req.initiator_name);
  EXPECT_EQ(lr.at("hyperscsi2.target_name"), v.login_req.target_name);
  EXPECT_EQ(num(lr, "hyperscsi2.auth_length"), 5);
  EXPECT_EQ(lr.at("hyperscsi2.auth"), hex(v.login_req.auth));
  // 4, 5 login replies.
  EXPECT_EQ(num(rows[3], "hyperscsi2.login.status"), 4);
  EXPECT_EQ(num(rows[3], "hyperscsi2.mtu"), 1500);
  const Row& ok = rows[4];
  EXPECT_EQ(num(ok, "hyperscsi2.login.status"), 0);
  EXPECT_EQ(num(ok, "hyperscsi2.mtu"), v.login_ok.mtu);
  EXPECT_EQ(num(ok, "hyperscsi2.max_transfer"), v.login_ok.max_transfer);
  EXPECT_EQ(num(ok, "hyperscsi2.features"), v.login_ok.features);
  EXPECT_EQ(num(ok, "hyperscsi2.login.session_id"), v.login_ok.session_id);
  EXPECT_EQ(num(ok, "hyperscsi2.login.epoch"), v.login_ok.epoch);
  EXPECT_EQ(num(ok, "hyperscsi2.login.keepalive_ms"), v.login_ok.keepalive_ms);
  EXPECT_EQ(num(ok, "hyperscsi2.login.dead_time_ms"), v.login_ok.dead_time_ms);
  // 6 READ(10).
  const Row& rd = rows[5];
  EXPECT_EQ(num(rd, "hyperscsi2.cmd.cmd_sn"), v.read10.cmd_sn);
  EXPECT_EQ(num(rd, "hyperscsi2.cmd.reply_ack_sn"), v.read10.reply_ack_sn);
  EXPECT_EQ(num(rd, "hyperscsi2.cmd.lun"), v.read10.lun);
  EXPECT_EQ(num(rd, "hyperscsi2.cmd.flags"), v.read10.flags);
  EXPECT_EQ(num(rd, "hyperscsi2.cmd.task_attribute"), v.read10.task_attribute);
  EXPECT_EQ(num(rd, "hyperscsi2.cmd.expected_data_in"), v.read10.expected_data_in);
  EXPECT_EQ(num(rd, "hyperscsi2.cmd.data_out_length"), 0);
  EXPECT_EQ(num(rd, "hyperscsi2.cmd.cdb_length"), 10);
  EXPECT_EQ(num(rd, "hyperscsi2.cdb.opcode"), 0x28);
  EXPECT_EQ(num(rd, "hyperscsi2.cdb.lba"), 0x12345);
  EXPECT_EQ(num(rd, "hyperscsi2.cdb.transfer_length"), 8);
  EXPECT_EQ(num(rd, "hyperscsi2.retransmission"), -1) << "first transmission";
  // 7, 8 WRITE(16) in two fragments: the CDB is in the first only.
  EXPECT_EQ(num(rows[6], "hyperscsi2.cdb.opcode"), 0x8a);
  EXPECT_EQ(num(rows[6], "hyperscsi2.cdb.lba"), 0x100000000ll);
  EXPECT_EQ(num(rows[6], "hyperscsi2.cdb.transfer_length"), 2);
  EXPECT_EQ(num(rows[6], "hyperscsi2.cmd.data_out_length"), 1024);
  EXPECT_EQ(rows[6].at("hyperscsi2.data_out"),
            hex({v.write_pdu.begin() + 24 + 16, v.write_pdu.begin() + 500}));
  EXPECT_EQ(num(rows[7], "hyperscsi2.cdb.opcode"), -1);
  EXPECT_EQ(num(rows[7], "hyperscsi2.cmd.cmd_sn"), -1);
  EXPECT_EQ(rows[7].at("hyperscsi2.payload"), hex({v.write_pdu.begin() + 500, v.write_pdu.end()}));
  // 9 CHECK CONDITION with sense.
  const Row& cc = rows[8];
  EXPECT_EQ(num(cc, "hyperscsi2.reply.cmd_sn"), v.check.cmd_sn);
  EXPECT_EQ(num(cc, "hyperscsi2.reply.status"), 0x02);
  EXPECT_EQ(num(cc, "hyperscsi2.reply.response"), 0);
  EXPECT_EQ(num(cc, "hyperscsi2.reply.sense_length"), 18);
  EXPECT_EQ(num(cc, "hyperscsi2.sense.key"), 0x05);
  EXPECT_EQ(num(cc, "hyperscsi2.sense.asc"), 0x21);
  EXPECT_EQ(num(cc, "hyperscsi2.sense.ascq"), 0x00);
  // 10 GOOD with underflow and data-in.
  const Row& gd = rows[9];
  EXPECT_EQ(num(gd, "hyperscsi2.reply.status"), 0);
  EXPECT_EQ(num(gd, "hyperscsi2.reply.flags"), kReplyFlagUnderflow);
  EXPECT_EQ(num(gd, "hyperscsi2.reply.residual"), v.good.residual);
  EXPECT_EQ(num(gd, "hyperscsi2.reply.data_in_length"), 64);
  EXPECT_EQ(gd.at("hyperscsi2.data_in"), hex(v.data_in));
  // 11-14 retransmission analysis.
  EXPECT_EQ(boolean(rows[10], "hyperscsi2.retransmission"), 1);
  EXPECT_EQ(num(rows[10], "hyperscsi2.retransmission.original"), 6);
  EXPECT_EQ(boolean(rows[11], "hyperscsi2.retransmission"), 1) << "same seq, no flag";
  EXPECT_EQ(num(rows[11], "hyperscsi2.retransmission.original"), 10);
  EXPECT_EQ(num(rows[12], "hyperscsi2.retransmission"), -1) << "seq 200 of the other direction";
  EXPECT_EQ(num(rows[13], "hyperscsi2.retransmission"), -1) << "seq 100 of another session";
  EXPECT_EQ(num(rows[12], "hyperscsi2.cdb.opcode"), 0x00);
  // 15 disconnect, 16/17 keepalive and answer, 18 ack (headers checked above).
  EXPECT_EQ(num(rows[14], "hyperscsi2.disconnect.reason"), 3);
  EXPECT_EQ(num(rows[15], "hyperscsi2.keepalive.probe_id"), 77);
  EXPECT_EQ(rows[15].at("hyperscsi2.keepalive.padding"), std::string(2 * (200 - 40 - 4), '0'));
  EXPECT_EQ(num(rows[16], "hyperscsi2.keepalive.probe_id"), 77);
  EXPECT_EQ(rows[17].at("hyperscsi2.payload"), "");
}

TEST_F(Dissector, NamesStatusSenseAndOpcodes) {
  Valid v;
  const fs::path pcap = file("valid.pcap");
  ASSERT_TRUE(write_pcap(pcap, v.frames));
  const auto [out, status] = run(tshark(pcap, "-V", file("err")));
  ASSERT_EQ(status, 0) << slurp(file("err"));
  for (const char* text :
       {"Opcode: Discovery Request (0x30)", "Login status: MTU mismatch (4)",
        "Reason: Shutdown (3)", "SCSI opcode: READ(10) (0x28)", "SCSI opcode: WRITE(16) (0x8a)",
        "SCSI opcode: TEST UNIT READY (0x00)", "SCSI status: CHECK CONDITION (0x02)",
        "Sense key: ILLEGAL REQUEST (0x05)",
        "ASC/ASCQ: Logical block address out of range (0x2100)", "Task attribute: Ordered (1)",
        "CRC-32 status: Good (1)", "Retransmission: seq 201 already seen in frame 10",
        "Retransmission: seq 100 already seen in frame 6"}) {
    EXPECT_NE(out.find(text), std::string::npos) << "missing: " << text;
  }
  EXPECT_EQ(out.find("Lua Error"), std::string::npos) << out;
}

TEST_F(Dissector, ValidFramesRaiseNoError) {
  Valid v;
  const fs::path pcap = file("valid.pcap");
  ASSERT_TRUE(write_pcap(pcap, v.frames));
  const auto [out, status] =
      run(tshark(pcap,
                 "-Y '_ws.malformed || _ws.expert.severity >= error || hyperscsi2.malformed' "
                 "-T fields -e frame.number -e _ws.expert.message",
                 file("err")));
  ASSERT_EQ(status, 0) << slurp(file("err"));
  EXPECT_EQ(out, "") << "frames flagged as errors";
  // The filter itself works: every frame is dissected by hyperscsi2.
  const auto [all, st2] = run(tshark(pcap, "-Y hyperscsi2 -T fields -e frame.number", file("e2")));
  ASSERT_EQ(st2, 0);
  EXPECT_EQ(static_cast<size_t>(std::count(all.begin(), all.end(), '\n')), v.frames.size());
}

TEST_F(Dissector, BrokenFramesAreFlaggedWithoutLuaErrors) {
  Valid v;
  // Broken at the frame level (decode_frame refuses it) or only in the body.
  struct Broken {
    std::string what;
    std::vector<uint8_t> frame;
    bool frame_level;
  };
  std::vector<Broken> bad;
  const size_t hs = kEthernetHeaderSize;  // HyperSCSI header offset
  auto patched = [&](size_t index, size_t at, uint8_t value) {
    std::vector<uint8_t> f = v.frames[index];
    f[at] = value;
    return f;
  };
  bad.push_back({"bad crc", patched(5, hs + 40 + 2, 0xee), true});
  bad.push_back({"truncated extended header",
                 std::vector<uint8_t>(v.frames[0].begin(), v.frames[0].begin() + 30), true});
  bad.push_back({"9 SACK blocks", patched(17, hs + 7, 9), true});
  bad.push_back({"payload past the end", patched(0, hs + 32, 0x07), true});
  bad.push_back({"version 3", patched(0, hs + 3, 3), true});
  bad.push_back({"login status 9", patched(4, hs + 40 + 4, 9), false});
  bad.push_back({"cdb length 40", patched(12, hs + 40 + 20, 40), false});
  bad.push_back({"unknown flag bit", patched(0, hs + 6, 0x80), true});
  bad.push_back({"unknown opcode", patched(0, hs + 4, 0x55), true});
  bad.push_back({"name runs past the body", patched(0, hs + 40 + 4, 200), false});
  bad.push_back({"ext_len 10", patched(0, hs + 5, 10), true});
  bad.push_back({"reserved nibble", patched(0, hs + 0, 0x80), true});
  bad.push_back({"disconnect reason 9", patched(14, hs + 40, 9), false});
  bad.push_back({"LUN flag bits", patched(1, hs + 40 + 20, 0x80), false});
  bad.push_back({"two bytes",
                 std::vector<uint8_t>{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x88, 0x9a, 0x00, 0x04},
                 true});
  std::vector<std::vector<uint8_t>> frames;
  for (const auto& b : bad) {
    EXPECT_EQ(decode_frame(b.frame).ok(), !b.frame_level) << b.what;
    frames.push_back(b.frame);
  }
  const fs::path pcap = file("broken.pcap");
  ASSERT_TRUE(write_pcap(pcap, frames));

  const auto [out, status] = run(
      tshark(pcap, "-Y 'hyperscsi2.malformed || hyperscsi2.crc32.bad' -T fields -e frame.number",
             file("err")));
  ASSERT_EQ(status, 0) << slurp(file("err"));
  std::string want;
  for (size_t i = 1; i <= frames.size(); ++i) want += std::to_string(i) + "\n";
  EXPECT_EQ(out, want) << "every broken frame is flagged (frame numbers: "
                       << "1 = " << bad[0].what << ", ...)";

  const auto [verbose, st2] = run(tshark(pcap, "-V", file("err2")));
  ASSERT_EQ(st2, 0) << slurp(file("err2"));
  EXPECT_EQ(verbose.find("Lua Error"), std::string::npos) << verbose;
  EXPECT_EQ(slurp(file("err2")).find("Lua"), std::string::npos) << slurp(file("err2"));
  EXPECT_NE(verbose.find("Bad CRC-32"), std::string::npos);
  EXPECT_NE(verbose.find("9 SACK blocks exceed 8"), std::string::npos);
  EXPECT_NE(verbose.find("unknown login status 9"), std::string::npos);
  EXPECT_NE(verbose.find("CDB length 40 outside 6-32"), std::string::npos);
}

// Random corruption of every valid frame (seeded): whatever the bytes, the
// dissector reports problems as expert info and never raises a Lua error.
TEST_F(Dissector, RandomlyCorruptedFramesNeverRaiseALuaError) {
  Valid v;
  std::mt19937 rng(12345);
  std::vector<std::vector<uint8_t>> frames;
  for (int round = 0; round < 12; ++round) {
    for (const auto& original : v.frames) {
      std::vector<uint8_t> f = original;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) {
        // Mostly the HyperSCSI header and the start of the body.
        const size_t span = std::min<size_t>(f.size() - kEthernetHeaderSize, 96);
        f[kEthernetHeaderSize + rng() % span] = static_cast<uint8_t>(rng());
      }
      if (rng() % 4 == 0) f.resize(kEthernetHeaderSize + rng() % (f.size() - kEthernetHeaderSize));
      frames.push_back(std::move(f));
    }
  }
  const fs::path pcap = file("fuzz.pcap");
  ASSERT_TRUE(write_pcap(pcap, frames));
  const auto [out, status] = run(tshark(pcap, "-V", file("err")));
  ASSERT_EQ(status, 0) << slurp(file("err"));
  EXPECT_EQ(out.find("Lua Error"), std::string::npos) << out.substr(0, 20000);
  EXPECT_EQ(slurp(file("err")).find("Lua"), std::string::npos) << slurp(file("err"));
  const auto [all, st2] =
      run(tshark(pcap, "-Y hyperscsi2 -T fields -e frame.number", file("err2")));
  ASSERT_EQ(st2, 0);
  EXPECT_EQ(static_cast<size_t>(std::count(all.begin(), all.end(), '\n')), frames.size());
}

}  // namespace
}  // namespace hyperscsi::proto

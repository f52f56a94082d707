// The Lua dissector on multipath frames (docs/protocol.md section 14): the
// path of every frame (header bytes 34-35), the login reply's port list, path
// requests and replies with their proofs, retransmission analysis per path
// generation, and broken multipath bodies flagged without a Lua error.
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/multipath.h"
#include "tshark_util.h"

namespace hyperscsi::proto {
namespace {

namespace fs = std::filesystem;
using namespace hyperscsi::test_wireshark;

const MacAddress kI0 = {0x02, 0, 0, 0, 0, 0x01};
const MacAddress kT0 = {0x02, 0, 0, 0, 0, 0x02};
const MacAddress kI1 = {0x02, 0, 0, 0, 0, 0x11};
const MacAddress kT1 = {0x02, 0, 0, 0, 0, 0x12};
constexpr uint32_t kSession = 0x5e551001;

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

FrameHeader header(Opcode op, const MacAddress& dst, const MacAddress& src, uint8_t path_id,
                   uint8_t path_gen, uint8_t flags = 0) {
  FrameHeader h;
  h.dst = dst;
  h.src = src;
  h.common.opcode = op;
  h.ext.session_id = kSession;
  h.ext.epoch = 1;
  h.ext.path_id = path_id;
  h.ext.path_gen = path_gen;
  h.ext.flags = flags;
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

std::vector<uint8_t> command_on(const MacAddress& dst, const MacAddress& src, uint8_t id,
                                uint8_t gen, uint32_t seq, uint32_t cmd_sn) {
  CommandHeader c;
  c.cmd_sn = cmd_sn;
  c.reply_ack_sn = cmd_sn;
  c.cdb_length = 6;  // TEST UNIT READY
  std::vector<uint8_t> pdu;
  encode(c, pdu);
  FrameHeader h = header(Opcode::kCommandRequest, dst, src, id, gen, kFlagAck | kFlagChecksum);
  h.common.tag = 3;
  h.ext.seq = seq;
  h.ext.window = 45;
  h.ext.pdu_length = static_cast<uint32_t>(pdu.size());
  return frame(h, pdu);
}

struct Capture {
  std::vector<std::vector<uint8_t>> frames;
  Capture() {
    // 1 login reply of a multipath session with its port list
    MultipathLoginReply m;
    m.reply.nonce = 0x1234;
    m.reply.mtu = 9000;
    m.reply.window = 45;
    m.reply.max_transfer = 1u << 20;
    m.reply.features = kFeaturesV2 | kFeatureMultipath;
    m.reply.session_id = kSession;
    m.reply.epoch = 1;
    m.ports = {{kT0, 9000}, {kT1, 1500}};
    frames.push_back(control(header(Opcode::kLoginReply, kI0, kT0, 0, 0, kFlagResponse), m));
    // 2 join of path 1 generation 1, with a proof
    PathRequest q;
    q.nonce = 0x0a0b0c0d;
    q.path_id = 1;
    q.path_gen = 1;
    q.mtu = 1500;
    q.window = 256;
    q.proof.assign(kPathProofSize, 0x5a);
    frames.push_back(control(header(Opcode::kPathRequest, kT1, kI1, 1, 1), q));
    // 3 its answer
    PathReply r;
    r.nonce = q.nonce;
    r.path_id = 1;
    r.path_gen = 1;
    r.mtu = 1500;
    r.window = 256;
    frames.push_back(control(header(Opcode::kPathReply, kI1, kT1, 1, 1, kFlagResponse), r));
    // 4 a refused join: stale generation (a warning, not an error)
    r.status = PathStatus::kStaleGeneration;
    r.mtu = r.window = 0;
    frames.push_back(control(header(Opcode::kPathReply, kI1, kT1, 1, 1, kFlagResponse), r));
    // 5 the target's leave notice about path 1.1, carried on path 0.0
    PathRequest leave;
    leave.nonce = 0x42;
    leave.action = PathAction::kLeave;
    leave.path_id = 1;
    leave.path_gen = 1;
    frames.push_back(control(header(Opcode::kPathRequest, kI0, kT0, 0, 0), leave));
    // 6 seq 0 on path 1.1; 7 seq 0 on path 1.2 (a new generation: not a
    // retransmission); 8 seq 0 on path 1.2 again (one)
    frames.push_back(command_on(kT1, kI1, 1, 1, 0, 20));
    frames.push_back(command_on(kT1, kI1, 1, 2, 0, 21));
    frames.push_back(command_on(kT1, kI1, 1, 2, 0, 21));
    // 9 seq 0 on the login path: not a retransmission either
    frames.push_back(command_on(kT0, kI0, 0, 0, 0, 22));
    // 10 a keepalive on path 2 generation 5
    frames.push_back(
        control(header(Opcode::kKeepalive, kT1, kI0, 2, 5, kFlagAck), Keepalive{9, 0}));
  }
};

const std::vector<std::string> kFields = {"hyperscsi2.opcode",
                                          "hyperscsi2.path_id",
                                          "hyperscsi2.path_gen",
                                          "hyperscsi2.path",
                                          "hyperscsi2.features.multipath",
                                          "hyperscsi2.port_count",
                                          "hyperscsi2.port.mac",
                                          "hyperscsi2.port.mtu",
                                          "hyperscsi2.path.action",
                                          "hyperscsi2.path.status",
                                          "hyperscsi2.path.subject_id",
                                          "hyperscsi2.path.subject_gen",
                                          "hyperscsi2.path.proof_length",
                                          "hyperscsi2.path.proof",
                                          "hyperscsi2.mtu",
                                          "hyperscsi2.window",
                                          "hyperscsi2.nonce",
                                          "hyperscsi2.retransmission",
                                          "hyperscsi2.retransmission.original"};

using Row = std::map<std::string, std::string>;

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

class MultipathDissector : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_tshark()) {
      GTEST_SKIP() << "tshark is not installed (scripts/setup.sh installs it; CI must not skip)";
    }
    ASSERT_FALSE(dir_.path().empty()) << "cannot create a temporary directory";
  }
  fs::path file(const std::string& name) const { return dir_.path() / name; }
  TempDir dir_;
};

TEST_F(MultipathDissector, ShowsPathsPortsAndPathRequests) {
  Capture c;
  for (const auto& f : c.frames) ASSERT_TRUE(decode_frame(f).ok());
  const fs::path pcap = file("mp.pcap");
  ASSERT_TRUE(write_pcap(pcap, c.frames));
  std::string args = "-T fields -E separator=/t -E occurrence=a -E aggregator=,";
  for (const auto& f : kFields) args += " -e " + f;
  const auto [out, status] = run(tshark(pcap, args, file("err")));
  ASSERT_EQ(status, 0) << out << slurp(file("err"));
  const auto rows = parse_rows(out);
  ASSERT_EQ(rows.size(), c.frames.size()) << out << slurp(file("err"));
  auto at = [&](size_t frame, const std::string& field) { return rows[frame - 1].at(field); };

  EXPECT_EQ(at(1, "hyperscsi2.features.multipath"), "1");
  EXPECT_EQ(at(1, "hyperscsi2.port_count"), "2");
  EXPECT_EQ(at(1, "hyperscsi2.port.mac"), "02:00:00:00:00:02,02:00:00:00:00:12");
  EXPECT_EQ(at(1, "hyperscsi2.port.mtu"), "9000,1500");
  EXPECT_EQ(at(1, "hyperscsi2.path"), "0.0");

  EXPECT_EQ(at(2, "hyperscsi2.opcode"), "0x31");
  EXPECT_EQ(at(2, "hyperscsi2.path_id"), "1");
  EXPECT_EQ(at(2, "hyperscsi2.path_gen"), "1");
  EXPECT_EQ(at(2, "hyperscsi2.path"), "1.1");
  EXPECT_EQ(at(2, "hyperscsi2.path.action"), "0");
  EXPECT_EQ(at(2, "hyperscsi2.path.subject_id"), "1");
  EXPECT_EQ(at(2, "hyperscsi2.path.subject_gen"), "1");
  EXPECT_EQ(at(2, "hyperscsi2.mtu"), "1500");
  EXPECT_EQ(at(2, "hyperscsi2.window"), "0,256");  // header window, then the body's
  EXPECT_EQ(at(2, "hyperscsi2.path.proof_length"), "32");
  std::string proof_hex;
  for (size_t i = 0; i < kPathProofSize; ++i) proof_hex += "5a";
  EXPECT_EQ(at(2, "hyperscsi2.path.proof"), proof_hex);
  EXPECT_EQ(at(2, "hyperscsi2.nonce"), "0x0a0b0c0d");

  EXPECT_EQ(at(3, "hyperscsi2.opcode"), "0x32");
  EXPECT_EQ(at(3, "hyperscsi2.path.status"), "0");
  EXPECT_EQ(at(4, "hyperscsi2.path.status"), "4");

  EXPECT_EQ(at(5, "hyperscsi2.path"), "0.0");  // carried on the login path ...
  EXPECT_EQ(at(5, "hyperscsi2.path.action"), "2");
  EXPECT_EQ(at(5, "hyperscsi2.path.subject_id"), "1");  // ... about path 1

  // Sequence numbers are per path generation.
  EXPECT_EQ(at(6, "hyperscsi2.path"), "1.1");
  EXPECT_EQ(at(6, "hyperscsi2.retransmission"), "");
  EXPECT_EQ(at(7, "hyperscsi2.path"), "1.2");
  EXPECT_EQ(at(7, "hyperscsi2.retransmission"), "");
  EXPECT_EQ(at(8, "hyperscsi2.retransmission.original"), "7");
  EXPECT_EQ(at(9, "hyperscsi2.retransmission"), "");
  EXPECT_EQ(at(10, "hyperscsi2.path"), "2.5");

  // Names in the tree and the Info column; no errors, one warning (frame 4).
  const auto [verbose, st2] = run(tshark(pcap, "-V", file("err2")));
  ASSERT_EQ(st2, 0) << slurp(file("err2"));
  for (const char* want : {"Path Request", "Path Reply", "Action: Join (0)", "Action: Leave (2)",
                           "Status: Stale generation (4)", "MULTIPATH: True", "Path ID: 1",
                           "Path generation: 2", "Path refused: Stale generation"})
    EXPECT_NE(verbose.find(want), std::string::npos) << want;
  const auto [errors, st3] =
      run(tshark(pcap,
                 "-Y '_ws.malformed || _ws.expert.severity >= error || hyperscsi2.malformed' "
                 "-T fields -e frame.number",
                 file("err3")));
  ASSERT_EQ(st3, 0);
  EXPECT_EQ(errors, "");
  const auto [info, st4] = run(tshark(pcap, "-T fields -e _ws.col.Info", file("err4")));
  ASSERT_EQ(st4, 0);
  EXPECT_NE(info.find("Join of path 1.1"), std::string::npos) << info;
  EXPECT_NE(info.find("path=1.2"), std::string::npos) << info;
  EXPECT_NE(info.find("ports=2"), std::string::npos) << info;
}

TEST_F(MultipathDissector, BrokenMultipathBodiesAreFlagged) {
  Capture c;
  const size_t body = kEthernetHeaderSize + kHeaderSize;
  auto patched = [&](size_t frame_no, size_t at, uint8_t value) {
    std::vector<uint8_t> f = c.frames[frame_no - 1];
    f[body + at] = value;
    return f;
  };
  // Grows the body by one byte (payload and PDU length follow; no checksum).
  auto longer = [&](size_t frame_no) {
    std::vector<uint8_t> f = c.frames[frame_no - 1];
    const size_t hs = kEthernetHeaderSize;
    const uint16_t n = bytes::load_be16(&f[hs + 32]);
    f.insert(f.begin() + static_cast<long>(body + n), 0x00);
    bytes::store_be16(&f[hs + 32], static_cast<uint16_t>(n + 1));
    bytes::store_be32(&f[hs + 24], n + 1u);
    return f;
  };
  const size_t ports_at = 34;  // after the login reply's fixed part and empty auth
  std::vector<std::pair<std::string, std::vector<uint8_t>>> bad = {
      {"port count 0", patched(1, ports_at, 0)},
      {"port count 17", patched(1, ports_at, 17)},
      {"action 3", patched(2, 4, 3)},
      {"path id 16", patched(2, 6, 16)},
      {"proof length 5", patched(2, 12, 5)},
      {"status 9", patched(3, 4, 9)},
      {"bytes left over", longer(5)},
  };
  std::vector<std::vector<uint8_t>> frames;
  for (auto& [what, f] : bad) frames.push_back(f);
  const fs::path pcap = file("bad.pcap");
  ASSERT_TRUE(write_pcap(pcap, frames));
  const auto [out, status] =
      run(tshark(pcap, "-Y hyperscsi2.malformed -T fields -e frame.number", file("err")));
  ASSERT_EQ(status, 0) << slurp(file("err"));
  std::string want;
  for (size_t i = 1; i <= frames.size(); ++i) want += std::to_string(i) + "\n";
  EXPECT_EQ(out, want);
  const auto [verbose, st2] = run(tshark(pcap, "-V", file("err2")));
  ASSERT_EQ(st2, 0);
  EXPECT_EQ(verbose.find("Lua Error"), std::string::npos) << verbose;
  for (const char* text :
       {"port count 0 outside 1-16", "unknown path action 3", "path id 16 above 15",
        "proof length 5", "unknown path status 9", "left over after the path request body"})
    EXPECT_NE(verbose.find(text), std::string::npos) << text;
}

}  // namespace
}  // namespace hyperscsi::proto

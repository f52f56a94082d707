// Wireshark compatibility: frames our encoder wrote, of every opcode, are
// decoded by tshark's built-in HyperSCSI dissector to the common-header
// values we encoded (tag, fragment, last fragment, version, opcode).
#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "hyperscsi/proto/frame.h"
#include "hyperscsi/test_support/process.h"

namespace hyperscsi::proto {
namespace {

namespace fs = std::filesystem;
using test_support::run_command;
using test_support::TempDir;

struct Sample {
  CommonHeader common;
  std::vector<uint8_t> frame;
};

std::vector<Sample> build_samples() {
  const MacAddress a = {0x02, 0, 0, 0, 0, 0x01};
  const MacAddress b = {0x02, 0, 0, 0, 0, 0x02};
  std::vector<Sample> out;
  auto add = [&](Opcode op, uint16_t tag, uint16_t fragment, bool last) {
    FrameHeader h;
    h.dst = b;
    h.src = a;
    h.common = {tag, last, fragment, kProtocolVersion, op};
    h.ext.flags = kFlagAck | kFlagChecksum;
    h.ext.session_id = 0x5e551001;
    std::vector<uint8_t> payload(64, static_cast<uint8_t>(tag));
    if (is_sequenced(op)) {
      // A fragment `fragment` of a PDU of 64-byte fragments.
      h.ext.pdu_offset = fragment * 64u;
      h.ext.pdu_length = h.ext.pdu_offset + 64 + (last ? 0 : 64);
    }
    std::vector<uint8_t> frame(encoded_size(h, payload.size()));
    frame.resize(encode_frame(frame, h, payload));
    // Control frames are one whole fragment: record what was written.
    if (!is_sequenced(op)) h.common.fragment = 0, h.common.last_fragment = true;
    out.push_back({h.common, std::move(frame)});
  };
  // Sequenced frames: a spread of tags and fragment numbers, last or not.
  add(Opcode::kCommandRequest, 0, 0, true);
  add(Opcode::kCommandRequest, 511, 1023, true);
  add(Opcode::kCommandRequest, 300, 512, false);
  add(Opcode::kCommandReply, 1, 1, false);
  add(Opcode::kCommandReply, 257, 255, true);
  add(Opcode::kCommandReply, 31, 256, false);
  // One frame of every control opcode, each with its own tag.
  add(Opcode::kDiscoveryReply, 16, 0, true);
  add(Opcode::kLoginRequest, 17, 0, true);
  add(Opcode::kLoginReply, 18, 0, true);
  add(Opcode::kDisconnect, 19, 0, true);
  add(Opcode::kKeepalive, 32, 0, true);
  add(Opcode::kAck, 33, 0, true);
  add(Opcode::kDiscoveryRequest, 48, 0, true);
  return out;
}

bool write_pcap(const fs::path& file, const std::vector<Sample>& samples) {
  pcap_t* dead = pcap_open_dead(DLT_EN10MB, 65535);
  if (dead == nullptr) return false;
  pcap_dumper_t* d = pcap_dump_open(dead, file.c_str());
  if (d == nullptr) {
    pcap_close(dead);
    return false;
  }
  long usec = 0;
  for (const Sample& s : samples) {
    pcap_pkthdr hdr{};
    hdr.ts.tv_sec = 1700000000;
    hdr.ts.tv_usec = usec++;
    hdr.caplen = static_cast<bpf_u_int32>(s.frame.size());
    hdr.len = hdr.caplen;
    pcap_dump(reinterpret_cast<u_char*>(d), &hdr, s.frame.data());
  }
  pcap_dump_close(d);
  pcap_close(dead);
  return true;
}

// tshark prints FT_BOOLEAN fields as 1/0 (4.x) or True/False (older).
bool parse_bool(const std::string& s, bool& v) {
  if (s == "1" || s == "True" || s == "true") return v = true, true;
  if (s == "0" || s == "False" || s == "false") return v = false, true;
  return false;
}

TEST(Tshark, DecodesTheCommonHeaderOfEveryOpcode) {
  if (!test_support::have_command("tshark")) {
    GTEST_SKIP() << "tshark is not installed (scripts/setup.sh installs it; CI must not skip)";
  }
  TempDir dir("hs_tshark");
  ASSERT_FALSE(dir.path().empty()) << "cannot create a temporary directory";
  const fs::path file = dir.path() / "frames.pcap";
  const std::vector<Sample> samples = build_samples();
  for (const Sample& s : samples) ASSERT_FALSE(s.frame.empty()) << "encoder refused a sample";
  ASSERT_TRUE(write_pcap(file, samples));

  // `timeout` bounds the run on a loaded machine; stderr carries only
  // tshark's "running as root" notice.
  const auto [out, status] =
      run_command("timeout 120 tshark -n -r '" + file.string() +
                  "' -T fields -e hyperscsi.tagno -e hyperscsi.fragno -e hyperscsi.lastfrag"
                  " -e hyperscsi.version -e hyperscsi.cmd 2>/dev/null");
  ASSERT_EQ(status, 0) << "tshark failed; output:\n" << out;

  std::istringstream lines(out);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(i, samples.size()) << "more lines than frames: " << line;
    const CommonHeader& want = samples[i].common;
    SCOPED_TRACE("frame " + std::to_string(i + 1) + " (" + std::string(opcode_name(want.opcode)) +
                 "): " + line);
    std::vector<std::string> f;
    std::istringstream cols(line);
    std::string col;
    while (std::getline(cols, col, '\t')) f.push_back(col);
    ASSERT_EQ(f.size(), 5u);
    bool last = false;
    ASSERT_TRUE(parse_bool(f[2], last)) << "unexpected lastfrag text " << f[2];
    EXPECT_EQ(std::stoul(f[0], nullptr, 0), want.tag);
    EXPECT_EQ(std::stoul(f[1], nullptr, 0), want.fragment);
    EXPECT_EQ(last, want.last_fragment);
    EXPECT_EQ(std::stoul(f[3], nullptr, 0), want.version);
    EXPECT_EQ(std::stoul(f[4], nullptr, 0), static_cast<unsigned>(want.opcode));
    ++i;
  }
  EXPECT_EQ(i, samples.size()) << "tshark decoded fewer frames than written:\n" << out;
}

}  // namespace
}  // namespace hyperscsi::proto

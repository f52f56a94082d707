// Tests of the DPDK Port. Argument parsing and early errors run in-process;
// everything that initialises the EAL runs in dpdk_peer subprocesses (the EAL
// initialises once per process), inside network namespaces this test creates.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "hyperscsi/dpdk/dpdk_port.h"
#include "lab.h"
#include "test_frames.h"

namespace hyperscsi::dpdk {
namespace {

using testing::Peer;
using testing::RawSocket;
using testing::VethLab;
using testing::words;

constexpr int kErrBadArgument = static_cast<int>(io::PortErrorKind::kBadArgument);
constexpr int kErrNoSuchInterface = static_cast<int>(io::PortErrorKind::kNoSuchInterface);

// EAL options shared by every peer: one cpu, no shared files, short logs.
std::string common_eal(const std::string& prefix) {
  return "--no-pci,--no-telemetry,--lcores=0@0,--log-level=*:error,--file-prefix=" +
         testing::unique_name(prefix);
}

std::string af_packet_spec(const std::string& iface, const std::string& prefix) {
  // Frames of the af_packet rings sized for 9000-byte MTU frames.
  return "--no-huge,--no-shconf,-m256," + common_eal(prefix) +
         ",--vdev=net_af_packet0,iface=" + iface + ",framesz=12288,blocksz=12288,framecnt=512";
}

std::vector<uint8_t> make_frame(size_t len, uint32_t seq, uint16_t ethertype,
                                std::optional<uint16_t> vlan) {
  static const uint8_t kDst[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  static const uint8_t kSrc[6] = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
  std::vector<uint8_t> f(len);
  testing::build_frame(f.data(), len, kDst, kSrc, ethertype, seq);
  if (vlan) {
    const uint8_t tag[4] = {0x81, 0x00, static_cast<uint8_t>(*vlan >> 8),
                            static_cast<uint8_t>(*vlan)};
    f.insert(f.begin() + 12, tag, tag + 4);
  }
  return f;
}

bool is_root() {
  return geteuid() == 0;
}

// ---- In-process: no EAL initialised --------------------------------------

TEST(EalArgs, ElementsWithoutDashContinueThePreviousArgument) {
  EXPECT_EQ(
      split_eal_args(
          "--no-huge,--no-pci,--vdev=net_af_packet0,iface=veth0,framesz=4096,--lcores=0@0"),
      (std::vector<std::string>{"--no-huge", "--no-pci",
                                "--vdev=net_af_packet0,iface=veth0,framesz=4096", "--lcores=0@0"}));
}

TEST(EalArgs, BareOptionTakesTheNextElementAsItsValue) {
  EXPECT_EQ(split_eal_args("-a,0000:01:00.0,--vdev,net_memif0,role=server,-l,0"),
            (std::vector<std::string>{"-a", "0000:01:00.0", "--vdev", "net_memif0,role=server",
                                      "-l", "0"}));
}

TEST(EalArgs, EmptyElementsAreSkipped) {
  EXPECT_EQ(split_eal_args(",--no-huge,,--no-pci,"),
            (std::vector<std::string>{"--no-huge", "--no-pci"}));
  EXPECT_TRUE(split_eal_args("").empty());
}

TEST(OpenErrors, EmptySpecIsABadSpec) {
  auto r = open_dpdk_port("", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, io::PortErrorKind::kBadSpec);
}

TEST(OpenErrors, MalformedMtuOptionIsABadSpec) {
  auto r = open_dpdk_port("--no-huge,--hs-mtu=9x", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, io::PortErrorKind::kBadSpec);
  EXPECT_NE(r.error().message.find("9x"), std::string::npos) << r.error().message;
}

TEST(OpenErrors, AfPacketVdevWithoutIfaceIsABadSpec) {
  auto r = open_dpdk_port("--no-huge,--vdev=net_af_packet0", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, io::PortErrorKind::kBadSpec);
}

TEST(OpenErrors, VlanIdOutOfRange) {
  io::PortOptions o;
  o.vlan_id = 4095;
  auto r = open_dpdk_port("--no-huge,--vdev=net_af_packet0,iface=lo", o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, io::PortErrorKind::kBadArgument);
}

TEST(OpenErrors, MissingInterfaceIsNamedOrNonRootIsRefused) {
  const std::string iface = testing::unique_name("nope");
  auto r = open_dpdk_port("--no-huge,--no-pci,--vdev=net_af_packet0,iface=" + iface, {});
  ASSERT_FALSE(r.ok());
  if (!is_root()) {
    EXPECT_EQ(r.error().kind, io::PortErrorKind::kPermission) << r.error().message;
    return;
  }
  EXPECT_EQ(r.error().kind, io::PortErrorKind::kNoSuchInterface);
  EXPECT_NE(r.error().message.find("'" + iface + "'"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("net_af_packet0"), std::string::npos) << r.error().message;
}

TEST(OpenErrors, MemifWithoutHugepagesSaysWhatToDo) {
  if (!is_root()) GTEST_SKIP() << "needs root (the check runs after the root check)";
  std::ifstream meminfo("/proc/meminfo");
  long free_pages = -1;
  for (std::string key; meminfo >> key;)
    if (key == "HugePages_Free:") meminfo >> free_pages;
  // With hugepages present this would initialise the EAL in this process. The
  // memif tests that reserve hugepages hold the same ctest resource lock and
  // give them back, so on a machine without a standing reservation (CI) this
  // runs; a machine that keeps hugepages reserved cannot reach this path.
  if (free_pages != 0)
    GTEST_SKIP() << "hugepages are reserved on this machine; the error path is not reachable";
  auto r = open_dpdk_port(
      "--in-memory,--no-pci,--vdev=net_memif0,role=server,socket=/tmp/none.sock", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, io::PortErrorKind::kBackendFailure);
  EXPECT_NE(r.error().message.find("net_memif needs hugepages"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("nr_hugepages"), std::string::npos) << r.error().message;
}

// ---- Subprocesses: each initialises its own EAL ---------------------------

class DpdkPeerErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (DPDK EAL, network namespaces)";
  }
};

TEST_F(DpdkPeerErrors, UnknownEalOptionIsABadArgument) {
  Peer peer("", {"--no-huge,--no-shconf," + common_eal("e1") + ",--definitely-not-an-eal-option"});
  const auto w = words(peer.reply(30000));
  ASSERT_GE(w.size(), 2u);
  EXPECT_EQ(w[0], "ERROR");
  EXPECT_EQ(w[1], std::to_string(kErrBadArgument));
}

TEST_F(DpdkPeerErrors, NoProbedPortIsReported) {
  Peer peer("", {"--no-huge,--no-shconf," + common_eal("e2")});
  const std::string r = peer.reply(30000);
  const auto w = words(r);
  ASSERT_GE(w.size(), 2u) << r;
  EXPECT_EQ(w[0], "ERROR");
  EXPECT_EQ(w[1], std::to_string(kErrNoSuchInterface)) << r;
  EXPECT_NE(r.find("no port found"), std::string::npos) << r;
}

TEST_F(DpdkPeerErrors, SecondDifferentEalConfigurationIsRefused) {
  VethLab lab("c", 1500);
  ASSERT_TRUE(lab.ok()) << "could not create namespaces/veth";
  Peer peer(lab.ns_a(), {af_packet_spec(lab.ns_a(), "c1")});
  const auto ready = words(peer.reply(30000));
  ASSERT_FALSE(ready.empty());
  ASSERT_EQ(ready[0], "READY");
  const std::string r = peer.command("open2 --no-huge,--no-pci");
  const auto w = words(r);
  ASSERT_GE(w.size(), 2u) << r;
  EXPECT_EQ(w[0], "OPEN2");
  EXPECT_EQ(w[1], std::to_string(kErrBadArgument)) << r;
  EXPECT_NE(r.find("already initialised"), std::string::npos) << r;
}

TEST_F(DpdkPeerErrors, JumboMtuBeyondTheAfPacketFrameSizeIsRefused) {
  VethLab lab("j", 9000);
  ASSERT_TRUE(lab.ok()) << "could not create namespaces/veth";
  // Default framesz (2048) cannot hold 9000-byte frames: the PMD refuses the MTU.
  Peer peer(lab.ns_a(), {"--no-huge,--no-shconf," + common_eal("j1") +
                         ",--vdev=net_af_packet0,iface=" + lab.ns_a()});
  const std::string r = peer.reply(30000);
  const auto w = words(r);
  ASSERT_GE(w.size(), 2u) << r;
  EXPECT_EQ(w[0], "ERROR") << r;
  EXPECT_EQ(w[1], std::to_string(kErrBadArgument)) << r;
}

// ---- DPDK (af_packet vdev) <-> plain AF_PACKET raw socket ------------------

struct LinkParams {
  unsigned mtu;
  uint16_t vlan;
};

class AfPacketVsRaw : public ::testing::TestWithParam<LinkParams> {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (DPDK EAL, network namespaces, raw sockets)";
    lab_ = std::make_unique<VethLab>("p", GetParam().mtu);
    ASSERT_TRUE(lab_->ok()) << "could not create namespaces/veth";
    peer_ = std::make_unique<Peer>(
        lab_->ns_a(), std::vector<std::string>{af_packet_spec(lab_->ns_a(), "p1"),
                                               std::to_string(GetParam().vlan), "2048"});
    const std::string r = peer_->reply(30000);
    const auto w = words(r);
    ASSERT_EQ(w.size(), 4u) << r;
    ASSERT_EQ(w[0], "READY") << r;
    EXPECT_EQ(w[2], std::to_string(GetParam().mtu)) << "the port takes the veth's MTU";
    EXPECT_EQ(w[3], "-1") << "poll mode: no fd";
    dpdk_mac_ = w[1];
    raw_ = std::make_unique<RawSocket>(lab_->ns_b(), lab_->ns_b());
    ASSERT_TRUE(raw_->ok());
  }
  void TearDown() override {
    raw_.reset();
    peer_.reset();  // the peer exits before its namespace goes away
    lab_.reset();
  }

  std::optional<uint16_t> tag() const {
    return GetParam().vlan != 0 ? std::optional<uint16_t>(GetParam().vlan) : std::nullopt;
  }
  size_t max_frame() const { return GetParam().mtu + 14; }

  std::unique_ptr<VethLab> lab_;
  std::unique_ptr<Peer> peer_;
  std::unique_ptr<RawSocket> raw_;
  std::string dpdk_mac_;
};

TEST_P(AfPacketVsRaw, DpdkToRawBothCopyAndZeroCopyFullSize) {
  const size_t big = max_frame();
  // 100 minimum-size frames built in mbufs (bursts of 32), 100 full-size ones
  // from a heap pool (copied into mbufs), bursts of 8.
  EXPECT_EQ(peer_->command("send 100 60 32 ffffffffffff 0 mbuf 889a"), "SENT 100");
  EXPECT_EQ(peer_->command("send 100 " + std::to_string(big) + " 8 02aabbccddee 100 heap 889a"),
            "SENT 100");
  std::set<uint32_t> seqs;
  size_t bad = 0, small = 0, full = 0;
  for (int i = 0; i < 400 && seqs.size() < 200; ++i) {
    auto f = raw_->recv(5000);
    if (!f) break;
    if (f->bytes.size() < 14 || f->bytes[12] != 0x88 || f->bytes[13] != 0x9A)
      continue;  // kernel chatter
    const int64_t seq = testing::check_frame(f->bytes);
    if (seq < 0) {
      ++bad;
      continue;
    }
    if (tag()) {
      ASSERT_TRUE(f->vlan_tci.has_value()) << "frame " << seq << " sent untagged";
      EXPECT_EQ(*f->vlan_tci & 0x0FFF, *tag());
    } else {
      EXPECT_FALSE(f->vlan_tci.has_value()) << "frame " << seq << " sent tagged";
    }
    (f->bytes.size() == 60 ? small : full) += f->bytes.size() == 60 || f->bytes.size() == big;
    seqs.insert(static_cast<uint32_t>(seq));
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(seqs.size(), 200u);
  EXPECT_EQ(small, 100u);
  EXPECT_EQ(full, 100u);
  const auto c = words(peer_->command("counters"));
  ASSERT_EQ(c.size(), 10u);
  EXPECT_EQ(c[3], "200");  // tx_frames
}

TEST_P(AfPacketVsRaw, RawToDpdkDeliversOnlyHyperScsiOfOurVlan) {
  const size_t big = max_frame();
  const uint16_t other_vlan = static_cast<uint16_t>(GetParam().vlan + 7);
  const size_t expected_total = tag() ? 110 : 100;
  peer_->send_line("recv " + std::to_string(expected_total) +
                   " 20000");  // the peer polls while we send
  usleep(200000);
  uint64_t seqsum = 0;
  size_t expected = 0, junk = 0;
  for (uint32_t i = 0; i < 100; ++i) {
    const size_t len = i % 2 == 0 ? 60 : big;
    ASSERT_TRUE(raw_->send(make_frame(len, i, 0x889A, tag())));
    seqsum += i;
    ++expected;
    if (i % 5 == 0) {  // other EtherTypes and other VLANs in between
      ASSERT_TRUE(raw_->send(make_frame(len, 1000 + i, 0x88A2, std::nullopt)));
      ASSERT_TRUE(raw_->send(make_frame(len, 2000 + i, 0x889A, other_vlan)));
      ASSERT_TRUE(raw_->send(make_frame(len, 3000 + i, 0x0800, tag())));
      junk += 3;
    }
    if (i % 16 == 15) usleep(1000);  // bounded bursts for the PMD ring
  }
  if (tag()) {  // untagged HyperSCSI frames are delivered on a VLAN port too
    for (uint32_t i = 100; i < 110; ++i) {
      ASSERT_TRUE(raw_->send(make_frame(200, i, 0x889A, std::nullopt)));
      seqsum += i;
      ++expected;
    }
  }
  ASSERT_EQ(expected, expected_total);
  const auto w = words(peer_->reply(40000));
  ASSERT_EQ(w.size(), 6u);
  EXPECT_EQ(w[0], "RECV");
  EXPECT_EQ(w[1], std::to_string(expected));
  EXPECT_EQ(w[2], "0") << "malformed frames delivered";
  EXPECT_EQ(w[3], std::to_string(seqsum));
  EXPECT_EQ(w[4], "60");
  EXPECT_EQ(w[5], std::to_string(big));
  // Nothing else passed the filter.
  EXPECT_EQ(words(peer_->command("recv 1 500")).at(1), "0");
  const auto c = words(peer_->command("counters"));
  ASSERT_EQ(c.size(), 10u);
  EXPECT_EQ(c[1], std::to_string(expected));         // rx_frames
  EXPECT_GE(std::stoull(c[9]), junk) << "filtered";  // plus any kernel chatter
}

TEST_P(AfPacketVsRaw, EchoReturnsReceivedMbufsWithoutCopy) {
  const size_t len = std::min<size_t>(max_frame(), 1200);
  peer_->send_line("echo 64 20000");
  usleep(200000);
  for (uint32_t i = 0; i < 64; ++i)
    ASSERT_TRUE(raw_->send(make_frame(len, 500 + i, 0x889A, tag())));
  std::set<uint32_t> seqs;
  for (int i = 0; i < 400 && seqs.size() < 64; ++i) {
    auto f = raw_->recv(5000);
    if (!f) break;
    if (f->bytes.size() < 14 || f->bytes[12] != 0x88 || f->bytes[13] != 0x9A) continue;
    const int64_t seq = testing::check_frame(f->bytes);
    ASSERT_GE(seq, 0) << "echoed frame corrupted";
    EXPECT_EQ(f->bytes[0], 0x02) << "destination is the original source";
    EXPECT_EQ(f->bytes[6], 0xff) << "source is the original destination";
    if (tag()) {
      EXPECT_TRUE(f->vlan_tci.has_value());
    }
    seqs.insert(static_cast<uint32_t>(seq));
  }
  EXPECT_EQ(seqs.size(), 64u);
  EXPECT_EQ(peer_->reply(30000), "ECHO 64");
}

INSTANTIATE_TEST_SUITE_P(MtuAndVlan, AfPacketVsRaw,
                         ::testing::Values(LinkParams{1500, 0}, LinkParams{1500, 100},
                                           LinkParams{9000, 0}, LinkParams{9000, 100}),
                         [](const ::testing::TestParamInfo<LinkParams>& p) {
                           return "mtu" + std::to_string(p.param.mtu) +
                                  (p.param.vlan ? "_vlan" + std::to_string(p.param.vlan)
                                                : "_untagged");
                         });

// ---- Two DPDK processes joined by net_memif -------------------------------

TEST(MemifPair, FramesFlowBothWaysAndOtherEtherTypesAreFiltered) {
  if (!is_root()) GTEST_SKIP() << "needs root (hugepages, DPDK EAL)";
  testing::HugepageReservation huge;
  ASSERT_TRUE(huge.ok()) << "could not reserve 512 hugepages or mount hugetlbfs";
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / testing::unique_name("memif");
  std::filesystem::create_directories(dir);
  struct RemoveDir {
    std::filesystem::path p;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(p, ec);
    }
  } remove_dir{dir};
  const std::string sock = (dir / "memif.sock").string();
  auto spec = [&](const std::string& role, const std::string& prefix) {
    return "--in-memory," + common_eal(prefix) + ",--vdev=net_memif0,role=" + role +
           ",socket=" + sock;
  };
  Peer server("", {spec("server", "ms"), "0", "1024"});
  const auto s_ready = words(server.reply(30000));
  ASSERT_FALSE(s_ready.empty());
  ASSERT_EQ(s_ready[0], "READY");
  Peer client("", {spec("client", "mc"), "0", "1024"});
  const auto c_ready = words(client.reply(30000));
  ASSERT_FALSE(c_ready.empty());
  ASSERT_EQ(c_ready[0], "READY");
  ASSERT_EQ(server.command("link 15000"), "LINK 1");
  ASSERT_EQ(client.command("link 15000"), "LINK 1");

  // client -> server: 200 frames, mbuf-built, bursts of 32, plus 10 of another EtherType
  EXPECT_EQ(client.command("send 10 100 8 " + s_ready[1] + " 900 mbuf 88a2"), "SENT 10");
  server.send_line("recv 200 20000");
  EXPECT_EQ(client.command("send 200 1000 32 " + s_ready[1] + " 0 mbuf 889a"), "SENT 200");
  auto w = words(server.reply(30000));
  ASSERT_EQ(w.size(), 6u);
  EXPECT_EQ(w[1], "200");
  EXPECT_EQ(w[2], "0");
  EXPECT_EQ(w[3], std::to_string(199 * 200 / 2));
  auto c = words(server.command("counters"));
  ASSERT_EQ(c.size(), 10u);
  EXPECT_EQ(c[9], "10") << "the other EtherType was filtered";

  // server -> client: full-size frames from a heap pool (copied), bursts of 8
  client.send_line("recv 100 20000");
  EXPECT_EQ(server.command("send 100 1514 8 " + c_ready[1] + " 0 heap 889a"), "SENT 100");
  w = words(client.reply(30000));
  ASSERT_EQ(w.size(), 6u);
  EXPECT_EQ(w[1], "100");
  EXPECT_EQ(w[2], "0");
  EXPECT_EQ(w[5], "1514");
}

// A memif server without a client has its link down: the PMD takes nothing,
// and the ownership rule says the caller keeps every packet unchanged (the
// software VLAN tag is taken off again).
TEST(MemifAlone, UntakenPacketsStayWithTheCallerUnchanged) {
  if (!is_root()) GTEST_SKIP() << "needs root (hugepages, DPDK EAL)";
  testing::HugepageReservation huge;
  ASSERT_TRUE(huge.ok()) << "could not reserve 512 hugepages or mount hugetlbfs";
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / testing::unique_name("memif1");
  std::filesystem::create_directories(dir);
  struct RemoveDir {
    std::filesystem::path p;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(p, ec);
    }
  } remove_dir{dir};
  Peer server("", {"--in-memory," + common_eal("m1") +
                       ",--vdev=net_memif0,role=server,socket=" + (dir / "memif.sock").string(),
                   "100", "1024"});
  const auto ready = words(server.reply(30000));
  ASSERT_FALSE(ready.empty());
  ASSERT_EQ(ready[0], "READY");
  EXPECT_EQ(server.command("link 200"), "LINK 0");
  EXPECT_EQ(server.command("trysend 8 200 mbuf"), "TRYSEND 0 8");
  EXPECT_EQ(server.command("trysend 8 1514 heap"), "TRYSEND 0 8");
  const auto c = words(server.command("counters"));
  ASSERT_EQ(c.size(), 10u);
  EXPECT_EQ(c[3], "0");   // tx_frames
  EXPECT_EQ(c[6], "16");  // tx_dropped: the caller kept them
  // Packets may outlive their port: the pool stays until they are released.
  EXPECT_EQ(server.command("closehold 16"), "CLOSEHOLD 16");
}

}  // namespace
}  // namespace hyperscsi::dpdk

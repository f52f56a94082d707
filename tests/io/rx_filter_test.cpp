// The session receive filter (io/rx_filter.h): the reference predicate on
// hand-made frames, and the classic BPF programs as the kernel runs them.
// The kernel runs a socket's filter on every datagram queued to an AF_UNIX
// socket too (with no VLAN metadata and packet type "host"), so attaching a
// program to one end of a socket pair and sending frames through it checks
// the real kernel verdict against rx_filter_matches() without root: every
// hand-made frame and a few thousand random mutations must pass exactly when
// the predicate (after the EtherType/VLAN rule) says so.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "hyperscsi/io/rx_filter.h"

namespace hyperscsi::io {
namespace {

constexpr MacAddress kPeer{0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
constexpr MacAddress kOtherTarget{0x02, 0x00, 0x00, 0x00, 0x00, 0x03};
// The same target's second port (a multipath session's other path).
constexpr MacAddress kPeerPort2{0x02, 0x00, 0x00, 0x00, 0x01, 0x02};
constexpr std::array<MacAddress, 2> kBothPorts{kPeer, kPeerPort2};
constexpr MacAddress kUs{0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr uint32_t kSession = 0x5e551001;

struct FrameSpec {
  MacAddress src = kPeer;
  uint16_t ether_type = 0x889A;
  uint8_t opcode = 0x01;
  uint32_t session_id = kSession;
  uint16_t epoch = 1;
  uint8_t flags = 0x01;
  size_t length = 60;
};

void put16(std::vector<uint8_t>& f, size_t at, uint16_t v) {
  f[at] = static_cast<uint8_t>(v >> 8);
  f[at + 1] = static_cast<uint8_t>(v);
}

// An untagged frame with the fields the filter reads (protocol.md 1-3).
std::vector<uint8_t> frame(const FrameSpec& s) {
  std::vector<uint8_t> f(std::max<size_t>(s.length, 54), 0);
  std::copy(kUs.begin(), kUs.end(), f.begin());
  std::copy(s.src.begin(), s.src.end(), f.begin() + 6);
  put16(f, 12, s.ether_type);
  f[14 + 3] = 0x02;  // version
  f[14 + 4] = s.opcode;
  f[14 + 5] = 35;  // ext_len
  f[14 + 6] = s.flags;
  put16(f, 14 + 8, static_cast<uint16_t>(s.session_id >> 16));
  put16(f, 14 + 10, static_cast<uint16_t>(s.session_id));
  put16(f, 14 + 12, s.epoch);
  f.resize(s.length);
  return f;
}

std::vector<uint8_t> tag(std::vector<uint8_t> f, uint16_t vid) {
  if (f.size() < 12) return f;  // no room for a tag after the MACs
  const std::array<uint8_t, 4> t{0x81, 0x00, static_cast<uint8_t>(0x20 | (vid >> 8)),
                                 static_cast<uint8_t>(vid)};
  f.insert(f.begin() + 12, t.begin(), t.end());
  return f;
}

TEST(RxFilterTest, PredicateFollowsTheSession) {
  const RxFilter all = RxFilter::all();
  const RxFilter control = RxFilter::session(kPeer, 0);
  const RxFilter mine = RxFilter::session(kPeer, kSession);
  const auto data = frame({});
  EXPECT_TRUE(rx_filter_matches(all, data));
  EXPECT_FALSE(rx_filter_matches(control, data));
  EXPECT_TRUE(rx_filter_matches(mine, data));
  // Any epoch (a resume raises it), any opcode of the session, protected or not.
  EXPECT_TRUE(rx_filter_matches(mine, frame({.epoch = 7})));
  EXPECT_TRUE(rx_filter_matches(mine, frame({.opcode = 0x13})));
  EXPECT_TRUE(rx_filter_matches(mine, frame({.flags = 0x21, .length = 200})));
  // Another session on this host, or the same id from another target.
  EXPECT_FALSE(rx_filter_matches(mine, frame({.session_id = kSession + 1})));
  EXPECT_FALSE(rx_filter_matches(mine, frame({.src = kOtherTarget})));
  // Discovery and login replies pass whatever their session (a fresh login's
  // reply carries the new id), from any target.
  for (const RxFilter& f : {control, mine}) {
    EXPECT_TRUE(
        rx_filter_matches(f, frame({.src = kOtherTarget, .opcode = 0x10, .session_id = 0})));
    EXPECT_TRUE(rx_filter_matches(f, frame({.opcode = 0x12, .session_id = 0x1234})));
    EXPECT_FALSE(rx_filter_matches(f, frame({.opcode = 0x30, .session_id = 0})));
  }
  // Too short to hold the session id.
  EXPECT_FALSE(rx_filter_matches(mine, frame({.length = 25})));
  EXPECT_EQ(to_string(all), "all");
  EXPECT_EQ(to_string(control), "control only");
  EXPECT_EQ(to_string(mine), "session 0x5e551001 from 02:00:00:00:00:02");
}

TEST(RxFilterTest, MultipathSessionPassesEveryTargetPortAndNoOther) {
  const RxFilter both = RxFilter::session(kBothPorts, kSession);
  EXPECT_TRUE(rx_filter_matches(both, frame({})));
  EXPECT_TRUE(rx_filter_matches(both, frame({.src = kPeerPort2})));
  EXPECT_FALSE(rx_filter_matches(both, frame({.src = kOtherTarget})));
  EXPECT_FALSE(rx_filter_matches(both, frame({.src = kPeerPort2, .session_id = kSession + 1})));
  // The single-port filter of the login path alone does not pass port 2.
  EXPECT_FALSE(rx_filter_matches(RxFilter::session(kPeer, kSession), frame({.src = kPeerPort2})));
  EXPECT_EQ(to_string(both), "session 0x5e551001 from 02:00:00:00:00:02, 02:00:00:00:01:02");

  // More ports than a port list holds: the session id alone decides, in the
  // predicate as in the program (KernelRunsTheProgramAsThePredicateSays).
  std::vector<MacAddress> many(RxFilter::kMaxPeers + 1, kPeerPort2);
  const RxFilter wide = RxFilter::session(many, kSession);
  EXPECT_TRUE(rx_filter_matches(wide, frame({.src = kOtherTarget})));
  EXPECT_FALSE(rx_filter_matches(wide, frame({.src = kOtherTarget, .session_id = 1})));
  // No port at all: control frames only.
  const RxFilter none = RxFilter::session(std::span<const MacAddress>{}, kSession);
  EXPECT_FALSE(rx_filter_matches(none, frame({})));
  EXPECT_TRUE(rx_filter_matches(none, frame({.opcode = 0x12})));
}

// One end of an AF_UNIX datagram pair with `program` attached.
class FilteredPair {
 public:
  explicit FilteredPair(const std::vector<BpfInstruction>& program) {
    ok_ = ::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds_) == 0;
    std::vector<sock_filter> code;
    for (const BpfInstruction& in : program) code.push_back({in.code, in.jt, in.jf, in.k});
    sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
    ok_ = ok_ && ::setsockopt(fds_[1], SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0;
  }
  ~FilteredPair() {
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
  }
  FilteredPair(const FilteredPair&) = delete;
  FilteredPair& operator=(const FilteredPair&) = delete;
  bool ok() const { return ok_; }

  // Whether the kernel's filter let `f` through (and the bytes arrived whole).
  bool passes(const std::vector<uint8_t>& f) {
    if (::send(fds_[0], f.data(), f.size(), MSG_DONTWAIT) != static_cast<ssize_t>(f.size()))
      return false;
    std::vector<uint8_t> got(f.size() + 16);
    const ssize_t n = ::recv(fds_[1], got.data(), got.size(), MSG_DONTWAIT);
    if (n < 0) return false;
    got.resize(static_cast<size_t>(n));
    EXPECT_EQ(got, f) << "a passing frame must arrive untrimmed";
    return true;
  }

 private:
  int fds_[2] = {-1, -1};
  bool ok_ = false;
};

// What the program must decide for `f` (no VLAN metadata on AF_UNIX).
bool expected(const RxFilter& filter, uint16_t vid, const std::vector<uint8_t>& f) {
  const auto be16 = [&](size_t at) { return static_cast<uint16_t>((f[at] << 8) | f[at + 1]); };
  if (f.size() < 14) return false;
  if (vid == 0) return be16(12) == 0x889A && rx_filter_matches(filter, f);
  if (f.size() < 18 || be16(12) != 0x8100 || (be16(14) & 0x0fff) != vid || be16(16) != 0x889A)
    return false;
  std::vector<uint8_t> untagged(f);
  untagged.erase(untagged.begin() + 12, untagged.begin() + 16);
  return rx_filter_matches(filter, untagged);
}

// Hand-made cases plus random mutations of them: MACs, EtherType, tags,
// opcode, session id, epoch and length (including frames cut short).
std::vector<std::vector<uint8_t>> corpus(uint16_t vid) {
  std::vector<std::vector<uint8_t>> out;
  const std::vector<FrameSpec> base = {
      {},
      {.epoch = 9},
      {.opcode = 0x00},
      {.opcode = 0x21, .flags = 0x21, .length = 120},
      {.session_id = kSession + 1},
      {.session_id = kSession ^ 0x80000000u},
      {.src = kOtherTarget},
      {.src = kPeerPort2},
      {.src = kPeerPort2, .session_id = kSession + 1},
      {.opcode = 0x10, .session_id = 0},
      {.src = kOtherTarget, .opcode = 0x12, .session_id = 77},
      {.opcode = 0x30, .session_id = 0},
      {.ether_type = 0x0800},
      {.length = 18},
      {.length = 19},
      {.length = 25},
      {.length = 26},
  };
  for (const FrameSpec& s : base) {
    out.push_back(frame(s));
    out.push_back(tag(frame(s), vid == 0 ? 7 : vid));
    out.push_back(tag(frame(s), static_cast<uint16_t>((vid == 0 ? 7 : vid) + 1)));
  }
  std::mt19937 rng(1414);
  const uint8_t opcodes[] = {0x00, 0x01, 0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x30, 0x7f};
  for (int i = 0; i < 3000; ++i) {
    FrameSpec s;
    if (rng() % 3 == 0) s.src = kPeerPort2;
    if (rng() % 4 == 0) s.src[rng() % 6] ^= static_cast<uint8_t>(1u << (rng() % 8));
    if (rng() % 8 == 0) s.ether_type = static_cast<uint16_t>(rng());
    s.opcode = opcodes[rng() % std::size(opcodes)];
    switch (rng() % 4) {
      case 0:
        s.session_id = 0;
        break;
      case 1:
        s.session_id ^= 1u << (rng() % 32);
        break;
      default:
        break;
    }
    s.epoch = static_cast<uint16_t>(rng());
    s.length = rng() % 5 == 0 ? rng() % 60 : 60 + rng() % 200;
    auto f = frame(s);
    if (vid != 0 && rng() % 4 != 0) f = tag(std::move(f), rng() % 8 == 0 ? vid + 1 : vid);
    if (rng() % 16 == 0 && !f.empty()) f[rng() % f.size()] ^= static_cast<uint8_t>(rng());
    out.push_back(std::move(f));
  }
  return out;
}

TEST(RxFilterTest, KernelRunsTheProgramAsThePredicateSays) {
  for (const BpfFlavor flavor : {BpfFlavor::kAfPacket, BpfFlavor::kPcap}) {
    for (const uint16_t vid : {uint16_t{0}, uint16_t{7}, uint16_t{4094}}) {
      const auto frames = corpus(vid);
      const std::vector<MacAddress> too_many(RxFilter::kMaxPeers + 1, kOtherTarget);
      std::vector<MacAddress> most(RxFilter::kMaxPeers, kOtherTarget);
      most.back() = kPeerPort2;  // the last of the longest program's checks
      for (const RxFilter& filter :
           {RxFilter::all(), RxFilter::session(kPeer, 0), RxFilter::session(kPeer, kSession),
            RxFilter::session(kBothPorts, kSession), RxFilter::session(most, kSession),
            RxFilter::session(too_many, kSession),
            RxFilter::session(std::span<const MacAddress>{}, kSession)}) {
        FilteredPair pair(rx_filter_program(filter, vid, flavor));
        ASSERT_TRUE(pair.ok()) << "socketpair/SO_ATTACH_FILTER failed for " << to_string(filter);
        size_t passed = 0;
        for (size_t i = 0; i < frames.size(); ++i) {
          const bool want = expected(filter, vid, frames[i]);
          ASSERT_EQ(pair.passes(frames[i]), want)
              << "frame " << i << " (" << frames[i].size() << " bytes), filter "
              << to_string(filter) << ", vlan " << vid << ", flavor "
              << (flavor == BpfFlavor::kPcap ? "pcap" : "afpacket");
          passed += want ? 1 : 0;
        }
        // The corpus exercises both verdicts.
        EXPECT_GT(passed, 50u);
        EXPECT_GT(frames.size() - passed, 50u);
      }
    }
  }
}

}  // namespace
}  // namespace hyperscsi::io

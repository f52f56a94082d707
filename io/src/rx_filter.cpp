// The session receive filter: its reference predicate and its classic BPF
// program (rx_filter.h).
#include "hyperscsi/io/rx_filter.h"

#include <linux/filter.h>
#include <linux/if_packet.h>

#include <algorithm>
#include <cstdio>

#include "ether.h"

namespace hyperscsi::io {
namespace {

// Offsets in an untagged frame: the HyperSCSI header starts after the
// 14-byte Ethernet header (docs/protocol.md 1-3).
constexpr size_t kSrcMac = 6;
constexpr size_t kOpcode = detail::kEthHeader + 4;
constexpr size_t kSessionId = detail::kEthHeader + 8;
constexpr uint8_t kOpDiscoveryReply = 0x10;
constexpr uint8_t kOpLoginReply = 0x12;

uint32_t load_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// A few lines of assembler: forward jumps to named labels, resolved at the end.
class Assembler {
 public:
  // Fixed labels; label() makes more.
  enum Label : int { kAccept, kReject, kSession, kInband, kLabels };
  int label() {
    at_.push_back(0);
    return static_cast<int>(at_.size() - 1);
  }

  void op(uint16_t code, uint32_t k = 0) { code_.push_back({code, 0, 0, k}); }
  // if (A == k) goto t else goto f; kNext falls through.
  static constexpr int kNext = -1;
  void jeq(uint32_t k, int t, int f) {
    fixups_.push_back({code_.size(), t, f});
    code_.push_back({BPF_JMP | BPF_JEQ | BPF_K, 0, 0, k});
  }
  void jump(int to) {
    fixups_.push_back({code_.size(), to, kNext});
    code_.push_back({BPF_JMP | BPF_JA, 0, 0, 0});
  }
  void bind(int l) { at_[static_cast<size_t>(l)] = code_.size(); }

  std::vector<BpfInstruction> finish() {
    for (const Fixup& f : fixups_) {
      BpfInstruction& in = code_[f.at];
      const auto rel = [&](int label) -> size_t {
        return label == kNext ? 0 : at_[static_cast<size_t>(label)] - f.at - 1;
      };
      if (in.code == (BPF_JMP | BPF_JA)) {
        in.k = static_cast<uint32_t>(rel(f.t));
      } else {
        in.jt = static_cast<uint8_t>(rel(f.t));
        in.jf = static_cast<uint8_t>(rel(f.f));
      }
    }
    return std::move(code_);
  }

 private:
  struct Fixup {
    size_t at;
    int t;
    int f;
  };
  std::vector<BpfInstruction> code_;
  std::vector<Fixup> fixups_;
  std::vector<size_t> at_ = std::vector<size_t>(kLabels, 0);
};

}  // namespace

bool rx_filter_matches(const RxFilter& filter, std::span<const uint8_t> frame) {
  // The same steps as the program's session part, short frames included.
  if (filter.everything) return true;
  if (frame.size() <= kOpcode) return false;
  const uint8_t op = frame[kOpcode];
  if (op == kOpDiscoveryReply || op == kOpLoginReply) return true;
  if (filter.session_id == 0 || frame.size() < kSessionId + 4) return false;
  if (filter.peers.size() <= RxFilter::kMaxPeers &&
      std::none_of(filter.peers.begin(), filter.peers.end(), [&](const MacAddress& m) {
        return std::equal(m.begin(), m.end(), frame.begin() + kSrcMac);
      }))
    return false;
  return load_be32(frame.data() + kSessionId) == filter.session_id;
}

std::string to_string(const RxFilter& filter) {
  if (filter.everything) return "all";
  if (filter.session_id == 0) return "control only";
  char id[16];
  std::snprintf(id, sizeof id, "0x%08x", filter.session_id);
  std::string out = std::string("session ") + id + " from ";
  for (size_t i = 0; i < filter.peers.size(); ++i)
    out += (i ? ", " : "") + to_string(filter.peers[i]);
  if (filter.peers.empty()) out += "nobody";
  return out;
}

std::vector<BpfInstruction> rx_filter_program(const RxFilter& filter, uint16_t vlan_id,
                                              BpfFlavor flavor) {
  using A = Assembler;
  constexpr uint32_t kAd = static_cast<uint32_t>(SKF_AD_OFF);
  constexpr uint32_t kAcceptBytes = 0x40000;  // more than any frame
  A a;
  if (flavor == BpfFlavor::kAfPacket) {
    a.op(BPF_LD | BPF_W | BPF_ABS, kAd + SKF_AD_PKTTYPE);
    a.jeq(PACKET_OUTGOING, A::kReject, A::kNext);
  }
  // The kernel moves a received 802.1Q tag into metadata before filters run
  // (read here as a byte load, which both the kernel and libpcap's
  // interpreter accept); an in-band tag is matched too. X = how far the
  // HyperSCSI header sits behind where it would be untagged.
  a.op(BPF_LD | BPF_B | BPF_ABS, kAd + SKF_AD_VLAN_TAG_PRESENT);
  if (vlan_id == 0) {
    a.jeq(0, A::kNext, A::kReject);
    a.op(BPF_LD | BPF_H | BPF_ABS, 12);
    a.jeq(detail::kEtherTypeHyperScsi, A::kNext, A::kReject);
    a.op(BPF_LDX | BPF_W | BPF_IMM, 0);
  } else {
    a.jeq(0, A::kInband, A::kNext);
    a.op(BPF_LD | BPF_B | BPF_ABS, kAd + SKF_AD_VLAN_TAG);
    a.op(BPF_ALU | BPF_AND | BPF_K, 0x0fff);
    a.jeq(vlan_id, A::kNext, A::kReject);
    a.op(BPF_LD | BPF_H | BPF_ABS, 12);
    a.jeq(detail::kEtherTypeHyperScsi, A::kNext, A::kReject);
    a.op(BPF_LDX | BPF_W | BPF_IMM, 0);
    a.jump(A::kSession);
    a.bind(A::kInband);
    a.op(BPF_LD | BPF_H | BPF_ABS, 12);
    a.jeq(detail::kEtherTypeVlan, A::kNext, A::kReject);
    a.op(BPF_LD | BPF_H | BPF_ABS, 14);
    a.op(BPF_ALU | BPF_AND | BPF_K, 0x0fff);
    a.jeq(vlan_id, A::kNext, A::kReject);
    a.op(BPF_LD | BPF_H | BPF_ABS, 16);
    a.jeq(detail::kEtherTypeHyperScsi, A::kNext, A::kReject);
    a.op(BPF_LDX | BPF_W | BPF_IMM, static_cast<uint32_t>(detail::kVlanTag));
  }
  a.bind(A::kSession);
  if (!filter.everything) {
    // Loads past the end of a short frame reject it (the kernel returns 0).
    a.op(BPF_LD | BPF_B | BPF_IND, kOpcode);
    a.jeq(kOpDiscoveryReply, A::kAccept, A::kNext);
    a.jeq(kOpLoginReply, A::kAccept, A::kNext);
    if (filter.session_id == 0) {
      a.jump(A::kReject);
    } else {
      // The source MAC is one of the peers' (4 instructions each: the jumps
      // stay far below the 255 a conditional jump reaches).
      const int check_id = a.label();
      const size_t n = filter.peers.size() <= RxFilter::kMaxPeers ? filter.peers.size() : 0;
      if (n == 0 && !filter.peers.empty()) a.jump(check_id);  // too many: session id alone
      for (size_t i = 0; i < n; ++i) {
        const MacAddress& m = filter.peers[i];
        const int next = i + 1 < n ? a.label() : int{A::kReject};
        a.op(BPF_LD | BPF_W | BPF_ABS, kSrcMac);  // MACs come before any tag
        a.jeq(load_be32(m.data()), A::kNext, next);
        a.op(BPF_LD | BPF_H | BPF_ABS, kSrcMac + 4);
        a.jeq(uint32_t{detail::load_be16(m.data() + 4)}, check_id, next);
        if (next != A::kReject) a.bind(next);
      }
      if (filter.peers.empty()) a.jump(A::kReject);
      a.bind(check_id);
      a.op(BPF_LD | BPF_W | BPF_IND, kSessionId);
      a.jeq(filter.session_id, A::kAccept, A::kReject);
    }
  }
  a.bind(A::kAccept);
  a.op(BPF_RET | BPF_K, kAcceptBytes);
  a.bind(A::kReject);
  a.op(BPF_RET | BPF_K, 0);
  return a.finish();
}

}  // namespace hyperscsi::io

// hostile-sender (test tool): floods a HyperSCSI target with bad frames at
// EtherType 0x889A, a bounded number of them for a bounded time. Kinds, sent
// round-robin with seeded randomness:
//   random       random bytes of random length
//   truncated    a well-formed frame cut inside its 40-byte header
//   oversized    a well-formed header whose payload_length or pdu_length
//                claims more than the frame holds / is consistent with
//   bad_version  a well-formed frame with a version byte other than 0x02
//   wrong_session a well-formed command fragment for a random session
//   spoof_session the real client's source MAC, a random session id
//   spoof_epoch  the real client's MAC and session id, a wrong epoch
//   spoof_seq    the real client's MAC, session id and epoch, a sequence
//                number far outside any receive window (half of them with a
//                bogus piggy-backed ack)
// The first four are malformed (the target's decode_frame refuses them); the
// rest are well-formed and must be refused by the session layer without
// harming the real session. Prints "kind=count" totals on stdout.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/frame.h"

namespace {

namespace proto = hyperscsi::proto;
using proto::MacAddress;

enum Kind {
  kRandom,
  kTruncated,
  kOversized,
  kBadVersion,
  kWrongSession,
  kSpoofSession,
  kSpoofEpoch,
  kSpoofSeq,
  kKinds
};
constexpr std::array<const char*, kKinds> kNames{"random",      "truncated",     "oversized",
                                                 "bad_version", "wrong_session", "spoof_session",
                                                 "spoof_epoch", "spoof_seq"};

bool parse_mac(const std::string& s, MacAddress& out) {
  unsigned v[6];
  if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
    return false;
  for (int i = 0; i < 6; ++i) {
    if (v[i] > 0xff) return false;
    out[static_cast<size_t>(i)] = static_cast<uint8_t>(v[i]);
  }
  return true;
}

// A command PDU asking for READ(10) of one block of LUN 0 (protocol.md 7.7).
std::vector<uint8_t> command_body(std::mt19937_64& rng) {
  std::vector<uint8_t> b(24 + 10, 0);
  proto::bytes::store_be32(&b[0], static_cast<uint32_t>(rng()));  // cmd_sn
  proto::bytes::store_be32(&b[4], 0);                             // reply_ack_sn
  proto::bytes::store_be16(&b[8], 0);                             // lun
  b[10] = 0x01;                                                   // data-in expected
  proto::bytes::store_be32(&b[12], 512);                          // expected_data_in
  b[20] = 10;                                                     // cdb_length
  b[24] = 0x28;                                                   // READ(10)
  b[31] = 1;                                                      // one block
  return b;
}

struct Setup {
  MacAddress target{}, client{}, self{};
  uint32_t session_id = 0;
  uint16_t epoch = 0;
  size_t mtu = 1500;
};

// Encodes a command fragment; returns its length in `buf`.
size_t command_frame(std::span<uint8_t> buf, const MacAddress& src, const MacAddress& dst,
                     uint32_t session, uint16_t epoch, uint32_t seq, std::mt19937_64& rng) {
  proto::FrameHeader h;
  h.dst = dst;
  h.src = src;
  h.common.opcode = proto::Opcode::kCommandRequest;
  h.common.tag = static_cast<uint16_t>(rng() % 512);
  h.ext.session_id = session;
  h.ext.epoch = epoch;
  h.ext.seq = seq;
  const std::vector<uint8_t> body = command_body(rng);
  h.ext.pdu_length = static_cast<uint32_t>(body.size());
  return proto::encode_frame(buf, h, body);
}

// Builds one frame of `kind` into `buf`; returns its length (0: skip).
size_t build(Kind kind, const Setup& s, std::mt19937_64& rng, std::span<uint8_t> buf) {
  const size_t max_frame = std::min(buf.size(), s.mtu + proto::kEthernetHeaderSize);
  const uint32_t random_session = static_cast<uint32_t>(rng()) | 0x80000000u;
  switch (kind) {
    case kRandom: {
      const size_t len = 14 + rng() % (max_frame - 14 + 1);
      for (size_t i = 0; i < len; ++i) buf[i] = static_cast<uint8_t>(rng());
      std::copy(s.target.begin(), s.target.end(), buf.begin());
      std::copy(s.self.begin(), s.self.end(), buf.begin() + 6);
      proto::bytes::store_be16(&buf[12], proto::kEtherType);
      buf[14 + 3] = proto::kProtocolVersion;  // half of them get past the version check
      if (rng() & 1) buf[14 + 3] = static_cast<uint8_t>(rng());
      return len;
    }
    case kTruncated: {
      const size_t n = command_frame(buf, s.self, s.target, random_session, 0, 0, rng);
      if (n == 0) return 0;
      return 15 + rng() % (proto::kHeaderSize - 1);  // inside the 40-byte header
    }
    case kOversized: {
      const size_t n = command_frame(buf, s.self, s.target, random_session, 0, 0, rng);
      if (n == 0) return 0;
      uint8_t* hdr = &buf[proto::kEthernetHeaderSize];
      if (rng() & 1)
        proto::bytes::store_be16(hdr + 32, 0xFFFF);  // payload_length past the frame's end
      else
        proto::bytes::store_be32(hdr + 24, 1);  // pdu_length smaller than the payload
      return n;
    }
    case kBadVersion: {
      const size_t n = command_frame(buf, s.self, s.target, random_session, 0, 0, rng);
      uint8_t v = static_cast<uint8_t>(rng());
      if (v == proto::kProtocolVersion) v ^= 0x80;
      buf[proto::kEthernetHeaderSize + 3] = v;
      return n;
    }
    case kWrongSession:
      return command_frame(buf, s.self, s.target, random_session, 0, static_cast<uint32_t>(rng()),
                           rng);
    case kSpoofSession:
      return command_frame(buf, s.client, s.target, random_session, 0, static_cast<uint32_t>(rng()),
                           rng);
    case kSpoofEpoch:
      if (s.session_id == 0) return 0;
      return command_frame(buf, s.client, s.target, s.session_id,
                           static_cast<uint16_t>(s.epoch + 1 + rng() % 1000),
                           static_cast<uint32_t>(rng()), rng);
    case kSpoofSeq:
      if (s.session_id == 0) return 0;
      {
        // Half the sequence space away from anything the session uses; every
        // other one also carries an ACK flag with a bogus ack and window.
        const size_t n = command_frame(buf, s.client, s.target, s.session_id, s.epoch,
                                       static_cast<uint32_t>(0x80000000u + rng() % 0x10000), rng);
        if (n != 0 && (rng() & 1)) {
          uint8_t* hdr = &buf[proto::kEthernetHeaderSize];
          hdr[6] = proto::kFlagAck;
          proto::bytes::store_be16(hdr + 14, static_cast<uint16_t>(rng()));
          proto::bytes::store_be32(hdr + 20, static_cast<uint32_t>(rng()));
        }
        return n;
      }
    case kKinds:
      break;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hostile-sender: floods a HyperSCSI target with bad frames (test tool)"};
  std::string port_spec, target_mac, client_mac;
  uint64_t count = 100000, seed = 1, pps = 0;
  double seconds = 10;
  Setup s;
  app.add_option("--port", port_spec, "port to send on, e.g. afpacket:eth0")->required();
  app.add_option("--target-mac", target_mac, "the target's MAC")->required();
  app.add_option("--client-mac", client_mac, "the real client's MAC (spoofed)")->required();
  app.add_option("--session-id", s.session_id, "the real session's id (0: skip spoof_epoch/seq)");
  app.add_option("--epoch", s.epoch, "the real session's epoch");
  app.add_option("--count", count, "frames to send at most");
  app.add_option("--seconds", seconds, "send for at most this long")->check(CLI::PositiveNumber);
  app.add_option("--pps", pps, "frames per second at most (0: as fast as the port takes them)");
  app.add_option("--seed", seed, "random seed");
  CLI11_PARSE(app, argc, argv);
  if (!parse_mac(target_mac, s.target) || !parse_mac(client_mac, s.client)) {
    std::fprintf(stderr, "hostile-sender: bad MAC address\n");
    return 2;
  }
  auto port = hyperscsi::ports::open_port(port_spec);
  if (!port) {
    std::fprintf(stderr, "hostile-sender: cannot open '%s': %s\n", port_spec.c_str(),
                 port.error().message.c_str());
    return 1;
  }
  s.self = (*port)->mac();
  s.mtu = (*port)->mtu();

  std::mt19937_64 rng(seed);
  std::array<uint64_t, kKinds> sent{};
  uint64_t total = 0, tx_full = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  constexpr size_t kBurst = 32;
  std::array<hyperscsi::io::Packet, kBurst> burst;
  std::array<Kind, kBurst> kinds{};
  while (total < count && std::chrono::steady_clock::now() < end) {
    size_t n = 0;
    while (n < kBurst && total + n < count) {
      hyperscsi::io::Packet p = (*port)->alloc();
      if (!p) break;
      const Kind k = static_cast<Kind>((total + n) % kKinds);
      const size_t len = build(k, s, rng, p.writable());
      if (len == 0 || !p.resize(len)) {
        ++total;  // a kind that does not apply (no session id given) still uses its turn
        continue;
      }
      kinds[n] = k;
      burst[n++] = std::move(p);
    }
    const size_t took = (*port)->tx_burst(std::span<hyperscsi::io::Packet>(burst.data(), n));
    for (size_t i = 0; i < took; ++i) ++sent[kinds[i]];
    tx_full += n - took;
    for (size_t i = 0; i < n; ++i) burst[i].reset();
    total += n;
    if (pps > 0) {  // pace: where we should be after `total` frames
      const auto due = start + std::chrono::microseconds(total * 1000000 / pps);
      std::this_thread::sleep_until(due);
    } else if (took < n) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  uint64_t malformed = 0, wellformed = 0;
  for (int k = 0; k < kKinds; ++k) (k <= kBadVersion ? malformed : wellformed) += sent[k];
  std::printf("sent malformed=%llu wellformed=%llu tx_full=%llu",
              static_cast<unsigned long long>(malformed),
              static_cast<unsigned long long>(wellformed),
              static_cast<unsigned long long>(tx_full));
  for (int k = 0; k < kKinds; ++k)
    std::printf(" %s=%llu", kNames[k], static_cast<unsigned long long>(sent[k]));
  std::printf("\n");
  return 0;
}

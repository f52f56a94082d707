// Encode/decode cost of HyperSCSI v2 frames: full-MTU data fragments (1500 and
// 9000, with and without crc32) and a login request. Time per iteration is
// time per frame. Results: docs/benchmarks.md, "Protocol encode/decode".
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"

namespace hp = hyperscsi::proto;

namespace {

// A middle fragment of a 1 MiB PDU that fills the MTU, with two SACK blocks
// piggy-backed (the common case under loss).
struct DataFrame {
  hp::FrameHeader header;
  std::vector<uint8_t> payload;
  std::vector<uint8_t> wire;
};

DataFrame make_data_frame(size_t mtu, bool checksum) {
  DataFrame f;
  hp::FrameHeader& h = f.header;
  h.dst = {0x02, 0, 0, 0, 0, 0x02};
  h.src = {0x02, 0, 0, 0, 0, 0x01};
  h.common = {77, false, 3, hp::kProtocolVersion, hp::Opcode::kCommandRequest};
  h.ext.flags = static_cast<uint8_t>(hp::kFlagAck | (checksum ? hp::kFlagChecksum : 0));
  h.ext.session_id = 0x5e551001;
  h.ext.epoch = 1;
  h.ext.window = 512;
  h.ext.seq = 1000;
  h.ext.ack = 900;
  h.sacks.push({905, 910});
  h.sacks.push({920, 930});
  f.payload.resize(hp::max_payload(mtu, h.sacks.count));
  for (size_t i = 0; i < f.payload.size(); ++i) f.payload[i] = static_cast<uint8_t>(i * 31);
  h.ext.pdu_length = 1u << 20;
  h.ext.pdu_offset = static_cast<uint32_t>(3 * f.payload.size());
  f.wire.resize(hp::encoded_size(h, f.payload.size()));
  if (hp::encode_frame(f.wire, h, f.payload) != f.wire.size()) std::abort();
  return f;
}

void BM_EncodeData(benchmark::State& state) {
  const DataFrame f = make_data_frame(static_cast<size_t>(state.range(0)), state.range(1) != 0);
  std::vector<uint8_t> out(f.wire.size());
  for (auto _ : state) {
    const size_t n = hp::encode_frame(out, f.header, f.payload);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.wire.size()));
  state.counters["frame_bytes"] = static_cast<double>(f.wire.size());
}

void BM_DecodeData(benchmark::State& state) {
  const DataFrame f = make_data_frame(static_cast<size_t>(state.range(0)), state.range(1) != 0);
  for (auto _ : state) {
    auto d = hp::decode_frame(f.wire);
    if (!d.ok()) std::abort();
    benchmark::DoNotOptimize(d->payload.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.wire.size()));
  state.counters["frame_bytes"] = static_cast<double>(f.wire.size());
}

hp::LoginRequest make_login() {
  hp::LoginRequest m;
  m.nonce = 0x1234;
  m.mtu = 9000;
  m.window = 512;
  m.max_transfer = 1u << 20;
  m.features = hp::kFeaturesV2;
  m.initiator_name = "iqn.2026-11.org.example:initiator-host-01";
  m.target_name = "iqn.2026-11.org.example:target-01";
  m.auth.assign(48, 0xA5);  // a nonce and a MAC, the size of a typical exchange
  return m;
}

hp::FrameHeader login_header() {
  hp::FrameHeader h;
  h.dst = {0x02, 0, 0, 0, 0, 0x02};
  h.src = {0x02, 0, 0, 0, 0, 0x01};
  h.common.opcode = hp::Opcode::kLoginRequest;
  return h;
}

// Body encoding plus framing, reusing the caller's buffers (as a session does).
void BM_EncodeLoginRequest(benchmark::State& state) {
  const hp::LoginRequest m = make_login();
  const hp::FrameHeader h = login_header();
  std::vector<uint8_t> body;
  std::vector<uint8_t> out(1514);
  for (auto _ : state) {
    body.clear();
    hp::encode(m, body);
    const size_t n = hp::encode_frame(out, h, body);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
}

void BM_DecodeLoginRequest(benchmark::State& state) {
  const hp::LoginRequest m = make_login();
  std::vector<uint8_t> body;
  hp::encode(m, body);
  const hp::FrameHeader h = login_header();
  std::vector<uint8_t> wire(hp::encoded_size(h, body.size()));
  if (hp::encode_frame(wire, h, body) != wire.size()) std::abort();
  for (auto _ : state) {
    auto f = hp::decode_frame(wire);
    if (!f.ok()) std::abort();
    auto lr = hp::decode_login_request(f->payload);
    if (!lr.ok()) std::abort();
    benchmark::DoNotOptimize(lr->nonce);
  }
}

}  // namespace

// Args: {L3 MTU, checksum}.
BENCHMARK(BM_EncodeData)->ArgNames({"mtu", "crc"})->ArgsProduct({{1500, 9000}, {0, 1}});
BENCHMARK(BM_DecodeData)->ArgNames({"mtu", "crc"})->ArgsProduct({{1500, 9000}, {0, 1}});
BENCHMARK(BM_EncodeLoginRequest);
BENCHMARK(BM_DecodeLoginRequest);

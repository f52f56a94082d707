// Reassembly throughput (1 MiB PDUs, MTU 1500 and 9000, in order and
// shuffled) and Connection end-to-end throughput over a zero-loss in-process
// channel. Results: docs/benchmarks.md, "## Reassembly".
#include <benchmark/benchmark.h>

#include <malloc.h>

#include <algorithm>
#include <deque>
#include <random>
#include <vector>

#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/reassembly.h"

namespace hyperscsi::proto {
namespace {

constexpr size_t kPdu = 1u << 20;

std::vector<uint8_t> random_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(1);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// 1 MiB PDU buffers would otherwise come from mmap and be returned to the
// kernel on free, so every PDU pays page faults and zeroing that a real owner
// (recycling its buffers) does not. Keep them on the heap.
void keep_large_buffers_on_heap() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

// args: mtu, shuffled
void BM_Reassembly(benchmark::State& state) {
  keep_large_buffers_on_heap();
  const auto mtu = static_cast<size_t>(state.range(0));
  const bool shuffled = state.range(1) != 0;
  const auto pdu = random_bytes(kPdu);
  const size_t chunk = max_payload(mtu);
  std::vector<Fragment> frags;
  for (size_t off = 0, n = 0; off < pdu.size(); off += chunk, ++n) {
    Fragment f;
    f.tag = 1;
    f.fragment = static_cast<uint16_t>(n);
    f.pdu_length = kPdu;
    f.pdu_offset = static_cast<uint32_t>(off);
    f.payload = std::span<const uint8_t>(pdu.data() + off, std::min(chunk, pdu.size() - off));
    f.last = off + f.payload.size() == pdu.size();
    frags.push_back(f);
  }
  if (shuffled) std::shuffle(frags.begin(), frags.end(), std::mt19937(2));
  Reassembler r(kPdu + 4096, 64u << 20);
  for (auto _ : state) {
    for (const auto& f : frags) r.add(f);
    auto got = r.pop();
    if (!got || got->bytes.size() != kPdu) {
      state.SkipWithError("reassembly failed");
      break;
    }
    benchmark::DoNotOptimize(got->bytes.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kPdu));
}
BENCHMARK(BM_Reassembly)
    ->ArgNames({"mtu", "shuffled"})
    ->Args({1500, 0})
    ->Args({1500, 1})
    ->Args({9000, 0})
    ->Args({9000, 1});

// Frames go straight from one Connection to the other (decode_frame on
// arrival), acks come back the same way; no loss.
class DirectSink : public FrameSink {
 public:
  std::span<uint8_t> acquire(size_t size) override {
    if (pool_.empty()) {
      buf_.resize(size);
    } else {
      buf_ = std::move(pool_.back());
      pool_.pop_back();
      buf_.resize(size);
    }
    return buf_;
  }
  void commit(size_t length) override {
    buf_.resize(length);
    frames.push_back(std::move(buf_));
  }
  void recycle(std::vector<uint8_t> b) { pool_.push_back(std::move(b)); }
  std::deque<std::vector<uint8_t>> frames;

 private:
  std::vector<uint8_t> buf_;
  std::vector<std::vector<uint8_t>> pool_;
};

void deliver(DirectSink& from, Connection& to, TimePoint now) {
  while (!from.frames.empty()) {
    auto frame = std::move(from.frames.front());
    from.frames.pop_front();
    auto v = decode_frame(frame);
    if (v.ok()) to.on_frame(v.value(), now);
    from.recycle(std::move(frame));
  }
}

// args: mtu, checksum. Each iteration moves 64 PDUs of 1 MiB from A to B.
void BM_ConnectionThroughput(benchmark::State& state) {
  keep_large_buffers_on_heap();
  TransportParams p;
  p.mtu = static_cast<size_t>(state.range(0));
  p.checksum = state.range(1) != 0;
  Endpoint ea, eb;
  ea.local = eb.peer = {2, 0, 0, 0, 0, 1};
  ea.peer = eb.local = {2, 0, 0, 0, 0, 2};
  ea.peer_window = eb.peer_window = p.receive_window;
  Connection a(p, ea), b(p, eb);
  DirectSink sa, sb;
  const auto pdu = random_bytes(kPdu);
  TimePoint now{};
  uint16_t tag = 0;
  uint64_t bytes = 0;
  for (auto _ : state) {
    int queued = 0, received = 0;
    while (received < 64) {
      while (queued < 64 && a.send_queue_bytes() < (8u << 20) &&
             a.send_pdu(Opcode::kCommandRequest, tag, pdu)) {
        tag = static_cast<uint16_t>((tag + 1) % (kMaxTag + 1));
        ++queued;
      }
      now += microseconds(1);
      a.poll(now, sa);
      deliver(sa, b, now);
      while (auto got = b.pop_pdu()) {
        bytes += got->bytes.size();
        ++received;
      }
      b.poll(now, sb);
      deliver(sb, a, now);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["retransmits"] = static_cast<double>(a.stats().frames_retransmitted);
  state.counters["cwnd"] = a.stats().cwnd;
}
BENCHMARK(BM_ConnectionThroughput)
    ->ArgNames({"mtu", "checksum"})
    ->Args({1500, 1})
    ->Args({1500, 0})
    ->Args({9000, 1})
    ->Args({9000, 0})
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hyperscsi::proto

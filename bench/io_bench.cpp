// io_bench: frames/s and bytes/s per packet I/O backend (afpacket, pcap, mem)
// over a veth pair between two namespaces it creates, for batch sizes 1, 8,
// 32 and frame sizes 64, 1500, 9000 (the veth MTU is 9000). One thread
// sends bursts on end A for a fixed time, another receives on end B; each
// cell runs `--runs` times and the median receive rate is reported, with each
// thread's CPU time per GiB moved: the cost of the frames alone, a floor under
// any protocol that carries its data in them (on a veth the receiving socket's
// copy runs in the sender's system call, so read the sum of the two).
//
// --shape-mbit R puts the lab's tbf (rate R mbit, burst 256kb, latency 20ms)
// on both veth ends and paces the sender just under R, sleeping between
// bursts: the frames' cost on a full 1 Gbit/s link, counted as bench/lab.sh
// counts it (each thread's user + system time, tick-sampled on this kernel).
//
// Usage: io_bench [--seconds S] [--runs N] [--backends afpacket,pcap,mem]
//                 [--frames 64,1500,9000] [--batches 1,8,32]
//                 [--shape-mbit R | --pace-mbit R] (--help)
// --pace-mbit paces the same way with no shaper: what the frames cost when the
// link's own rate, not a qdisc, holds them back.
// Needs root for afpacket and pcap (namespaces, raw sockets); mem runs anywhere.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/test_support/netns.h"

namespace {

using namespace std::chrono_literals;
using hyperscsi::io::MacAddress;
using hyperscsi::io::Packet;
using hyperscsi::io::Port;
using Clock = std::chrono::steady_clock;

struct Cell {
  double tx_fps = 0;
  double rx_fps = 0;
  double tx_cpu_per_gib = 0;  // sender thread's CPU seconds per GiB sent
  double rx_cpu_per_gib = 0;  // receiver thread's CPU seconds per GiB sent
};

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// A HyperSCSI-typed frame (ack opcode, padding) to copy into each buffer.
std::vector<uint8_t> make_template(const MacAddress& dst, const MacAddress& src, size_t size) {
  std::vector<uint8_t> f(size, 0);
  std::memcpy(f.data(), dst.data(), 6);
  std::memcpy(f.data() + 6, src.data(), 6);
  f[12] = 0x88;
  f[13] = 0x9A;
  f[15] = 0x04;
  f[17] = 0x02;
  f[18] = 0x21;
  return f;
}

// rate_bps 0: send as fast as the port takes frames.
Cell run_cell(Port& tx, Port& rx, size_t frame, size_t batch, double seconds, double rate_bps) {
  const auto tmpl = make_template(rx.mac(), tx.mac(), frame);
  // Drain leftovers of a previous cell.
  std::vector<Packet> in(64);
  while (rx.rx_burst(in) > 0) {
  }
  std::atomic<bool> sending{true};
  std::atomic<uint64_t> received{0};
  double rx_cpu = 0;
  std::thread receiver([&] {
    const double cpu0 = thread_cpu_seconds();
    std::vector<Packet> buf(64);
    uint64_t n = 0;
    auto quiet_since = Clock::now();
    while (true) {
      const size_t got = rx.rx_burst(buf);
      n += got;
      for (size_t i = 0; i < got; ++i) buf[i].reset();
      if (got > 0) {
        quiet_since = Clock::now();
      } else {
        if (!sending.load() && Clock::now() - quiet_since > 50ms) break;
        rx.wait_rx(1ms);
      }
    }
    rx_cpu = thread_cpu_seconds() - cpu0;
    received = n;
  });
  const double tx_cpu0 = thread_cpu_seconds();
  uint64_t sent = 0;
  std::vector<Packet> pending;
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < end) {
    if (rate_bps > 0) {
      // Due time of the next byte at the rate: sleep until then.
      const auto due =
          start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                      static_cast<double>(sent * frame) * 8 / rate_bps));
      if (due > Clock::now()) std::this_thread::sleep_until(due);
    }
    while (pending.size() < batch) {
      Packet p = tx.alloc();
      if (!p) break;
      p.resize(frame);
      // Headers only: a sender that gathers its payload never writes it in
      // user space either (the kernel's copy into the frame is counted).
      std::memcpy(p.data(), tmpl.data(), std::min<size_t>(frame, 64));
      pending.push_back(std::move(p));
    }
    const size_t n = tx.tx_burst(pending);
    sent += n;
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(n));
    if (n == 0) std::this_thread::yield();
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double tx_cpu = thread_cpu_seconds() - tx_cpu0;
  sending = false;
  receiver.join();
  // Per GiB sent, not received: frames the receiver dropped make the floor
  // lower, never higher.
  const double gib = static_cast<double>(sent) * static_cast<double>(frame) / (1u << 30);
  return {static_cast<double>(sent) / elapsed, static_cast<double>(received.load()) / elapsed,
          gib > 0 ? tx_cpu / gib : 0.0, gib > 0 ? rx_cpu / gib : 0.0};
}

// The lab's shaper (bench/lab.sh) on both ends of the pair.
bool add_tbf(const hyperscsi::test_support::NetnsPair& net, unsigned mbit) {
  for (const auto& [ns, iface] :
       {std::pair{net.ns_a(), net.iface_a()}, {net.ns_b(), net.iface_b()}}) {
    const std::string cmd = "ip netns exec " + ns + " tc qdisc add dev " + iface +
                            " root tbf rate " + std::to_string(mbit) +
                            "mbit burst 256kb latency 20ms";
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "failed: %s\n", cmd.c_str());
      return false;
    }
  }
  return true;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1.0;
  int runs = 3;
  std::vector<std::string> backends{"afpacket", "pcap", "mem"};
  std::vector<size_t> frames{64, 1500, 9000};
  std::vector<size_t> batches{1, 8, 32};
  CLI::App app{"io_bench: frames/s and bytes/s per packet I/O backend over a veth pair"};
  app.add_option("--seconds", seconds, "sending time per run")->check(CLI::Range(0.05, 600.0));
  app.add_option("--runs", runs, "runs per cell (the median is reported)")
      ->check(CLI::Range(1, 100));
  app.add_option("--backends", backends, "comma-separated: afpacket, pcap, mem")
      ->delimiter(',')
      ->check(CLI::IsMember({"afpacket", "pcap", "mem"}));
  app.add_option("--frames", frames, "comma-separated frame sizes in bytes")
      ->delimiter(',')
      ->check(CLI::Range(64, 9014));
  app.add_option("--batches", batches, "comma-separated frames per send call")
      ->delimiter(',')
      ->check(CLI::Range(1, 64));
  unsigned shape_mbit = 0;
  app.add_option("--shape-mbit", shape_mbit,
                 "tbf on both veth ends at this rate, the sender paced at 99% of it")
      ->check(CLI::Range(1, 100000));
  unsigned pace_mbit = 0;
  app.add_option("--pace-mbit", pace_mbit,
                 "pace the sender at 99% of this rate without a shaper (a NIC's own line rate)")
      ->check(CLI::Range(1, 100000))
      ->excludes("--shape-mbit");
  CLI11_PARSE(app, argc, argv);
  std::unique_ptr<hyperscsi::test_support::NetnsPair> net;
  std::printf(
      "| backend | frame bytes | batch | tx frames/s | rx frames/s | rx MB/s | rx/tx "
      "| CPU s/GiB sender / receiver | sum |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---|---:|\n");
  for (const std::string& kind : backends) {
    std::unique_ptr<Port> a, b;
    if (kind == "mem") {
      hyperscsi::io::MemLinkConfig cfg;
      cfg.mtu_a = cfg.mtu_b = 9000;
      auto link = hyperscsi::io::make_mem_link(cfg);
      if (!link.ok()) return 1;
      a = std::move(link->a);
      b = std::move(link->b);
    } else {
      if (!hyperscsi::test_support::running_as_root()) {
        std::fprintf(stderr, "skipping %s: needs root\n", kind.c_str());
        continue;
      }
      if (!net) {
        net = std::make_unique<hyperscsi::test_support::NetnsPair>(
            hyperscsi::test_support::NetnsConfig{.mtu = 9000});
        if (!net->ok()) {
          std::fprintf(stderr, "netns set-up failed: %s\n", net->error().c_str());
          return 1;
        }
        if (shape_mbit > 0 && !add_tbf(*net, shape_mbit)) return 1;
      }
      auto open = [&](const std::string& spec) {
        return [spec]() -> std::unique_ptr<Port> {
          auto r = hyperscsi::ports::open_port(spec);
          if (!r.ok()) {
            std::fprintf(stderr, "%s: %s\n", spec.c_str(), r.error().message.c_str());
            return nullptr;
          }
          return std::move(r).value();
        };
      };
      auto pa = net->run_in_a(open(kind + ":" + net->iface_a()));
      auto pb = net->run_in_b(open(kind + ":" + net->iface_b()));
      if (!pa || !pb || !*pa || !*pb) return 1;
      a = std::move(*pa);
      b = std::move(*pb);
    }
    for (size_t frame : frames) {
      for (size_t batch : batches) {
        std::vector<double> tx, rx, tx_cpu, rx_cpu, sum_cpu;
        for (int r = 0; r < runs; ++r) {
          const Cell c = run_cell(*a, *b, frame, batch, seconds,
                                  kind == "mem" ? 0.0 : (shape_mbit + pace_mbit) * 1e6 * 0.99);
          tx.push_back(c.tx_fps);
          rx.push_back(c.rx_fps);
          tx_cpu.push_back(c.tx_cpu_per_gib);
          rx_cpu.push_back(c.rx_cpu_per_gib);
          sum_cpu.push_back(c.tx_cpu_per_gib + c.rx_cpu_per_gib);
        }
        const double txm = median(tx), rxm = median(rx);
        std::printf("| %s | %zu | %zu | %.0f | %.0f | %.1f | %.3f | %.2f / %.2f | %.2f |\n",
                    kind.c_str(), frame, batch, txm, rxm, rxm * static_cast<double>(frame) / 1e6,
                    txm > 0 ? rxm / txm : 0.0, median(tx_cpu), median(rx_cpu), median(sum_cpu));
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

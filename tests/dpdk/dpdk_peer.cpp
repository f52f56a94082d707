// dpdk_peer: one DPDK port in its own process (the EAL initialises once per
// process), driven by line commands on stdin. Replies are lines starting with
// '@' on stdout (EAL log lines may be interleaved and are ignored).
//
// Usage: dpdk_peer EAL_SPEC [VLAN_ID [POOL_SIZE]]
// Commands:
//   link MS                        -> @LINK 0|1         (waits up to MS for link up)
//   send N SIZE BURST DST SEQ0 MODE ETYPE -> @SENT n    (MODE mbuf|heap; DST 12 hex digits)
//   recv N MS                      -> @RECV n bad seqsum minsize maxsize
//   echo N MS                      -> @ECHO n           (sends each frame back, MACs swapped)
//   counters                       -> @COUNTERS rxf rxb txf txb rxdrop txdrop rxerr txerr filtered
//   open2 SPEC                     -> @OPEN2 ok | @OPEN2 <kind> <message>
//   trysend N SIZE MODE            -> @TRYSEND taken intact  (one tx_burst; `intact` counts the
//                                     packets left with the caller that are unchanged)
//   closehold N                    -> @CLOSEHOLD n  (closes the port while holding N packets,
//                                     then writes to and releases them; n = packets held)
//   quit
// An EAL_SPEC starting with "dpdk:" is opened through ports::open_port, which
// loads the DPDK module (hyperscsi-dpdk-port.so); open2 then goes the same way,
// since the module and this program each have their own EAL bookkeeping.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/dpdk/dpdk_port.h"
#include "hyperscsi/ports/open_port.h"
#include "test_frames.h"

namespace {

using namespace hyperscsi;
using Clock = std::chrono::steady_clock;

// A heap pool: Packets that are not mbufs, to exercise the copying tx path.
class HeapPool final : public io::PacketPool {
 public:
  explicit HeapPool(size_t size) : size_(size) {}
  io::Packet alloc() override {
    auto* buf = new uint8_t[size_ + 64];
    return io::Packet(this, nullptr, buf, static_cast<uint32_t>(size_ + 64), 64);
  }
  void release(void*, uint8_t* buffer) noexcept override { delete[] buffer; }

 private:
  size_t size_;
};

void reply(const std::string& s) {
  std::cout << '@' << s << std::endl;
}

bool parse_mac(const std::string& hex, uint8_t out[6]) {
  if (hex.size() != 12) return false;
  for (int i = 0; i < 6; ++i)
    out[i] = static_cast<uint8_t>(std::stoul(hex.substr(i * 2, 2), nullptr, 16));
  return true;
}

std::string mac_hex(const io::MacAddress& m) {
  char buf[13];
  std::snprintf(buf, sizeof buf, "%02x%02x%02x%02x%02x%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return buf;
}

size_t send_frames(io::Port& port, HeapPool& heap, size_t n, size_t size, size_t burst,
                   const uint8_t dst[6], uint32_t seq0, bool use_heap, uint16_t ethertype) {
  const io::MacAddress src = port.mac();
  size_t sent = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::vector<io::Packet> batch;
  while (sent < n && Clock::now() < deadline) {
    while (batch.size() < burst && sent + batch.size() < n) {
      io::Packet p = use_heap ? heap.alloc() : port.alloc();
      if (!p) break;
      if (!p.resize(size)) return sent;
      dpdk::testing::build_frame(p.data(), size, dst, src.data(), ethertype,
                                 static_cast<uint32_t>(seq0 + sent + batch.size()));
      batch.push_back(std::move(p));
    }
    const size_t took = port.tx_burst(batch);
    sent += took;
    batch.erase(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(took));
    if (took == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return sent;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: dpdk_peer EAL_SPEC [VLAN_ID [POOL_SIZE]]\n";
    return 2;
  }
  io::PortOptions opts;
  if (argc > 2) opts.vlan_id = static_cast<uint16_t>(std::atoi(argv[2]));
  if (argc > 3) opts.pool_size = static_cast<size_t>(std::atol(argv[3]));
  // "dpdk:..." goes through the factory and the module, anything else straight to open_dpdk_port.
  const std::string spec = argv[1];
  const bool via_module = spec.starts_with("dpdk:");
  auto opened = via_module ? ports::open_port(spec, opts) : dpdk::open_dpdk_port(spec, opts);
  if (!opened) {
    reply("ERROR " + std::to_string(static_cast<int>(opened.error().kind)) + " " +
          opened.error().message);
    return 3;
  }
  std::unique_ptr<io::Port> port = std::move(opened.value());
  auto* dport = dynamic_cast<dpdk::DpdkPort*>(port.get());
  if (dport == nullptr) {
    reply("ERROR 5 the port opened from '" + spec + "' is not a DpdkPort");
    return 3;
  }
  reply("READY " + mac_hex(port->mac()) + " " + std::to_string(port->mtu()) + " " +
        std::to_string(port->fd()));
  HeapPool heap(port->mtu() + 18);

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "quit") break;
    if (cmd == "link") {
      int ms = 0;
      in >> ms;
      const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
      while (!dport->link_up() && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      reply(std::string("LINK ") + (dport->link_up() ? "1" : "0"));
    } else if (cmd == "send") {
      size_t n = 0, size = 0, burst = 0;
      uint32_t seq0 = 0;
      std::string dst_hex, mode;
      unsigned etype = 0x889A;
      in >> n >> size >> burst >> dst_hex >> seq0 >> mode >> std::hex >> etype;
      uint8_t dst[6];
      if (!parse_mac(dst_hex, dst) || burst == 0) {
        reply("SENT -1");
        continue;
      }
      reply("SENT " + std::to_string(send_frames(*port, heap, n, size, burst, dst, seq0,
                                                 mode == "heap", static_cast<uint16_t>(etype))));
    } else if (cmd == "recv" || cmd == "echo") {
      size_t n = 0;
      int ms = 0;
      in >> n >> ms;
      size_t got = 0, bad = 0, minsize = SIZE_MAX, maxsize = 0, echoed = 0;
      uint64_t seqsum = 0;
      const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
      std::vector<io::Packet> rx(32);
      while (got < n && Clock::now() < deadline) {
        port->wait_rx(std::chrono::milliseconds(1));
        const size_t k = port->rx_burst(std::span(rx).first(std::min<size_t>(32, n - got)));
        for (size_t i = 0; i < k; ++i) {
          const int64_t seq = dpdk::testing::check_frame(rx[i].bytes());
          if (seq < 0)
            ++bad;
          else
            seqsum += static_cast<uint64_t>(seq);
          minsize = std::min(minsize, rx[i].size());
          maxsize = std::max(maxsize, rx[i].size());
          if (cmd == "echo") {  // swap MACs and send the same buffer back
            uint8_t tmp[6];
            std::memcpy(tmp, rx[i].data(), 6);
            std::memcpy(rx[i].data(), rx[i].data() + 6, 6);
            std::memcpy(rx[i].data() + 6, tmp, 6);
          }
        }
        got += k;
        if (cmd == "echo") {
          size_t done = 0;
          for (int tries = 0; done < k && tries < 1000; ++tries) {
            done += port->tx_burst(std::span(rx).subspan(done, k - done));
          }
          echoed += done;
        }
        for (size_t i = 0; i < k; ++i) rx[i].reset();
        if (k == 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      if (cmd == "echo") {
        reply("ECHO " + std::to_string(echoed));
      } else {
        reply("RECV " + std::to_string(got) + " " + std::to_string(bad) + " " +
              std::to_string(seqsum) + " " + std::to_string(got ? minsize : 0) + " " +
              std::to_string(maxsize));
      }
    } else if (cmd == "counters") {
      const io::PortCounters c = port->counters();
      reply("COUNTERS " + std::to_string(c.rx_frames) + " " + std::to_string(c.rx_bytes) + " " +
            std::to_string(c.tx_frames) + " " + std::to_string(c.tx_bytes) + " " +
            std::to_string(c.rx_dropped) + " " + std::to_string(c.tx_dropped) + " " +
            std::to_string(c.rx_errors) + " " + std::to_string(c.tx_errors) + " " +
            std::to_string(dport->rx_filtered()));
    } else if (cmd == "trysend") {
      size_t n = 0, size = 0;
      std::string mode;
      in >> n >> size >> mode;
      const uint8_t dst[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
      std::vector<io::Packet> batch;
      for (size_t i = 0; i < n; ++i) {
        io::Packet p = mode == "heap" ? heap.alloc() : port->alloc();
        if (!p || !p.resize(size)) break;
        dpdk::testing::build_frame(p.data(), size, dst, port->mac().data(), 0x889A,
                                   static_cast<uint32_t>(i));
        batch.push_back(std::move(p));
      }
      const size_t taken = port->tx_burst(batch);
      size_t intact = 0;
      for (size_t i = 0; i < batch.size(); ++i) {
        if (i < taken) {
          if (batch[i]) intact = SIZE_MAX;  // taken handles must be empty
          continue;
        }
        if (batch[i] && batch[i].size() == size &&
            dpdk::testing::check_frame(batch[i].bytes()) == int64_t(i) &&
            batch[i].data()[12] == 0x88)
          ++intact;
      }
      reply("TRYSEND " + std::to_string(taken) + " " +
            (intact == SIZE_MAX ? "-1" : std::to_string(intact)));
    } else if (cmd == "closehold") {
      size_t n = 0;
      in >> n;
      std::vector<io::Packet> held;
      for (size_t i = 0; i < n; ++i) {
        io::Packet p = port->alloc();
        if (!p) break;
        held.push_back(std::move(p));
      }
      port.reset();  // the mempool must stay alive for `held`
      dport = nullptr;
      for (auto& p : held) {
        p.resize(64);
        std::memset(p.data(), 0xAB, 64);
      }
      const size_t count = held.size();
      held.clear();
      reply("CLOSEHOLD " + std::to_string(count));
      break;  // no port any more
    } else if (cmd == "open2") {
      std::string spec2;
      in >> spec2;
      auto second =
          via_module ? ports::open_port("dpdk:" + spec2, opts) : dpdk::open_dpdk_port(spec2, opts);
      if (second)
        reply("OPEN2 ok");
      else
        reply("OPEN2 " + std::to_string(static_cast<int>(second.error().kind)) + " " +
              second.error().message);
    } else {
      reply("UNKNOWN " + cmd);
    }
  }
  return 0;
}

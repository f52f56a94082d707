// dpdk_bench: frames/s and bytes/s of the DPDK backend (net_af_packet vdev)
// over a veth pair (MTU 9000) between two namespaces it creates and removes,
// for batch sizes 1, 8, 32 and frame sizes 64, 1500, 9000.
//
// The EAL initialises once per process, so the sender and the receiver are
// this program again in two child processes (--role=tx / --role=rx, one per
// namespace, pinned to different cpus), driven over their stdin/stdout. Same
// method as io_bench: the sender copies a HyperSCSI-typed template into
// each buffer and sends bursts of `batch` for `--seconds`, retrying what
// tx_burst leaves; the receiver calls rx_burst(64). Each cell is the median
// of `--runs` runs. Also reported: frames the kernel dropped for the
// receiver (rx_dropped) and the share of a cpu the polling receiver got.
//
// Usage (root): dpdk_bench [--seconds S] [--runs N]
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/dpdk/dpdk_port.h"

namespace {

using namespace hyperscsi;
using Clock = std::chrono::steady_clock;

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// ---- child roles -------------------------------------------------------------

int run_role(const std::string& role, const std::string& spec) {
  io::PortOptions opts;
  opts.pool_size = 8192;
  auto opened = dpdk::open_dpdk_port(spec, opts);
  if (!opened) {
    std::cout << "@ERROR " << opened.error().message << std::endl;
    return 3;
  }
  auto port = std::move(opened.value());
  std::cout << "@READY" << std::endl;
  std::string line;
  std::vector<io::Packet> buf(64);
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "quit") break;
    if (cmd == "tx" && role == "tx") {
      size_t frame = 0, batch = 0;
      double seconds = 0;
      in >> frame >> batch >> seconds;
      std::vector<uint8_t> tmpl(frame, 0);
      std::memset(tmpl.data(), 0xff, 6);
      const io::MacAddress src = port->mac();
      std::memcpy(tmpl.data() + 6, src.data(), 6);
      tmpl[12] = 0x88;
      tmpl[13] = 0x9A;
      tmpl[15] = 0x04;
      tmpl[17] = 0x02;
      tmpl[18] = 0x21;
      std::vector<io::Packet> out;
      uint64_t sent = 0;
      const auto start = Clock::now();
      const auto end = start + std::chrono::duration<double>(seconds);
      while (Clock::now() < end) {
        while (out.size() < batch) {
          io::Packet p = port->alloc();
          if (!p) break;
          p.resize(frame);
          std::memcpy(p.data(), tmpl.data(), frame);
          out.push_back(std::move(p));
        }
        const size_t took = port->tx_burst(out);
        sent += took;
        out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(took));
      }
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      out.clear();
      std::cout << "@SENT " << sent << " " << elapsed << std::endl;
    } else if (cmd == "rx" && role == "rx") {
      // Count until "stop" arrives on stdin (checked every 1024 polls).
      uint64_t got = 0, bytes = 0;
      const uint64_t dropped0 = port->counters().rx_dropped;
      const double cpu0 = thread_cpu_seconds();
      const auto wall0 = Clock::now();
      for (uint64_t i = 0;; ++i) {
        const size_t n = port->rx_burst(buf);
        for (size_t k = 0; k < n; ++k) {
          bytes += buf[k].size();
          buf[k].reset();
        }
        got += n;
        if ((i & 1023) == 0) {
          pollfd p{0, POLLIN, 0};
          if (poll(&p, 1, 0) > 0) break;
        }
      }
      std::getline(std::cin, line);  // the "stop"
      // The share of a cpu the busy-polling receiver actually got.
      const double cpu_share = (thread_cpu_seconds() - cpu0) /
                               std::chrono::duration<double>(Clock::now() - wall0).count();
      const io::PortCounters c = port->counters();
      std::cout << "@GOT " << got << " " << bytes << " " << c.rx_dropped - dropped0 << " "
                << cpu_share << std::endl;
    }
  }
  return 0;
}

// ---- orchestrator --------------------------------------------------------------

bool sh(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

struct Child {
  pid_t pid = -1;
  int in = -1, out = -1;
  std::string buf;

  Child(const std::vector<std::string>& args) {
    signal(SIGPIPE, SIG_IGN);  // a child that died must not kill the orchestrator
    int a[2], b[2];
    if (pipe2(a, O_CLOEXEC) != 0 || pipe2(b, O_CLOEXEC) != 0) return;
    std::vector<std::string> s = args;
    std::vector<char*> argv;
    for (auto& x : s) argv.push_back(x.data());
    argv.push_back(nullptr);
    pid = fork();
    if (pid == 0) {
      dup2(a[0], 0);
      dup2(b[1], 1);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    close(a[0]);
    close(b[1]);
    in = a[1];
    out = b[0];
  }
  ~Child() {
    send("quit");
    close(in);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      usleep(50000);
    }
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    close(out);
  }
  void send(const std::string& l) {
    const std::string x = l + "\n";
    if (write(in, x.data(), x.size()) < 0) return;
  }
  std::string reply(int timeout_ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      const size_t nl = buf.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        if (!line.empty() && line[0] == '@') return line.substr(1);
        continue;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return "";
      pollfd p{out, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) return "";
      char tmp[4096];
      const ssize_t n = read(out, tmp, sizeof tmp);
      if (n <= 0) return "";
      buf.append(tmp, static_cast<size_t>(n));
    }
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int orchestrate(const std::string& self, double seconds, int runs) {
  const std::string base = "hsb" + std::to_string(getpid());
  const std::string a = base + "a", b = base + "b";
  struct Cleanup {
    std::string a, b;
    ~Cleanup() {
      sh("ip netns del " + a);
      sh("ip netns del " + b);
      std::error_code ec;
      std::filesystem::remove_all("/var/run/dpdk/" + a, ec);
      std::filesystem::remove_all("/var/run/dpdk/" + b, ec);
    }
  } cleanup{a, b};
  if (!(sh("ip netns add " + a) && sh("ip netns add " + b) &&
        sh("ip link add " + a + " mtu 9000 netns " + a + " type veth peer name " + b +
           " mtu 9000 netns " + b) &&
        sh("ip -n " + a + " link set " + a + " up") &&
        sh("ip -n " + b + " link set " + b + " up"))) {
    std::cerr << "dpdk_bench: could not create namespaces/veth (needs root)\n";
    return 1;
  }
  auto spec = [](const std::string& iface, const std::string& cpu) {
    return "--no-huge,--no-shconf,-m512,--no-pci,--no-telemetry,--log-level=*:error,--lcores=0@" +
           cpu + ",--file-prefix=" + iface + ",--vdev=net_af_packet0,iface=" + iface +
           ",framesz=12288,blocksz=12288,framecnt=1024";
  };
  Child rx({"ip", "netns", "exec", b, self, "--role=rx", "--spec=" + spec(b, "1")});
  Child tx({"ip", "netns", "exec", a, self, "--role=tx", "--spec=" + spec(a, "0")});
  const std::string rr = rx.reply(30000), tr = tx.reply(30000);
  if (rr != "READY" || tr != "READY") {
    std::cerr << "dpdk_bench: peers failed: rx '" << rr << "' tx '" << tr << "'\n";
    return 1;
  }
  std::printf(
      "| backend | frame bytes | batch | tx frames/s | rx frames/s | rx MB/s | rx/tx | rx "
      "dropped/s | rx cpu |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t frame : {64, 1500, 9000}) {
    for (size_t batch : {1, 8, 32}) {
      std::vector<double> txr, rxr, ratio, cpu_share, drops;
      for (int r = 0; r < runs; ++r) {
        rx.send("rx");
        usleep(100000);
        tx.send("tx " + std::to_string(frame) + " " + std::to_string(batch) + " " +
                std::to_string(seconds));
        std::istringstream ts(tx.reply(static_cast<int>(seconds * 1000) + 30000));
        std::string w;
        uint64_t sent = 0;
        double elapsed = 1;
        ts >> w >> sent >> elapsed;
        usleep(200000);  // let the receiver drain
        rx.send("stop");
        std::istringstream rs(rx.reply(30000));
        uint64_t got = 0, bytes = 0, dropped = 0;
        double cpu = 0;
        rs >> w >> got >> bytes >> dropped >> cpu;
        cpu_share.push_back(cpu);
        drops.push_back(static_cast<double>(dropped) / elapsed);
        txr.push_back(static_cast<double>(sent) / elapsed);
        rxr.push_back(static_cast<double>(got) / elapsed);
        ratio.push_back(sent ? static_cast<double>(got) / static_cast<double>(sent) : 0);
      }
      const double rxm = median(rxr);
      std::printf(
          "| dpdk (af_packet vdev) | %zu | %zu | %.0f | %.0f | %.1f | %.3f | %.0f | %.2f |\n",
          frame, batch, median(txr), rxm, rxm * static_cast<double>(frame) / 1e6, median(ratio),
          median(drops), median(cpu_share));
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string role, spec;
  double seconds = 1;
  int runs = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.starts_with("--role="))
      role = a.substr(7);
    else if (a.starts_with("--spec="))
      spec = a.substr(7);
    else if (a == "--seconds" && i + 1 < argc)
      seconds = std::atof(argv[++i]);
    else if (a == "--runs" && i + 1 < argc)
      runs = std::atoi(argv[++i]);
    else {
      std::cerr << "usage: dpdk_bench [--seconds S] [--runs N]\n";
      return 2;
    }
  }
  if (!role.empty()) return run_role(role, spec);
  if (geteuid() != 0) {
    std::cerr << "dpdk_bench: needs root (namespaces, DPDK)\n";
    return 1;
  }
  return orchestrate(std::filesystem::canonical("/proc/self/exe").string(), seconds, runs);
}

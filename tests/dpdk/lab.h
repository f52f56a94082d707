// Test lab helpers for the DPDK tests: two network namespaces joined by a
// veth pair, a DPDK peer process, an AF_PACKET raw socket inside a namespace,
// and a hugepage reservation. Every helper removes what it created in its
// destructor, also when the test fails.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace hyperscsi::dpdk::testing {

inline bool run(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

// hs<pid><suffix>: unique per test process.
inline std::string unique_name(const std::string& suffix) {
  return "hs" + std::to_string(getpid()) + suffix;
}

// Namespaces <base>a and <base>b, veth <base>a in the first, <base>b in the second.
class VethLab {
 public:
  VethLab(const std::string& tag, unsigned mtu)
      : ns_a_(unique_name(tag + "a")), ns_b_(unique_name(tag + "b")) {
    ok_ =
        run("ip netns add " + ns_a_) && run("ip netns add " + ns_b_) &&
        run("ip link add " + ns_a_ + " mtu " + std::to_string(mtu) + " netns " + ns_a_ +
            " type veth peer name " + ns_b_ + " mtu " + std::to_string(mtu) + " netns " + ns_b_) &&
        run("ip -n " + ns_a_ + " link set " + ns_a_ + " up") &&
        run("ip -n " + ns_b_ + " link set " + ns_b_ + " up") &&
        run("ip -n " + ns_a_ + " link set lo up") && run("ip -n " + ns_b_ + " link set lo up");
  }
  ~VethLab() {
    run("ip netns del " + ns_a_);  // deleting a namespace deletes its veth end and so the pair
    run("ip netns del " + ns_b_);
  }
  VethLab(const VethLab&) = delete;
  VethLab& operator=(const VethLab&) = delete;
  bool ok() const { return ok_; }
  const std::string& ns_a() const { return ns_a_; }  // also the veth name inside it
  const std::string& ns_b() const { return ns_b_; }

 private:
  std::string ns_a_, ns_b_;
  bool ok_ = false;
};

// Runs a function with the calling thread inside a named network namespace.
template <typename F>
auto in_netns(const std::string& ns, F&& f) {
  const int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  const int target = open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (target >= 0) setns(target, CLONE_NEWNET);
  auto result = f();
  if (self >= 0) setns(self, CLONE_NEWNET);
  if (self >= 0) close(self);
  if (target >= 0) close(target);
  return result;
}

// A DPDK peer (tests/dpdk/dpdk_peer.cpp) in its own process, optionally in a
// namespace, talked to over its stdin/stdout.
class Peer {
 public:
  Peer(const std::string& netns, const std::vector<std::string>& args) {
    signal(SIGPIPE, SIG_IGN);  // a peer that exited on an error must not kill the test on "quit"
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) return;
    std::vector<std::string> argv_s;
    if (!netns.empty()) argv_s = {"ip", "netns", "exec", netns};
    argv_s.push_back(DPDK_PEER_PATH);
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (const auto& a : args) {  // the EAL's runtime directory, removed after the peer exits
      const size_t at = a.find("--file-prefix=");
      if (at == std::string::npos) continue;
      std::string prefix = a.substr(at + 14);
      prefix = prefix.substr(0, prefix.find(','));
      if (!prefix.empty()) runtime_dir_ = "/var/run/dpdk/" + prefix;
    }
    pid_ = fork();
    if (pid_ == 0) {
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    in_ = to_child[1];
    out_ = from_child[0];
  }
  ~Peer() {
    if (in_ >= 0) {
      send_line("quit");
      close(in_);
    }
    if (pid_ > 0) {
      for (int i = 0; i < 100 && !reaped_; ++i) {  // up to 5 s for an orderly exit
        if (waitpid(pid_, &status_, WNOHANG) == pid_)
          reaped_ = true;
        else
          usleep(50000);
      }
      if (!reaped_) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status_, 0);
      }
    }
    if (out_ >= 0) close(out_);
    if (!runtime_dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(runtime_dir_, ec);
    }
  }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  void send_line(const std::string& s) {
    const std::string l = s + "\n";
    if (write(in_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) return;
  }

  // The next reply line ('@' stripped), or "" after `timeout_ms` or EOF.
  std::string reply(int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line.empty() && line[0] == '@') return line.substr(1);
        continue;  // EAL log output
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return "";
      char tmp[4096];
      const ssize_t n = read(out_, tmp, sizeof tmp);
      if (n <= 0) return "";
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

  std::string command(const std::string& line, int timeout_ms = 20000) {
    send_line(line);
    return reply(timeout_ms);
  }

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1;
  int status_ = 0;
  bool reaped_ = false;
  std::string buf_;
  std::string runtime_dir_;
};

inline std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// An AF_PACKET raw socket bound to an interface inside a namespace.
class RawSocket {
 public:
  RawSocket(const std::string& netns, const std::string& ifname) {
    fd_ = in_netns(netns, [&] {
      const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
      if (fd < 0) return -1;
      ifindex_ = static_cast<int>(if_nametoindex(ifname.c_str()));
      sockaddr_ll sll{};
      sll.sll_family = AF_PACKET;
      sll.sll_protocol = htons(ETH_P_ALL);
      sll.sll_ifindex = ifindex_;
      const int one = 1, big = 32 << 20;
      if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0 ||
          setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) != 0) {
        close(fd);
        return -1;
      }
      setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
      setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
      return fd;
    });
  }
  ~RawSocket() {
    if (fd_ >= 0) close(fd_);
  }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;
  bool ok() const { return fd_ >= 0; }

  bool send(const std::vector<uint8_t>& frame) {
    return ::send(fd_, frame.data(), frame.size(), 0) == static_cast<ssize_t>(frame.size());
  }

  struct Frame {
    std::vector<uint8_t> bytes;  // as the kernel hands it (VLAN tag removed)
    std::optional<uint16_t> vlan_tci;
  };
  // One incoming frame (outgoing copies skipped), or nullopt after timeout_ms.
  std::optional<Frame> recv(int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::vector<uint8_t> buf(65536);
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) return std::nullopt;
      sockaddr_ll from{};
      iovec iov{buf.data(), buf.size()};
      alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(tpacket_auxdata))];
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = ctrl;
      msg.msg_controllen = sizeof ctrl;
      const ssize_t n = recvmsg(fd_, &msg, MSG_DONTWAIT);
      if (n < 0) continue;
      if (from.sll_pkttype == PACKET_OUTGOING) continue;
      Frame f;
      f.bytes.assign(buf.begin(), buf.begin() + n);
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
        tpacket_auxdata aux;
        std::memcpy(&aux, CMSG_DATA(c), sizeof aux);
        if ((aux.tp_status & TP_STATUS_VLAN_VALID) != 0) f.vlan_tci = aux.tp_vlan_tci;
      }
      return f;
    }
  }

 private:
  int fd_ = -1;
  int ifindex_ = 0;
};

// Ensures >= 512 free 2 MiB hugepages and a hugetlbfs mount; restores both.
class HugepageReservation {
 public:
  HugepageReservation() {
    old_pages_ = read_long("/proc/sys/vm/nr_hugepages");
    if (old_pages_ < 512) {
      changed_pages_ = write_long("/proc/sys/vm/nr_hugepages", 512);
    }
    if (!hugetlbfs_mounted()) {
      mount_dir_ = "/tmp/" + unique_name("huge");
      std::filesystem::create_directories(mount_dir_);
      if (mount("nodev", mount_dir_.c_str(), "hugetlbfs", 0, nullptr) != 0) {
        std::filesystem::remove(mount_dir_);
        mount_dir_.clear();
      }
    }
    ok_ = read_long("/proc/sys/vm/nr_hugepages") >= 512 && hugetlbfs_mounted();
  }
  ~HugepageReservation() {
    if (!mount_dir_.empty()) {
      umount2(mount_dir_.c_str(), MNT_DETACH);
      std::filesystem::remove(mount_dir_);
    }
    if (changed_pages_) write_long("/proc/sys/vm/nr_hugepages", old_pages_);
  }
  HugepageReservation(const HugepageReservation&) = delete;
  HugepageReservation& operator=(const HugepageReservation&) = delete;
  bool ok() const { return ok_; }

 private:
  static long read_long(const char* path) {
    std::ifstream f(path);
    long v = -1;
    f >> v;
    return v;
  }
  static bool write_long(const char* path, long v) {
    std::ofstream f(path);
    f << v;
    f.flush();
    return static_cast<bool>(f);
  }
  static bool hugetlbfs_mounted() {
    std::ifstream m("/proc/mounts");
    std::string dev, dir, type, rest;
    while (m >> dev >> dir >> type && std::getline(m, rest))
      if (type == "hugetlbfs") return true;
    return false;
  }
  long old_pages_ = 0;
  bool changed_pages_ = false;
  std::string mount_dir_;
  bool ok_ = false;
};

}  // namespace hyperscsi::dpdk::testing

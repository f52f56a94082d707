#include "hyperscsi/test_support/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <regex>
#include <thread>

namespace hyperscsi::test_support {
namespace {

std::atomic<int> g_instances{0};

// See remove_namespaces_of_dead_tests(); `own_too` also removes those that
// carry this process's pid (a reused pid, before it made any pair).
void remove_stale_namespaces(bool own_too) {
  std::error_code ec;
  const std::regex name("hs([0-9]+)n[0-9]+[ab]");
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string ns = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(ns, m, name)) continue;
    const long pid = std::strtol(m[1].str().c_str(), nullptr, 10);
    const bool gone = ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    if (gone || (own_too && pid == ::getpid())) NetnsPair::shell("ip netns del " + ns);
  }
}

}  // namespace

bool running_as_root() {
  return ::geteuid() == 0;
}

bool NetnsPair::shell(const std::string& cmd, std::string* output) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return false;
  char buf[512];
  std::string text;
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int rc = ::pclose(p);
  if (output != nullptr) *output = text;
  return rc == 0;
}

void remove_namespaces_of_dead_tests() {
  remove_stale_namespaces(false);
}

NetnsPair::NetnsPair(NetnsConfig config) : config_(config) {
  static std::once_flag swept;
  if (running_as_root()) std::call_once(swept, [] { remove_stale_namespaces(true); });
  const int k = g_instances.fetch_add(1);
  const std::string base = "hs" + std::to_string(::getpid()) + "n" + std::to_string(k);
  ns_a_ = base + "a";
  ns_b_ = base + "b";
  if_a_ = base + "a";
  if_b_ = base + "b";
  if (!running_as_root()) {
    error_ = "needs root to create network namespaces";
    return;
  }
  const std::string mtu = std::to_string(config_.mtu);
  std::string out;
  auto step = [&](const std::string& cmd) {
    if (shell(cmd, &out)) return true;
    error_ = "'" + cmd + "' failed: " + out;
    return false;
  };
  const auto veth = [&](const std::string& a, const std::string& b, const std::string& m) {
    return step("ip link add " + a + " netns " + ns_a_ + " mtu " + m + " type veth peer name " + b +
                " netns " + ns_b_ + " mtu " + m) &&
           step("ip -n " + ns_a_ + " link set " + a + " up") &&
           step("ip -n " + ns_b_ + " link set " + b + " up");
  };
  links_a_.push_back(if_a_);
  links_b_.push_back(if_b_);
  ok_ = step("ip netns add " + ns_a_) && step("ip netns add " + ns_b_) && veth(if_a_, if_b_, mtu) &&
        step("ip -n " + ns_a_ + " link set lo up") && step("ip -n " + ns_b_ + " link set lo up");
  if (config_.extra_links.size() > 9) {
    ok_ = false;
    error_ = "at most 9 extra links";
  }
  for (size_t i = 0; ok_ && i < config_.extra_links.size(); ++i) {
    // "hs<pid>n<k>x<i>a": at most 15 bytes for pids up to 7 digits, k < 100.
    const std::string n = base + "x" + std::to_string(i + 1);
    const size_t m = config_.extra_links[i] != 0 ? config_.extra_links[i] : config_.mtu;
    links_a_.push_back(n + "a");
    links_b_.push_back(n + "b");
    ok_ = veth(links_a_.back(), links_b_.back(), std::to_string(m));
  }
  if (ok_ && config_.vlan_id != 0) {
    vlan_a_ = if_a_ + "t";
    vlan_b_ = if_b_ + "t";
    const std::string vid = std::to_string(config_.vlan_id);
    ok_ = step("ip -n " + ns_a_ + " link add link " + if_a_ + " name " + vlan_a_ +
               " type vlan id " + vid) &&
          step("ip -n " + ns_b_ + " link add link " + if_b_ + " name " + vlan_b_ +
               " type vlan id " + vid) &&
          step("ip -n " + ns_a_ + " link set " + vlan_a_ + " up") &&
          step("ip -n " + ns_b_ + " link set " + vlan_b_ + " up");
  }
  if (ok_ && config_.assign_ips) {
    const std::string net = "198.18." + std::to_string(k % 256) + ".";
    ip_a_ = net + "1";
    ip_b_ = net + "2";
    ok_ = step("ip -n " + ns_a_ + " addr add " + ip_a_ + "/24 dev " + if_a_) &&
          step("ip -n " + ns_b_ + " addr add " + ip_b_ + "/24 dev " + if_b_);
  }
}

NetnsPair::~NetnsPair() {
  if (!running_as_root()) return;
  // Deleting a namespace destroys the interfaces inside it (veth, VLAN).
  shell("ip netns del " + ns_a_);
  shell("ip netns del " + ns_b_);
}

bool NetnsPair::run_in(const std::string& ns, const std::function<void()>& fn) const {
  bool entered = false;
  std::thread t([&] {
    const int fd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    // setns affects only this thread: the caller's namespace is untouched.
    entered = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    if (entered) fn();
  });
  t.join();
  return entered;
}

bool NetnsPair::set_up(const std::string& ns, const std::string& iface, bool up) const {
  return shell("ip -n " + ns + " link set " + iface + (up ? " up" : " down"));
}

bool NetnsPair::set_link_up(size_t link, bool up) const {
  return link < links() && set_up(ns_a_, links_a_[link], up);
}

bool NetnsPair::set_blackhole(size_t link, bool side_a, bool on) const {
  if (link >= links()) return false;
  const std::string cmd =
      "ip netns exec " + (side_a ? ns_a_ : ns_b_) + " tc qdisc " + (on ? "replace" : "del") +
      " dev " + (side_a ? links_a_ : links_b_)[link] + " root" + (on ? " pfifo limit 0" : "");
  return shell(cmd);
}

}  // namespace hyperscsi::test_support

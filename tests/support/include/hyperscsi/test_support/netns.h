// Test fixture: two network namespaces joined by a veth pair (or several:
// NetnsConfig::extra_links, one per path of a multipath session), so that
// tests and benchmarks exchange real frames without touching the host's
// network.
//
//   NetnsPair net({.mtu = 9000});
//   if (!net.ok()) GTEST_SKIP() << net.error();
//   auto port = net.run_in_a([&] { return open_port("afpacket:" + net.iface_a()); });
//
// A socket created inside run_in_a/run_in_b stays in that namespace when it is
// used later from any thread, so ports are opened there and used anywhere.
// Names are unique per process and instance (hs<pid>..., at most 15 bytes);
// the destructor deletes both namespaces (and with them the veth and any VLAN
// interface), also when a test assertion failed. Needs root (CAP_SYS_ADMIN).
// Thread-safety: construct and destroy on one thread; run_in_* from any.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace hyperscsi::test_support {

// True when the process runs with euid 0.
bool running_as_root();

// Deletes the namespaces "hs<pid>n<k>a|b" of test processes that are gone (a
// test killed by ctest's timeout runs no destructor). Every process does this
// once before its first NetnsPair, and then also removes such namespaces that
// carry its own pid (a reused pid), which would make `ip netns add` fail.
// Needs root; namespaces of live processes are left alone.
void remove_namespaces_of_dead_tests();

struct NetnsConfig {
  size_t mtu = 1500;
  // Non-zero: also create 802.1Q interfaces <iface>t on both sides. Needs the
  // kernel 8021q module (not on every kernel: then ok() is false, error() says
  // so). Ports tag in software and do not need this.
  uint16_t vlan_id = 0;
  bool assign_ips = false;  // 198.18.<n>.1/24 on A and .2 on B (benchmark range)
  // More veth pairs between the same two namespaces, link 1, 2...: each
  // entry is that link's MTU (0: `mtu`). At most 9. No VLAN or IP on them.
  std::vector<size_t> extra_links = {};
};

class NetnsPair {
 public:
  explicit NetnsPair(NetnsConfig config = {});
  ~NetnsPair();
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }  // why set-up failed

  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }
  const std::string& iface_a() const { return if_a_; }         // in ns_a
  const std::string& iface_b() const { return if_b_; }         // in ns_b
  const std::string& vlan_iface_a() const { return vlan_a_; }  // empty without vlan_id
  const std::string& vlan_iface_b() const { return vlan_b_; }
  const std::string& ip_a() const { return ip_a_; }  // empty without assign_ips
  const std::string& ip_b() const { return ip_b_; }
  size_t mtu() const { return config_.mtu; }

  // Every veth pair: link 0 is iface_a()/iface_b(), then the extra links.
  size_t links() const { return links_a_.size(); }
  const std::string& iface_a(size_t link) const { return links_a_.at(link); }
  const std::string& iface_b(size_t link) const { return links_b_.at(link); }
  // Takes link `link` down or up (A's end: a veth's peer loses its carrier too).
  bool set_link_up(size_t link, bool up) const;
  // Loses every frame `link`'s end in A (side_a) or B sends, its carrier
  // staying up (a silent path failure: a root pfifo of limit 0; the kernel
  // here has no netem), or (on false) sends them again.
  bool set_blackhole(size_t link, bool side_a, bool on) const;

  // Runs `fn` on a thread that joined namespace `ns`; returns when it ended.
  // False if the namespace could not be entered (fn did not run).
  bool run_in(const std::string& ns, const std::function<void()>& fn) const;

  // run_in for A or B returning fn's value (std::optional empty on failure).
  template <typename F>
  auto run_in_a(F&& fn) const {
    return run_value(ns_a_, std::forward<F>(fn));
  }
  template <typename F>
  auto run_in_b(F&& fn) const {
    return run_value(ns_b_, std::forward<F>(fn));
  }

  // Sets an interface (by name, in its namespace) administratively up/down.
  bool set_up(const std::string& ns, const std::string& iface, bool up) const;

  // Runs a shell command; output is captured into `output` if given.
  static bool shell(const std::string& cmd, std::string* output = nullptr);

 private:
  template <typename F>
  auto run_value(const std::string& ns, F&& fn) const {
    using R = std::invoke_result_t<F>;
    std::optional<R> out;
    run_in(ns, [&] { out.emplace(fn()); });
    return out;
  }

  NetnsConfig config_;
  bool ok_ = false;
  std::string error_;
  std::string ns_a_, ns_b_, if_a_, if_b_, vlan_a_, vlan_b_, ip_a_, ip_b_;
  std::vector<std::string> links_a_, links_b_;
};

}  // namespace hyperscsi::test_support

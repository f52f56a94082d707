#include "ceph_support.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "hyperscsi/test_support/process.h"

#ifndef HYPERSCSI_CEPH_SCRIPT_DIR
#error "HYPERSCSI_CEPH_SCRIPT_DIR must be defined"
#endif

namespace hyperscsi::ceph_test {
namespace {

namespace fs = std::filesystem;
using test_support::run_bounded;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// cluster.sh's DIR/env: KEY=VALUE lines.
bool read_env(const std::string& dir, Cluster& c) {
  std::ifstream in(fs::path(dir) / "env");
  if (!in) return false;
  std::map<std::string, std::string> kv;
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  c.dir = dir;
  c.netns = kv["CEPH_NETNS"];
  c.conf = kv["CEPH_CONF"];
  c.addr = kv["CEPH_ADDR"];
  c.pool = kv["CEPH_POOL"];
  c.client_id = kv["CEPH_CLIENT_ID"];
  c.client_keyring = kv["CEPH_CLIENT_KEYRING"];
  return !c.netns.empty() && !c.conf.empty() && !c.pool.empty();
}

std::string script() {
  return std::string(HYPERSCSI_CEPH_SCRIPT_DIR) + "/cluster.sh";
}

int pid_of_osd(const Cluster& c) {
  const std::string s = slurp(fs::path(c.dir) / "run" / "osd.0.pid");
  return s.empty() ? -1 : std::atoi(s.c_str());
}

}  // namespace

std::string script_dir() {
  return HYPERSCSI_CEPH_SCRIPT_DIR;
}

const Cluster* shared_cluster(std::string& why) {
  static Cluster c;
  static std::string reason;
  static bool loaded = false;
  if (!loaded) {
    loaded = true;
    const char* dir = std::getenv("HYPERSCSI_CEPH_DIR");
    if (!dir || !*dir) {
      reason = "no Ceph cluster: run through ctest, whose fixture ceph.cluster_up starts one";
    } else if (fs::exists(fs::path(dir) / "skip")) {
      reason = slurp(fs::path(dir) / "skip");
      while (!reason.empty() && reason.back() == '\n') reason.pop_back();
    } else if (!read_env(dir, c)) {
      reason = std::string("no Ceph cluster in ") + dir + " (did ceph.cluster_up fail?)";
    }
  }
  why = reason;
  return reason.empty() ? &c : nullptr;
}

PrivateCluster::PrivateCluster() {
  static std::atomic<int> n{0};
  cluster_.dir = (fs::temp_directory_path() /
                  ("hs-ceph-" + std::to_string(::getpid()) + "-" + std::to_string(n++)))
                     .string();
  const auto r = run_bounded("bash " + script() + " up " + cluster_.dir, 120);
  if (r.status != 0) {
    error_ = "cluster.sh up failed: " + r.out;
    run_bounded("bash " + script() + " down " + cluster_.dir, 60);
    return;
  }
  ok_ = read_env(cluster_.dir, cluster_);
  if (!ok_) error_ = "no env file in " + cluster_.dir;
}

PrivateCluster::~PrivateCluster() {
  run_bounded("bash " + script() + " down " + cluster_.dir, 60);
}

bool PrivateCluster::osd_stop() {
  return run_bounded("bash " + script() + " osd-stop " + cluster_.dir, 60).status == 0;
}

bool PrivateCluster::osd_start() {
  return run_bounded("bash " + script() + " osd-start " + cluster_.dir, 90).status == 0;
}

bool PrivateCluster::osd_pause() {
  const int pid = pid_of_osd(cluster_);
  return pid > 0 && ::kill(pid, SIGSTOP) == 0;
}

bool PrivateCluster::osd_resume() {
  const int pid = pid_of_osd(cluster_);
  return pid > 0 && ::kill(pid, SIGCONT) == 0;
}

int rbd(const Cluster& c, const std::string& args, std::string* out, int limit_s) {
  const auto r =
      run_bounded("ip netns exec " + c.netns + " rbd -c " + c.conf + " " + args, limit_s);
  if (out) *out = r.out;
  return r.status;
}

int ceph(const Cluster& c, const std::string& args, std::string* out, int limit_s) {
  const auto r =
      run_bounded("ip netns exec " + c.netns + " ceph -c " + c.conf + " " + args, limit_s);
  if (out) *out = r.out;
  return r.status;
}

std::string unique_image(const std::string& tag) {
  static std::atomic<int> n{0};
  return "hs-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

bool create_image(const Cluster& c, const std::string& image, std::uint64_t bytes,
                  std::string* why) {
  std::string out;
  const int st =
      rbd(c, "create --size " + std::to_string(bytes) + "B " + c.pool + "/" + image, &out);
  if (st != 0 && why) *why = out;
  return st == 0;
}

std::string attach(const Cluster& c, const std::string& ns) {
  const auto r = run_bounded("bash " + script() + " attach " + c.dir + " " + ns, 30);
  if (r.status != 0) return {};
  std::string ip = r.out;
  while (!ip.empty() && (ip.back() == '\n' || ip.back() == ' ')) ip.pop_back();
  return ip;
}

bool enter_cluster_netns(const Cluster& c, std::string& why) {
  static std::string entered;
  if (entered == c.netns) return true;
  const int fd = ::open(("/var/run/netns/" + c.netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    why = "cannot open namespace " + c.netns;
    return false;
  }
  const bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  if (!ok) {
    why = "setns into " + c.netns + " failed";
    return false;
  }
  entered = c.netns;
  return true;
}

std::string target_ceph_flags(const Cluster& c) {
  return "--ceph-conf " + c.conf + " --ceph-id " + c.client_id + " --ceph-keyring " +
         c.client_keyring;
}

std::vector<std::uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}

}  // namespace hyperscsi::ceph_test

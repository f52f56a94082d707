// What the Ceph tests share: the cluster that ctest's fixture started
// (tests/ceph/cluster.sh up, before any test of this directory; down after
// the last, also when tests failed), a private cluster for tests that stop
// its OSD, and the rbd/ceph command-line tools run inside the cluster's
// network namespace.
//
// Without Ceph installed (or without root) the fixture records why, and every
// test skips with that reason; CI installs Ceph (scripts/setup.sh), so there
// nothing skips.
// Thread-safety: used from the test thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace hyperscsi::ceph_test {

struct Cluster {
  std::string dir;  // cluster.sh's directory
  std::string netns;
  std::string conf;  // ceph.conf (admin keyring named in it)
  std::string addr;  // the monitor's address
  std::string pool;
  std::string client_id;  // the gateway's cephx user (rbd profile), without "client."
  std::string client_keyring;
};

// The cluster of this ctest run, or nullptr with `why` set (not installed,
// not root, not started through ctest).
const Cluster* shared_cluster(std::string& why);

// A cluster of its own (cluster.sh up/down on a private directory), for tests
// that stop or restart its OSD. ok() false: error() says why.
class PrivateCluster {
 public:
  PrivateCluster();
  ~PrivateCluster();
  PrivateCluster(const PrivateCluster&) = delete;
  PrivateCluster& operator=(const PrivateCluster&) = delete;
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const Cluster& cluster() const { return cluster_; }
  // cluster.sh osd-stop / osd-start (the latter waits until the pool takes writes).
  bool osd_stop();
  bool osd_start();
  // SIGSTOP / SIGCONT of the OSD: it stays in the OSD map but answers nothing.
  bool osd_pause();
  bool osd_resume();

 private:
  bool ok_ = false;
  std::string error_;
  Cluster cluster_;
};

// The directory of cluster.sh (the source tree's tests/ceph).
std::string script_dir();

// Runs `args` of the rbd tool (admin) inside the cluster's namespace, bounded.
// Returns the exit status; output (stdout+stderr) in *out when given.
int rbd(const Cluster& c, const std::string& args, std::string* out = nullptr, int limit_s = 60);
// The same for the ceph tool.
int ceph(const Cluster& c, const std::string& args, std::string* out = nullptr, int limit_s = 30);

// A fresh image name for this process ("hs-<tag>-<pid>-<n>").
std::string unique_image(const std::string& tag);
// Creates `image` of `bytes` in the pool; false (with the tool's output in
// *why) on failure.
bool create_image(const Cluster& c, const std::string& image, std::uint64_t bytes,
                  std::string* why = nullptr);

// Attaches namespace `ns` to the cluster's bridge (cluster.sh attach); its address, or "".
std::string attach(const Cluster& c, const std::string& ns);

// Enters the cluster's network namespace for the whole process: call before
// any thread exists (librados' threads and sockets then live there too).
bool enter_cluster_netns(const Cluster& c, std::string& why);

// The arguments hyperscsi-target needs to reach the cluster as the gateway user.
std::string target_ceph_flags(const Cluster& c);

std::vector<std::uint8_t> read_file(const std::filesystem::path& p);

}  // namespace hyperscsi::ceph_test

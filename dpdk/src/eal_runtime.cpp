#include "eal_runtime.h"

#include <rte_eal.h>
#include <rte_errno.h>

#include <cerrno>

namespace hyperscsi::dpdk {
namespace {

struct Registry {
  std::mutex mutex;
  std::shared_ptr<EalRuntime> runtime;  // released at process exit
  bool cleaned_up = false;              // set once static destruction dropped it
  ~Registry() {
    std::lock_guard lock(mutex);
    runtime.reset();
    cleaned_up = true;
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

std::string join(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

}  // namespace

Result<std::shared_ptr<EalRuntime>, io::PortError> EalRuntime::acquire(
    const std::vector<std::string>& eal_args) {
  Registry& reg = registry();
  std::lock_guard lock(reg.mutex);
  if (reg.runtime) {
    if (reg.runtime->args_ != eal_args)
      return Unexpected(
          io::PortError{io::PortErrorKind::kBadArgument,
                        "dpdk: the EAL of this process is already initialised with '" +
                            join(reg.runtime->args_) + "'; it cannot be re-initialised with '" +
                            join(eal_args) + "' (one EAL configuration per process)"});
    return reg.runtime;
  }
  if (reg.cleaned_up)
    return Unexpected(io::PortError{io::PortErrorKind::kBackendFailure,
                                    "dpdk: the EAL was already cleaned up (process exiting)"});

  // rte_eal_init may permute and keep pointers into argv: give it storage
  // owned by the runtime.
  auto rt = std::shared_ptr<EalRuntime>(new EalRuntime(eal_args));
  std::vector<std::string> storage;
  storage.reserve(eal_args.size() + 1);
  storage.emplace_back("hyperscsi");
  storage.insert(storage.end(), eal_args.begin(), eal_args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  const int rc = rte_eal_init(static_cast<int>(storage.size()), argv.data());
  if (rc < 0) {
    const int err = rte_errno;
    io::PortError e{io::PortErrorKind::kBackendFailure,
                    "dpdk: rte_eal_init('" + join(eal_args) + "') failed: " + rte_strerror(err)};
    if (err == EINVAL) {
      e.kind = io::PortErrorKind::kBadArgument;
      e.message = "dpdk: the EAL rejected the arguments '" + join(eal_args) + "'";
    } else if (err == EALREADY) {
      e.message =
          "dpdk: the EAL was already initialised in this process (outside hyperscsi, or after a "
          "failed attempt); restart the process";
    } else if (err == EACCES) {
      e.kind = io::PortErrorKind::kPermission;
      e.message = "dpdk: the EAL needs root (rte_eal_init: permission denied)";
    } else if (err == ENOMEM) {
      e.message +=
          " (no memory: reserve hugepages, e.g. echo 512 > /proc/sys/vm/nr_hugepages, "
          "mount hugetlbfs, or pass --no-huge)";
    }
    return Unexpected(std::move(e));
  }
  rt->eal_storage_ = std::move(storage);
  reg.runtime = rt;
  return rt;
}

EalRuntime::~EalRuntime() {
  rte_eal_cleanup();
}

bool EalRuntime::claim_port(uint16_t port_id) {
  std::lock_guard lock(mutex_);
  return open_ports_.insert(port_id).second;
}

void EalRuntime::release_port(uint16_t port_id) {
  std::lock_guard lock(mutex_);
  open_ports_.erase(port_id);
}

}  // namespace hyperscsi::dpdk

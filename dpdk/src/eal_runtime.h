// EalRuntime: the process-wide owner of the DPDK EAL.
//
// rte_eal_init succeeds once per process and cannot be repeated after
// rte_eal_cleanup, so the first acquire() initialises the EAL with its
// arguments and every later acquire() must pass the same arguments. A static
// registry holds one reference until process exit; ports and their mempools
// hold the others, so rte_eal_cleanup runs at exit or, if something outlives
// static destruction, when the last holder lets go.
// Thread-safety: acquire() and the port bookkeeping are locked.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::dpdk {

class EalRuntime {
 public:
  static Result<std::shared_ptr<EalRuntime>, io::PortError> acquire(
      const std::vector<std::string>& eal_args);

  ~EalRuntime();
  EalRuntime(const EalRuntime&) = delete;
  EalRuntime& operator=(const EalRuntime&) = delete;

  // Marks an ethdev port as opened by this process; false if it already is.
  bool claim_port(uint16_t port_id);
  void release_port(uint16_t port_id);

 private:
  explicit EalRuntime(std::vector<std::string> args) : args_(std::move(args)) {}

  std::vector<std::string> args_;
  std::vector<std::string> eal_storage_;  // argv strings handed to rte_eal_init
  std::mutex mutex_;
  std::set<uint16_t> open_ports_;
};

}  // namespace hyperscsi::dpdk

// Process and interface counters sampled before and after a run: CPU time
// and context switches of this process (getrusage) and of the target process
// (/proc/PID), and frame counters of a network interface (/sys/class/net).
// Plain functions; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace hyperscsi::bench {

struct ProcessSample {
  double cpu_seconds = 0;         // user + system
  uint64_t context_switches = 0;  // voluntary + involuntary
};

ProcessSample sample_self();
// All threads of `pid`; empty when /proc/PID cannot be read.
std::optional<ProcessSample> sample_process(int pid);

// tx_packets + rx_packets of `iface` as seen from this network namespace.
struct InterfaceSample {
  uint64_t tx = 0;
  uint64_t rx = 0;
};
std::optional<InterfaceSample> sample_interface(const std::string& iface);

}  // namespace hyperscsi::bench

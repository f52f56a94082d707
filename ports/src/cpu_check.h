// Whether this CPU can run the DPDK libraries. Debian's DPDK is compiled with
// -march=corei7 (pkg-config libdpdk's cflags) and its libraries execute such
// code as soon as they are loaded, so the loader asks the CPU first: a missing
// feature becomes an error message instead of SIGILL.
#pragma once

#include <cstdint>
#include <string>

namespace hyperscsi::ports {

// The cpuid bits the check reads.
struct CpuidBits {
  uint32_t leaf1_ecx = 0;  // cpuid(1).ecx
  uint32_t ext1_ecx = 0;   // cpuid(0x80000001).ecx
};

// This CPU's bits (all zero where cpuid does not answer; non-x86 builds: all set).
CpuidBits read_cpuid();

// The corei7 features `bits` lacks, e.g. "SSSE3 SSE4.1 SSE4.2 POPCNT";
// empty when the DPDK libraries can run.
std::string missing_dpdk_cpu_features(const CpuidBits& bits);

}  // namespace hyperscsi::ports

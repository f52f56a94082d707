#include "cpu_check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace hyperscsi::ports {
namespace {

struct Feature {
  const char* name;
  bool extended;  // in cpuid(0x80000001).ecx, else cpuid(1).ecx
  uint32_t bit;
};

// What -march=corei7 adds to the x86-64 baseline (gcc -march=corei7 -dM -E).
constexpr Feature kCorei7[] = {
    {"SSE3", false, 1u << 0},     {"SSSE3", false, 1u << 9},   {"CX16", false, 1u << 13},
    {"SSE4.1", false, 1u << 19},  {"SSE4.2", false, 1u << 20}, {"POPCNT", false, 1u << 23},
    {"LAHF-SAHF", true, 1u << 0},
};

}  // namespace

CpuidBits read_cpuid() {
  CpuidBits bits;
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) bits.leaf1_ecx = ecx;
  if (__get_cpuid(0x80000001u, &eax, &ebx, &ecx, &edx)) bits.ext1_ecx = ecx;
#else
  bits.leaf1_ecx = bits.ext1_ecx = ~0u;
#endif
  return bits;
}

std::string missing_dpdk_cpu_features(const CpuidBits& bits) {
  std::string missing;
  for (const Feature& f : kCorei7) {
    const uint32_t reg = f.extended ? bits.ext1_ecx : bits.leaf1_ecx;
    if ((reg & f.bit) != 0) continue;
    if (!missing.empty()) missing += ' ';
    missing += f.name;
  }
  return missing;
}

}  // namespace hyperscsi::ports

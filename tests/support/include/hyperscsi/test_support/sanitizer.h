// How much slower this test build runs: scripts/test.sh sets
// HYPERSCSI_TEST_TIMEOUT_FACTOR for the sanitizer build (1 otherwise). CPU
// ceilings and wall-clock bounds scale with it; what they catch (a spinning
// core, a hang) stays far outside the scaled bound.
#pragma once

#include <cstdlib>

namespace hyperscsi::test_support {

inline double sanitizer_factor() {
  const char* f = std::getenv("HYPERSCSI_TEST_TIMEOUT_FACTOR");
  const double v = f ? std::atof(f) : 1.0;
  return v >= 1.0 ? v : 1.0;
}

}  // namespace hyperscsi::test_support

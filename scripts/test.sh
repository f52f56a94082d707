#!/usr/bin/env bash
# The README's test command: installs dependencies, builds with warnings as
# errors, and runs every test. Tests that need root run as root here.
# Then the whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer
# (build-asan), then every libFuzzer harness for a bounded time (build-fuzz).
#
# HYPERSCSI_CI_STAGES picks stages, run in this order (default: setup normal asan fuzz):
#   setup  normal  asan  fuzz        e.g. HYPERSCSI_CI_STAGES="asan fuzz"
# BUILD_DIR, ASAN_BUILD_DIR, FUZZ_BUILD_DIR override the build directories.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
stages=${HYPERSCSI_CI_STAGES:-setup normal asan fuzz}
build=${BUILD_DIR:-$here/build}
asan_build=${ASAN_BUILD_DIR:-$here/build-asan}
fuzz_build=${FUZZ_BUILD_DIR:-$here/build-fuzz}
jobs=$(nproc)

want() { [[ " $stages " == *" $1 "* ]]; }
stage_start=0
begin() {
  stage_start=$SECONDS
  echo "=== stage $1 ($(date -u +%H:%M:%S))"
}
end() { echo "=== stage $1 took $((SECONDS - stage_start)) s"; }

if want setup; then
  begin setup
  bash "$here/scripts/setup.sh"
  end setup
fi

if want normal; then
  begin normal
  bash "$here/scripts/build.sh" "$build" -DHYPERSCSI_WERROR=ON
  (cd "$build" && ctest --output-on-failure --timeout 600 -j "$jobs")
  end normal
fi

if want asan; then
  # DPDK stays out: its EAL maps hugepage memory behind ASan's back (the DPDK
  # tests run in the normal build). Timeouts (ctest's, and the wall-clock
  # bounds of tests that read HYPERSCSI_TEST_TIMEOUT_FACTOR) are tripled for
  # the slowdown; assertions are unchanged.
  begin asan
  factor=3
  bash "$here/scripts/build.sh" "$asan_build" -DHYPERSCSI_WERROR=ON \
    -DHYPERSCSI_SANITIZE=address,undefined -DHYPERSCSI_WITH_DPDK=OFF \
    -DHYPERSCSI_TEST_TIMEOUT_FACTOR=$factor
  supp=$here/tests/sanitizers
  (cd "$asan_build" &&
    HYPERSCSI_TEST_TIMEOUT_FACTOR=$factor \
      ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_init_order=1 \
      LSAN_OPTIONS=suppressions=$supp/lsan.supp:print_suppressions=0 \
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp \
      ctest --output-on-failure --timeout 1800 -j "$jobs")
  end asan
fi

if want fuzz; then
  # Only the harnesses and what they link; each runs HYPERSCSI_FUZZ_SECONDS.
  begin fuzz
  cmake -S "$here" -B "$fuzz_build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DHYPERSCSI_FUZZ=ON -DHYPERSCSI_WITH_DPDK=OFF >/dev/null
  cmake --build "$fuzz_build" -j "$jobs" --target \
    frame_fuzzer reassembly_fuzzer connection_fuzzer cdb_fuzzer config_fuzzer
  (cd "$fuzz_build" && ctest --output-on-failure -L fuzz -j "$jobs")
  end fuzz
fi

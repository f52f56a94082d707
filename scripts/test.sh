#!/usr/bin/env bash
# The README's test command: installs dependencies, builds with warnings as
# errors, and runs every test. Tests that need root run as root here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
build=${BUILD_DIR:-$here/build}
bash "$here/scripts/build.sh" "$build" -DHYPERSCSI_WERROR=ON
cd "$build"
ctest --output-on-failure --timeout 600 -j "$(nproc)"

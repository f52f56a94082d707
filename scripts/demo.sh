#!/usr/bin/env bash
# The README's main job: installs dependencies, builds, and runs the demo.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
build=${BUILD_DIR:-$here/build}
bash "$here/scripts/build.sh" "$build"
exec "$build/tools/hyperscsi-demo" "$@"

#!/usr/bin/env bash
# The README's main job: installs dependencies, builds, and runs the demo.
#   scripts/demo.sh [--mtu N] [--size-mib N]   target and client in two network
#                                               namespaces, FUSE + loop + ext4 (root)
#   scripts/demo.sh --in-memory [options]       the protocol alone over the impaired
#                                               in-memory link (--help for options)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
build=${BUILD_DIR:-$here/build}
bash "$here/scripts/build.sh" "$build"
if [[ ${1:-} == --in-memory ]]; then
  shift
  exec "$build/tools/hyperscsi-demo" "$@"
fi
exec bash "$here/tools/demo/two-hosts.sh" "$build" "$@"

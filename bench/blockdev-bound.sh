#!/usr/bin/env bash
# How many small I/Os the attached disk can carry on this machine's CPUs
# (issue 13's 4 KiB QD32 goal). A loop device or NBD export over HyperSCSI
# does the library's work for every I/O (the target, the initiator: the CPU per
# I/O of hyperscsi-bench's cell in bench/lab.sh --blockdev, client + target)
# plus its own path's work (fio, the block layer, the loop worker and FUSE, or
# nbdkit and its socket: the whole machine's busy time per I/O in
# bench/fuse-floor.sh, with --nbd for the export). Each is measured alone at
# its own best rate, where batching makes it cheapest, so
#     bound = CPUs / (library us/IO + path us/IO)
# is an upper bound on the block device's IOPS when client and target share
# this machine's CPUs; compare it with the library's IOPS as the goal does.
# Medians of RUNS; Markdown out.
#
# Usage: bench/blockdev-bound.sh [--mtu 1500|9000] [--cell "randread 4k 32"]
#                                [--runs N] [--seconds S] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mtu=1500
cell='randread 4k 32'
runs=3
secs=3
build=${BUILD_DIR:-$here/build}
while (($#)); do
  case $1 in
    --mtu) mtu=$2; shift 2 ;;
    --cell) cell=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "blockdev-bound: unknown option $1" >&2; exit 2 ;;
  esac
done
if ! [[ $mtu =~ ^[0-9]+$ ]] || ((mtu < 576 || mtu > 9000)); then
  echo "blockdev-bound: --mtu takes 576..9000" >&2; exit 2
fi
[[ $runs =~ ^[1-9][0-9]*$ && $secs =~ ^[1-9][0-9]*$ ]] || { echo "blockdev-bound: --runs and --seconds take whole numbers" >&2; exit 2; }
read -r w bs qd extra <<<"$cell"
[[ -z ${extra:-} && $w =~ ^(rand)?(read|write)$ && $bs =~ ^[0-9]+[kK]?$ && $qd =~ ^[1-9][0-9]*$ ]] ||
  { echo "blockdev-bound: bad cell '$cell' (WORKLOAD BS QD, e.g. 'randread 4k 32')" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "blockdev-bound: needs root (namespaces, FUSE, loop device)" >&2; exit 1; }
command -v jq >/dev/null || { echo "blockdev-bound: jq is not installed" >&2; exit 1; }
bytes=${bs%[kK]}
[[ $bs =~ [kK]$ ]] && bytes=$((bytes * 1024))

work=$(mktemp -d /tmp/hsbound.XXXXXX)
echo "blockdev-bound: work directory $work" >&2  # tests check that exactly this one goes
trap 'rm -rf "$work"' EXIT

bash "$here/bench/lab.sh" --blockdev --transports hyperscsi --quick --mtu "$mtu" --runs "$runs" \
  --seconds "$secs" --cells "$cell" --build "$build" --out "$work/lab" >"$work/lab.log" 2>&1 ||
  { echo "blockdev-bound: bench/lab.sh failed: $(tail -c 500 "$work/lab.log")" >&2; exit 1; }
grep '^lab: namespaces' "$work/lab.log" >&2 || true  # which ones the tests check are gone
# Median IOPS and CPU us per I/O (client + target) of the library's runs.
read -r lib_iops lib_us < <(jq -r --argjson bytes "$bytes" '
  def med: sort | .[(length - 1) / 2 | floor];
  [.[] | select(.record == "cell" and .transport == "hyperscsi")] as $rs
  | "\([$rs[].iops] | med) \([$rs[] | (.cpu_s_per_gib_client + .cpu_s_per_gib_target) * $bytes / 1073741824 * 1e6] | med)"' \
  "$work/lab/results.json")

path_us() {  # machine CPU us/IO of the cell in bench/fuse-floor.sh [--nbd], on stdout
  bash "$here/bench/fuse-floor.sh" --runs "$runs" --seconds "$secs" --cells "$cell" --build "$build" \
    --size-mib 256 "$@" >"$work/floor.md" 2>"$work/floor.err" ||
    { echo "blockdev-bound: bench/fuse-floor.sh $* failed: $(tail -c 500 "$work/floor.err")" >&2; exit 1; }
  grep '^fuse-floor: work directory' "$work/floor.err" >&2 || true
  awk -F'|' -v c="$cell" '$2 == " " c " " {gsub(/ /, "", $8); print $8}' "$work/floor.md"
}
# Not in $(...): a failure must end this script, not a subshell.
path_us >"$work/loop_us"
path_us --nbd >"$work/nbd_us"
loop_us=$(<"$work/loop_us")
nbd_us=$(<"$work/nbd_us")
[[ -n $lib_iops && -n $lib_us && -n $loop_us && -n $nbd_us ]] || { echo "blockdev-bound: a measurement is missing" >&2; exit 1; }
cpus=$(nproc)

echo "CPU bound of a block device over HyperSCSI, $cell, MTU $mtu, $cpus CPUs, medians of $runs x $secs s:"
echo
echo "| path | library IOPS | library CPU us/IO | path CPU us/IO | bound IOPS | bound / library |"
echo "|---|---:|---:|---:|---:|---:|"
for p in "loop $loop_us" "nbd $nbd_us"; do
  read -r name us <<<"$p"
  awk -v n="$name" -v li="$lib_iops" -v lu="$lib_us" -v pu="$us" -v c="$cpus" 'BEGIN {
    b = c * 1e6 / (lu + pu)
    printf "| %s | %.0f | %.1f | %.1f | %.0f | %.2f |\n", n, li, lu, pu, b, b / li }'
done

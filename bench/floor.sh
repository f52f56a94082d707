#!/usr/bin/env bash
# The floor under a storage protocol on raw frames, on this machine: what the
# frames alone cost per GiB (io_bench: AF_PACKET over a veth pair, batches of
# 32 frames of MTU + 14 bytes, the sending and the receiving thread), and what
# the store's copy alone costs (fio, 128 KiB psync reads and writes of a 1 GiB
# file in /dev/shm, the lab's store; --store-mib to make it smaller), both at the same rate: with
# --shape-mbit R the lab's tbf on the veth and the sender paced at 99% of R,
# fio rate-limited to the same payload rate; without it, as fast as they go.
# CPU is user + system time as bench/lab.sh counts it. A 128 KiB read through
# any target that reads its store and sends frames costs at least frames +
# store read; a write, frames + store write. Medians of RUNS; Markdown out.
#
# Usage: bench/floor.sh [--mtu 1500|9000] [--shape-mbit R] [--runs N]
#                       [--seconds S] [--store-mib N] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mtu=1500
shape=
runs=3
secs=3
store_mib=1024
build=${BUILD_DIR:-$here/build}
while (($#)); do
  case $1 in
    --mtu) mtu=$2; shift 2 ;;
    --shape-mbit) shape=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --store-mib) store_mib=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "floor: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $mtu =~ ^[0-9]+$ && $mtu -ge 576 && $mtu -le 9000 ]] || { echo "floor: --mtu takes 576..9000" >&2; exit 2; }
[[ -z $shape || $shape =~ ^[1-9][0-9]*$ ]] || { echo "floor: --shape-mbit takes a number of Mbit/s" >&2; exit 2; }
[[ $runs =~ ^[1-9][0-9]*$ && $secs =~ ^[1-9][0-9]*$ ]] || { echo "floor: --runs and --seconds take whole numbers" >&2; exit 2; }
[[ $store_mib =~ ^[1-9][0-9]*$ ]] || { echo "floor: --store-mib takes a number" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "floor: needs root (namespaces, raw sockets)" >&2; exit 1; }
for c in fio jq; do
  command -v $c >/dev/null || { echo "floor: $c is not installed" >&2; exit 1; }
done
io_bench=$build/bench/io_bench
[[ -x $io_bench ]] || { echo "floor: $io_bench is not built (--build DIR)" >&2; exit 1; }

store=/dev/shm/hsfloor$$.img
trap 'rm -f "$store"' EXIT
dd if=/dev/urandom of="$store" bs=1M count="$store_mib" status=none

frame=$((mtu + 14))
io_args=(--backends afpacket --frames "$frame" --batches 32 --runs "$runs" --seconds "$secs")
[[ -n $shape ]] && io_args+=(--shape-mbit "$shape")
# The last table row: | afpacket | F | 32 | tx | rx | MB/s | rx/tx | S / R | sum |
row=$("$io_bench" "${io_args[@]}" | tail -1)
frames_mb=$(awk -F'|' '{gsub(/ /, "", $7); print $7}' <<<"$row")
frames_cpu=$(awk -F'|' '{gsub(/^ +| +$/, "", $9); print $9}' <<<"$row")
frames_sum=$(awk -F'|' '{gsub(/ /, "", $10); print $10}' <<<"$row")

# fio's CPU per GiB for one 128 KiB psync job, median of RUNS.
store_cost() {
  local rw=$1 rate=() vals=()
  [[ -n $shape ]] && rate=(--rate=$((shape * 1000000 * 99 / 800)))
  for ((r = 0; r < runs; r++)); do
    vals+=("$(fio --name=floor --filename="$store" --rw="$rw" --bs=128k --ioengine=psync \
      --size="${store_mib}M" --time_based --runtime="$secs" "${rate[@]}" --output-format=json |
      jq --arg rw "$rw" '.jobs[0] as $j | ($j[$rw].io_bytes / 1073741824) as $gib
        | ($j.usr_cpu + $j.sys_cpu) / 100 * $j.job_runtime / 1000 / $gib')")
  done
  printf '%s\n' "${vals[@]}" | sort -g | awk '{v[NR] = $1} END {printf "%.2f", v[int((NR + 1) / 2)]}'
}
store_read=$(store_cost read)
store_write=$(store_cost write)

how=unshaped
[[ -n $shape ]] && how="tbf $shape Mbit/s, paced at 99%"
echo "Floor, MTU $mtu, $how, medians of $runs x $secs s (CPU s/GiB):"
echo
echo "| frames MB/s | frames sender / receiver | frames sum | store read | store write | floor 128 KiB read | floor 128 KiB write |"
echo "|---:|---|---:|---:|---:|---:|---:|"
awk -v mb="$frames_mb" -v c="$frames_cpu" -v f="$frames_sum" -v r="$store_read" -v w="$store_write" \
  'BEGIN {printf "| %s | %s | %s | %.2f | %.2f | %.2f | %.2f |\n", mb, c, f, r, w, f + r, f + w}'

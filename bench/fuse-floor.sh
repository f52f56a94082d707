#!/usr/bin/env bash
# The attached disk's floor on this machine: fio on a loop device (direct I/O)
# over a FUSE file that bench/fuse_floor serves from RAM, set up as
# hyperscsi-attach's export is. Whatever the block layer, the loop worker and
# FUSE cost here, the loop device over HyperSCSI pays on top of the protocol;
# compare its cells in bench/lab.sh --blockdev with these. fio runs as lab.sh
# runs it (io_uring, direct, one job). Medians of RUNS; Markdown out; CPU is
# user + system seconds per GiB of fuse_floor and of fio, and the busy time of
# the whole machine per I/O (every CPU: fio, the loop worker, softirqs,
# fuse_floor; run it on an otherwise idle machine). --poll: fuse_floor
# spins on /dev/fuse instead of sleeping (no wake-up on the server's side, as
# a daemon that busy-polls; it burns a CPU).
#
# --nbd: the NBD export's floor instead: nbdkit's own `memory` plugin (RAM,
# nothing behind it) on a unix socket with 16 threads, and fio's nbd engine,
# as bench/lab.sh runs the HyperSCSI plugin's export; the server column is
# nbdkit's CPU.
#
# Usage: bench/fuse-floor.sh [--runs N] [--seconds S] [--cells "WORKLOAD BS QD[;...]"]
#                            [--size-mib N] [--poll | --nbd] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=3
secs=3
cells='randread 4k 32;randread 4k 1;read 128k 32;write 128k 32;read 1M 1;write 1M 1'
size_mib=1024
poll=
nbd=
build=${BUILD_DIR:-$here/build}
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --cells) cells=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --poll) poll=poll; shift ;;
    --nbd) nbd=1; shift ;;
    --build) build=$2; shift 2 ;;
    *) echo "fuse-floor: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ && $secs =~ ^[1-9][0-9]*$ ]] || { echo "fuse-floor: --runs and --seconds take whole numbers" >&2; exit 2; }
[[ $size_mib =~ ^[1-9][0-9]*$ ]] || { echo "fuse-floor: --size-mib takes a number" >&2; exit 2; }
[[ -n $poll && -n $nbd ]] && { echo "fuse-floor: --poll is for the loop device, not --nbd" >&2; exit 2; }
tools=(fio jq nbdkit nbdinfo)
if [[ -z $nbd ]]; then
  tools=(fio jq losetup)
  [[ $(id -u) -eq 0 ]] || { echo "fuse-floor: needs root (FUSE mount, loop device)" >&2; exit 1; }
  [[ -e /dev/fuse ]] || { echo "fuse-floor: no /dev/fuse" >&2; exit 1; }
  server=$build/bench/fuse_floor
  [[ -x $server ]] || { echo "fuse-floor: $server is not built (--build DIR)" >&2; exit 1; }
fi
for c in "${tools[@]}"; do
  command -v "$c" >/dev/null || { echo "fuse-floor: $c is not installed" >&2; exit 1; }
done
IFS=';' read -ra cell_list <<<"$cells"
for cell in "${cell_list[@]}"; do
  read -r w bs qd <<<"$cell"
  [[ $w =~ ^(rand)?(read|write)$ && $bs =~ ^[0-9]+[kKmM]?$ && $qd =~ ^[1-9][0-9]*$ ]] ||
    { echo "fuse-floor: bad cell '$cell' (WORKLOAD BS QD, e.g. 'randread 4k 32')" >&2; exit 2; }
done

work=$(mktemp -d /tmp/hsfusefloor.XXXXXX)
echo "fuse-floor: work directory $work" >&2  # tests check that exactly this one goes
mnt=$work/mnt
mkdir "$mnt"
server_pid=
loop_dev=
cleanup() {
  [[ -n $loop_dev ]] && losetup -d "$loop_dev" 2>/dev/null
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null || true
  fi
  mountpoint -q "$mnt" && umount -l "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT

if [[ -n $nbd ]]; then
  # The same server lab.sh gives the HyperSCSI plugin: 16 threads, a unix socket.
  sock=$work/nbd.sock
  nbdkit -f --unix "$sock" --threads 16 memory "${size_mib}M" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { echo "fuse-floor: nbdkit ended: $(cat "$work/server.log")" >&2; exit 1; }
    sleep 0.1
  done
  nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 || { echo "fuse-floor: nbdkit did not serve" >&2; exit 1; }
  target=(--ioengine=nbd "--uri=nbd+unix:///?socket=$sock")
  server_name=nbdkit
  title="fio's nbd engine on nbdkit's memory plugin (RAM, 16 threads, unix socket)"
else
  "$server" "$mnt" "$size_mib" $poll >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    [[ -e $mnt/disk ]] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "fuse-floor: fuse_floor ended: $(cat "$work/server.log")" >&2; exit 1; }
    sleep 0.1
  done
  [[ -e $mnt/disk ]] || { echo "fuse-floor: $mnt/disk did not appear" >&2; exit 1; }
  loop_dev=$(losetup --find --show --direct-io=on --sector-size 512 "$mnt/disk")
  [[ $(cat "/sys/block/${loop_dev#/dev/}/loop/dio") == 1 ]] || echo "fuse-floor: direct I/O did not take on $loop_dev" >&2
  target=(--ioengine=io_uring --direct=1 "--filename=$loop_dev")
  server_name=fuse_floor
  title="Loop device (direct I/O) over fuse_floor (FUSE from RAM${poll:+, polling /dev/fuse})"
fi

proc_cpu() {  # user + system seconds of process $1
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
machine_cpu() {  # busy seconds of all CPUs (not idle, not iowait), kernel threads and interrupts too
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat
}

results=$work/results.jsonl
for ((r = 1; r <= runs; r++)); do
  for cell in "${cell_list[@]}"; do
    read -r w bs qd <<<"$cell"
    c0=$(proc_cpu "$server_pid"); m0=$(machine_cpu)
    fio --name=floor --output-format=json --output="$work/fio.json" --rw="$w" --bs="$bs" \
      --iodepth="$qd" --time_based --runtime="$secs" --lat_percentiles=1 --clat_percentiles=0 \
      --randrepeat=0 --norandommap --numjobs=1 "${target[@]}" >/dev/null 2>"$work/fio.err" ||
      { echo "fuse-floor: fio $cell failed: $(tail -c 300 "$work/fio.err")" >&2; exit 1; }
    c1=$(proc_cpu "$server_pid"); m1=$(machine_cpu)
    jq -c --arg cell "$cell" --argjson cpu "$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" \
      --argjson machine "$(awk -v a="$m0" -v b="$m1" 'BEGIN {print b - a}')" '
      .jobs[0] as $j | (if ($j.read.io_bytes > 0) then $j.read else $j.write end) as $x
      | ($x.io_bytes / 1073741824) as $gib
      | {cell: $cell, iops: $x.iops, mb_s: ($x.bw_bytes / 1e6),
         p50_us: (($x.lat_ns.percentile["50.000000"] // 0) / 1000),
         server_cpu: (if $gib > 0 then $cpu / $gib else null end),
         fio_cpu: (if $gib > 0 then ($j.usr_cpu + $j.sys_cpu) / 100 * $j.job_runtime / 1000 / $gib else null end),
         machine_us_per_io: (if $x.total_ios > 0 then $machine / $x.total_ios * 1e6 else null end)}' \
      "$work/fio.json" >>"$results"
  done
done

echo "$title, medians of $runs x $secs s:"
echo
echo "| cell | IOPS | MB/s | p50 us | CPU s/GiB $server_name | CPU s/GiB fio | machine CPU us/IO |"
echo "|---|---:|---:|---:|---:|---:|---:|"
jq -rs '
  def med: sort | .[(length - 1) / 2 | floor];
  def f(n): if . == null then "-" else (. * n | round) / n | tostring end;
  . as $all
  | (reduce $all[].cell as $c ([]; if index([$c]) then . else . + [$c] end))[] as $c
  | [$all[] | select(.cell == $c)] as $rs
  | "| \($c) | \([$rs[].iops] | med | f(1)) | \([$rs[].mb_s] | med | f(10)) | \([$rs[].p50_us] | med | f(10)) | \([$rs[].server_cpu] | med | f(100)) | \([$rs[].fio_cpu] | med | f(100)) | \([$rs[].machine_us_per_io] | med | f(10)) |"' \
  "$results"

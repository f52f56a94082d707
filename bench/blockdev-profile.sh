#!/usr/bin/env bash
# Profiling lab for the attached disk (issue 13): the two-namespace veth lab of
# bench/lab.sh (hyperscsi-target on a 256 MiB file in /dev/shm), then the
# experiments in file $1, sourced, which call the functions below:
#   lib W BS QD             hyperscsi-bench (the library)
#   attach [ARGS]           hyperscsi-attach attach --fuse --loop (ATTACH=binary to compare builds)
#   loopfio W BS QD [ARGS]  fio io_uring --direct=1 on the loop device
#   detach
#   start_nbd [ARGS] / nbdfio W BS QD [ARGS] / stop_nbd   nbdkit and fio's nbd engine
# $attach_pid, $loop_dev, $OUT are set for perf record/stat/trace around a cell.
# The experiments run in this shell: wait for a background perf by its pid
# (`perf ... & p=$!; lib ...; wait $p`); a bare `wait` also waits for the
# lab's own target daemon, for ever.
# An ad-hoc tool for finding where the time goes (docs/benchmarks.md, "The
# attached disk"); the benchmark of record is bench/lab.sh --blockdev.
# Usage: MTU=1500|9000 OUT=DIR SECS=3 bench/blockdev-profile.sh EXPERIMENTS
set -uo pipefail
[[ $# -eq 1 && -r $1 ]] || { sed -n "2,16p" "$0" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "needs root (namespaces)" >&2; exit 1; }
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/build}
MTU=${MTU:-1500}
OUT=${OUT:-$PWD/blockdev-profile}
SECS=${SECS:-3}
mkdir -p "$OUT"
tag=hsp$$; ns_s=${tag}s; ns_c=${tag}c; if_s=${tag}vs; if_c=${tag}vc
store=/dev/shm/$tag.img
work=$(mktemp -d /tmp/hsprof.XXXXXX)
export HYPERSCSI_RUN_DIR=$work/run
hs_pid=; attach_pid=; loop_dev=; nbdkit_pid=; attached=
cleanup() {
  set +e
  [[ -n $attached ]] && detach
  [[ -n $nbdkit_pid ]] && stop_nbd
  [[ -n $hs_pid ]] && { kill -TERM $hs_pid; wait $hs_pid; }
  ip netns del $ns_s; ip netns del $ns_c
  rm -f $store; rm -rf $work
}
trap cleanup EXIT
ip netns add $ns_s; ip netns add $ns_c
ip link add $if_s mtu $MTU type veth peer name $if_c mtu $MTU
ip link set $if_s netns $ns_s; ip link set $if_c netns $ns_c
for ns in $ns_s $ns_c; do ip -n $ns link set lo up; done
ip -n $ns_s link set $if_s up; ip -n $ns_c link set $if_c up
dd if=/dev/zero of=$store bs=1M count=256 status=none
ip netns exec $ns_s $B/target/daemon/hyperscsi-target --port afpacket:$if_s --lun 0=$store --name lab$$ \
  --control $work/target.sock --log-level warn >>$work/target.log 2>&1 &
hs_pid=$!
sleep 0.5
lib() {  # w bs qd
  local line
  for _ in 1 2 3; do
    line=$(ip netns exec $ns_c $B/bench/hyperscsi-bench --transport hyperscsi --port afpacket:$if_c --target lab$$ --lun 0 \
      --workload $1 --bs $2 --qd $3 --time $SECS --quiet --json --mtu $MTU --shaped no 2>/dev/null) && break
    sleep 0.5
  done
  echo "LIB $1 $2 qd$3: $(jq -r '"\(.iops|floor) IOPS \(.mb_s|floor) MB/s p50 \(.lat_p50_us) us"' <<<"$line")"
}
attach() {  # extra attach args
  mkdir -p $work/fuse
  local out
  out=$(nsenter --net=/run/netns/$ns_c ${ATTACH:-$B/initiator/hyperscsi-attach} attach --port afpacket:$if_c --target lab$$ --lun 0 \
        --fuse $work/fuse --loop "$@") || { echo "attach failed: $out"; return 1; }
  attached=1
  loop_dev=$(grep -o '/dev/loop[0-9]*' <<<"$out" | head -n1)
  attach_pid=$(awk -F= '$1 == "pid" {print $2}' $HYPERSCSI_RUN_DIR/*.state | head -n1)
  echo "attached $loop_dev pid $attach_pid ($*)"
}
detach() {
  $B/initiator/hyperscsi-attach detach $work/fuse >/dev/null 2>&1 || fusermount3 -u -z $work/fuse
  attached=
}
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' /proc/$1/stat 2>/dev/null || echo 0; }
fio_dev() {  # label w bs qd [fio args...]
  local label=$1 w=$2 bs=$3 qd=$4; shift 4
  local c0 c1
  c0=$(cpu ${attach_pid:-$nbdkit_pid})
  fio --name=x --output-format=json --rw=$w --bs=$bs --iodepth=$qd --time_based --runtime=$SECS \
    --lat_percentiles=1 --clat_percentiles=0 --randrepeat=0 --norandommap --numjobs=1 "$@" >$work/fio.json 2>$work/fio.err \
    || { echo "$label fio failed: $(tail -c 300 $work/fio.err)"; return; }
  c1=$(cpu ${attach_pid:-$nbdkit_pid})
  echo "$label $w $bs qd$qd: $(sed -n '/^{/,$p' $work/fio.json | jq -r --argjson c "$(awk -v a=$c0 -v b=$c1 'BEGIN{print b-a}')" '.jobs as $js | ([$js[] | .read.iops + .write.iops] | add | floor) as $i
     | ([$js[] | .read.bw_bytes + .write.bw_bytes] | add / 1e6 | floor) as $m
     | ($js[0] | if .read.io_bytes > 0 then .read else .write end) as $d
     | "\($i) IOPS \($m) MB/s p50 \($d.lat_ns.percentile["50.000000"]/1000) us  server cpu \($c)s usr+sys fio \($js[0].usr_cpu+$js[0].sys_cpu)%"')"
}
loopfio() { fio_dev "LOOP$LBL" "$@" --filename=$loop_dev --ioengine=io_uring --direct=1; }
start_nbd() {  # nbdkit args...
  rm -f $work/nbd.sock
  nsenter --net=/run/netns/$ns_c nbdkit -f --unix $work/nbd.sock "$@" $B/initiator/nbdkit-hyperscsi-plugin.so \
    port=afpacket:$if_c target=lab$$ lun=0 >$work/nbdkit.log 2>&1 &
  nbdkit_pid=$!
  for _ in $(seq 100); do nbdinfo --size "nbd+unix:///?socket=$work/nbd.sock" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "nbdkit did not serve"; cat $work/nbdkit.log
}
stop_nbd() { kill -TERM $nbdkit_pid; wait $nbdkit_pid 2>/dev/null; nbdkit_pid=; }
nbdfio() { fio_dev "NBD$LBL" "$@" --ioengine=nbd --uri="nbd+unix:///?socket=$work/nbd.sock"; }
LBL=
source "$1"

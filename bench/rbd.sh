#!/usr/bin/env bash
# An rbd: LUN beside a file LUN, on one machine: a one-host Ceph cluster
# (tests/ceph/cluster.sh: one monitor, one memstore OSD, in a namespace of
# its own), the real hyperscsi-target in a "server" namespace attached to it,
# exporting LUN 0 = an RBD image and LUN 1 = a file of the same size on tmpfs
# (both in RAM, so the difference is Ceph's path, not a disk), and
# hyperscsi-bench in a "client" namespace over a veth pair. Both LUNs get one
# unmeasured write pass first (so reads hit written objects, not librbd's
# "object does not exist" shortcut). Cells: 4 KiB random reads and writes and
# 128 KiB sequential reads and writes, all at QD 32, SECS seconds each, RUNS
# runs interleaved (run 1 of every cell and LUN, then run 2...). For context,
# `rbd bench` on the same image from the server namespace (librbd alone, 32
# threads) runs the same cells once per run.
# Prints a Markdown table of medians with the rbd/file ratios and writes every
# record to OUT/rbd.jsonl. Removes the cluster, namespaces and files it made.
#
# Usage: bench/rbd.sh [--mtu 1500|9000] [--secs N] [--runs N] [--size SIZE]
#                     [--out DIR] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mtu=9000
secs=5
runs=3
size=1G
out=$PWD/rbd-results
build=${BUILD_DIR:-$here/build}
while (($#)); do
  case $1 in
    --mtu) mtu=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//' >&2; exit 2 ;;
    *) echo "rbd: unknown option $1" >&2; exit 2 ;;
  esac
done
die() { echo "rbd: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (namespaces)"
command -v jq >/dev/null || die "jq is not installed"
cluster_sh=$here/tests/ceph/cluster.sh
reason=$(bash "$cluster_sh" check) || die "$reason"
bench=$build/bench/hyperscsi-bench
target_bin=$build/target/daemon/hyperscsi-target
for b in "$bench" "$target_bin" "$build/store-modules/hyperscsi-store-rbd.so"; do
  [[ -e $b ]] || die "$b is not built (--build DIR)"
done
bytes=$(numfmt --from=iec "${size%B}") || die "bad --size $size"

tag=hsrbd$$
ns_s=${tag}s
ns_c=${tag}c
if_s=${tag}vs
if_c=${tag}vc
work=$(mktemp -d /tmp/hyperscsi-rbd-bench.XXXXXX)
shm=$(mktemp -d /dev/shm/hyperscsi-rbd-bench.XXXXXX)
cluster=$work/cluster
hs_pid=
cleanup() {
  set +e
  [[ -n $hs_pid ]] && { kill -TERM "$hs_pid" 2>/dev/null; wait "$hs_pid" 2>/dev/null; }
  ip netns del "$ns_s" 2>/dev/null
  ip netns del "$ns_c" 2>/dev/null
  bash "$cluster_sh" down "$cluster" >/dev/null 2>&1
  rm -rf "$work" "$shm"
}
trap cleanup EXIT

echo "rbd: starting the cluster" >&2
bash "$cluster_sh" up "$cluster" >"$work/cluster.log" 2>&1 || die "cluster.sh up failed: $(tail -5 "$work/cluster.log")"
# shellcheck disable=SC1091
source "$cluster/env"
in_ceph() { ip netns exec "$CEPH_NETNS" "$@"; }
image=bench$$
in_ceph rbd -c "$CEPH_CONF" create --size "$bytes"B "$CEPH_POOL/$image"

ip netns add "$ns_s"
ip netns add "$ns_c"
ip link add "$if_s" mtu "$mtu" type veth peer name "$if_c" mtu "$mtu"
ip link set "$if_s" netns "$ns_s"
ip link set "$if_c" netns "$ns_c"
for ns in "$ns_s" "$ns_c"; do ip -n "$ns" link set lo up; done
ip -n "$ns_s" link set "$if_s" up
ip -n "$ns_c" link set "$if_c" up
bash "$cluster_sh" attach "$cluster" "$ns_s" >/dev/null

truncate -s "$bytes" "$shm/lun1.img"
cat >"$work/target.toml" <<TOML
[target]
name = "rbd$$"
ports = ["afpacket:$if_s"]
control = "$work/target.sock"
[ceph]
conf = "$CEPH_CONF"
id = "$CEPH_CLIENT_ID"
keyring = "$CEPH_CLIENT_KEYRING"
[[lun]]
number = 0
store = "rbd:$CEPH_POOL/$image"
[[lun]]
number = 1
store = "$shm/lun1.img"
TOML
ip netns exec "$ns_s" "$target_bin" --config "$work/target.toml" >"$work/target.log" 2>&1 &
hs_pid=$!

mkdir -p "$out"
results=$out/rbd.jsonl
: >"$results"
bench_run() {  # lun workload [extra bench args...]: prints the JSON record
  local lun=$1 w=$2 line=
  shift 2
  for _ in 1 2 3 4 5 6 7 8 9 10; do  # the first run may race the daemon starting
    if line=$(ip netns exec "$ns_c" "$bench" --transport hyperscsi --port "afpacket:$if_c" \
              --target "rbd$$" --lun "$lun" --target-pid "$hs_pid" --workload "$w" --quiet \
              --json --mtu "$mtu" --shaped "lun$lun" "$@" 2>"$work/err"); then
      echo "$line"
      return 0
    fi
    kill -0 "$hs_pid" 2>/dev/null || die "the target exited: $(cat "$work/target.log")"
    sleep 0.5
  done
  echo "rbd: lun $lun $w failed: $(cat "$work/err")" >&2
  return 1
}
# librbd alone: rbd bench in the server namespace; prints the same JSON fields we use.
rbd_bench_run() {  # workload bs
  local w=$1 bs=$2 type pattern total line
  case $w in
    randread) type=read pattern=rand total=$((bytes / 8)) ;;
    randwrite) type=write pattern=rand total=$((bytes / 8)) ;;
    read) type=read pattern=seq total=$bytes ;;
    write) type=write pattern=seq total=$bytes ;;
  esac
  line=$(ip netns exec "$ns_s" rbd -c "$CEPH_CONF" --id "$CEPH_CLIENT_ID" \
         --keyring "$CEPH_CLIENT_KEYRING" bench --io-type "$type" --io-pattern "$pattern" \
         --io-size "$(numfmt --from=iec "${bs^^}")" --io-threads 32 --io-total "$total" "$CEPH_POOL/$image" 2>&1 | grep '^elapsed:') ||
    { echo "rbd: rbd bench $w $bs failed" >&2; return 1; }
  # elapsed: 3   ops: 32768   ops/sec: 10123.4   bytes/sec: 39 MiB/s
  jq -cn --arg w "$w" --arg bs "$bs" --arg l "$line" '
    ($l | capture("elapsed: *(?<e>[0-9.]+) +ops: *(?<o>[0-9]+) +ops/sec: *(?<i>[0-9.]+)")) as $m
    | {transport: "rbd-bench", workload: $w, bs: ($bs | sub("k$"; "") | tonumber * 1024),
       qd: 32, shaped: "rbd-bench", iops: ($m.i | tonumber),
       mb_s: (($m.i | tonumber) * ($bs | sub("k$"; "") | tonumber * 1024) / 1e6),
       lat_p50_us: null, lat_p99_us: null, cpu_s_per_gib_target: null}'
}

echo "rbd: unmeasured write pass over both LUNs" >&2
for lun in 0 1; do
  bench_run "$lun" write --bs 1M --qd 8 --bytes "$bytes" >/dev/null || exit 1
done
cells=("randread 4k" "randwrite 4k" "read 128k" "write 128k")
for ((rep = 1; rep <= runs; rep++)); do
  for cell in "${cells[@]}"; do
    read -r w bs <<<"$cell"
    for lun in 0 1; do
      line=$(bench_run "$lun" "$w" --bs "$bs" --qd 32 --time "$secs") || exit 1
      echo "$line" >>"$results"
      echo "rbd: run $rep $w $bs lun $lun: $(jq -r '"\(.iops|floor) IOPS \(.mb_s|floor) MB/s"' <<<"$line")" >&2
    done
    line=$(rbd_bench_run "$w" "$bs") || exit 1
    echo "$line" >>"$results"
    echo "rbd: run $rep $w $bs rbd bench: $(jq -r '"\(.iops|floor) IOPS"' <<<"$line")" >&2
  done
done

echo "| cell (QD 32) | LUN | IOPS | MB/s | p50 µs | p99 µs | target CPU s/GiB | rbd / file |"
echo "|---|---|---|---|---|---|---|---|"
jq -s -r '
  def median: map(select(. != null)) | sort | if length == 0 then null else .[(length / 2 | floor)] end;
  def r(n): if . == null then "-" else (. * n | round / n | tostring) end;
  def lname: {"lun0": "rbd: (HyperSCSI)", "lun1": "file on tmpfs (HyperSCSI)", "rbd-bench": "rbd bench (librbd alone)"}[.];
  map(. + {shaped: (.labels.shaped // .shaped)})
  | group_by([.workload, .bs])
  | sort_by({"randread":0,"randwrite":1,"read":2,"write":3}[.[0].workload])
  | .[]
  | (map(select(.shaped == "lun1")) | map(.iops) | median) as $file
  | group_by(.shaped) | sort_by({"lun0":0,"lun1":1,"rbd-bench":2}[.[0].shaped]) | .[]
  | (map(.iops) | median) as $iops
  | "| \(.[0].workload) \(.[0].bs / 1024 | floor)k | \(.[0].shaped | lname) | \($iops | floor) | \(map(.mb_s) | median | r(1)) | \(map(.lat_p50_us) | median | r(1)) | \(map(.lat_p99_us) | median | r(1)) | \(map(.cpu_s_per_gib_target) | median | r(100)) | \(if .[0].shaped == "lun1" then "1" else ($iops / $file | r(100)) end) |"
' "$results"
grep -q "established" "$work/target.log" || echo "rbd: warning: no session in the target log" >&2

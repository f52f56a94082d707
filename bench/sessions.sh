#!/usr/bin/env bash
# Several sessions on one client interface (issue 14). The real
# hyperscsi-target in one namespace serves 16 RAM LUNs; in the other,
# hyperscsi-bench measures LUN 0 alone, then with 3 and with 15 idle sessions
# beside it on the same interface (nbdkit exports of LUNs 1..15 through the
# plugin, each its own process and socket). Cells: 4 KiB random read QD32,
# 128 KiB sequential read QD32, 4 KiB random read QD1; SECS seconds each,
# RUNS repetitions interleaved across the idle counts, medians and ratios to
# "alone" printed as Markdown. Then the idle cost: IDLE idle nbdkit exports
# and one idle hyperscsi-attach (FUSE, no loop device) and nothing else for
# IDLE_SECS seconds: CPU ticks and wake-ups (voluntary context switches, all
# threads) of the target and of each kind of client process, and frames on
# the wire. Every record goes to
# OUT/sessions.jsonl. Removes the namespaces, daemons and files it made.
#
# --idle-args "K=V ..." appends plugin parameters to every idle nbdkit export
# (e.g. "rx_pause_ms=0": idle sessions never pause receiving). After idle
# sessions come up the script waits SETTLE seconds (default 3: the initiator
# pauses an idle session's reception after 2 s without commands).
#
# Usage: bench/sessions.sh [--mtu 1500|9000] [--secs N] [--runs N] [--idle N]
#                          [--idle-secs N] [--idle-args "K=V ..."] [--settle S]
#                          [--out DIR] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mtu=1500
secs=3
runs=3
idle_n=4
idle_secs=10
idle_args=
settle=3
out=$PWD/sessions-results
build=${BUILD_DIR:-$here/build}
while (($#)); do
  case $1 in
    --mtu) mtu=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --idle) idle_n=$2; shift 2 ;;
    --idle-secs) idle_secs=$2; shift 2 ;;
    --idle-args) idle_args=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "sessions: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "sessions: needs root (namespaces)" >&2; exit 1; }
for c in jq nbdkit; do
  command -v $c >/dev/null || { echo "sessions: $c is not installed" >&2; exit 1; }
done
bench=$build/bench/hyperscsi-bench
target_bin=$build/target/daemon/hyperscsi-target
plugin=$build/initiator/nbdkit-hyperscsi-plugin.so
for b in "$bench" "$target_bin" "$plugin"; do
  [[ -e $b ]] || { echo "sessions: $b is not built (--build DIR)" >&2; exit 1; }
done

tag=hsses$$
ns_s=${tag}s
ns_c=${tag}c
if_s=${tag}vs
if_c=${tag}vc
name=sess$$
work=$(mktemp -d /tmp/hyperscsi-sessions.XXXXXX)
hs_pid=
attach_pid=
declare -A idle_pids=()
stop_idle() {  # stops every idle session
  local p
  for p in "${idle_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${idle_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  idle_pids=()
}
cleanup() {
  set +e
  stop_idle
  [[ -n $attach_pid ]] && { kill -TERM "$attach_pid" 2>/dev/null; wait "$attach_pid" 2>/dev/null; }
  [[ -n $hs_pid ]] && { kill -TERM "$hs_pid" 2>/dev/null; wait "$hs_pid" 2>/dev/null; }
  ip netns del "$ns_s" 2>/dev/null
  ip netns del "$ns_c" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns_s"
ip netns add "$ns_c"
ip link add "$if_s" mtu "$mtu" type veth peer name "$if_c" mtu "$mtu"
ip link set "$if_s" netns "$ns_s"
ip link set "$if_c" netns "$ns_c"
for ns in "$ns_s" "$ns_c"; do ip -n "$ns" link set lo up; done
ip -n "$ns_s" link set "$if_s" up
ip -n "$ns_c" link set "$if_c" up

{
  printf '[target]\nname = "%s"\nports = ["afpacket:%s"]\ncontrol = "%s"\n' \
    "$name" "$if_s" "$work/target.sock"
  printf '[[lun]]\nnumber = 0\nstore = "ram"\nsize = "1G"\n'
  for l in $(seq 1 15); do printf '[[lun]]\nnumber = %d\nstore = "ram"\nsize = "64M"\n' "$l"; done
} >"$work/target.toml"
ip netns exec "$ns_s" "$target_bin" --config "$work/target.toml" >"$work/target.log" 2>&1 &
hs_pid=$!
established() { grep -c "established" "$work/target.log" || true; }

# Idle session on LUN $1: an nbdkit export nobody connects to (the plugin
# logs in when nbdkit starts).
start_idle() {
  local l=$1
  rm -f "$work/nbd$l.sock"  # nbdkit leaves it behind when stopped
  ip netns exec "$ns_c" nbdkit --foreground --unix "$work/nbd$l.sock" "$plugin" \
    port="afpacket:$if_c" target="$name" lun="$l" $idle_args >"$work/nbdkit$l.log" 2>&1 &
  idle_pids[$l]=$!
}
# Starts idle sessions on LUNs $1..$2 and waits until the target saw them log in.
idle_up() {
  local from=$1 to=$2 before l
  ((to >= from)) || return 0
  before=$(established)
  for l in $(seq "$from" "$to"); do start_idle "$l"; done
  for _ in $(seq 1 100); do
    if (($(established) >= before + to - from + 1)); then
      sleep "$settle"
      return 0
    fi
    sleep 0.1
  done
  echo "sessions: idle sessions $from..$to did not log in" >&2
  tail -n 5 "$work"/nbdkit*.log >&2
  return 1
}

mkdir -p "$out"
results=$out/sessions.jsonl
: >"$results"
bench_run() {  # workload bs qd [extra...]: prints the JSON record
  local w=$1 bs=$2 qd=$3 line=
  shift 3
  for _ in 1 2 3 4 5; do  # the first run may race the daemon starting
    if line=$(ip netns exec "$ns_c" "$bench" --transport hyperscsi --port "afpacket:$if_c" \
              --target "$name" --lun 0 --target-pid "$hs_pid" --workload "$w" --bs "$bs" \
              --qd "$qd" --quiet --json --mtu "$mtu" "$@" 2>"$work/err"); then
      echo "$line"
      return 0
    fi
    sleep 0.5
  done
  echo "sessions: $w $bs QD$qd failed: $(cat "$work/err")" >&2
  return 1
}
# Unmeasured: one pass of writes over LUN 0, so no cell pays the RAM store's first touch.
bench_run write 1M 8 --bytes 1G >/dev/null

cells=("randread 4k 32" "read 128k 32" "randread 4k 1")
for rep in $(seq 1 "$runs"); do
  stop_idle
  for idle in 0 3 15; do
    idle_up $((${#idle_pids[@]} + 1)) "$idle"
    for cell in "${cells[@]}"; do
      read -r w bs qd <<<"$cell"
      line=$(bench_run "$w" "$bs" "$qd" --time "$secs" --shaped "idle$idle")
      jq -c --argjson idle "$idle" --argjson run "$rep" '. + {idle: $idle, run: $run}' \
        <<<"$line" >>"$results"
      echo "sessions: run $rep idle $idle $w $bs QD$qd: $(jq -r \
        '"\(.iops|floor) IOPS \(.mb_s|floor) MB/s p50 \(.lat_p50_us) us foreign \(.client_foreign_frames)"' \
        <<<"$line")" >&2
    done
  done
done
stop_idle

echo "| idle sessions beside it | 4 KiB randread QD32 IOPS | 128 KiB read QD32 MB/s | 4 KiB randread QD1 p50 us | client CPU s/GiB (4k QD32) | foreign frames (max) |"
echo "|---|---|---|---|---|---|"
jq -s -r '
  def median: sort | .[(length / 2 | floor)];
  def cell($w; $bs; $qd): map(select(.workload == $w and .bs == $bs and .qd == $qd));
  . as $all
  | ($all | map(select(.idle == 0))) as $alone
  | ($alone | cell("randread"; 4096; 32) | map(.iops) | median) as $iops0
  | ($alone | cell("read"; 131072; 32) | map(.mb_s) | median) as $mbs0
  | ($alone | cell("randread"; 4096; 1) | map(.lat_p50_us) | median) as $p500
  | [0, 3, 15][] as $n
  | ($all | map(select(.idle == $n))) as $r
  | ($r | cell("randread"; 4096; 32) | map(.iops) | median) as $iops
  | ($r | cell("read"; 131072; 32) | map(.mb_s) | median) as $mbs
  | ($r | cell("randread"; 4096; 1) | map(.lat_p50_us) | median) as $p50
  | "| \($n) | \($iops | floor) (\($iops / $iops0 * 100 | round / 100)x) | \($mbs | floor) (\($mbs / $mbs0 * 100 | round / 100)x) | \($p50 * 10 | round / 10) (\($p50 / $p500 * 100 | round / 100)x) | \($r | cell("randread"; 4096; 32) | map(.cpu_s_per_gib_client) | median * 1000 | round / 1000) | \($r | map(.client_foreign_frames // 0) | max) |"
' "$results"

# --- idle cost ---
proc_sample() {  # pid: "ticks wakeups" (utime+stime; voluntary ctx switches of all threads)
  local pid=$1 ticks v=0 t
  ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  for t in /proc/"$pid"/task/*/status; do
    v=$((v + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$t" 2>/dev/null || echo 0)))
  done
  echo "$ticks $v"
}
if_frames() {
  ip netns exec "$ns_c" sh -c "cat /sys/class/net/$if_c/statistics/rx_packets \
    /sys/class/net/$if_c/statistics/tx_packets" | awk '{s += $1} END {print s}'
}
idle_up 1 "$idle_n"
# One idle hyperscsi-attach too (FUSE only, no loop device), when built.
attach_bin=$build/initiator/hyperscsi-attach
if [[ -x $attach_bin && -e /dev/fuse ]]; then
  mkdir -p "$work/fuse"
  before=$(established)
  ip netns exec "$ns_c" "$attach_bin" attach --port "afpacket:$if_c" --target "$name" \
    --lun $((idle_n + 1)) --fuse "$work/fuse" --foreground >"$work/attach.log" 2>&1 &
  attach_pid=$!
  for _ in $(seq 1 100); do (($(established) > before)) && break; sleep 0.1; done
fi
hz=$(getconf CLK_TCK)
declare -A t0=() w0=()
pids=(target:"$hs_pid")
for l in "${!idle_pids[@]}"; do pids+=(nbdkit:"${idle_pids[$l]}"); done
[[ -n $attach_pid ]] && pids+=(attach:"$attach_pid")
for e in "${pids[@]}"; do read -r t0[$e] w0[$e] < <(proc_sample "${e#*:}"); done
f0=$(if_frames)
sleep "$idle_secs"
f1=$(if_frames)
declare -A ticks=() wakes=() count=()
for e in "${pids[@]}"; do
  read -r t w < <(proc_sample "${e#*:}")
  k=${e%%:*}
  ticks[$k]=$((${ticks[$k]:-0} + t - t0[$e]))
  wakes[$k]=$((${wakes[$k]:-0} + w - w0[$e]))
  count[$k]=$((${count[$k]:-0} + 1))
done
if [[ -n $attach_pid ]]; then
  kill -TERM "$attach_pid" 2>/dev/null
  wait "$attach_pid" 2>/dev/null || true
  attach_pid=
  sessions=$((idle_n + 1))
else
  sessions=$idle_n
fi
echo
echo "Idle: $sessions sessions ($idle_n nbdkit exports, $((sessions - idle_n)) hyperscsi-attach) and nothing else for $idle_secs s; CPU in ticks of 1/$hz s, wake-ups = voluntary context switches of all threads:"
echo
echo "| process | count | CPU ticks (all) | wake-ups/s per process |"
echo "|---|---|---|---|"
for k in target nbdkit attach; do
  [[ -n ${count[$k]:-} ]] || continue
  awk -v k="$k" -v n="${count[$k]}" -v t="${ticks[$k]}" -v w="${wakes[$k]}" -v s="$idle_secs" \
    'BEGIN { printf "| %s | %d | %d | %.2f |\n", k, n, t, w / s / n }'
  jq -nc --arg k "$k" --argjson n "${count[$k]}" --argjson t "${ticks[$k]}" \
    --argjson w "${wakes[$k]}" --argjson s "$idle_secs" --argjson hz "$hz" \
    '{record: "idle", process: $k, count: $n, ticks: $t, clk_tck: $hz, wakeups: $w, seconds: $s}' \
    >>"$results"
done
echo
echo "Frames on the client interface while idle: $((f1 - f0)) in $idle_secs s ($sessions sessions)"
stop_idle

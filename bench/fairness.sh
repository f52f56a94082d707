#!/usr/bin/env bash
# Many initiators, one target (issue 21): N clients, each in its own network
# namespace, joined by a Linux bridge (in a "switch" namespace) to a target in
# its own namespace. hyperscsi-target (AF_PACKET) and tgtd (iSCSI) serve the
# same RAM-backed file; every client runs hyperscsi-bench at the same moment
# (--start-at) against one of them. Each run is repeated --runs times,
# interleaved across transports.
#
#   shared: the target's link shaped (tbf on both directions), every client
#           unshaped: aggregate % of payload line rate, Jain's fairness index,
#           slowest client / mean.
#   edge:   the target unshaped, each client's link shaped to its own rate
#           (--edge "1gbit 1gbit", --edge "1gbit 100mbit 100mbit" ...): each
#           client's % of its own payload line rate, retransmissions.
#
# Writes OUT/results.json (every run, every client, the target's per-session
# counters sampled during HyperSCSI runs) and OUT/report.md (medians), and
# removes every namespace, interface, process and file it made, also when it
# fails or is interrupted.
#
# Usage: bench/fairness.sh [--clients "8 32 64"] [--workloads "read write"]
#          [--transports "hyperscsi iscsi"] [--runs N] [--seconds S] [--warmup S] [--mtu 1500|9000]
#          [--bs 128k] [--qd 32] [--shared-rate 1gbit] [--edge "RATE RATE ..."]...
#          [--no-shared] [--no-edge] [--hyperscsi-args "ARGS"] [--out DIR] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
clients_list="8 32 64"
workloads="read write"
transports="hyperscsi iscsi"
runs=3
secs=5
warm=1
mtu=1500
bs=128k
qd=32
shared_rate=1gbit
edges=()
do_shared=1
do_edge=1
# 64 clients on two cores: clients sleep instead of busy-polling (as iSCSI's do).
hs_extra=(--busy-poll-us 0)
out=$PWD/fairness-results
build=${BUILD_DIR:-$here/build}
repro=bench/fairness.sh
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[$i]} in --out|--build) i=$((i + 1)) ;; *) if [[ ${args[$i]} =~ ^[A-Za-z0-9._/=-]+$ ]]; then repro+=" ${args[$i]}"; else repro+=" '${args[$i]}'"; fi ;;
  esac
done
usage() { sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
  case $1 in
    --clients) clients_list=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --transports) transports=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --warmup) warm=$2; shift 2 ;;
    --mtu) mtu=$2; shift 2 ;;
    --bs) bs=$2; shift 2 ;;
    --qd) qd=$2; shift 2 ;;
    --shared-rate) shared_rate=$2; shift 2 ;;
    --edge) edges+=("$2"); shift 2 ;;
    --no-shared) do_shared=0; shift ;;
    --no-edge) do_edge=0; shift ;;
    --hyperscsi-args) read -ra hs_extra <<<"$2"; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "fairness: unknown option $1" >&2; usage ;;
  esac
done
die() { echo "fairness: $*" >&2; exit 2; }
((${#edges[@]})) || edges=("1gbit 1gbit" "1gbit 100mbit 100mbit 100mbit")
bps() {  # 1gbit -> 1000000000
  [[ $1 =~ ^([0-9]+)(k|m|g)?bit$ ]] || die "bad rate '$1' (want e.g. 1gbit, 100mbit)"
  local m=1
  case ${BASH_REMATCH[2]} in k) m=1000 ;; m) m=1000000 ;; g) m=1000000000 ;; esac
  echo $((BASH_REMATCH[1] * m))
}
[[ $mtu == 1500 || $mtu == 9000 ]] || die "--mtu must be 1500 or 9000"
[[ $runs =~ ^[1-9]$ ]] || die "--runs must be 1..9"
[[ $secs =~ ^[1-9][0-9]?$ ]] || die "--seconds must be 1..99"
[[ $warm =~ ^[0-9]$ ]] || die "--warmup must be 0..9"
[[ $bs =~ ^[0-9]+[kM]?$ && $qd =~ ^[0-9]+$ ]] || die "bad --bs/--qd"
for n in $clients_list; do [[ $n =~ ^[1-9][0-9]?$ ]] || die "--clients: 1..99 each"; done
for w in $workloads; do [[ $w =~ ^(rand)?(read|write)$ ]] || die "--workloads: read, write, randread, randwrite"; done
for t in $transports; do [[ $t == hyperscsi || $t == iscsi ]] || die "--transports: hyperscsi, iscsi"; done
bps "$shared_rate" >/dev/null
max_clients=0
if ((do_shared)); then for n in $clients_list; do ((n > max_clients)) && max_clients=$n; done; fi
if ((do_edge)); then
  for e in "${edges[@]}"; do
    read -ra r <<<"$e"
    ((${#r[@]} >= 1 && ${#r[@]} <= 99)) || die "--edge: 1..99 rates"
    for x in "${r[@]}"; do bps "$x" >/dev/null; done
    ((${#r[@]} > max_clients)) && max_clients=${#r[@]}
  done
fi
((max_clients > 0)) || die "nothing to run (--no-shared and --no-edge)"
[[ $(id -u) -eq 0 ]] || { echo "fairness: needs root (namespaces)" >&2; exit 1; }
bench=$build/bench/hyperscsi-bench
target_bin=$build/target/daemon/hyperscsi-target
for b in "$bench" "$target_bin"; do [[ -x $b ]] || { echo "fairness: $b is not built (--build DIR)" >&2; exit 1; }; done
for c in jq tgtd tgtadm tc; do command -v $c >/dev/null || { echo "fairness: $c is not installed (scripts/setup.sh)" >&2; exit 1; }; done

tag=hsf$$
ns_t=${tag}t  # target
ns_s=${tag}s  # switch (the bridge)
ns_c() { echo "${tag}c$1"; }
ip_t=198.18.100.1
store=/dev/shm/$tag.img
control=$((1000 + $$ % 30000))
iqn=iqn.2026-01.org.hyperscsi:fair$$
name=fair$$
work=$(mktemp -d /tmp/hyperscsi-fairness.XXXXXX)
hs_pid=
tgtd_pid=
client_pids=()
made_ns=()
echo "fairness: tag $tag control $control work $work, up to $max_clients clients" >&2

kill_clients() {
  local p
  for p in "${client_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${client_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  client_pids=()
}
cleanup() {
  set +e
  kill_clients
  if [[ -n $tgtd_pid ]]; then
    tgtadm -C "$control" --op delete --mode system --force >/dev/null 2>&1
    kill -TERM "$tgtd_pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$tgtd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$tgtd_pid" 2>/dev/null
    wait "$tgtd_pid" 2>/dev/null
  fi
  if [[ -n $hs_pid ]]; then
    kill -TERM "$hs_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$hs_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$hs_pid" 2>/dev/null
    wait "$hs_pid" 2>/dev/null
  fi
  local ns
  for ns in "${made_ns[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -f "$store" "/var/run/tgtd/socket.$control" "/var/run/tgtd/socket.$control.lock"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

add_ns() {
  ip netns add "$1"
  made_ns+=("$1")
  ip -n "$1" link set lo up
  # No IPv6 chatter (router solicitations, DAD) on the measured links.
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# --- topology ----------------------------------------------------------------
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
add_ns "$ns_t"
add_ns "$ns_s"
ip -n "$ns_s" link add br0 type bridge
ip -n "$ns_s" link set br0 up
ip link add tv mtu "$mtu" netns "$ns_t" type veth peer name tp mtu "$mtu" netns "$ns_s"
ip -n "$ns_s" link set tp master br0
ip -n "$ns_s" link set tp up
ip -n "$ns_t" addr add "$ip_t/24" dev tv
ip -n "$ns_t" link set tv up
for ((i = 0; i < max_clients; i++)); do
  c=$(ns_c "$i")
  add_ns "$c"
  ip link add cv mtu "$mtu" netns "$c" type veth peer name "p$i" mtu "$mtu" netns "$ns_s"
  ip -n "$ns_s" link set "p$i" master br0
  ip -n "$ns_s" link set "p$i" up
  ip -n "$c" addr add "198.18.100.$((10 + i))/24" dev cv
  ip -n "$c" link set cv up
done
size_mib=512
dd if=/dev/zero of="$store" bs=1M count="$size_mib" status=none

ip netns exec "$ns_t" "$target_bin" --port afpacket:tv --lun "0=$store" --name "$name" \
  --control "$work/target.sock" --log-level warn >>"$work/target.log" 2>&1 &
hs_pid=$!
ip netns exec "$ns_t" tgtd -f -C "$control" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
for _ in $(seq 50); do
  tgtadm -C "$control" --lld iscsi --op new --mode target --tid 1 -T "$iqn" >/dev/null 2>&1 && break
  sleep 0.1
done
tgtadm -C "$control" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$store"
tgtadm -C "$control" --lld iscsi --op bind --mode target --tid 1 -I ALL
sleep 1

# --- shaping -----------------------------------------------------------------
# tbf counts L2 frames; the burst holds a few jumbo frames; 20 ms of queue (as bench/lab.sh).
tbf() { ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$3" burst 256kb latency 20ms; }
unshape_all() {
  ip netns exec "$ns_t" tc qdisc del dev tv root 2>/dev/null || true
  ip netns exec "$ns_s" tc qdisc del dev tp root 2>/dev/null || true
  for ((i = 0; i < max_clients; i++)); do
    ip netns exec "$(ns_c "$i")" tc qdisc del dev cv root 2>/dev/null || true
    ip netns exec "$ns_s" tc qdisc del dev "p$i" root 2>/dev/null || true
  done
}
shaped_devs=()  # "NS DEV" pairs whose tbf drops are counted
shape_shared() {
  unshape_all
  tbf "$ns_t" tv "$shared_rate"
  tbf "$ns_s" tp "$shared_rate"
  shaped_devs=("$ns_t tv" "$ns_s tp")
}
shape_edge() {  # rates...
  unshape_all
  shaped_devs=()
  local i=0 r
  for r in "$@"; do
    tbf "$(ns_c "$i")" cv "$r"
    tbf "$ns_s" "p$i" "$r"
    shaped_devs+=("$(ns_c "$i") cv" "$ns_s p$i")
    i=$((i + 1))
  done
}
tbf_drops() {
  local sum=0 d nd
  for nd in "${shaped_devs[@]}"; do
    read -r ns dev <<<"$nd"
    d=$(ip netns exec "$ns" tc -s -j qdisc show dev "$dev" | jq '[.[] | select(.kind == "tbf") | .drops] | add // 0')
    sum=$((sum + d))
  done
  echo "$sum"
}
proc_cpu() {  # pid -> utime+stime in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
busy_ticks() {  # all CPUs: "busy total" in clock ticks
  awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
tcp_retrans() {  # namespace -> TCP segments retransmitted so far
  ip netns exec "$1" awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) col[$i] = i; h = 1 } else print $col["RetransSegs"] }' /proc/net/snmp
}

# --- one run -----------------------------------------------------------------
results=$work/results.jsonl
: >"$results"
# run_once SCENARIO TRANSPORT WORKLOAD RUN RATE... (one rate per client; its length is N)
run_once() {
  local scenario=$1 t=$2 w=$3 r=$4
  shift 4
  local rates=("$@") n=$#
  local lead=$((2 + n / 16))
  local start_at
  start_at=$(date +%s.%N | awk -v l="$lead" '{ printf "%.3f", $1 + l }')
  local drops0 tcp0_t=0 tcp0_c=0 i c
  drops0=$(tbf_drops)
  if [[ $t == iscsi ]]; then
    tcp0_t=$(tcp_retrans "$ns_t")
    for ((i = 0; i < n; i++)); do tcp0_c=$((tcp0_c + $(tcp_retrans "$(ns_c "$i")"))); done
  fi
  rm -f "$work"/c.*.json "$work"/c.*.err "$work/stats.jsonl"
  local server_pid=$hs_pid
  [[ $t == iscsi ]] && server_pid=$tgtd_pid
  local cpu0 busy0 total0
  cpu0=$(proc_cpu "$server_pid")
  read -r busy0 total0 < <(busy_ticks)
  for ((i = 0; i < n; i++)); do
    c=$(ns_c "$i")
    local cmd=("$bench")
    if [[ $t == hyperscsi ]]; then
      cmd+=(--transport hyperscsi --port afpacket:cv --target "$name" --lun 0 "${hs_extra[@]}")
    else
      cmd+=(--transport iscsi --url "iscsi://$ip_t/$iqn/1")
    fi
    timeout -k 5 $((lead + warm + secs + 40)) ip netns exec "$c" "${cmd[@]}" --workload "$w" \
      --bs "$bs" --qd "$qd" --time $((warm + secs)) --warmup "$warm" --start-at "$start_at" \
      --quiet --json --mtu "$mtu" \
      --shaped "$scenario" >"$work/c.$i.json" 2>"$work/c.$i.err" &
    client_pids+=($!)
  done
  # The target's per-session counters once a second during the run (sessions
  # end with their clients, so the last sample is taken just before the end).
  if [[ $t == hyperscsi ]]; then
    local k now total=$((warm + secs))
    for ((k = 1; k <= total; k++)); do
      now=$(date +%s.%N)
      local due
      due=$(awk -v s="$start_at" -v k="$k" -v n="$now" -v e="$total" 'BEGIN { t = s + (k < e ? k : e - 0.3) - n; print (t > 0 ? t : 0) }')
      sleep "$due"
      "$target_bin" stats --control "$work/target.sock" --json 2>/dev/null |
        jq -c --argjson k "$k" '{second: $k, sessions: [.sessions[] | {mac, bytes_in, bytes_out,
            frames_sent, retransmissions, fast_retransmits, timeouts, spurious_timeouts, srtt_us,
            rttvar_us, rto_us, cwnd, ssthresh, peer_window, duplicates_received, out_of_window}]}' \
        >>"$work/stats.jsonl" 2>/dev/null || true
    done
  fi
  local p failed=0
  for p in "${client_pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
  client_pids=()
  local drops tcp_t=0 tcp_c=0 cpu1 busy1 total1
  cpu1=$(proc_cpu "$server_pid")
  read -r busy1 total1 < <(busy_ticks)
  local hz
  hz=$(getconf CLK_TCK)
  local server_cpu machine_busy
  server_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
  machine_busy=$(awk -v a="$busy0" -v b="$busy1" -v c="$total0" -v d="$total1" 'BEGIN { printf "%.3f", (d > c) ? (b - a) / (d - c) : 0 }')
  drops=$(($(tbf_drops) - drops0))
  if [[ $t == iscsi ]]; then
    tcp_t=$(($(tcp_retrans "$ns_t") - tcp0_t))
    for ((i = 0; i < n; i++)); do tcp_c=$((tcp_c + $(tcp_retrans "$(ns_c "$i")"))); done
    tcp_c=$((tcp_c - tcp0_c))
  fi
  # Per client: its record (or a failure), its rate and payload line rate.
  local per=$work/per.jsonl
  : >"$per"
  for ((i = 0; i < n; i++)); do
    local line_bps payload
    line_bps=$(bps "${rates[$i]}")
    if [[ $t == hyperscsi ]]; then payload=$((mtu - 40)); else payload=$((mtu - 52)); fi
    local line_mb
    line_mb=$(awk -v b="$line_bps" -v p="$payload" -v m="$mtu" 'BEGIN { printf "%.4f", b / 8 * p / (m + 14) / 1e6 }')
    if jq -e . "$work/c.$i.json" >/dev/null 2>&1 && [[ -s $work/c.$i.json ]]; then
      jq -c --argjson i "$i" --arg rate "${rates[$i]}" --argjson line "$line_mb" \
        '{client: $i, rate: $rate, line_mb_s: $line, ok: true, mb_s: (.mb_s_in_time // .mb_s), mb_s_all: .mb_s, seconds, errors,
          start_late_s: (.start_late_s // 0), retransmits: .client_retransmits,
          timeouts: .client_timeouts, spurious: .client_spurious_timeouts}' "$work/c.$i.json" >>"$per"
    else
      jq -n -c --argjson i "$i" --arg rate "${rates[$i]}" --argjson line "$line_mb" \
        --arg err "$(tail -c 300 "$work/c.$i.err" 2>/dev/null)" \
        '{client: $i, rate: $rate, line_mb_s: $line, ok: false, mb_s: 0, error: $err}' >>"$per"
      echo "fairness: client $i failed: $(tail -c 300 "$work/c.$i.err" 2>/dev/null)" >&2
    fi
  done
  local stats='[]'
  [[ -s $work/stats.jsonl ]] && stats=$(jq -s -c . "$work/stats.jsonl")
  jq -s -c --arg scenario "$scenario" --arg t "$t" --arg w "$w" --argjson r "$r" --argjson n "$n" \
    --argjson drops "$drops" --argjson tcp_t "$tcp_t" --argjson tcp_c "$tcp_c" \
    --argjson failed "$failed" --argjson stats "$stats" --arg shared "$shared_rate" \
    --argjson server_cpu "$server_cpu" --argjson busy "$machine_busy" '
    (map(.mb_s)) as $x | ($x | add) as $sum | ($sum / $n) as $mean
    | {record: "run", scenario: $scenario, transport: $t, workload: $w, run: $r, clients: $n,
       shared_rate: (if $scenario == "shared" then $shared else null end),
       aggregate_mb_s: $sum,
       line_mb_s: (if $scenario == "shared" then .[0].line_mb_s else (map(.line_mb_s) | add) end),
       jain: (if ($x | map(. * .) | add) > 0 then $sum * $sum / ($n * ($x | map(. * .) | add)) else 0 end),
       slowest_over_mean: (if $mean > 0 then ($x | min) / $mean else 0 end),
       min_pct_of_own_line: (map(.mb_s / .line_mb_s * 100) | min),
       max_start_late_s: (map(.start_late_s // 0) | max),
       clients_failed: ($failed + (map(select(.ok | not)) | length)),
       tbf_drops: $drops,
       server_cpu_s: $server_cpu, machine_busy: $busy,
       client_retransmits: (map(.retransmits // 0) | add),
       client_timeouts: (map(.timeouts // 0) | add),
       target_retransmits: (if $t == "hyperscsi" and ($stats | length) > 0
                            then ($stats[-1].sessions | map(.retransmissions) | add) else null end),
       target_timeouts: (if $t == "hyperscsi" and ($stats | length) > 0
                         then ($stats[-1].sessions | map(.timeouts) | add) else null end),
       tcp_retrans_target: (if $t == "iscsi" then $tcp_t else null end),
       tcp_retrans_clients: (if $t == "iscsi" then $tcp_c else null end),
       per_client: ., target_stats: $stats}
    | .pct_of_line = (.aggregate_mb_s / .line_mb_s * 100)' "$per" >>"$results"
  jq -r 'select(.record == "run") | "fairness: \(.scenario) \(.transport) \(.workload) N=\(.clients) run \(.run): \(.aggregate_mb_s * 10 | round / 10) MB/s (\(.pct_of_line * 10 | round / 10)% of line), Jain \(.jain * 1000 | round / 1000), slowest/mean \(.slowest_over_mean * 100 | round / 100), min % own line \(.min_pct_of_own_line | round), late \(.max_start_late_s * 100 | round / 100) s, server CPU \(.server_cpu_s) s, machine busy \(.machine_busy * 100 | round)%, drops \(.tbf_drops), failed \(.clients_failed)"' \
    <(tail -n 1 "$results") >&2
  sleep 1  # sessions close, sockets drain
}

if ((do_shared)); then
  shape_shared
  for n in $clients_list; do
    for w in $workloads; do
      rates=()
      for ((i = 0; i < n; i++)); do rates+=("$shared_rate"); done
      for r in $(seq "$runs"); do
        for t in $transports; do run_once shared "$t" "$w" "$r" "${rates[@]}"; done
      done
    done
  done
fi
if ((do_edge)); then
  for e in "${edges[@]}"; do
    read -ra rates <<<"$e"
    shape_edge "${rates[@]}"
    for w in $workloads; do
      for r in $(seq "$runs"); do
        for t in $transports; do run_once edge "$t" "$w" "$r" "${rates[@]}"; done
      done
    done
  done
fi

# --- results and report --------------------------------------------------------
mkdir -p "$out"
jq -s . "$results" >"$out/results.json"
cp "$work/target.log" "$out/target.log" 2>/dev/null || true
jq '
  def median: sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def med(f): map(f | select(. != null)) | median;
  map(select(.record == "run"))
  | group_by([.scenario, (.per_client | map(.rate) | join(" ")), .workload, .transport])
  | map({scenario: .[0].scenario, rates: (.[0].per_client | map(.rate)), workload: .[0].workload,
         transport: .[0].transport, clients: .[0].clients, runs: length,
         aggregate_mb_s: med(.aggregate_mb_s), line_mb_s: .[0].line_mb_s,
         pct_of_line: med(.pct_of_line), jain: med(.jain), slowest_over_mean: med(.slowest_over_mean),
         min_pct_of_own_line: med(.min_pct_of_own_line), tbf_drops: med(.tbf_drops),
         client_retransmits: med(.client_retransmits), client_timeouts: med(.client_timeouts),
         target_retransmits: med(.target_retransmits), target_timeouts: med(.target_timeouts),
         tcp_retrans_target: med(.tcp_retrans_target), tcp_retrans_clients: med(.tcp_retrans_clients),
         max_start_late_s: (map(.max_start_late_s) | max), clients_failed: (map(.clients_failed) | add),
         per_client_pct: (if .[0].scenario == "edge" then
           [range(0; .[0].clients) as $i | map(.per_client[$i].mb_s / .per_client[$i].line_mb_s * 100) | median] else null end)})' \
  "$out/results.json" >"$work/medians.json"
{
  echo "# Fairness: many initiators, one target"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo "Machine: $(nproc) CPUs, kernel $(uname -r). Load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Clients in their own namespaces on a bridge, the target in its own; MTU $mtu; $bs QD$qd. All clients of a"
  echo "run start together (--start-at) and run ${warm} s of warm-up plus ${secs} s; a client's MB/s is the bytes of its I/Os"
  echo "completed within those ${secs} s (mb_s_in_time). $runs runs per cell, interleaved across transports; figures"
  echo "are medians over the runs. HyperSCSI clients: ${hs_extra[*]}."
  echo "Payload line rate: HyperSCSI carries MTU-40 bytes per MTU+14-byte frame, iSCSI (TCP with timestamps) MTU-52."
  echo
  if ((do_shared)); then
    echo "## Target link shaped to $shared_rate (tbf both directions)"
    echo
    echo "| clients | workload | transport | aggregate MB/s | % of payload line rate | Jain's index | slowest / mean | tbf drops | retransmissions (client / target) | timeouts (client / target) | failed | runs |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    jq -r '
      def f(d): if . == null then "-" else (. * d | round / d | tostring) end;
      map(select(.scenario == "shared")) | sort_by(.clients, .workload, .transport)[]
      | "| \(.clients) | \(.workload) | \(.transport) | \(.aggregate_mb_s | f(10)) | \(.pct_of_line | f(10))% | \(.jain | f(1000)) | \(.slowest_over_mean | f(100)) | \(.tbf_drops | f(1)) | \(if .transport == "iscsi" then "\(.tcp_retrans_clients | f(1)) / \(.tcp_retrans_target | f(1)) (TCP)" else "\(.client_retransmits | f(1)) / \(.target_retransmits | f(1))" end) | \(if .transport == "iscsi" then "-" else "\(.client_timeouts | f(1)) / \(.target_timeouts | f(1))" end) | \(.clients_failed) | \(.runs) |"' \
      "$work/medians.json"
    echo
    echo "Goals (issue 21): aggregate >= 97% of payload line rate, Jain's index >= 0.97 and >= iSCSI's, slowest >= 0.5x the mean."
    echo
    echo "| clients | workload | HyperSCSI % line | Jain HyperSCSI / iSCSI | slowest / mean | met |"
    echo "|---:|---|---:|---:|---:|---|"
    jq -r '
      def f(d): if . == null then "-" else (. * d | round / d | tostring) end;
      map(select(.scenario == "shared")) | group_by([.clients, .workload])[]
      | (map(select(.transport == "hyperscsi"))[0]) as $h | (map(select(.transport == "iscsi"))[0]) as $i
      | select($h != null)
      | ($h.pct_of_line >= 97 and $h.jain >= 0.97 and ($i == null or $h.jain >= $i.jain) and $h.slowest_over_mean >= 0.5) as $met
      | "| \($h.clients) | \($h.workload) | \($h.pct_of_line | f(10))% | \($h.jain | f(1000)) / \(if $i then ($i.jain | f(1000)) else "-" end) | \($h.slowest_over_mean | f(100)) | \(if $met then "yes" else "**no**" end) |"' \
      "$work/medians.json"
    echo
  fi
  if ((do_edge)); then
    echo "## Target unshaped, each client link shaped to its own rate"
    echo
    echo "| client rates | workload | transport | aggregate MB/s | each client, % of its own payload line rate | lowest | tbf drops | retransmissions (client / target) | failed | runs |"
    echo "|---|---|---|---:|---|---:|---:|---:|---:|---:|"
    jq -r '
      def f(d): if . == null then "-" else (. * d | round / d | tostring) end;
      map(select(.scenario == "edge"))[]
      | "| \(.rates | join(" ")) | \(.workload) | \(.transport) | \(.aggregate_mb_s | f(10)) | \(.per_client_pct | map(f(10)) | join(", ")) | \(.min_pct_of_own_line | f(10))% | \(.tbf_drops | f(1)) | \(if .transport == "iscsi" then "\(.tcp_retrans_clients | f(1)) / \(.tcp_retrans_target | f(1)) (TCP)" else "\(.client_retransmits | f(1)) / \(.target_retransmits | f(1))" end) | \(.clients_failed) | \(.runs) |"' \
      "$work/medians.json"
    echo
  fi
  echo "Reproduce (as root, after \`scripts/build.sh build\`): \`$repro --out DIR\`"
} >"$out/report.md"
echo "fairness: wrote $out/results.json and $out/report.md" >&2

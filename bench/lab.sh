#!/usr/bin/env bash
# The two-host lab: namespaces "server" and "client" joined by a veth pair,
# hyperscsi-target and tgtd (iSCSI) in the server on the same RAM-backed file,
# hyperscsi-bench in the client against both, plus the local file baseline.
# Writes OUT/results.json (one record per cell), OUT/report.md and, when
# gnuplot is installed, OUT/*.png; removes everything else it made.
#
# Usage: bench/lab.sh [--mtu 1500|9000] [--shape 1gbit] [--quick] [--out DIR] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mtu=1500
shape=
quick=0
out=$PWD/lab-results
build=${BUILD_DIR:-$here/build}
while (($#)); do
  case $1 in
    --mtu) mtu=$2; shift 2 ;;
    --shape) shape=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "lab: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $mtu == 1500 || $mtu == 9000 ]] || { echo "lab: --mtu must be 1500 or 9000" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "lab: needs root (namespaces)" >&2; exit 1; }
bench=$build/bench/hyperscsi-bench
target_bin=$build/target/daemon/hyperscsi-target
for b in "$bench" "$target_bin"; do
  [[ -x $b ]] || { echo "lab: $b is not built (--build DIR)" >&2; exit 1; }
done
command -v tgtd >/dev/null || { echo "lab: tgtd (package tgt) is not installed" >&2; exit 1; }

tag=hsl$$
ns_s=${tag}s
ns_c=${tag}c
if_s=${tag}vs
if_c=${tag}vc
ip_s=198.18.99.2
store=/dev/shm/$tag.img
control=$((1000 + $$ % 30000))
iqn=iqn.2026-01.org.hyperscsi:lab$$
work=$(mktemp -d /tmp/hyperscsi-lab.XXXXXX)
hs_pid=
tgtd_pid=

cleanup() {
  set +e
  [[ -n $tgtd_pid ]] && { tgtadm -C "$control" --op delete --mode system --force >/dev/null 2>&1
                         kill -TERM "$tgtd_pid" 2>/dev/null; sleep 0.5; kill -KILL "$tgtd_pid" 2>/dev/null
                         wait "$tgtd_pid" 2>/dev/null; }
  [[ -n $hs_pid ]] && { kill -TERM "$hs_pid" 2>/dev/null; wait "$hs_pid" 2>/dev/null; }
  ip netns del "$ns_s" 2>/dev/null
  ip netns del "$ns_c" 2>/dev/null
  rm -f "$store" "/var/run/tgtd/socket.$control" "/var/run/tgtd/socket.$control.lock"
  rm -rf "$work"
}
trap cleanup EXIT

if ((quick)); then size_mib=256; secs=3; else size_mib=1024; secs=10; fi
shaped=no
[[ -n $shape ]] && shaped=$shape

echo "lab: namespaces $ns_s/$ns_c, veth MTU $mtu, shaped=$shaped, store $store (${size_mib} MiB)" >&2
ip netns add "$ns_s"
ip netns add "$ns_c"
ip link add "$if_s" mtu "$mtu" type veth peer name "$if_c" mtu "$mtu"
ip link set "$if_s" netns "$ns_s"
ip link set "$if_c" netns "$ns_c"
ip -n "$ns_s" addr add "$ip_s/24" dev "$if_s"
ip -n "$ns_c" addr add 198.18.99.1/24 dev "$if_c"
for ns in "$ns_s" "$ns_c"; do ip -n "$ns" link set lo up; done
ip -n "$ns_s" link set "$if_s" up
ip -n "$ns_c" link set "$if_c" up
if [[ -n $shape ]]; then
  ip netns exec "$ns_s" tc qdisc add dev "$if_s" root tbf rate "$shape" burst 256kb latency 20ms
  ip netns exec "$ns_c" tc qdisc add dev "$if_c" root tbf rate "$shape" burst 256kb latency 20ms
fi
dd if=/dev/zero of="$store" bs=1M count="$size_mib" status=none

ip netns exec "$ns_s" "$target_bin" --port "afpacket:$if_s" --lun "0=$store" --name "lab$$" \
  --control "$work/target.sock" >"$work/target.log" 2>&1 &
hs_pid=$!
ip netns exec "$ns_s" tgtd -f -C "$control" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
for _ in $(seq 40); do
  tgtadm -C "$control" --lld iscsi --op new --mode target --tid 1 -T "$iqn" >/dev/null 2>&1 && break
  sleep 0.1
done
tgtadm -C "$control" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$store"
tgtadm -C "$control" --lld iscsi --op bind --mode target --tid 1 -I ALL

cells=("randread 4k 32" "randread 4k 1" "read 128k 32" "write 128k 32")
((quick)) || cells+=("randwrite 4k 32" "randrw 4k 32" "read 1M 8" "write 1M 8" "randread 64k 16")
results=$work/results.jsonl
run_cell() {  # transport workload bs qd -- extra bench args
  local t=$1 w=$2 bs=$3 qd=$4
  shift 4
  local line
  for _ in 1 2 3 4 5; do  # setup may race the daemons starting
    if line=$("$@" --workload "$w" --bs "$bs" --qd "$qd" --time "$secs" --quiet --json \
              --mtu "$mtu" --shaped "$shaped" 2>"$work/err"); then
      echo "$line" >>"$results"
      echo "lab: $t $w bs=$bs qd=$qd: $(jq -r '"\(.iops|floor) IOPS \(.mb_s|floor) MB/s p50 \(.lat_p50_us) us"' <<<"$line")" >&2
      return
    fi
    sleep 0.5
  done
  echo "lab: $t $w bs=$bs qd=$qd failed: $(cat "$work/err")" >&2
}
for cell in "${cells[@]}"; do
  read -r w bs qd <<<"$cell"
  run_cell hyperscsi "$w" "$bs" "$qd" ip netns exec "$ns_c" "$bench" --transport hyperscsi \
    --port "afpacket:$if_c" --target "lab$$" --lun 0 --target-pid "$hs_pid"
  run_cell iscsi "$w" "$bs" "$qd" ip netns exec "$ns_c" "$bench" --transport iscsi \
    --url "iscsi://$ip_s/$iqn/1" --iface "$if_c" --target-pid "$tgtd_pid"
  run_cell local "$w" "$bs" "$qd" "$bench" --transport local --path "$store"
done

mkdir -p "$out"
jq -s . "$results" >"$out/results.json"
{
  echo "# Lab results"
  echo
  echo "MTU $mtu, shaped: $shaped, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)), kernel $(uname -r), ${secs} s per cell, RAM-backed file LUN (${size_mib} MiB)."
  echo
  echo "| workload | bs | qd | transport | IOPS | MB/s | p50 us | p99 us | p99.9 us | CPU s/GiB client | CPU s/GiB target | ctx/IO client | ctx/IO target | frames/IO |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  jq -r '.[] | "| \(.workload) | \(.bs) | \(.qd) | \(.transport) | \(.iops|floor) | \(.mb_s*10|floor/10) | \(.lat_p50_us) | \(.lat_p99_us) | \(.lat_p999_us) | \(.cpu_s_per_gib_client*1000|floor/1000) | \(if .cpu_s_per_gib_target == null then "-" else (.cpu_s_per_gib_target*1000|floor/1000) end) | \(.ctx_per_io_client*100|floor/100) | \(if .ctx_per_io_target == null then "-" else (.ctx_per_io_target*100|floor/100) end) | \(if .frames_per_io == null then "-" else (.frames_per_io*100|floor/100) end) |"' "$out/results.json"
  echo
  echo "## HyperSCSI / iSCSI ratios"
  echo
  echo "| workload | bs | qd | IOPS ratio | MB/s ratio | p50 ratio | CPU s/GiB (client+target) ratio |"
  echo "|---|---|---|---|---|---|---|"
  jq -r 'group_by([.workload,.bs,.qd])[] | (map(select(.transport=="hyperscsi"))[0]) as $h
         | (map(select(.transport=="iscsi"))[0]) as $i | select($h != null and $i != null)
         | "| \($h.workload) | \($h.bs) | \($h.qd) | \(($h.iops/$i.iops)*100|floor/100) | \(($h.mb_s/$i.mb_s)*100|floor/100) | \(($h.lat_p50_us/$i.lat_p50_us)*100|floor/100) | \((($h.cpu_s_per_gib_client+($h.cpu_s_per_gib_target//0))/($i.cpu_s_per_gib_client+($i.cpu_s_per_gib_target//0)))*100|floor/100) |"' "$out/results.json"
  echo
  echo "Reproduce: \`bench/lab.sh --mtu $mtu${shape:+ --shape $shape}$( ((quick)) && echo ' --quick') --out DIR\`"
} >"$out/report.md"
if command -v gnuplot >/dev/null; then
  jq -r '.[] | "\(.transport) \(.workload)-\(.bs)-qd\(.qd) \(.mb_s)"' "$out/results.json" >"$work/mbs.dat"
  gnuplot -e "set terminal png size 1000,500; set output '$out/mb_s.png'; set style data histograms;
              set ylabel 'MB/s'; set xtics rotate by -30;
              plot '$work/mbs.dat' using 3:xtic(2) title 'MB/s (all transports)'" || true
else
  echo "lab: gnuplot not installed, no plots" >&2
fi
echo "lab: wrote $out/results.json and $out/report.md" >&2

#!/usr/bin/env bash
# Cost of per-frame protection: the real hyperscsi-target in one namespace,
# hyperscsi-bench in another, joined by a veth pair. One RAM LUN (auth
# optional, protection off), the bench authenticated with a shared secret and
# asking for protection off / integrity / encrypt. After one unmeasured write
# pass over the LUN, sequential 128 KiB read and write at QD 32, SECS seconds
# each, 3 runs per cell interleaved across levels; prints a Markdown table
# of the medians (MB/s, CPU s/GiB client and target) and writes every record
# to OUT/protection.jsonl. Removes the namespaces, files and daemon it made.
#
# Usage: bench/protection.sh [--mtu 1500|9000] [--secs N] [--out DIR] [--build DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mtu=1500
secs=3
out=$PWD/protection-results
build=${BUILD_DIR:-$here/build}
while (($#)); do
  case $1 in
    --mtu) mtu=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "protection: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "protection: needs root (namespaces)" >&2; exit 1; }
command -v jq >/dev/null || { echo "protection: jq is not installed" >&2; exit 1; }
bench=$build/bench/hyperscsi-bench
target_bin=$build/target/daemon/hyperscsi-target
for b in "$bench" "$target_bin"; do
  [[ -x $b ]] || { echo "protection: $b is not built (--build DIR)" >&2; exit 1; }
done

tag=hsprot$$  # own prefix: other tools use hsp...
ns_s=${tag}s
ns_c=${tag}c
if_s=${tag}vs
if_c=${tag}vc
work=$(mktemp -d /tmp/hyperscsi-protection.XXXXXX)
hs_pid=
cleanup() {
  set +e
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

(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/bench.key")
cat >"$work/target.toml" <<TOML
[target]
name = "prot$$"
ports = ["afpacket:$if_s"]
control = "$work/target.sock"
[[initiator]]
name = "hyperscsi-bench"
secret_file = "$work/bench.key"
[[lun]]
number = 0
store = "ram"
size = "1G"
TOML
ip netns exec "$ns_s" "$target_bin" --config "$work/target.toml" >"$work/target.log" 2>&1 &
hs_pid=$!

mkdir -p "$out"
results=$out/protection.jsonl
: >"$results"
bench_run() {  # level workload [extra bench args...]: prints the JSON record
  local level=$1 w=$2 line=
  shift 2
  for _ in 1 2 3 4 5; do  # the first run may race the daemon starting
    if line=$(ip netns exec "$ns_c" "$bench" --transport hyperscsi --port "afpacket:$if_c" \
              --target "prot$$" --lun 0 --secret-file "$work/bench.key" \
              --protection "$level" --target-pid "$hs_pid" --workload "$w" --quiet --json \
              --mtu "$mtu" --shaped "$level" "$@" 2>"$work/err"); then
      echo "$line"
      return 0
    fi
    sleep 0.5
  done
  echo "protection: $level $w failed: $(cat "$work/err")" >&2
  return 1
}
# Unmeasured: one pass of writes over the whole RAM LUN, so no measured cell
# pays for the store's first touch of its pages (the first cell used to).
bench_run off write --bs 1M --qd 8 --bytes 1G >/dev/null || exit 1
# Repetitions outermost: drift in the machine's load hits every level alike.
for rep in 1 2 3; do
  for level in off integrity encrypt; do
    for w in read write; do
      line=$(bench_run "$level" "$w" --bs 128k --qd 32 --time "$secs") || exit 1
      echo "$line" >>"$results"
      echo "protection: $level $w run $rep: $(jq -r '"\(.mb_s|floor) MB/s"' <<<"$line")" >&2
    done
  done
done

# Medians of the 3 runs per (level, workload); the level is in the "shaped" label.
echo "| protection | workload | MB/s | CPU s/GiB client | CPU s/GiB target |"
echo "|---|---|---|---|---|"
jq -s -r '
  def median: sort | .[(length / 2 | floor)];
  group_by([.labels.shaped // .shaped, .workload])
  | sort_by(({"off":0,"integrity":1,"encrypt":2}[.[0].labels.shaped // .[0].shaped]), .[0].workload)
  | .[]
  | "| \(.[0].labels.shaped // .[0].shaped) | \(.[0].workload) 128k QD32 | \(map(.mb_s) | median | floor) | \(map(.cpu_s_per_gib_client) | median * 1000 | round / 1000) | \(map(.cpu_s_per_gib_target) | median * 1000 | round / 1000) |"
' "$results"
grep -q "established" "$work/target.log" || echo "protection: warning: no session in the target log" >&2

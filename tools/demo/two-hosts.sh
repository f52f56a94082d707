#!/usr/bin/env bash
# The main job: a storage server and a diskless client as two network
# namespaces joined by a veth pair. The server runs hyperscsi-target exporting
# a RAM disk; the client attaches it with hyperscsi-attach (FUSE + loop),
# measures the block device with fio (direct I/O), makes an ext4 filesystem,
# writes and reads back a file, and everything is removed again.
#
# Usage: two-hosts.sh BUILD_DIR [--mtu 1500|9000] [--size-mib N]
set -euo pipefail

build=${1:?usage: two-hosts.sh BUILD_DIR [--mtu N] [--size-mib N]}
shift
mtu=9000
size_mib=64
while (($#)); do
  case $1 in
    --mtu) mtu=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    *) echo "two-hosts: unknown option $1" >&2; exit 2 ;;
  esac
done

if [[ $(id -u) -ne 0 ]]; then
  echo "two-hosts: needs root (network namespaces, FUSE, loop devices, mount)" >&2
  exit 1
fi
target_bin=$build/target/daemon/hyperscsi-target
attach_bin=$build/initiator/hyperscsi-attach
for b in "$target_bin" "$attach_bin"; do
  [[ -x $b ]] || { echo "two-hosts: $b is not built" >&2; exit 1; }
done

tag=hsd$$
ns_server=${tag}s
ns_client=${tag}c
work=$(mktemp -d /tmp/hyperscsi-demo.XXXXXX)
target_pid=
attached=

cleanup() {
  set +e
  mountpoint -q "$work/mnt" && umount "$work/mnt"
  [[ -n $attached ]] && "$attach_bin" detach "$work/fuse" >/dev/null 2>&1
  if [[ -n $target_pid ]]; then
    kill -TERM "$target_pid" 2>/dev/null
    wait "$target_pid" 2>/dev/null
  fi
  ip netns del "$ns_server" 2>/dev/null
  ip netns del "$ns_client" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
client() { nsenter --net="/run/netns/$ns_client" "$@"; }  # client network, host mounts

step "two hosts: namespaces $ns_server (server) and $ns_client (client), veth MTU $mtu"
ip netns add "$ns_server"
ip netns add "$ns_client"
ip link add "${tag}v0" type veth peer name "${tag}v1"
ip link set "${tag}v0" netns "$ns_server"
ip link set "${tag}v1" netns "$ns_client"
ip -n "$ns_server" link set "${tag}v0" mtu "$mtu" up
ip -n "$ns_client" link set "${tag}v1" mtu "$mtu" up

step "server: hyperscsi-target exporting a ${size_mib} MiB RAM disk as LUN 0"
ip netns exec "$ns_server" "$target_bin" --port "afpacket:${tag}v0" --name demo-server \
  --lun "0=ram:${size_mib}M" --control "$work/target.sock" >"$work/target.log" 2>&1 &
target_pid=$!
sleep 0.5
kill -0 "$target_pid" 2>/dev/null || { cat "$work/target.log"; exit 1; }

step "client: discover"
client "$attach_bin" discover --port "afpacket:${tag}v1"

step "client: attach LUN 0 through FUSE and a loop device"
mkdir -p "$work/fuse" "$work/mnt"
out=$(client "$attach_bin" attach --port "afpacket:${tag}v1" --target demo-server --lun 0 \
  --fuse "$work/fuse" --loop)
attached=1
echo "$out"
loop=$(grep -o '/dev/loop[0-9]*' <<<"$out" | head -n1)
[[ -n $loop ]] || { echo "two-hosts: attach printed no loop device" >&2; exit 1; }

step "client: the block device $loop measured with fio (io_uring, direct I/O, 2 s each)"
# One line per job: what the disk gives an application, FUSE and loop included.
fio_job() {  # label rw bs qd
  local label=$1 rw=$2 bs=$3 qd=$4 json
  json=$(fio --name=demo --filename="$loop" --ioengine=io_uring --direct=1 --rw="$rw" --bs="$bs" \
    --iodepth="$qd" --time_based --runtime=2 --lat_percentiles=1 --randrepeat=0 --norandommap \
    --output-format=json 2>/dev/null) || { printf '  %-34s fio failed\n' "$label"; return; }
  read -r mbs iops p50 < <(jq -r '.jobs[0] | (if .read.io_bytes > 0 then .read else .write end)
    | "\(.bw_bytes / 1e6) \(.iops) \(.lat_ns.percentile["50.000000"] / 1000)"' <<<"$json")
  printf '  %-34s %8.1f MB/s %9.0f IOPS   median latency %6.0f us\n' "$label" "$mbs" "$iops" "$p50"
}
if command -v fio >/dev/null && command -v jq >/dev/null; then
  fio_job "sequential write, 1 MiB, QD4" write 1M 4
  fio_job "sequential read, 1 MiB, QD4" read 1M 4
  fio_job "sequential read, 128 KiB, QD32" read 128k 32
  fio_job "random read, 4 KiB, QD32" randread 4k 32
  fio_job "random read, 4 KiB, QD1" randread 4k 1
else
  echo "  (fio or jq not installed: scripts/setup.sh installs them)"
fi

step "client: mkfs.ext4 on $loop and mount"
mkfs.ext4 -q -F "$loop"
mount "$loop" "$work/mnt"

file_mib=$((size_mib / 2))
step "client: write a ${file_mib} MiB file on ext4 (fsync), then read it back"
head -c "$((file_mib << 20))" /dev/urandom >"$work/source"
cp "$work/source" "$work/mnt/file"
sync -f "$work/mnt/file"
echo 3 >/proc/sys/vm/drop_caches
cmp "$work/source" "$work/mnt/file"
echo "read back identical"

step "client: unmount, fsck -n, detach"
umount "$work/mnt"
fsck.ext4 -n "$loop"
"$attach_bin" detach "$work/fuse"
attached=

step "server: session counters"
"$target_bin" stats --control "$work/target.sock" || true

step "done: cleaning up namespaces, processes and files"

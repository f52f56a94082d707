#!/usr/bin/env bash
# The main job: a storage server and a diskless client as two network
# namespaces joined by a veth pair. The server runs hyperscsi-target exporting
# a RAM disk; the client attaches it with hyperscsi-attach (FUSE + loop),
# makes an ext4 filesystem, writes and reads back a file, prints throughput,
# and everything is removed again.
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

step "client: mkfs.ext4 on $loop and mount"
mkfs.ext4 -q -F "$loop"
mount "$loop" "$work/mnt"

file_mib=$((size_mib / 2))
step "client: write a ${file_mib} MiB file, then read it back"
head -c "$((file_mib << 20))" /dev/urandom >"$work/source"
t0=$(date +%s.%N)
dd if="$work/source" of="$work/mnt/file" bs=1M oflag=direct conv=fsync status=none
t1=$(date +%s.%N)
echo 3 >/proc/sys/vm/drop_caches
dd if="$work/mnt/file" of="$work/readback" bs=1M iflag=direct status=none
t2=$(date +%s.%N)
awk -v mib="$file_mib" -v t0="$t0" -v t1="$t1" -v t2="$t2" 'BEGIN {
  printf "write %.1f MB/s, read %.1f MB/s (%d MiB file on ext4 over FUSE + loop, 1 MiB direct I/O)\n",
         mib * 1.048576 / (t1 - t0), mib * 1.048576 / (t2 - t1), mib }'
cmp "$work/source" "$work/readback"
echo "read back identical"

step "client: unmount, fsck -n, detach"
umount "$work/mnt"
fsck.ext4 -n "$loop"
"$attach_bin" detach "$work/fuse"
attached=

step "server: session counters"
"$target_bin" stats --control "$work/target.sock" || true

step "done: cleaning up namespaces, processes and files"

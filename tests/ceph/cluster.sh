#!/usr/bin/env bash
# A one-host Ceph cluster for tests and benchmarks: one monitor and one OSD on
# memstore, cephx on, pool "rbd" of size 1, no mgr, no cephadm. It lives in a
# network namespace of its own (so clusters of parallel test runs never share
# ports): a bridge there carries 198.18.100.1/24 (benchmark range) and every
# namespace that needs the cluster is attached to it with a veth.
#
#   cluster.sh up DIR              start (DIR must not hold a cluster); writes DIR/env
#   cluster.sh attach DIR NS       veth from the cluster's bridge into namespace NS;
#                                  prints the address NS got
#   cluster.sh osd-stop DIR        stop the OSD (SIGTERM; memstore saves its data)
#   cluster.sh osd-start DIR       start it again
#   cluster.sh down DIR            stop every daemon, delete the namespace and DIR
#   cluster.sh fixture-up DIR      for ctest's fixture: removes what a killed run left
#                                  in DIR, then up; without Ceph (or root) writes the
#                                  reason to DIR/skip and exits 0, so tests skip saying it
#   cluster.sh check               exit 0 if the Ceph programs are installed, else
#                                  print what is missing and exit 1
#
# DIR/env (shell syntax) names the namespace (CEPH_NETNS), the configuration
# file (CEPH_CONF, admin keyring inside), the gateway user's id and keyring
# (CEPH_CLIENT_ID, CEPH_CLIENT_KEYRING) and the pool (CEPH_POOL). Run the
# ceph/rbd tools as `ip netns exec $CEPH_NETNS rbd -c $CEPH_CONF ...`.
# Only processes this script started are signalled (by their pid files).
set -euo pipefail

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

readonly ADDR=198.18.100.1
readonly BRIDGE=hsbr

check() {
  local missing=()
  for p in ceph-mon ceph-osd ceph rbd rados monmaptool ceph-authtool ip; do
    command -v "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "Ceph not installed (missing ${missing[*]}; scripts/setup.sh installs ceph-mon ceph-osd ceph-common)"
    return 1
  fi
  [[ $(id -u) -eq 0 ]] || {
    echo "needs root (network namespaces)"
    return 1
  }
}

# The namespace name for DIR: stable, unique per directory, at most 15 bytes.
netns_for() {
  echo "hsc$(printf '%s' "$(realpath -m "$1")" | md5sum | cut -c1-10)"
}

in_ns() { ip netns exec "$NS" "$@"; }
ceph_cmd() { in_ns timeout 30 ceph -c "$DIR/ceph.conf" "$@"; }

pid_of() {
  local f="$DIR/run/$1.pid"
  [[ -s $f ]] && cat "$f"
}

# Waits up to $2 tenths of a second for pid $1 to exit.
wait_gone() {
  local i
  for ((i = 0; i < $2; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

stop_daemon() {
  local pid
  pid=$(pid_of "$1") || return 0
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 100 || {
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 50 || true
    }
  fi
  rm -f "$DIR/run/$1.pid"
}

start_osd() {
  in_ns ceph-osd -c "$DIR/ceph.conf" -i 0 >>"$DIR/log/setup.log" 2>&1
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -s $DIR/run/osd.0.pid ]] && break
    sleep 0.1
  done
  [[ -s $DIR/run/osd.0.pid ]] || die "ceph-osd did not start (see $DIR/log/osd.0.log)"
}

# Waits until the OSD is up and a write to the pool completes.
wait_writable() {
  local i
  for ((i = 0; i < 60; i++)); do
    if in_ns timeout 5 rados -c "$DIR/ceph.conf" -p rbd put hs-probe /etc/hostname 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  die "pool rbd not writable after 30 s (see $DIR/log)"
}

up() {
  [[ -e $DIR/env ]] && die "$DIR already holds a cluster (cluster.sh down $DIR first)"
  check >&2 || exit 1
  mkdir -p "$DIR"/{mon/mon.a,osd/osd.0,run,log}
  ip netns add "$NS"
  echo "$NS" >"$DIR/netns"
  ip -n "$NS" link set lo up
  ip -n "$NS" link add "$BRIDGE" type bridge
  ip -n "$NS" addr add "$ADDR/24" dev "$BRIDGE"
  ip -n "$NS" link set "$BRIDGE" up

  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$DIR/ceph.conf" <<CONF
[global]
fsid = $fsid
mon_host = [v2:$ADDR:3300,v1:$ADDR:6789]
public_addr = $ADDR
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
osd_objectstore = memstore
memstore_device_bytes = 4294967296
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
auth_allow_insecure_global_id_reclaim = false
run_dir = $DIR/run
pid_file = $DIR/run/\$name.pid
admin_socket = $DIR/run/\$name.asok
log_file = $DIR/log/\$name.log
mon_data = $DIR/mon/\$name
osd_data = $DIR/osd/\$name
keyring = $DIR/\$name.keyring
[osd]
osd_memory_target = 939524096
# SIGTERM unmounts the store (memstore saves its objects), so a stopped OSD comes back with its data.
osd_fast_shutdown = false
CONF

  # Keys: the monitor's, the admin's, and the gateway user's (rbd profile).
  ceph-authtool --create-keyring "$DIR/mon.a.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$DIR/mon.a.keyring" --import-keyring "$DIR/client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:$ADDR:3300,v1:$ADDR:6789]" "$DIR/monmap" >/dev/null
  in_ns ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" \
    --keyring "$DIR/mon.a.keyring" 2>>"$DIR/log/setup.log"
  in_ns ceph-mon -c "$DIR/ceph.conf" -i a

  local osd_uuid osd_key id
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  osd_key=$(ceph-authtool --gen-print-key)
  id=$(echo "{\"cephx_secret\": \"$osd_key\"}" | ceph_cmd osd new "$osd_uuid" -i -)
  [[ $id == 0 ]] || die "ceph osd new gave id '$id', expected 0"
  ceph-authtool --create-keyring "$DIR/osd.0.keyring" -n osd.0 --add-key "$osd_key" >/dev/null
  in_ns ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$DIR/log/setup.log" \
    >>"$DIR/log/setup.log"
  start_osd

  ceph_cmd osd pool create rbd 8 >/dev/null 2>&1
  ceph_cmd osd pool application enable rbd rbd >/dev/null 2>&1
  ceph_cmd auth get-or-create client.hyperscsi mon 'profile rbd' osd 'profile rbd pool=rbd' \
    -o "$DIR/client.hyperscsi.keyring" >/dev/null 2>&1
  wait_writable

  cat >"$DIR/env" <<ENV
CEPH_NETNS=$NS
CEPH_CONF=$DIR/ceph.conf
CEPH_ADDR=$ADDR
CEPH_POOL=rbd
CEPH_CLIENT_ID=hyperscsi
CEPH_CLIENT_KEYRING=$DIR/client.hyperscsi.keyring
ENV
}

attach() {
  local target=$1
  [[ -e $DIR/env ]] || die "no cluster in $DIR"
  ip netns list | grep -qw "$target" || die "no namespace $target"
  # Addresses .10-.250 of the bridge's /24, handed out under a lock.
  local n
  exec 9>"$DIR/attach.lock"
  flock 9
  n=$(($(cat "$DIR/attach.next" 2>/dev/null || echo 10)))
  ((n <= 250)) || die "out of addresses"
  echo $((n + 1)) >"$DIR/attach.next"
  flock -u 9
  ip link add "hsv$n" netns "$NS" type veth peer name hsceph netns "$target"
  ip -n "$NS" link set "hsv$n" master "$BRIDGE" up
  ip -n "$target" addr add "198.18.100.$n/24" dev hsceph
  ip -n "$target" link set hsceph up
  ip -n "$target" link set lo up
  echo "198.18.100.$n"
}

down() {
  [[ -d $DIR ]] || return 0
  stop_daemon osd.0
  stop_daemon mon.a
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$DIR"
}

cmd=${1:-}
[[ $cmd == check ]] && {
  check
  exit
}
[[ $# -ge 2 ]] || die "usage: cluster.sh up|down|attach|osd-stop|osd-start|check DIR [NS]"
DIR=$(realpath -m "$2")
NS=$(netns_for "$DIR")
case $cmd in
  fixture-up)
    down
    if ! reason=$(check); then
      mkdir -p "$DIR"
      echo "$reason" >"$DIR/skip"
      echo "cluster.sh: $reason: Ceph tests will skip" >&2
      exit 0
    fi
    trap 'rc=$?; if ((rc)); then echo "cluster.sh: start failed, removing it" >&2; tail -5 "$DIR"/log/*.log >&2 2>/dev/null || true; down; fi' EXIT
    up
    trap - EXIT
    ;;
  up)
    trap 'rc=$?; if ((rc)); then echo "cluster.sh: start failed, removing it" >&2; tail -5 "$DIR"/log/*.log >&2 2>/dev/null || true; down; fi' EXIT
    up
    trap - EXIT
    ;;
  attach) attach "${3:?namespace}" ;;
  osd-stop) stop_daemon osd.0 ;;
  osd-start)
    start_osd
    wait_writable
    ;;
  down) down ;;
  *) die "unknown command $cmd" ;;
esac

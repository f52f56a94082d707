#!/usr/bin/env bash
# Usage: vm_test.sh BUILD_DIR CASE
#
# Diskless-node checks in a VM (tests/vm/lib.sh) against hyperscsi-target in
# network namespaces. CASE:
#   boot-1500     root=hyperscsi over MTU 1500: the node writes a marker and a
#                 file with its checksum, syncs and powers off; the image on the
#                 server holds both, fsck is clean, the console shows no error
#   boot-9000     the same at MTU 9000, with port= given as the NIC's MAC,
#                 root=UUID=..., an authenticated login (secret from the
#                 initramfs) and per-frame integrity protection
#   restart       boot-1500 with the target killed (SIGKILL) and restarted
#                 while the node writes with fsync: the node goes on, the file
#                 on the server is complete
#   bad-cmdline   three boots that must fail: wrong target name, wrong LUN,
#                 wrong secret: the console names the reason and the VM stops
#                 within the bound
#   blockdev      two targets: NBD (nbdkit + our plugin + nbd-client), md RAID1
#                 across the targets with one killed during writes and
#                 restarted (degrade, re-add, resync, check), LVM over both
#                 (tests/vm/root/blockdev.sh)
# Exit 77 (ctest: skipped) when the host cannot run VMs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
case_name=$2
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"
vm_setup "$build"

ROOT_UUID=6f1e1c3a-18d1-4c5e-9b1a-000000000018
BOOT_BOUND=${HS_VM_BOOT_BOUND:-240} # seconds from qemu start to power-off
nonce="n$RANDOM$RANDOM"

# Console lines every successful boot must not show.
check_console_clean() {
  local name=$1 allowed=${2:-'^$'}
  local errors
  errors=$(vm_console_errors "$name" "$allowed")
  if [[ -n $errors ]]; then
    vm_fail "$name: the console shows errors:"
    echo "$errors"
  fi
}

# Boots NAME, waits for its power-off; 1 (with the console shown) when it
# did not end with "HSVM: root read-only" or printed HSVM-FAIL.
expect_clean_run() {
  local name=$1
  if ! vm_wait_exit "$name" "$BOOT_BOUND"; then
    vm_show_console "$name"
    vm_die "$name did not power off within $BOOT_BOUND s"
  fi
  if grep -q 'HSVM-FAIL' "$VM_WORK/$name.console" ||
    ! grep -q 'HSVM: root read-only, powering off' "$VM_WORK/$name.console"; then
    vm_show_console "$name" 120
    vm_die "$name failed inside the VM: $(grep -a 'HSVM-FAIL' "$VM_WORK/$name.console" | head -3)"
  fi
}

# The image the node wrote: fsck clean, marker with this run's nonce, the
# file matching the checksum the node computed.
check_image() {
  local img=$1 want_marker=$2
  local out
  if ! out=$(e2fsck -fn "$img" 2>&1); then
    echo "$out"
    vm_fail "e2fsck of the node's root image is not clean"
  else
    echo "ok: e2fsck clean"
  fi
  local marker
  marker=$(vm_file "$img" /marker)
  if [[ $marker == *"$want_marker"* ]]; then
    echo "ok: marker '$marker'"
  else
    vm_fail "marker is '$marker', expected '$want_marker'"
  fi
  local sum want
  want=$(vm_file "$img" /data.sha256 | tr -d '\n')
  debugfs -R "dump /data.bin $VM_WORK/data.bin" "$img" 2>/dev/null
  sum=$(sha256sum "$VM_WORK/data.bin" | cut -d' ' -f1)
  if [[ -n $want && $sum == "$want" ]]; then
    echo "ok: /data.bin ($(stat -c %s "$VM_WORK/data.bin") bytes) matches the node's checksum"
  else
    vm_fail "/data.bin on the server: sha256 $sum, the node wrote '$want'"
  fi
}

case $case_name in
boot-1500 | restart)
  vm_net_add 1500
  tns=$VM_LAST_NS
  vm_root_image "$VM_WORK/root.img"
  vm_target_config "$VM_WORK/a.toml" hsvm-a \
    "$(printf '[[lun]]\nnumber = 0\nstore = "%s"' "$VM_WORK/root.img")"
  vm_target_start a "$tns" "$VM_WORK/a.toml"
  test=boot
  [[ $case_name == restart ]] && test=restart
  vm_boot node "root=hyperscsi hyperscsi=port=eth0,target=hsvm-a,lun=0,mtu=1500,timeout=60 hsvm.test=$test hsvm.nonce=$nonce"
  if [[ $case_name == restart ]]; then
    vm_wait_console node 'HSVM: writing' "$BOOT_BOUND" || {
      vm_show_console node
      vm_die "the node did not start writing"
    }
    vm_log "node writes: kill -9 the target, start it again after 1 s"
    vm_target_kill a KILL
    sleep 1
    vm_target_restart a
  fi
  expect_clean_run node
  vm_target_kill a TERM
  check_image "$VM_WORK/root.img" "hsvm-marker $nonce"
  check_console_clean node
  if [[ $case_name == restart ]]; then
    grep -a 'HSVM: session recovered' "$VM_WORK/node.console" | tr -d '\r'
  fi
  ;;

boot-9000)
  vm_net_add 9000
  tns=$VM_LAST_NS
  vm_root_image "$VM_WORK/root.img"
  vm_target_config "$VM_WORK/a.toml" hsvm-a \
    "$(printf '[[lun]]\nnumber = 0\nstore = "%s"\nauth = "required"\nprotection = "integrity"' "$VM_WORK/root.img")" \
    "$(printf '[[initiator]]\nname = "hyperscsi-attach@node9"\nsecret_file = "%s"' "$VM_ASSETS/secrets/good.key")"
  vm_target_start a "$tns" "$VM_WORK/a.toml"
  vm_boot node "root=UUID=$ROOT_UUID hyperscsi=port=52:54:00:18:00:00,target=hsvm-a,lun=0,mtu=9000,secret=/etc/hyperscsi/initramfs/good.key,protection=integrity,hostname=node9,timeout=60 hsvm.test=boot hsvm.nonce=$nonce"
  expect_clean_run node
  # The session really was authenticated and protected at MTU 9000.
  grep -q 'hsvm-marker .* mtu=9000' <(vm_file "$VM_WORK/root.img" /marker) ||
    vm_fail "the node's eth0 did not run at MTU 9000"
  vm_target_kill a TERM
  check_image "$VM_WORK/root.img" "hsvm-marker $nonce mtu=9000"
  check_console_clean node
  ;;

bad-cmdline)
  vm_net_add 1500
  tns=$VM_LAST_NS
  truncate -s 64M "$VM_WORK/disk.img"
  vm_target_config "$VM_WORK/a.toml" hsvm-a \
    "$(printf '[[lun]]\nnumber = 0\nstore = "%s"' "$VM_WORK/disk.img")" \
    "$(printf '[[lun]]\nnumber = 1\nstore = "ram:16M"\nauth = "required"')" \
    "$(printf '[[initiator]]\nname = "hyperscsi-attach@node1"\nsecret_file = "%s"' "$VM_ASSETS/secrets/good.key")"
  vm_target_start a "$tns" "$VM_WORK/a.toml"
  bound=${HS_VM_FAIL_BOUND:-120} # boot + timeout= + panic, seconds
  # name | hyperscsi= options | what the console must say
  cases=(
    "wrong-target|target=nosuch,lun=0,timeout=5|no target answered discovery on afpacket:eth0 \(looking for 'nosuch'\).*waited"
    "wrong-lun|target=hsvm-a,lun=7|LUN absent: target 'hsvm-a' exports no LUN 7 to us \(it exports: 0"
    "bad-secret|target=hsvm-a,lun=1,secret=/etc/hyperscsi/initramfs/bad.key,hostname=node1|authentication with target 'hsvm-a'.* failed: wrong or missing shared secret"
  )
  for c in "${cases[@]}"; do
    IFS='|' read -r name opts reason <<<"$c"
    vm_boot "$name" "root=hyperscsi hyperscsi=port=eth0,$opts hsvm.test=boot"
    start=$SECONDS
    if ! vm_wait_exit "$name" "$bound"; then
      vm_show_console "$name"
      vm_fail "$name: the VM did not stop within $bound s"
      continue
    fi
    took=$((SECONDS - start))
    if ! grep -aEq "hyperscsi: ERROR: .*$reason" "$VM_WORK/$name.console"; then
      vm_show_console "$name"
      vm_fail "$name: the console does not give the reason ($reason)"
    elif grep -aq 'HSVM: root' "$VM_WORK/$name.console"; then
      vm_fail "$name: the node booted anyway"
    else
      echo "ok: $name stopped after $took s: $(grep -a 'hyperscsi: ERROR' "$VM_WORK/$name.console" | head -1 | tr -d '\r')"
    fi
  done
  # The wrong target name also lists the targets that do answer.
  grep -aq 'hsvm-a' <(sed -n '/targets that answer/,$p' "$VM_WORK/wrong-target.console") ||
    vm_fail "wrong-target: the console does not list the target that answers"
  ;;

blockdev)
  vm_net_add 1500
  tns_a=$VM_LAST_NS
  vm_net_add 1500
  tns_b=$VM_LAST_NS
  vm_root_image "$VM_WORK/root.img"
  lun() { printf '[[lun]]\nnumber = %s\nstore = "%s"\nsize = "%s"' "$1" "$2" "$3"; }
  vm_target_config "$VM_WORK/a.toml" hsvm-a \
    "$(printf '[[lun]]\nnumber = 0\nstore = "%s"' "$VM_WORK/root.img")" \
    "$(lun 1 "$VM_WORK/md-a.img" 48M)" "$(lun 2 "$VM_WORK/lvm-a.img" 32M)" \
    "$(lun 3 "$VM_WORK/nbd.img" 32M)"
  vm_target_config "$VM_WORK/b.toml" hsvm-b \
    "$(lun 0 "$VM_WORK/md-b.img" 48M)" "$(lun 1 "$VM_WORK/lvm-b.img" 32M)"
  vm_target_start a "$tns_a" "$VM_WORK/a.toml"
  vm_target_start b "$tns_b" "$VM_WORK/b.toml"
  vm_boot node "root=hyperscsi hyperscsi=port=eth0,target=hsvm-a,lun=0,timeout=60 hsvm.test=blockdev hsvm.nonce=$nonce"
  vm_wait_console node 'HSVM: raid writing' "$BOOT_BOUND" || {
    vm_show_console node
    vm_die "the node did not reach the RAID writes"
  }
  vm_log "RAID writes under way: kill -9 target hsvm-b"
  vm_target_kill b KILL
  vm_wait_console node 'HSVM: raid degraded|HSVM-FAIL' 120 || {
    vm_show_console node
    vm_die "the array did not degrade"
  }
  vm_log "array degraded: start hsvm-b again"
  vm_target_restart b
  expect_clean_run node
  grep -a 'HSVM: \(nbd\|raid\|lvm\)' "$VM_WORK/node.console" | tr -d '\r'
  # The md leg of hsvm-b failed on purpose: I/O errors on that loop device
  # (EIO, or ETIMEDOUT when the dead time ran out: "timeout error") and md's
  # own report of the failure are expected, nothing else.
  # WRITE_ZEROES: mkfs through dm asks the loop device to zero ranges, which
  # it passes to the FUSE file as fallocate(ZERO_RANGE); the FUSE export does
  # not implement that (EOPNOTSUPP), the kernel logs it and writes zeroes
  # instead. Harmless, but remove this exemption once the export supports it.
  legb=$(sed -n 's/.*HSVM: md legs [^ ]* \/dev\/\(loop[0-9]*\).*/\1/p' "$VM_WORK/node.console" | tr -d '\r')
  check_console_clean node "(I/O|timeout) error, dev ${legb:-nothing}, |blk_print_req_error: [0-9]+ callbacks suppressed|md: super_written gets error=-5|md/raid1:md0: (Disk failure|Operation continuing)|operation not supported error, dev loop[0-9]+, .*WRITE_ZEROES"
  e2fsck -fn "$VM_WORK/root.img" >/dev/null 2>&1 || vm_fail "the root image is not clean"
  ;;

*)
  vm_die "unknown case $case_name"
  ;;
esac

if ((VM_FAILED)); then
  vm_show_console "$(ls -t "$VM_WORK"/*.console | head -1 | xargs basename | sed 's/\.console$//')" 60
  exit 1
fi
echo "PASS: $case_name in $SECONDS s"

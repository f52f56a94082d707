# tests/vm/lib.sh: a VM joined to HyperSCSI targets, for tests that need a
# kernel this host lacks (nbd, md, dm) or a whole boot (root over HyperSCSI).
# Source it from bash; every function name starts with vm_.
#
#   vm_setup BUILD_DIR               scratch directory, namespaces, cleanup trap
#   vm_net_add MTU                   a VM NIC (tap in the VM namespace) bridged to
#                                    a new target namespace ($VM_LAST_NS)
#   vm_target_start ID NS CONFIG     hyperscsi-target in NS (ID names it for kill/restart)
#   vm_target_kill ID [SIGNAL]       ... and vm_target_restart ID
#   vm_boot NAME APPEND [QEMU ARGS]  boots the kernel + initramfs of vm_assets in the
#                                    background; console in $VM_WORK/NAME.console
#   vm_wait_console NAME REGEX SECS  waits until the console shows REGEX
#   vm_wait_exit NAME SECS           waits for the VM to stop (poweroff, panic=-1)
#   vm_console_errors NAME [ALLOWED] prints console lines that look like errors
#
# The VM: qemu-system-x86_64 -accel tcg (no KVM needed), $HS_VM_CPU (default
# "qemu64", the x86-64 baseline without SSSE3/SSE4: the client must run on any
# x86-64, issue 22), $HS_VM_MEM MiB, one vCPU. Its NICs are virtio-net on taps in the
# VM namespace; each tap is bridged to a veth whose other end sits in a target
# namespace, where hyperscsi-target serves on it. Nothing leaves the namespaces
# this file creates, and vm_cleanup (an EXIT trap) removes all of them, the
# processes and the scratch directory, also when a test fails
# (HS_VM_KEEP=1 keeps the scratch directory for a post-mortem).

VM_ID="hsvm$$"
VM_NS="${VM_ID}-vm"
VM_WORK=
VM_BUILD=
VM_ASSETS=
VM_NICS=0
declare -A VM_QEMU_PID=() VM_TARGET_PID=() VM_TARGET_NS=() VM_TARGET_CONFIG=()
VM_NAMESPACES=()
VM_NIC_ARGS=()
VM_FAILED=0

vm_log() { echo "[$(date +%H:%M:%S)] $*"; }
vm_fail() {
  echo "FAIL: $*"
  VM_FAILED=1
}
vm_die() {
  echo "FAIL: $*"
  exit 1
}

# Exit 77 (ctest: skipped) with a reason when the host cannot run VMs.
vm_require() {
  local missing=()
  [[ $(id -u) -eq 0 ]] || {
    echo "SKIP: needs root (network namespaces, taps)"
    exit 77
  }
  for tool in qemu-system-x86_64 mkinitramfs busybox mke2fs debugfs e2fsck ip; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=("a kernel in /boot (linux-image-amd64)")
  [[ -e /dev/net/tun ]] || missing+=(/dev/net/tun)
  if ((${#missing[@]})); then
    echo "SKIP: missing ${missing[*]} (scripts/setup.sh installs them)"
    exit 77
  fi
}

vm_setup() {
  VM_BUILD=$1
  vm_require
  VM_ASSETS=${HS_VM_ASSETS:-$VM_BUILD/vm-assets}
  [[ -f $VM_ASSETS/stamp ]] || vm_die "no VM assets in $VM_ASSETS: run tests/vm/build_assets.sh (ctest fixture vm.assets)"
  vm_reap_stale
  VM_WORK=$(mktemp -d "/tmp/${VM_ID}.XXXXXX")
  trap vm_cleanup EXIT
  trap 'exit 130' INT TERM
  # Our own bound, below ctest's timeout (whose SIGKILL would skip the EXIT
  # trap): past it the test ends through the trap and cleans up.
  (
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep "${HS_VM_TEST_BOUND:-540}" &
    nap=$!
    wait "$nap"
    echo "FAIL: the test ran past ${HS_VM_TEST_BOUND:-540} s"
    kill -TERM $$
  ) &
  VM_WATCHDOG=$!
  ip netns add "$VM_NS"
  VM_NAMESPACES+=("$VM_NS")
  ip -n "$VM_NS" link set lo up
}

# Leftovers of a run that was killed before its EXIT trap ran (namespaces
# named hsvmPID-* whose PID is gone): their processes, namespaces, scratch.
vm_reap_stale() {
  local ns pid
  for ns in $(ip netns list | grep -oE '^hsvm[0-9]+-[a-z0-9]+'); do
    pid=${ns#hsvm}
    pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null && continue
    echo "removing stale namespace $ns"
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  for d in /tmp/hsvm[0-9]*.*; do
    [[ -d $d ]] || continue
    pid=${d#/tmp/hsvm}
    pid=${pid%%.*}
    kill -0 "$pid" 2>/dev/null || rm -rf "$d"
  done
}

vm_cleanup() {
  local rc=$?
  set +e
  [[ -n ${VM_WATCHDOG:-} ]] && kill "$VM_WATCHDOG" 2>/dev/null
  local name id
  for name in "${!VM_QEMU_PID[@]}"; do
    kill -9 "${VM_QEMU_PID[$name]}" 2>/dev/null
  done
  for id in "${!VM_TARGET_PID[@]}"; do
    kill -9 "${VM_TARGET_PID[$id]}" 2>/dev/null
  done
  for name in "${!VM_QEMU_PID[@]}"; do wait "${VM_QEMU_PID[$name]}" 2>/dev/null; done
  for id in "${!VM_TARGET_PID[@]}"; do wait "${VM_TARGET_PID[$id]}" 2>/dev/null; done
  for ns in "${VM_NAMESPACES[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  if [[ -n $VM_WORK && -d $VM_WORK ]]; then
    if [[ ${HS_VM_KEEP:-0} == 1 || ($rc -ne 0 && ${HS_VM_KEEP:-0} == fail) ]]; then
      echo "kept $VM_WORK"
    else
      rm -rf "$VM_WORK"
    fi
  fi
  exit "$rc"
}

# vm_net_add MTU: adds VM NIC number $VM_NICS (eth0, eth1... inside the VM,
# MAC 52:54:00:18:00:0N) and a target namespace behind it, named in
# $VM_LAST_NS (not printed: the caller must not run this in a subshell). The
# target's interface there is "t0".
vm_net_add() {
  local mtu=$1 n=$VM_NICS
  local tns="${VM_ID}-t$n"
  ip netns add "$tns"
  VM_NAMESPACES+=("$tns")
  ip -n "$tns" link set lo up
  ip -n "$VM_NS" tuntap add dev "tap$n" mode tap
  ip -n "$VM_NS" link add "br$n" type bridge
  ip -n "$VM_NS" link add "v$n" type veth peer name t0 netns "$tns"
  ip -n "$VM_NS" link set "tap$n" master "br$n"
  ip -n "$VM_NS" link set "v$n" master "br$n"
  local dev
  for dev in "tap$n" "v$n" "br$n"; do
    ip -n "$VM_NS" link set "$dev" mtu "$mtu" up
  done
  ip -n "$tns" link set t0 mtu "$mtu" up
  VM_NIC_ARGS+=(-netdev "tap,id=n$n,ifname=tap$n,script=no,downscript=no"
    -device "virtio-net-pci,netdev=n$n,mac=52:54:00:18:00:0$n,romfile=")
  VM_NICS=$((n + 1))
  VM_LAST_NS=$tns
}

# vm_target_write_config FILE NAME SOCKET LUN_TOML...: a target configuration
# serving on t0; each further argument is one [[lun]] (or [[initiator]]) table body.
vm_target_config() {
  local file=$1 name=$2
  shift 2
  {
    printf '[target]\nname = "%s"\nports = ["afpacket:t0"]\ncontrol = "%s"\n' "$name" "$file.sock"
    printf 'keepalive_ms = 500\ndead_time_ms = 5000\ndrain_timeout_ms = 1000\n'
    local t
    for t in "$@"; do printf '\n%s\n' "$t"; done
  } >"$file"
}

vm_target_start() {
  local id=$1 ns=$2 config=$3
  VM_TARGET_NS[$id]=$ns
  VM_TARGET_CONFIG[$id]=$config
  ip netns exec "$ns" "$VM_BUILD/target/daemon/hyperscsi-target" --config "$config" \
    >>"$VM_WORK/target-$id.log" 2>&1 &
  VM_TARGET_PID[$id]=$!
  # Ready when its control socket answers.
  local i
  for ((i = 0; i < 100; i++)); do
    if "$VM_BUILD/target/daemon/hyperscsi-target" stats --control "$config.sock" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "${VM_TARGET_PID[$id]}" 2>/dev/null || break
    sleep 0.1
  done
  cat "$VM_WORK/target-$id.log"
  vm_die "target $id did not start"
}

vm_target_kill() {
  local id=$1 sig=${2:-KILL}
  kill "-$sig" "${VM_TARGET_PID[$id]}" 2>/dev/null
  wait "${VM_TARGET_PID[$id]}" 2>/dev/null || true
  unset "VM_TARGET_PID[$id]"
}

vm_target_restart() {
  local id=$1
  vm_target_start "$id" "${VM_TARGET_NS[$id]}" "${VM_TARGET_CONFIG[$id]}"
}

# A private copy of the root filesystem image (sparse): the test's disk.
vm_root_image() {
  cp --sparse=always "$VM_ASSETS/root.img" "$1"
}

# vm_boot NAME APPEND [extra qemu args]: starts the VM in the background.
# no_timer_check: under TCG on a loaded 2-CPU host the guest's check that the
# 8254 timer ticks through the IO-APIC can miss its window and panic the boot
# ("MP-BIOS bug: 8254 timer not connected to IO-APIC"); the timer works, only
# the check is timing-sensitive (the usual setting for emulated guests).
vm_boot() {
  local name=$1 append=$2
  shift 2
  local console="$VM_WORK/$name.console"
  : >"$console"
  ip netns exec "$VM_NS" qemu-system-x86_64 -machine q35 -accel tcg -cpu "${HS_VM_CPU:-qemu64}" \
    -m "${HS_VM_MEM:-512}" -smp 1 -nodefaults -display none -no-reboot \
    -kernel "$VM_ASSETS/vmlinuz" -initrd "$VM_ASSETS/initrd.img" \
    -append "console=ttyS0 panic=-1 net.ifnames=0 no_timer_check $append" \
    -serial "file:$console" -monitor none "${VM_NIC_ARGS[@]}" "$@" \
    >"$VM_WORK/$name.qemu.log" 2>&1 &
  VM_QEMU_PID[$name]=$!
  VM_BOOT_START=$SECONDS
  vm_log "booting $name (pid ${VM_QEMU_PID[$name]}): $append"
}

vm_running() { kill -0 "${VM_QEMU_PID[$1]}" 2>/dev/null; }

# vm_wait_console NAME REGEX SECS: 0 once the console matches (extended regex),
# 1 after SECS or when the VM stopped without it.
vm_wait_console() {
  local name=$1 regex=$2 secs=$3 end=$((SECONDS + $3))
  local console="$VM_WORK/$name.console"
  while ((SECONDS < end)); do
    grep -Eq -- "$regex" "$console" && return 0
    if ! vm_running "$name"; then
      grep -Eq -- "$regex" "$console" && return 0
      return 1
    fi
    sleep 0.2
  done
  return 1
}

# vm_wait_exit NAME SECS: 0 when qemu ended within SECS, else kills it and returns 1.
vm_wait_exit() {
  local name=$1 end=$((SECONDS + $2))
  while ((SECONDS < end)); do
    if ! vm_running "$name"; then
      wait "${VM_QEMU_PID[$name]}" 2>/dev/null || true
      unset "VM_QEMU_PID[$name]"
      vm_log "$name stopped after $((SECONDS - VM_BOOT_START)) s"
      return 0
    fi
    sleep 0.2
  done
  kill -9 "${VM_QEMU_PID[$name]}" 2>/dev/null
  wait "${VM_QEMU_PID[$name]}" 2>/dev/null || true
  unset "VM_QEMU_PID[$name]"
  return 1
}

vm_show_console() {
  echo "----- console of $1 -----"
  tail -n "${2:-80}" "$VM_WORK/$1.console" | tr -d '\r'
  echo "-----"
}

# Console lines that look like trouble: kernel errors, filesystem errors,
# I/O errors, oopses, our FAIL markers. ALLOWED (an extended regex) exempts
# lines a test provokes on purpose. The header of `hyperscsi-attach list` (its
# FAILED column) is not an error.
vm_console_errors() {
  local name=$1 allowed=${2:-'^$'}
  tr -d '\r' <"$VM_WORK/$name.console" |
    grep -E -v 'Command line: ' |
    grep -E -v '^DIRECTORY +TARGET +LUN .* FAILED ' |
    grep -E -i 'error|fail|warning|oops|call trace|kernel panic|segfault|BUG:|I/O error|blocked for more than' |
    grep -E -v -- "$allowed" |
    grep -E -v 'RAS: Correctable Errors collector|ERST: Error Record|acpi PNP0A08:00: _OSC: platform does not support|failed to load|Failed to connect to bus|tsc: Fast TSC calibration failed|GHES: Failed|No such file or directory|intel_pstate: CPU model not supported|EDAC|usbcore|Unexpected TXQ .* queue failure|fsck not present, so skipping root' || true
}

# vm_file IMAGE PATH: the contents of PATH in an ext4 image (debugfs, no mount).
vm_file() {
  debugfs -R "cat $2" "$1" 2>/dev/null
}

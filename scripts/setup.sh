#!/usr/bin/env bash
# Installs every build and test dependency from Debian packages. Idempotent:
# packages already present are skipped, so a second run costs one dpkg query.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libfmt-dev libspdlog-dev libgtest-dev libgmock-dev libbenchmark-dev
  zlib1g-dev libisal-dev libssl-dev libtomlplusplus-dev libcli11-dev
  libpcap-dev libmnl-dev tshark
  dpdk dpdk-dev libdpdk-dev
  liburing-dev libfuse3-dev fuse3
  nbdkit nbdkit-plugin-dev libnbd-bin
  tgt libiscsi-bin libiscsi-dev fio
  iproute2 ethtool e2fsprogs util-linux kmod procps psmisc
  clang-format file groff-base jq
  clang libclang-rt-14-dev llvm gnuplot-nox
  # tests/vm: a Debian kernel under qemu (TCG), an initramfs from our hook,
  # a busybox root; md, LVM and NBD inside the VM.
  qemu-system-x86 linux-image-amd64 initramfs-tools busybox-static zstd
  mdadm lvm2 nbd-client
  # the rbd: store (librbd) and the one-host Ceph cluster its tests start (tests/ceph)
  librbd-dev librados-dev ceph-mon ceph-osd ceph-common
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # linux-image-amd64 is for the VM tests only (tests/vm builds its own
  # initramfs): skip the kernel postinst's initramfs for this host.
  export INITRD=No
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: dependencies present"

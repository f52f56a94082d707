#!/usr/bin/env bash
# Usage: build_assets.sh BUILD_DIR SOURCE_DIR [OUT_DIR]
#
# Makes what the VM tests boot, from this host's Debian packages and the
# build tree, into OUT_DIR (default BUILD_DIR/vm-assets):
#   vmlinuz       Debian's kernel (linux-image-amd64), newest in /boot with modules
#   initrd.img    mkinitramfs with OUR hook and boot script
#                 (initiator/initramfs/), the programs copy_exec'd from the
#                 build tree (a missing library fails here, not at boot),
#                 virtio-net, fuse, loop, md, dm and nbd modules
#   root.img      an ext4 root filesystem: busybox-static, hyperscsi-attach,
#                 nbdkit + our plugin, nbd-client, mdadm, lvm, e2fsprogs, and
#                 tests/vm/root/ (its /sbin/init runs the check the kernel
#                 command line names, then shuts down as systemd-shutdown would)
#   secrets/      good.key and bad.key (the hook copies them into the initramfs)
#   stamp         hash of every input: an unchanged input set is not rebuilt
# Exit 77 (ctest: skipped) when a tool or the kernel is missing.
set -euo pipefail
build=$(cd "$1" && pwd)
source=$(cd "$2" && pwd)
out=${3:-$build/vm-assets}

for tool in mkinitramfs busybox mke2fs strip sha256sum; do
  command -v "$tool" >/dev/null || {
    echo "SKIP: $tool missing (scripts/setup.sh installs it)"
    exit 77
  }
done
[[ $(id -u) -eq 0 ]] || {
  echo "SKIP: needs root (mkinitramfs reads /boot and /lib/modules)"
  exit 77
}
version=${HS_VM_KERNEL:-}
if [[ -z $version ]]; then
  for k in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V); do
    v=${k#/boot/vmlinuz-}
    [[ -d /lib/modules/$v ]] && version=$v
  done
fi
[[ -n $version && -r /boot/vmlinuz-$version ]] || {
  echo "SKIP: no kernel with modules in /boot (apt-get install linux-image-amd64)"
  exit 77
}

attach=$build/initiator/hyperscsi-attach
plugin=$build/initiator/nbdkit-hyperscsi-plugin.so
for f in "$attach" "$plugin"; do [[ -x $f ]] || {
  echo "FAIL: $f not built"
  exit 1
}; done

inputs=(
  "/boot/vmlinuz-$version" "$attach" "$plugin" "$0"
  "$source"/initiator/initramfs/hooks/hyperscsi
  "$source"/initiator/initramfs/scripts/local-top/hyperscsi
  "$source"/tests/vm/root/*
)
stamp=$( (echo "$version"; sha256sum "${inputs[@]}") | sha256sum | cut -d' ' -f1)
if [[ -f $out/stamp && $(cat "$out/stamp") == "$stamp" ]]; then
  echo "VM assets up to date in $out"
  exit 0
fi

start=$SECONDS
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d "/tmp/hsvm-assets.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Stripped copies: the initramfs and the image carry no debug info.
strip -o "$tmp/hyperscsi-attach" "$attach"
strip -o "$tmp/nbdkit-hyperscsi-plugin.so" "$plugin"

cp "/boot/vmlinuz-$version" "$out/vmlinuz"

# Secrets for the authenticated boot (good) and the refused one (bad).
mkdir -p "$out/secrets"
printf '%s\n' "hsvm-good-secret-0123456789abcdef0123456789abcdef" >"$out/secrets/good.key"
printf '%s\n' "hsvm-bad-secret-fedcba9876543210fedcba9876543210" >"$out/secrets/bad.key"
chmod 600 "$out/secrets/"*.key

# --- initramfs: our hook and script in a private configuration directory ---
conf=$tmp/initramfs-conf
mkdir -p "$conf/hooks" "$conf/scripts/local-top" "$conf/conf.d"
cp "$source/initiator/initramfs/hooks/hyperscsi" "$conf/hooks/"
cp "$source/initiator/initramfs/scripts/local-top/hyperscsi" "$conf/scripts/local-top/"
cat >"$conf/initramfs.conf" <<'EOF'
MODULES=list
BUSYBOX=y
COMPRESS=zstd
COMPRESSLEVEL=1
UMASK=0077
EOF
# The NIC, the root filesystem, and what the checks inside the VM use.
printf '%s\n' virtio_pci virtio_net ext4 md_mod raid1 dm_mod nbd >"$conf/modules"
HYPERSCSI_ATTACH=$tmp/hyperscsi-attach HYPERSCSI_INITRAMFS_SECRETS=$out/secrets \
  mkinitramfs -d "$conf" -o "$out/initrd.img" "$version" 2>&1 | grep -v '^W: .*mdadm' || true
[[ -s $out/initrd.img ]] || {
  echo "FAIL: mkinitramfs made no image"
  exit 1
}
# What the boot needs must be inside, not just on this host.
listing=$(unmkinitramfs -v "$out/initrd.img" "$tmp/unpacked" 2>&1)
for f in usr/bin/hyperscsi-attach usr/bin/@hyperscsi-attach scripts/local-top/hyperscsi \
  etc/hyperscsi/initramfs/good.key; do
  grep -q "$f\$" <<<"$listing" || {
    echo "FAIL: $f is not in the initramfs"
    exit 1
  }
done
# Every library the attach program needs resolves inside the image.
if chroot "$tmp/unpacked/main" /usr/bin/hyperscsi-attach --version >/dev/null 2>"$tmp/chroot.err" ||
  chroot "$tmp/unpacked" /usr/bin/hyperscsi-attach --version >/dev/null 2>>"$tmp/chroot.err"; then
  :
else
  echo "FAIL: hyperscsi-attach does not run inside the initramfs:"
  cat "$tmp/chroot.err"
  exit 1
fi

# --- root filesystem ---
stage=$tmp/root
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/lib/hyperscsi,usr/lib64,etc/lvm,etc/hyperscsi,proc,sys,dev,run,tmp,mnt,root,hsvm,var}
# Merged /usr, as mkinitramfs lays it out: copy_exec puts libraries in usr/lib*.
ln -s usr/lib "$stage/lib"
ln -s usr/lib64 "$stage/lib64"
cp /bin/busybox "$stage/bin/busybox"
for applet in $(busybox --list); do
  [[ -e $stage/bin/$applet ]] || ln -s busybox "$stage/bin/$applet"
done
(
  # initramfs-tools' copy_exec copies a program with the libraries ldd names.
  DESTDIR=$stage
  verbose=n
  export DESTDIR verbose
  # shellcheck disable=SC1091
  . /usr/share/initramfs-tools/hook-functions
  copy_exec "$tmp/hyperscsi-attach" /usr/bin/hyperscsi-attach
  copy_exec "$tmp/nbdkit-hyperscsi-plugin.so" /usr/lib/hyperscsi/nbdkit-hyperscsi-plugin.so
  for p in nbdkit nbd-client mdadm lvm mke2fs e2fsck; do
    path=$(command -v "$p")
    copy_exec "$path" "/usr/sbin/$p"
  done
)
ln -s mke2fs "$stage/usr/sbin/mkfs.ext4"
ln -s e2fsck "$stage/usr/sbin/fsck.ext4"
cp /etc/mke2fs.conf "$stage/etc/" 2>/dev/null || true
# LVM without udev: it makes its device nodes itself.
cat >"$stage/etc/lvm/lvm.conf" <<'EOF'
devices {
  obtain_device_list_from_udev = 0
  use_devicesfile = 0
  filter = [ "a|^/dev/loop|", "r|.*|" ]
}
activation {
  udev_sync = 0
  udev_rules = 0
  monitoring = 0
}
global {
  use_lvmpolld = 0
  event_activation = 0
}
EOF
install -m 0755 "$source/tests/vm/root/init" "$stage/sbin/init"
for f in "$source"/tests/vm/root/*; do
  [[ ${f##*/} == init ]] && continue
  case $f in
  *.toml) install -m 0644 "$f" "$stage/etc/hyperscsi/${f##*/}" ;;
  *) install -m 0755 "$f" "$stage/hsvm/${f##*/}" ;;
  esac
done
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"

used=$(du -sm "$stage" | cut -f1)
size=$((used + 96))
mke2fs -q -t ext4 -L hsroot -U 6f1e1c3a-18d1-4c5e-9b1a-000000000018 -d "$stage" \
  "$out/root.img" "${size}M"
echo "$stamp" >"$out/stamp"
echo "VM assets in $out after $((SECONDS - start)) s: kernel $version," \
  "initramfs $(du -h "$out/initrd.img" | cut -f1), root image ${size} MiB ($used MiB used)"

# Kernel block devices over HyperSCSI (sourced by /sbin/init), with two
# targets: hsvm-a behind eth0 (it also serves the root) and hsvm-b behind eth1.
#  1. NBD: nbdkit with our plugin on hsvm-a LUN 3, nbd-client, mkfs, files, fsck.
#  2. md RAID1 over hsvm-a LUN 1 and hsvm-b LUN 0. The host kills hsvm-b on
#     "HSVM: raid writing": the writes succeed, the array degrades. On
#     "HSVM: raid degraded" the host starts hsvm-b again: the leg is re-added,
#     resyncs, a check finds no mismatch, fsck is clean.
#  3. LVM: a volume group over hsvm-a LUN 2 and hsvm-b LUN 1, attached by name
#     from /etc/hyperscsi/attach.toml (up/down); its filesystem survives
#     detach and re-attach.
ip link set eth1 up || hs_fail "cannot bring eth1 up"
mkdir -p /mnt/fs /run/hs

fs_errors() { # kernel lines that mean an error reached a filesystem or an array
	dmesg | grep -E "EXT4-fs (error|warning)|Buffer I/O error on dev ($1)|I/O error, dev ($1)" || true
}
settle_dev() { # wait up to 10 s for a block device node
	n=0
	while [ ! -b "$1" ] && [ $n -lt 50 ]; do sleep 0.2; n=$((n + 1)); done
	[ -b "$1" ]
}
attach_loop() { # attach_loop DIR ARGS...: prints the loop device
	dir=$1
	shift
	mkdir -p "$dir"
	hyperscsi-attach attach --fuse "$dir" --loop --busy-poll-us 0 "$@" >/tmp/attach.out 2>&1 ||
		hs_fail "attach $*: $(cat /tmp/attach.out)"
	sed -n 's/^loop //p' /tmp/attach.out
}

# --- 1. NBD ---
nbdkit --unix /run/nbd.sock --pidfile /run/nbdkit.pid \
	/usr/lib/hyperscsi/nbdkit-hyperscsi-plugin.so port=afpacket:eth0 target=hsvm-a lun=3 \
	busy_poll_us=0 2>/tmp/nbdkit.err || hs_fail "nbdkit: $(cat /tmp/nbdkit.err)"
n=0
while [ ! -S /run/nbd.sock ] && [ $n -lt 100 ]; do sleep 0.2; n=$((n + 1)); done
nbd-client -unix /run/nbd.sock /dev/nbd0 >/tmp/nbd.out 2>&1 || hs_fail "nbd-client: $(cat /tmp/nbd.out)"
settle_dev /dev/nbd0 || hs_fail "no /dev/nbd0"
hs "nbd: /dev/nbd0 is $(cat /sys/block/nbd0/size) sectors"
mkfs.ext4 -q -F /dev/nbd0 || hs_fail "mkfs.ext4 on /dev/nbd0"
mount /dev/nbd0 /mnt/fs || hs_fail "mount /dev/nbd0"
for f in 1 2 3; do
	dd if=/dev/urandom of=/mnt/fs/file$f bs=64k count=32 2>/dev/null || hs_fail "nbd: writing file$f"
done
(cd /mnt/fs && sha256sum file1 file2 file3) >/tmp/nbd.sha
umount /mnt/fs || hs_fail "umount /dev/nbd0"
e2fsck -fn /dev/nbd0 >/tmp/fsck.out 2>&1 || hs_fail "fsck of /dev/nbd0: $(cat /tmp/fsck.out)"
mount /dev/nbd0 /mnt/fs || hs_fail "mount /dev/nbd0 again"
(cd /mnt/fs && sha256sum -c /tmp/nbd.sha) >/dev/null || hs_fail "nbd: files changed after remount"
umount /mnt/fs
nbd-client -d /dev/nbd0 >/dev/null 2>&1 || hs_fail "nbd-client -d"
kill "$(cat /run/nbdkit.pid)"
[ -z "$(fs_errors nbd0)" ] || hs_fail "errors on nbd0: $(fs_errors nbd0)"
hs "nbd ok"

# --- 2. md RAID1 across the two targets ---
# A short dead time: a leg whose target is gone fails within 4 s and md
# drops it, instead of the writes waiting a minute.
la=$(attach_loop /run/hs/md-a --port afpacket:eth0 --target hsvm-a --lun 1 --dead-time 4)
lb=$(attach_loop /run/hs/md-b --port afpacket:eth1 --target hsvm-b --lun 0 --dead-time 4)
hs "md legs $la $lb"
mdadm --create /dev/md0 --run --quiet --level=1 --raid-devices=2 --metadata=1.2 \
	--bitmap=internal --assume-clean "$la" "$lb" >/tmp/md.out 2>&1 || hs_fail "mdadm --create: $(cat /tmp/md.out)"
settle_dev /dev/md0 || hs_fail "no /dev/md0"
# No bad-block log: with one, md answers a failed write by retrying it one
# sector at a time to record bad blocks (narrow_write_error), and each retry
# waits the leg's dead time: minutes before the leg is dropped. A leg whose
# target is gone has no bad blocks; it is gone.
mdadm --stop /dev/md0 >/tmp/md.out 2>&1 || hs_fail "mdadm --stop: $(cat /tmp/md.out)"
mdadm --assemble /dev/md0 --run --quiet --update=no-bbl "$la" "$lb" >/tmp/md.out 2>&1 ||
	hs_fail "mdadm --assemble --update=no-bbl: $(cat /tmp/md.out)"
settle_dev /dev/md0 || hs_fail "no /dev/md0 after assembling"
mkfs.ext4 -q -F /dev/md0 || hs_fail "mkfs.ext4 on /dev/md0"
mount /dev/md0 /mnt/fs || hs_fail "mount /dev/md0"
dd if=/dev/urandom of=/mnt/fs/before bs=64k count=64 conv=fsync 2>/dev/null || hs_fail "md: writing before"
hs "raid writing"
dd if=/dev/urandom of=/mnt/fs/during bs=64k count=256 conv=fsync 2>/tmp/dd.err ||
	hs_fail "md: a write failed while a leg went away: $(cat /tmp/dd.err)"
# Should the writes have ended before the host killed the target, more
# writes meet the dead leg.
end=$(($(hs_uptime) + 40))
i=0
while ! grep -q '\[U_\]' /proc/mdstat; do
	[ "$(hs_uptime)" -lt "$end" ] || hs_fail "md0 did not degrade: $(cat /proc/mdstat)"
	dd if=/dev/urandom of=/mnt/fs/extra$i bs=64k count=4 conv=fsync 2>/tmp/dd.err ||
		hs_fail "md: a write failed while a leg went away: $(cat /tmp/dd.err)"
	i=$((i + 1))
	sleep 1
done
sync
[ -z "$(fs_errors md0)" ] || hs_fail "errors reached the filesystem on md0: $(fs_errors md0)"
(cd /mnt/fs && sha256sum before during) >/tmp/md.sha
hs "raid degraded: $(grep -A1 '^md0' /proc/mdstat | tr '\n' ' ')"
# The host restarts hsvm-b; its attach daemon logs in again by itself.
end=$(($(hs_uptime) + 90))
until dd if="$lb" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null; do
	[ "$(hs_uptime)" -lt "$end" ] || hs_fail "the second leg $lb did not come back"
	sleep 1
done
mdadm /dev/md0 --remove "$lb" >/tmp/md.out 2>&1 || hs_fail "mdadm --remove: $(cat /tmp/md.out)"
if ! mdadm /dev/md0 --re-add "$lb" >/tmp/md.out 2>&1; then
	hs "re-add refused ($(cat /tmp/md.out)), adding for a full resync"
	mdadm /dev/md0 --add "$lb" >/tmp/md.out 2>&1 || hs_fail "mdadm --add: $(cat /tmp/md.out)"
fi
hs "raid re-added: $(grep -A2 '^md0' /proc/mdstat | tr '\n' ' ')"
wait_idle() {
	end=$(($(hs_uptime) + 180))
	while [ "$(cat /sys/block/md0/md/sync_action)" != idle ] || ! grep -q '\[UU\]' /proc/mdstat; do
		[ "$(hs_uptime)" -lt "$end" ] || hs_fail "md0 did not finish $1: $(cat /proc/mdstat)"
		sleep 1
	done
}
wait_idle resync
echo check >/sys/block/md0/md/sync_action
sleep 1
wait_idle check
mismatch=$(cat /sys/block/md0/md/mismatch_cnt)
[ "$mismatch" = 0 ] || hs_fail "md0 check found $mismatch mismatched sectors"
echo 3 >/proc/sys/vm/drop_caches
(cd /mnt/fs && sha256sum -c /tmp/md.sha) >/dev/null || hs_fail "md: files changed"
umount /mnt/fs || hs_fail "umount /dev/md0"
e2fsck -fn /dev/md0 >/tmp/fsck.out 2>&1 || hs_fail "fsck of /dev/md0: $(cat /tmp/fsck.out)"
mdadm --detail /dev/md0 | grep -q 'Active Devices : 2' || hs_fail "md0 not whole: $(mdadm --detail /dev/md0)"
[ -z "$(fs_errors md0)" ] || hs_fail "errors reached the filesystem on md0: $(fs_errors md0)"
mdadm --stop /dev/md0 >/dev/null 2>&1 || hs_fail "mdadm --stop"
hyperscsi-attach detach /run/hs/md-a >/dev/null || hs_fail "detach md-a"
hyperscsi-attach detach /run/hs/md-b >/dev/null || hs_fail "detach md-b"
hs "raid ok: resynced, check mismatch_cnt 0, fsck clean"

# --- 3. LVM over two LUNs, attached by name ---
up() {
	hyperscsi-attach up "$1" >/tmp/up.out 2>&1 || hs_fail "hyperscsi-attach up $1: $(cat /tmp/up.out)"
	sed -n 's/^loop //p' /tmp/up.out
}
pa=$(up lvm-a)
pb=$(up lvm-b)
hyperscsi-attach list >/tmp/list 2>&1
cat /tmp/list
[ "$(grep -E '^lvm-[ab] ' /tmp/list | grep -v 'not attached$' | grep -c ' attached$')" = 2 ] ||
	hs_fail "list does not show lvm-a and lvm-b attached: $(cat /tmp/list)"
lvm pvcreate -q "$pa" "$pb" >/tmp/lvm.out 2>&1 || hs_fail "pvcreate: $(cat /tmp/lvm.out)"
lvm vgcreate -q vghs "$pa" "$pb" >/tmp/lvm.out 2>&1 || hs_fail "vgcreate: $(cat /tmp/lvm.out)"
lvm lvcreate -q -y -l 100%FREE -n data vghs >/tmp/lvm.out 2>&1 || hs_fail "lvcreate: $(cat /tmp/lvm.out)"
devs=$(lvm lvs --noheadings -o devices vghs/data 2>/dev/null)
case "$devs" in *"$pa"*"$pb"* | *"$pb"*"$pa"*) ;; *) hs_fail "vghs/data does not span both LUNs: $devs" ;; esac
settle_dev /dev/vghs/data || hs_fail "no /dev/vghs/data"
mkfs.ext4 -q -F /dev/vghs/data || hs_fail "mkfs on vghs/data"
mount /dev/vghs/data /mnt/fs || hs_fail "mount vghs/data"
dd if=/dev/urandom of=/mnt/fs/data bs=64k count=640 2>/dev/null || hs_fail "lvm: writing"
(cd /mnt/fs && sha256sum data) >/tmp/lvm.sha
umount /mnt/fs
lvm vgchange -q -an vghs >/tmp/lvm.out 2>&1 || hs_fail "vgchange -an: $(cat /tmp/lvm.out)"
hyperscsi-attach down lvm-a >/dev/null 2>&1 || hs_fail "down lvm-a"
hyperscsi-attach down lvm-b >/dev/null 2>&1 || hs_fail "down lvm-b"
hyperscsi-attach list >/tmp/list 2>&1
[ "$(grep -cE '^lvm-[ab] .* not attached$' /tmp/list)" = 2 ] || hs_fail "list after down: $(cat /tmp/list)"
hs "lvm detached; attaching again in the other order"
pb=$(up lvm-b)
pa=$(up lvm-a)
lvm vgchange -q -ay vghs >/tmp/lvm.out 2>&1 || hs_fail "vgchange -ay after re-attach: $(cat /tmp/lvm.out)"
settle_dev /dev/vghs/data || hs_fail "no /dev/vghs/data after re-attach"
e2fsck -fn /dev/vghs/data >/tmp/fsck.out 2>&1 || hs_fail "fsck of vghs/data: $(cat /tmp/fsck.out)"
mount /dev/vghs/data /mnt/fs || hs_fail "mount vghs/data after re-attach"
(cd /mnt/fs && sha256sum -c /tmp/lvm.sha) >/dev/null || hs_fail "lvm: file changed across detach/re-attach"
umount /mnt/fs
lvm vgchange -q -an vghs >/dev/null 2>&1
hyperscsi-attach down lvm-a >/dev/null 2>&1
hyperscsi-attach down lvm-b >/dev/null 2>&1
hs "lvm ok: vghs over $pa $pb survived detach/re-attach"

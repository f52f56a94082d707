# Diskless boot check (sourced by /sbin/init): the root attachment is listed,
# then a file of random data, its checksum and a marker are written and synced;
# the host reads all three from the image once the VM is off.
# The baseline CPU (qemu64, no SSE4.2): a dpdk: port is refused with the
# reason, not a SIGILL (DPDK is loaded only for dpdk: specs, issue 22).
if ! grep -qw sse4_2 /proc/cpuinfo; then
	hyperscsi-attach discover --port dpdk:--no-pci >/tmp/dpdk.out 2>&1
	rc=$?
	[ "$rc" -eq 1 ] && grep -q 'this CPU lacks .*SSE4.2' /tmp/dpdk.out ||
		hs_fail "dpdk: on a CPU without SSE4.2: exit $rc, $(cat /tmp/dpdk.out)"
	hs "baseline CPU: a dpdk: port is refused with the reason (no SSE4.2), exit $rc"
fi
hyperscsi-attach list >/tmp/list 2>&1
cat /tmp/list
grep -q '/hyperscsi-root' /tmp/list || hs_fail "hyperscsi-attach list does not show the root attachment"
grep -q 'daemon-gone' /tmp/list && hs_fail "hyperscsi-attach list: the root's daemon looks gone"
dd if=/dev/urandom of=/data.bin bs=64k count=128 2>/tmp/dd.err || hs_fail "writing /data.bin: $(cat /tmp/dd.err)"
sha256sum /data.bin | cut -d' ' -f1 >/data.sha256
printf 'hsvm-marker %s mtu=%s\n' "$(hs_arg hsvm.nonce)" "$(cat /sys/class/net/eth0/mtu)" >/marker
sync
hs "wrote /data.bin $(cat /data.sha256)"

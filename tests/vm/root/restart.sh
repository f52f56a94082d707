# Writes through a target restart (sourced by /sbin/init). The host kills the
# target with SIGKILL when it sees "HSVM: writing" and starts it again; this
# writes 256 KiB chunks with fsync until the root attachment's state shows a
# recovered session (resume or re-login), then 8 chunks more, and records the
# file's checksum for the host to compare with the image.
state=$(grep -l '^dir=/hyperscsi-root$' /run/hyperscsi-attach/*.state | head -1)
[ -n "$state" ] || hs_fail "no state file of the root attachment"
recoveries() {
	r=$(sed -n 's/^relogins=//p' "$state")
	s=$(sed -n 's/^resumes=//p' "$state")
	echo $((${r:-0} + ${s:-0}))
}
before=$(recoveries)
end=$(($(hs_uptime) + 150))
i=0
seen=
hs "writing"
while :; do
	dd if=/dev/urandom of=/data.bin bs=256k count=1 seek=$i conv=notrunc,fsync 2>/tmp/dd.err ||
		hs_fail "writing chunk $i: $(cat /tmp/dd.err)"
	i=$((i + 1))
	if [ -z "$seen" ] && [ "$(recoveries)" -gt "$before" ]; then
		seen=$i
		hs "session recovered (state: $(grep -E '^(relogins|resumes|commands_reissued)=' "$state" | tr '\n' ' ')) after chunk $i"
	fi
	[ -n "$seen" ] && [ $i -ge $((seen + 8)) ] && break
	[ "$(hs_uptime)" -lt "$end" ] || hs_fail "no session recovery in the root's attach state after $i chunks"
done
sha256sum /data.bin | cut -d' ' -f1 >/data.sha256
printf 'hsvm-marker %s chunks=%s\n' "$(hs_arg hsvm.nonce)" "$i" >/marker
sync
hs "wrote $i chunks $(cat /data.sha256)"

#!/usr/bin/env bash
# Usage: install_and_deb_test.sh BUILD_DIR SOURCE_DIR CMAKE CPACK VERSION WITH_DPDK MODULE_DIR
#
# 1. `cmake --install BUILD --prefix TMP/prefix`: the layout is complete, and
#    a second install keeps an edited etc/hyperscsi/target.toml.
# 2. `cpack -G DEB`: the hyperscsi-target and hyperscsi-client packages have
#    the right name, version, dependencies and contents; `dpkg -x` unpacks
#    them into a scratch root where the programs run (--version), the nbdkit
#    plugin loads in nbdkit, and each man page renders without warnings.
# 3. DPDK stays out of the programs: ldd of hyperscsi-target, hyperscsi-attach,
#    hyperscsi-bench and the plugin shows no librte library, neither package
#    depends on DPDK. With WITH_DPDK=1 the hyperscsi-dpdk package holds the
#    module (MODULE_DIR/hyperscsi-dpdk-port.so, the only file linking librte_*),
#    the target recommends it, and the unpacked programs find it through their
#    RUNPATH (a dpdk: spec reaches DPDK's own parser); with the client package
#    alone, a dpdk: spec is refused with a message naming the package.
# 4. Built with the rbd: store: its module is in hyperscsi-target-rbd (which
#    depends on librbd1), never in hyperscsi-target (which must not); the
#    unpacked daemon says the module is missing until that package is there,
#    then loads it from the installed layout.
# Everything happens under one temporary directory; nothing on the real
# system is modified. Man pages are gzip-compressed (Debian policy). Exit 77 (ctest: skipped) when a tool is missing.
set -euo pipefail

build=$1 source=$2 cmake=$3 cpack=$4 version=$5 with_dpdk=$6 module_dir=$7
module_rel=$module_dir/hyperscsi-dpdk-port.so
for tool in dpkg-architecture dpkg-deb dpkg-shlibdeps file groff nbdkit pkg-config; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool not installed (scripts/setup.sh installs it)"
    exit 77
  fi
done

tmp=$(mktemp -d "/tmp/hs-packaging-$$.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
expect_file() {  # expect_file ROOT RELPATH...: each exists and is non-empty
  local root=$1
  shift
  for f in "$@"; do
    if [[ -s "$root/$f" ]]; then echo "ok: $f"; else fail "missing $root/$f"; fi
  done
}
expect_exec() {
  local root=$1
  shift
  for f in "$@"; do [[ -x "$root/$f" ]] || fail "$root/$f is not executable"; done
}

# nbdkit looks for plugins here (Debian: /usr/lib/<multiarch>/nbdkit/plugins).
plugindir=$(pkg-config nbdkit --variable=plugindir)
plugin_rel=${plugindir#/usr/}/nbdkit-hyperscsi-plugin.so
[[ "$plugindir" == /usr/* ]] || fail "nbdkit plugindir $plugindir is not under /usr"

target_files=(
  sbin/hyperscsi-target
  lib/systemd/system/hyperscsi-target.service
  share/doc/hyperscsi-target/examples/target.toml
  share/doc/hyperscsi/README.md
  share/man/man8/hyperscsi-target.8.gz
)
client_files=(
  bin/hyperscsi-attach
  "$plugin_rel"
  share/man/man8/hyperscsi-attach.8.gz
  # Diskless root and attachments at boot (tests/vm boots with the hook).
  share/initramfs-tools/hooks/hyperscsi
  share/initramfs-tools/scripts/local-top/hyperscsi
  share/initramfs-tools/conf-hooks.d/hyperscsi
  lib/systemd/system/hyperscsi-attach@.service
  share/doc/hyperscsi-client/examples/attach.toml
)
# The Wireshark dissector, when the tree has one (Wireshark's global Lua plugin dir).
lua_rel=lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/wireshark/plugins/hyperscsi.lua
if [[ -f "$source/tools/wireshark/hyperscsi.lua" ]]; then client_files+=("$lua_rel"); fi

# Built with the rbd: store module?
with_rbd=0
[[ -f "$build/store-modules/hyperscsi-store-rbd.so" ]] && with_rbd=1

echo "== cmake --install into $tmp/prefix"
prefix=$tmp/prefix
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install1.log"
expect_file "$prefix" "${target_files[@]}" "${client_files[@]}" etc/hyperscsi/target.toml
if ((with_dpdk)); then expect_file "$prefix" "$module_rel"; fi
expect_exec "$prefix" sbin/hyperscsi-target bin/hyperscsi-attach
cmp -s "$prefix/etc/hyperscsi/target.toml" "$prefix/share/doc/hyperscsi-target/examples/target.toml" ||
  fail "etc/hyperscsi/target.toml is not the example"
echo '# edited by the operator' >>"$prefix/etc/hyperscsi/target.toml"
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install2.log"
if grep -q '^# edited by the operator$' "$prefix/etc/hyperscsi/target.toml"; then
  echo "ok: a second install keeps the edited etc/hyperscsi/target.toml"
else
  fail "a second install replaced the edited etc/hyperscsi/target.toml"
fi
grep -q 'Keeping existing: .*/etc/hyperscsi/target.toml' "$tmp/install2.log" ||
  fail "second install did not report keeping the config"
if ((with_rbd)); then
  n=$(find "$prefix" -path '*/hyperscsi/hyperscsi-store-rbd.so' | wc -l)
  ((n == 1)) && echo "ok: the rbd store module is installed" || fail "found $n rbd store modules in $prefix"
fi

echo "== cpack -G DEB into $tmp/pkg"
(cd "$tmp" && "$cpack" -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/pkg") >"$tmp/cpack.log" 2>&1 ||
  {
    cat "$tmp/cpack.log"
    fail "cpack failed"
    exit 1
  }
arch=$(dpkg --print-architecture)
root=$tmp/root
packages=(hyperscsi-target hyperscsi-client)
if ((with_dpdk)); then packages+=(hyperscsi-dpdk); fi
for pkg in "${packages[@]}"; do
  deb=$tmp/pkg/${pkg}_${version}_${arch}.deb
  if [[ ! -f "$deb" ]]; then
    fail "no $deb; cpack made: $(ls "$tmp/pkg")"
    continue
  fi
  [[ $(dpkg-deb -f "$deb" Package) == "$pkg" ]] || fail "$deb: Package is not $pkg"
  [[ $(dpkg-deb -f "$deb" Version) == "$version" ]] || fail "$deb: Version is not $version"
  [[ $(dpkg-deb -f "$deb" Architecture) == "$arch" ]] || fail "$deb: Architecture is not $arch"
  depends=$(dpkg-deb -f "$deb" Depends)
  echo "$pkg Depends: $depends"
  [[ "$depends" == *libc6* ]] || fail "$deb: Depends lacks libc6 (dpkg-shlibdeps not run?)"
  dpkg-deb -c "$deb" >"$tmp/$pkg.contents"
  dpkg-deb -x "$deb" "$root"
done
dpkg-deb -f "$tmp/pkg/hyperscsi-client_${version}_${arch}.deb" Depends | grep -q fuse3 ||
  fail "hyperscsi-client does not depend on fuse3"
# Each program is in exactly one package.
grep -q '/hyperscsi-attach$' "$tmp/hyperscsi-target.contents" && fail "hyperscsi-attach in the target package"
grep -q '/hyperscsi-target$' "$tmp/hyperscsi-client.contents" && fail "hyperscsi-target in the client package"
grep -q 'hyperscsi-dpdk-port.so$' "$tmp/hyperscsi-target.contents" "$tmp/hyperscsi-client.contents" &&
  fail "the DPDK module is in the target or client package"
# Maintainer scripts seed /etc/hyperscsi/target.toml without replacing one.
ctrl=$tmp/ctrl
dpkg-deb -e "$tmp/pkg/hyperscsi-target_${version}_${arch}.deb" "$ctrl"
[[ -x "$ctrl/postinst" && -x "$ctrl/postrm" ]] || fail "hyperscsi-target lacks postinst/postrm"
grep -q '! -e /etc/hyperscsi/target.toml' "$ctrl/postinst" || fail "postinst may replace the config"

# The rbd: store: apart, and the daemon finds it in the installed layout.
if ((with_rbd)); then
  rbd_deb=$tmp/pkg/hyperscsi-target-rbd_${version}_${arch}.deb
  target_deps=$(dpkg-deb -f "$tmp/pkg/hyperscsi-target_${version}_${arch}.deb" Depends)
  [[ "$target_deps" != *librbd* && "$target_deps" != *librados* ]] ||
    fail "hyperscsi-target depends on Ceph's libraries: $target_deps"
  grep -q 'hyperscsi-store-rbd' "$tmp/hyperscsi-target.contents" && fail "the rbd module in hyperscsi-target"
  rbd_cmd=("$root/usr/sbin/hyperscsi-target" --port mem:pkgtest --lun 0=rbd:pool/image
    --ceph-conf "$tmp/absent.conf" --control "$tmp/rbd.sock")
  out=$(env -u HYPERSCSI_STORE_MODULE_DIR "${rbd_cmd[@]}" 2>&1) && fail "daemon started without the rbd module"
  grep -q 'store module is not installed.*hyperscsi-target-rbd' <<<"$out" ||
    fail "no clear error without the rbd module: $out"
  if [[ -f "$rbd_deb" ]]; then
    rbd_deps=$(dpkg-deb -f "$rbd_deb" Depends)
    echo "hyperscsi-target-rbd Depends: $rbd_deps"
    [[ "$rbd_deps" == *librbd1* ]] || fail "hyperscsi-target-rbd does not depend on librbd1"
    [[ "$rbd_deps" == *"hyperscsi-target (= $version)"* ]] || fail "hyperscsi-target-rbd: no exact hyperscsi-target dependency"
    dpkg-deb -c "$rbd_deb" | grep -q '/hyperscsi/hyperscsi-store-rbd.so$' || fail "no module in $rbd_deb"
    dpkg-deb -x "$rbd_deb" "$root"
    out=$(env -u HYPERSCSI_STORE_MODULE_DIR "${rbd_cmd[@]}" 2>&1) && fail "daemon started with a missing ceph.conf"
    if grep -q 'cannot read the Ceph configuration' <<<"$out"; then
      echo "ok: the installed daemon loads the installed rbd module"
    else
      fail "the installed daemon did not load the rbd module: $out"
    fi
  else
    fail "no $rbd_deb; cpack made: $(ls "$tmp/pkg")"
  fi
fi

expect_file "$root/usr" "${target_files[@]}" "${client_files[@]}"
# The benchmark program, when the tree builds one, comes with its man page.
if [[ -e "$root/usr/bin/hyperscsi-bench" ]]; then
  expect_file "$root/usr" share/man/man1/hyperscsi-bench.1.gz
fi
expect_exec "$root/usr" sbin/hyperscsi-target bin/hyperscsi-attach \
  share/initramfs-tools/hooks/hyperscsi share/initramfs-tools/scripts/local-top/hyperscsi
# The client package rebuilds the initramfs (its hook) through dpkg's trigger.
dpkg-deb -e "$tmp/pkg/hyperscsi-client_${version}_${arch}.deb" "$tmp/client-ctrl"
grep -qx 'activate-noawait update-initramfs' "$tmp/client-ctrl/triggers" 2>/dev/null ||
  fail "hyperscsi-client does not trigger update-initramfs"
# The shipped example attach.toml parses and lists its attachment.
out=$(HYPERSCSI_ATTACH_CONFIG=$root/usr/share/doc/hyperscsi-client/examples/attach.toml \
  HYPERSCSI_RUN_DIR=$tmp/run "$root/usr/bin/hyperscsi-attach" list 2>&1) ||
  fail "hyperscsi-attach list rejects the example attach.toml: $out"
grep -qE '^data +storage1 +0 +afpacket:eth1 +/run/hyperscsi/data +not attached$' <<<"$out" ||
  fail "hyperscsi-attach list does not show the example's attachment: $out"

echo "== programs in the scratch root"
for exe in "$root"/usr/sbin/* "$root"/usr/bin/*; do
  missing=$(ldd "$exe" | grep 'not found' || true)  # not grep -q: with pipefail, SIGPIPE hid hits
  if [[ -n "$missing" ]]; then fail "$exe: unresolved libraries: $missing"; fi
done
# Every program answers --version with its name and the project version.
for exe in "$root"/usr/sbin/* "$root"/usr/bin/*; do
  name=$(basename "$exe")
  out=$("$exe" --version) || fail "$name --version exited $?"
  [[ "$out" == "$name $version" ]] || fail "$name --version printed '$out'"
  echo "ok: $out"
done
out=$("$root/usr/bin/hyperscsi-attach" --help) || fail "hyperscsi-attach --help exited $?"
for cmd in discover cdb attach detach list stats; do
  grep -qw "$cmd" <<<"$out" || fail "hyperscsi-attach --help does not list '$cmd'"
done
# NBDKIT_PRELOAD: the ASan runtime, for a sanitizer build's plugin.
nbdkit_cmd=(nbdkit)
[[ -n ${NBDKIT_PRELOAD:-} ]] && nbdkit_cmd=(env "LD_PRELOAD=$NBDKIT_PRELOAD" ASAN_OPTIONS=detect_leaks=0 nbdkit)
out=$("${nbdkit_cmd[@]}" --dump-plugin "$root/usr/$plugin_rel" 2>&1) || fail "nbdkit cannot load the plugin: $out"
grep -qx 'name=hyperscsi' <<<"$out" || fail "plugin name is not hyperscsi: $out"
grep -qx "version=$version" <<<"$out" || fail "plugin version is not $version: $out"
echo "nbdkit loads the plugin: $(grep -x 'name=.*' <<<"$out") $(grep -x 'version=.*' <<<"$out")"

# The installed dissector loads: tshark accepts its protocol as a display filter.
if [[ -f "$root/usr/$lua_rel" ]] && command -v tshark >/dev/null; then
  proto=$(grep -o 'Proto("[^"]*"' "$root/usr/$lua_rel" | head -1 | cut -d'"' -f2)
  printf '\xd4\xc3\xb2\xa1\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x00\x00\x01\x00\x00\x00' >"$tmp/empty.pcap"
  if [[ -n "$proto" ]] && timeout 60 tshark -n -X "lua_script:$root/usr/$lua_rel" -Y "$proto" -r "$tmp/empty.pcap" >/dev/null 2>"$tmp/tshark.err"; then
    echo "ok: tshark loads the installed dissector (protocol $proto)"
  else
    fail "tshark cannot load the installed dissector (protocol '$proto'): $(cat "$tmp/tshark.err")"
  fi
fi

echo "== DPDK stays out of the programs"
for pkg in hyperscsi-target hyperscsi-client; do
  fields=$(dpkg-deb -f "$tmp/pkg/${pkg}_${version}_${arch}.deb" Depends Pre-Depends)
  if grep -qiE 'librte|dpdk' <<<"$fields"; then fail "$pkg depends on DPDK: $fields"; else echo "ok: $pkg does not depend on DPDK"; fi
done
programs=(sbin/hyperscsi-target bin/hyperscsi-attach "$plugin_rel")
if [[ -e "$root/usr/bin/hyperscsi-bench" ]]; then programs+=(bin/hyperscsi-bench); fi
for f in "${programs[@]}"; do
  rte=$(ldd "$root/usr/$f" | grep -c librte || true)
  if ((rte)); then fail "$f links $rte librte libraries"; else echo "ok: ldd $f shows no librte library"; fi
done
dpdk_spec=dpdk:--hs-mtu=1  # refused by the module's own parser, before the EAL starts
dpdk_answer="bad --hs-mtu value '1'"
if ((with_dpdk)); then
  deb=$tmp/pkg/hyperscsi-dpdk_${version}_${arch}.deb
  grep -q "/usr/$module_rel\$" "$tmp/hyperscsi-dpdk.contents" || fail "hyperscsi-dpdk lacks /usr/$module_rel"
  [[ $(dpkg-deb -f "$deb" Depends) == *librte-eal* ]] || fail "hyperscsi-dpdk does not depend on librte-eal: $(dpkg-deb -f "$deb" Depends)"
  recommends=$(dpkg-deb -f "$tmp/pkg/hyperscsi-target_${version}_${arch}.deb" Recommends)
  [[ "$recommends" == *"hyperscsi-dpdk (= $version)"* ]] || fail "hyperscsi-target does not recommend hyperscsi-dpdk (= $version): '$recommends'"
  # The positive control: the module is where DPDK went.
  [[ $(ldd "$root/usr/$module_rel" | grep -c librte_eal) -gt 0 ]] || fail "the module does not link librte_eal"
  # Each program finds the unpacked module next to it (RUNPATH $ORIGIN/...).
  out=$("$root/usr/bin/hyperscsi-attach" discover --port "$dpdk_spec" 2>&1) && fail "attach accepted $dpdk_spec"
  if grep -qF "$dpdk_answer" <<<"$out"; then echo "ok: hyperscsi-attach loads the module: $out"; else fail "hyperscsi-attach with $dpdk_spec: $out"; fi
  out=$("$root/usr/sbin/hyperscsi-target" --port "$dpdk_spec" --lun 0=ram:1M 2>&1) && fail "target accepted $dpdk_spec"
  grep -qF "$dpdk_answer" <<<"$out" || fail "hyperscsi-target with $dpdk_spec: $out"
  out=$(timeout 60 "${nbdkit_cmd[@]}" -f --run true "$root/usr/$plugin_rel" port="$dpdk_spec" lun=0 2>&1 || true)
  grep -qF "$dpdk_answer" <<<"$out" || fail "the nbdkit plugin with $dpdk_spec: $out"
fi
# The client package alone: no module, and the message says what to install.
dpkg-deb -x "$tmp/pkg/hyperscsi-client_${version}_${arch}.deb" "$tmp/client-only"
out=$("$tmp/client-only/usr/bin/hyperscsi-attach" discover --port "$dpdk_spec" 2>&1) && fail "attach without the module accepted $dpdk_spec"
if grep -qF 'the DPDK backend is not installed' <<<"$out" && grep -qF 'install the hyperscsi-dpdk package' <<<"$out"; then
  echo "ok: without the module: $out"
else
  fail "hyperscsi-attach without the module, $dpdk_spec: $out"
fi

echo "== man pages"
pages=("$root"/usr/share/man/man*/*)
[[ ${#pages[@]} -ge 2 ]] || fail "expected at least 2 man pages, found ${#pages[@]}"
for page in "${pages[@]}"; do
  gzip -t "$page" || fail "$page is not gzip-compressed"
  warnings=$(gzip -dc "$page" | groff -man -Tutf8 -ww -z 2>&1)
  [[ -z "$warnings" ]] || fail "$page renders with warnings: $warnings"
  text=$(gzip -dc "$page" | groff -man -Tutf8 -P-cbou 2>/dev/null)
  for section in NAME SYNOPSIS DESCRIPTION "EXIT STATUS" FILES EXAMPLES "SEE ALSO"; do
    grep -q "^$section" <<<"$text" || fail "$page has no $section section"
  done
  echo "ok: $(basename "$page") renders ($(wc -l <<<"$text") lines)"
done
grep -q '^SIGNALS' <<<"$(gzip -dc "$root/usr/share/man/man8/hyperscsi-target.8.gz" | groff -man -Tutf8 -P-cbou)" ||
  fail "hyperscsi-target.8 has no SIGNALS section"

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "packaging: all checks passed"

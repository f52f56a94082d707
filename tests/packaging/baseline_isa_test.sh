#!/usr/bin/env bash
# Usage: baseline_isa_test.sh BUILD_DIR SOURCE_DIR
#
# Our code stays within the x86-64 baseline, so the programs start on any
# x86-64 CPU (issue 22; a VM with -cpu qemu64 is the real-world check):
# 1. No compile command outside dpdk/src/ (the DPDK module's sources, built
#    with DPDK's -march=corei7) asks for a wider instruction set.
# 2. Only the DPDK module and the DPDK-specific tests and benchmark link a
#    librte library; every other program and shared object in the build does not.
# 3. The programs' machine code (hyperscsi-target, hyperscsi-attach,
#    hyperscsi-bench, the nbdkit plugin) holds no SSSE3/SSE4/POPCNT/AVX/BMI
#    instruction (objdump). Code that needs them must dispatch at run time
#    (as ISA-L, a shared library, does) and be allowed here by name. The DPDK
#    module, when built, must show some: the check can see them.
set -euo pipefail

build=$1 source=$2
for tool in objdump ldd awk; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool not installed"
    exit 77
  fi
done
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

echo "== compile flags"
# compile_commands.json as CMake writes it: one "command" and one "file" line per entry.
wide=$(awk -v src="$source/" '
  /^  "command": / { cmd = $0 }
  /^  "file": / {
    file = $0; sub(/^  "file": "/, "", file); sub(/",?$/, "", file); sub(src, "", file)
    found = ""; n = split(cmd, words, " ")
    for (i = 1; i <= n; i++)
      if (words[i] ~ /^-m(arch=|tune=native|sse3|ssse3|sse4|avx|popcnt|crc32|bmi|lzcnt|fma)/) found = found " " words[i]
    if (found != "" && file !~ /^dpdk\/src\//) print file ":" found
  }' "$build/compile_commands.json")
if [[ -n "$wide" ]]; then fail "wider instruction sets outside dpdk/src: $wide"; else echo "ok: only dpdk/src/ is compiled for a wider CPU"; fi

echo "== who links librte"
allowed='^(dpdk/hyperscsi-dpdk-port\.so|tests/dpdk/dpdk_peer|tests/dpdk/dpdk_port_test|bench/dpdk_bench)$'
checked=0
while IFS= read -r -d '' f; do
  [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == '177ELF' ]] || continue
  rel=${f#"$build"/}
  checked=$((checked + 1))
  rte=$(ldd "$f" 2>/dev/null | grep -c librte || true)  # not grep -q: pipefail + SIGPIPE
  if ((rte)); then
    if [[ "$rel" =~ $allowed ]]; then echo "ok: $rel links DPDK (allowed)"; else fail "$rel links $rte librte libraries"; fi
  fi
done < <(find "$build" -path "$build/CMakeFiles" -prune -o -type f \( -perm -u+x -o -name '*.so' \) \
           -not -name '*.o' -print0)
echo "checked $checked ELF files"

echo "== machine code of the programs"
wide_insn='^(pcmp[ei]str[im]|crc32[bwlq]?|popcnt|lzcnt|tzcnt|ptest|pblend(w|vb)|blendv?p[sd]|pshufb|palignr|pmaddubsw|pmulhrsw|psign[bwd]|pabs[bwd]|phadd[a-z]*|phsub[a-z]*|pmins[bd]|pmaxs[bd]|pminu[wd]|pmaxu[wd]|round[sp][sd]|dpp[sd]|insertps|extractps|pextr[bdq]|pinsr[bdq]|pmuldq|pmulld|packusdw|pcmp(eq|gt)q|pmov[sz]x[a-z]*|movntdqa|mpsadbw|phminposuw|andn|bextr|blsi|blsmsk|blsr|bzhi|pdep|pext|sarx|shlx|shrx|rorx|mulx|movbe|v[a-z0-9]+)$'
wide_in() {  # prints "COUNT MNEMONIC" lines for the wide instructions in $1
  objdump -d --no-show-raw-insn "$1" | awk -F'\t' 'NF >= 2 { split($2, a, " "); print a[1] }' |
    grep -E "$wide_insn" | sort | uniq -c | sort -rn || true
}
for rel in target/daemon/hyperscsi-target initiator/hyperscsi-attach initiator/nbdkit-hyperscsi-plugin.so \
           bench/hyperscsi-bench; do
  [[ -e "$build/$rel" ]] || { fail "$rel not built"; continue; }
  found=$(wide_in "$build/$rel")
  if [[ -n "$found" ]]; then fail "$rel has instructions beyond x86-64: $(tr '\n' ' ' <<<"$found")"; else echo "ok: $rel is x86-64 baseline code"; fi
done
if [[ -e "$build/dpdk/hyperscsi-dpdk-port.so" ]]; then
  found=$(wide_in "$build/dpdk/hyperscsi-dpdk-port.so")
  if [[ -n "$found" ]]; then echo "ok: the DPDK module has corei7 code, as expected: $(head -3 <<<"$found" | tr '\n' ' ')"; else fail "no corei7 instruction found in the DPDK module: is the scan blind?"; fi
fi

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "baseline: all checks passed"

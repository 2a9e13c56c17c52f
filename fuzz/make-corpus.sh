#!/usr/bin/env bash
# Seed corpus for the fuzzer: the builder models (every form, tiny configs, written by the harness itself) and the small
# .onnx fixtures of ../shared/models (copied, never committed: fuzz/.work is git-ignored), each under 1 MiB (afl++ skips
# larger seeds). Usage: fuzz/make-corpus.sh HARNESS_DLL OUT_DIR
set -euo pipefail
dll="$1"; out="$2"
here="$(cd "$(dirname "$0")" && pwd)"
shared="${LONGCTX_SHARED:-$here/../../shared}"
mkdir -p "$out"
dotnet "$dll" seeds "$out" >/dev/null
n=0
if [ -d "$shared/models" ]; then
  while IFS= read -r -d '' f; do
    cp "$f" "$out/fixture-$(echo "$f" | sed "s|^$shared/models/||; s|/|_|g")"
    n=$((n + 1))
  done < <(find "$shared/models" -name '*.onnx' -size -1024k -print0)
fi
echo "corpus: $(ls "$out" | wc -l) seeds in $out ($n fixtures from $shared/models)"

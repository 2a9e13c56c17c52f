#!/usr/bin/env bash
# Makes the NuGet packages in artifacts/: LongCtx.Contract, LongCtx.Compiler, LongCtx.Runtime (liblongctx_ops.so under
# runtimes/linux-x64/native/) and lcc (a .NET tool). Versions come from Directory.Build.props. Then checks the result:
# the native library is in the runtime package, and the tool installs (--tool-path into a temp folder) and runs.
# Extra arguments go to dotnet pack. Usage: ./pack.sh [--no-check]
set -euo pipefail
cd "$(dirname "$0")"
check=1
args=()
for a in "$@"; do if [ "$a" = "--no-check" ]; then check=0; else args+=("$a"); fi; done
rm -rf artifacts
dotnet pack LongCtx.sln -c Release -m:1 -nologo -clp:ErrorsOnly -o artifacts ${args[@]+"${args[@]}"}
echo "pack.sh: packages in artifacts/:"
for f in artifacts/*.nupkg; do printf '  %-40s %10s bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"; done
runtime=$(ls artifacts/LongCtx.Runtime.*.nupkg)
if ! unzip -l "$runtime" | grep -q 'runtimes/linux-x64/native/liblongctx_ops.so'; then
  echo "pack.sh: error: liblongctx_ops.so is not in $runtime (was the native build skipped?)" >&2; exit 1
fi
echo "pack.sh: $(basename "$runtime") has $(unzip -l "$runtime" | awk '/runtimes\/linux-x64\/native\/liblongctx_ops.so/ {print $4" ("$1" bytes)"}')"
[ "$check" = 1 ] || exit 0
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props | head -n1)
dotnet tool install --tool-path "$tools" --add-source ./artifacts lcc --version "$version" >/dev/null
echo "pack.sh: lcc $version installed as a tool into a temp folder; lcc demo:"
(cd "$tools" && ./lcc demo --out "$tools/demo" --max-new-tokens 4 | sed 's/^/  /')

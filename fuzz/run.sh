#!/usr/bin/env bash
# Runs the fuzzer for SECONDS (default 600) over the ONNX reader + Verifier + lcc inspect's analyses
# (fuzz/LongCtx.Fuzz, entry point FuzzTarget.Run), at nice 19 so a shared machine is not starved.
#   fuzz/run.sh SECONDS            afl++ through SharpFuzz (installs afl++ from Debian and the SharpFuzz.CommandLine
#                                  tool if missing); falls back to the in-process random driver when afl++ is unusable
#   fuzz/run.sh SECONDS random     the in-process random-mutation driver only
# Work files (published harness, corpus, findings) go to fuzz/.work (git-ignored). Findings: fuzz/.work/findings;
# replay one with: dotnet fuzz/.work/bin/LongCtx.Fuzz.dll repro FILE. Crashes worth keeping become tests/Fuzz cases.
set -euo pipefail
seconds="${1:-600}"
mode="${2:-afl}"
case "$seconds" in ''|*[!0-9]*) echo "fuzz/run.sh: SECONDS must be a whole number (got '$seconds')" >&2; exit 2 ;; esac
case "$mode" in afl|random) ;; *) echo "fuzz/run.sh: mode must be afl or random (got '$mode')" >&2; exit 2 ;; esac
here="$(cd "$(dirname "$0")" && pwd)"
work="$here/.work"
bin="$work/bin"
rm -rf "$bin" "$work/bin-afl" "$work/corpus"
mkdir -p "$work"
echo "fuzz: publishing the harness to $bin"
nice -n 19 dotnet publish "$here/LongCtx.Fuzz/LongCtx.Fuzz.csproj" -c Release -o "$bin" -nologo -v quiet -p:LongCtxSkipCustomOps=true >/dev/null
"$here/make-corpus.sh" "$bin/LongCtx.Fuzz.dll" "$work/corpus"

random_driver() {
  echo "fuzz: in-process random driver for ${seconds}s"
  mkdir -p "$work/findings-random"
  nice -n 19 dotnet "$bin/LongCtx.Fuzz.dll" random "$seconds" "$work/corpus" "$work/findings-random" || true
}

if [ "$mode" = random ]; then random_driver; exit 0; fi

if ! command -v afl-fuzz >/dev/null; then
  echo "fuzz: installing afl++ (Debian package afl++)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++; } >/dev/null 2>&1; then
    echo "fuzz: afl++ could not be installed (apt-get failed); using the random driver"; random_driver; exit 0
  fi
fi
tools="$work/tools"
if [ ! -x "$tools/sharpfuzz" ]; then
  echo "fuzz: installing the SharpFuzz.CommandLine tool into $tools"
  dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path "$tools" >/dev/null
fi
# instrument a copy of the code under test (not the harness, SharpFuzz itself or the BCL); the random driver keeps the
# plain build: instrumented code writes afl's shared-memory map, which only exists under afl-fuzz
afl_bin="$work/bin-afl"
rm -rf "$afl_bin"; cp -r "$bin" "$afl_bin"
for dll in LongCtx.Compiler.dll LongCtx.Contract.dll; do "$tools/sharpfuzz" "$afl_bin/$dll" >/dev/null; done
rm -rf "$work/findings"
echo "fuzz: afl-fuzz for ${seconds}s (findings in $work/findings)"
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_QUIET=1
set +e
nice -n 19 afl-fuzz -i "$work/corpus" -o "$work/findings" -t 10000 -m none -V "$seconds" -- dotnet "$afl_bin/LongCtx.Fuzz.dll" afl > "$work/afl.log" 2>&1
rc=$?
set -e
stats="$work/findings/default/fuzzer_stats"
if [ ! -f "$stats" ]; then
  echo "fuzz: afl-fuzz did not start (exit $rc); last lines of $work/afl.log:"; tail -n 15 "$work/afl.log" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g'
  echo "fuzz: falling back to the random driver"; random_driver; exit 0
fi
grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|unique_crashes|unique_hangs|bitmap_cvg)' "$stats" | sed 's/^/fuzz: /'
for f in "$work"/findings/default/crashes/id:* "$work"/findings/default/hangs/id:*; do
  [ -e "$f" ] || continue
  echo "fuzz: finding $f"
  dotnet "$bin/LongCtx.Fuzz.dll" repro "$f" | head -n 3 || true
done

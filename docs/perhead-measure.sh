#!/usr/bin/env bash
# Issue 10 per-head calibration, measured: recall-public with YaRN to 16k; calibrate per head and per layer on eval_8192;
# accuracy (lcc eval) and prefill time (lcc bench) of auto per head vs auto per layer vs dense LongAttention.
# Usage (from the repository root, after a Release build): OUT=/tmp/perhead LEN=4096 SAMPLES=1 LIMIT=2 LENGTHS=8k bash measure.sh
set -euo pipefail
LCC="dotnet src/Cli/bin/Release/net10.0/lcc.dll"
RP=${RP:-../shared/models/recall-public}
OUT=${OUT:-/tmp/perhead}; DENSITY=${DENSITY:-0.3}; LEN=${LEN:-8192}; SAMPLES=${SAMPLES:-2}; LIMIT=${LIMIT:-10}; LENGTHS=${LENGTHS:-8k,16k}
mkdir -p "$OUT"
uptime
$LCC compile $RP/model.onnx -o $OUT/rp16-dense --rope yarn --context 16384 --attention dense
$LCC calibrate $OUT/rp16-dense --attention --data $RP/eval_8192.jsonl --samples $SAMPLES --length $LEN --density $DENSITY -o $OUT/cal-head.json
$LCC calibrate $OUT/rp16-dense --attention --data $RP/eval_8192.jsonl --samples $SAMPLES --length $LEN --density $DENSITY --per-layer -o $OUT/cal-layer.json
for g in head layer; do
  $LCC compile $RP/model.onnx -o $OUT/rp16-auto-$g --rope yarn --context 16384 --attention auto --calib $OUT/cal-$g.json
  $LCC inspect $OUT/rp16-auto-$g | grep "attention layer"
done
for set in 8192 16384; do
  for m in auto-head auto-layer dense; do
    echo "== eval_$set $m"; $LCC eval $OUT/rp16-$m --needle $RP/eval_$set.jsonl --limit $LIMIT | tail -3
  done
done
uptime
$LCC bench $OUT/rp16-auto-head --baseline $OUT/rp16-auto-layer --lengths $LENGTHS --reps 1 --decode 2 --json-out $OUT/bench-head-vs-layer.json --plot $OUT/bench-head-vs-layer.png
$LCC bench $OUT/rp16-auto-head --baseline $OUT/rp16-dense --lengths $LENGTHS --reps 1 --decode 2 --json-out $OUT/bench-head-vs-dense.json --plot $OUT/bench-head-vs-dense.png

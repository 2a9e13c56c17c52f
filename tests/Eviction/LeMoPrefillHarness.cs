using System.Diagnostics;
using System.Globalization;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Runtime.Eviction;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// What lemo's elimination during chunked prefill buys, as a harness the lead re-runs on a quiet box (not in the suite):
/// <code>
/// LONGCTX_TESTS=all LONGCTX_EVICT_LENGTHS=4096,16384,32768 LONGCTX_EVICT_REPS=3 LONGCTX_LEMO=lemo:budget=2048 \
///   ./test.sh -c Release --no-build --filter "FullyQualifiedName~LeMoPrefillHarness" --logger "console;verbosity=detailed"
/// </code>
/// Per length L (recall-public, lcc compile --rope yarn --context L): prefill time (2048-token chunks) and the most KV
/// bytes held after any chunk, full model vs --kv-evict LONGCTX_LEMO, alternating within each repetition (full, lemo,
/// full, ...); medians, with uptime before and after.
/// </summary>
[TestFixture, Explicit("harness: prints lemo's prefill table; minutes per length")]
public sealed class LeMoPrefillHarness
{
    [Test]
    public void PrefillTable()
    {
        var lengths = HarnessSupport.Env("LONGCTX_EVICT_LENGTHS", "4096").Split(',').Select(int.Parse).ToArray();
        int reps = int.Parse(HarnessSupport.Env("LONGCTX_EVICT_REPS", "3"), CultureInfo.InvariantCulture);
        string lemo = HarnessSupport.Env("LONGCTX_LEMO", "lemo:budget=2048");
        var tmp = TestSupport.TempDir("lcc-lemo-prefill");
        var lines = new List<string> { $"uptime before: {HarnessSupport.Uptime()}", $"{lemo}; reps {reps} (median); prefill chunk 2048",
            "| L | full prefill s | lemo prefill s | speed-up | full peak KV MiB | lemo peak KV MiB |", "|---|---|---|---|---|---|" };
        try
        {
            foreach (int len in lengths)
            {
                var prompt = NeedleEval.Read(RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, $"eval_{len}.jsonl")), 1)[0].Prompt;
                var opts = RuntimeFixtures.Cpu() with { IntraOpThreads = 0 };
                using var full = LongCtxModel.Load(HarnessSupport.CompileRecall(tmp, len, "full"), opts);
                using var eliminating = LongCtxModel.Load(HarnessSupport.CompileRecall(tmp, len, "lemo", "--kv-evict", lemo), opts);
                var times = new[] { new List<double>(), new List<double>() };
                var peak = new long[2];
                for (int r = 0; r < reps; r++)
                    foreach (var (model, i) in new[] { (full, 0), (eliminating, 1) })
                    {
                        using var g = model.CreateGenerator();
                        long perLayerToken = model.Contract.KvBytesPerToken / model.Contract.Layers.Count;
                        long Held() => g.Cache is EvictingKvCache e ? e.LayerLengths.Sum() * perLayerToken : g.Length * model.Contract.KvBytesPerToken;
                        var sw = Stopwatch.StartNew();
                        g.Prefill(prompt, 2048, new AfterChunk(_ => peak[i] = Math.Max(peak[i], Held())));
                        times[i].Add(sw.Elapsed.TotalSeconds);
                    }
                double f = HarnessSupport.Median(times[0]), l = HarnessSupport.Median(times[1]);
                lines.Add($"| {len} | {f:F2} | {l:F2} | {f / l:F2}x | {peak[0] / 1048576.0:F1} | {peak[1] / 1048576.0:F1} |");
                TestContext.Progress.WriteLine(lines[^1]);
            }
        }
        finally { Directory.Delete(tmp, true); }
        lines.Add($"uptime after: {HarnessSupport.Uptime()}");
        TestContext.Progress.WriteLine(string.Join('\n', lines));
    }

    /// <summary>Runs on the prefill's own thread after each chunk (System.Progress would post it elsewhere, later).</summary>
    private sealed class AfterChunk(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }
}

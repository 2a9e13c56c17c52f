using System.Diagnostics;
using System.Globalization;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// Issue 12's speed table, as a harness the lead re-runs on a quiet box (not part of the suite):
/// <code>
/// LONGCTX_EVICT_LENGTHS=4096,16384,32768 LONGCTX_EVICT_REPS=3 \
///   ./test.sh -c Release --no-build --filter "FullyQualifiedName~EvictionSpeedHarness"
/// </code>
/// Per length L (recall-public, lcc compile --rope yarn --context L): prefill time and peak KV bytes of the full model vs
/// GemFilter two-pass (--token-filter gemfilter:layer=1,keep=1/8: filter pass over the prompt, then the full model on the
/// kept tokens; KV memory as bytes of the tokens held, the shared buffers' capacity aside), and decode ms/token over 32 tokens with a 10% SnapKV cache (--kv-evict snapkv:budget=10%) vs the full
/// cache. The alternatives alternate within each repetition (full, gemfilter, snapkv, full, ...), the median is
/// reported, with uptime before and after.
/// </summary>
[TestFixture, Explicit("harness: prints issue 12's speed table; minutes per length")]
public sealed class EvictionSpeedHarness
{
    [Test]
    public void SpeedTable()
    {
        var lengths = HarnessSupport.Env("LONGCTX_EVICT_LENGTHS", "4096").Split(',').Select(int.Parse).ToArray();
        int reps = int.Parse(HarnessSupport.Env("LONGCTX_EVICT_REPS", "3"), CultureInfo.InvariantCulture);
        string gem = HarnessSupport.Env("LONGCTX_EVICT_GEMFILTER", "gemfilter:layer=1,keep=1/8");
        var tmp = TestSupport.TempDir("lcc-evict-speed");
        var lines = new List<string> { $"uptime before: {HarnessSupport.Uptime()}", $"gemfilter: {gem}; reps {reps} (median); prefill chunk 2048",
            "| L | full prefill s | gemfilter prefill s (filter s) | speed-up | full KV held MiB | gemfilter peak KV held MiB | full decode ms/tok | snapkv 10% decode ms/tok |", "|---|---|---|---|---|---|---|---|" };
        try
        {
            foreach (int len in lengths)
            {
                string[] rope = len > 256 ? ["--rope", "yarn", "--context", len.ToString(CultureInfo.InvariantCulture)] : [];
                string Compile(string name, params string[] extra)
                {
                    var dir = Path.Combine(tmp, $"{len}-{name}");
                    var r = Foundation.CliRunner.Run(["compile", RuntimeFixtures.RecallModel, "-o", dir, .. rope, .. extra]);
                    Assert.That(r.ExitCode, Is.Zero, r.Stderr);
                    return dir;
                }
                var prompt = NeedleEval.Read(RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, $"eval_{len}.jsonl")), 1)[0].Prompt;
                var opts = RuntimeFixtures.Cpu() with { IntraOpThreads = 0 };
                using var full = LongCtxModel.Load(Compile("full"), opts);
                using var filtered = LongCtxModel.Load(Compile("gem", "--token-filter", gem), opts);
                using var snap = LongCtxModel.Load(Compile("snap", "--kv-evict", "snapkv:budget=10%"), opts);
                var fullS = new List<double>(); var gemS = new List<double>(); var filterS = new List<double>();
                var fullDec = new List<double>(); var snapDec = new List<double>();
                long fullKv = 0, gemKv = 0;
                for (int r = 0; r < reps; r++)
                {
                    using (var g = full.CreateGenerator())
                    {
                        var sw = Stopwatch.StartNew();
                        var logits = g.Prefill(prompt, 2048);
                        fullS.Add(sw.Elapsed.TotalSeconds);
                        fullKv = full.Contract.KvBytesPerToken * g.Length;
                        fullDec.Add(Decode(g, logits, full.MaxContext));
                    }
                    using (var g = filtered.CreateGenerator())
                    {
                        var sw = Stopwatch.StartNew();
                        g.Prefill(prompt, 2048);
                        gemS.Add(sw.Elapsed.TotalSeconds);
                        filterS.Add(filtered.TokenFilter!.LastFilterTime.TotalSeconds);
                        // sequential: the filter's cache (layers 0..r over the prompt) is gone before the full model prefills the kept tokens
                        gemKv = Math.Max(filtered.Contract.KvBytesPerToken * g.Length, filtered.TokenFilter.LastFilterKvBytesHeld);
                    }
                    using (var g = snap.CreateGenerator())
                        snapDec.Add(Decode(g, g.Prefill(prompt, 2048), snap.MaxContext));
                }
                double f = Median(fullS), gm = Median(gemS);
                lines.Add($"| {len} | {f:F2} | {gm:F2} ({Median(filterS):F2}) | {f / gm:F2}x | {fullKv / 1048576.0:F1} | {gemKv / 1048576.0:F1} | {Ms(Median(fullDec))} | {Ms(Median(snapDec))} |");
                TestContext.Progress.WriteLine(lines[^1]);
            }
        }
        finally { Directory.Delete(tmp, true); }
        lines.Add($"uptime after: {HarnessSupport.Uptime()}");
        TestContext.Progress.WriteLine(string.Join('\n', lines));
    }

    /// <summary>ms/token over <paramref name="steps"/> greedy steps; NaN (printed "-") when they do not fit the context the model was compiled for (a prompt of exactly L tokens at L).</summary>
    private static double Decode(Generator g, float[] logits, int? context, int steps = 32)
    {
        if (g.Cache.NextPosition + steps > (context ?? int.MaxValue)) return double.NaN;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) logits = g.Forward([Sampler.ArgMax(logits)]);
        return sw.Elapsed.TotalMilliseconds / steps;
    }

    private static double Median(List<double> v) { var s = v.Order().ToList(); return s[s.Count / 2]; }

    private static string Ms(double v) => double.IsNaN(v) ? "-" : v.ToString("F2", CultureInfo.InvariantCulture);

}


using System.Globalization;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// Issue 12's accuracy table, as a harness the lead re-runs on a quiet box (not part of the suite):
/// <code>
/// LONGCTX_EVICT_LENGTHS=1024,4096,16384 LONGCTX_EVICT_LIMIT=100 LONGCTX_EVICT_BUDGETS=50%,20%,10%,5% \
///   ./test.sh -c Release --no-build --filter "FullyQualifiedName~EvictionAccuracyHarness"
/// </code>
/// For each length L it compiles recall-public (lcc compile --rope yarn --context L when L &gt; 256) without eviction and
/// with --kv-evict snapkv / pyramidkv / h2o / actqkv (default mass) / adakv (default floor) at each budget (h2o: heavy = recent = budget / 2) and with --token-filter
/// gemfilter:layer=1 at keep 1/4, 1/8, 1/16 (LONGCTX_EVICT_GEMFILTER_LAYER / _KEEPS), then measures next-token
/// accuracy on the first LIMIT prompts of eval_L.jsonl with the question included (cut before the last token) and
/// excluded (--evict-before-question: cut at QUERY), all configurations on the same prompts, one after another in one
/// run, and prints a table (with uptime: the box's load) plus the equivalent lcc command lines.
/// </summary>
[TestFixture, Explicit("harness: prints issue 12's accuracy table; minutes per length")]
public sealed class EvictionAccuracyHarness
{
    [Test]
    public void AccuracyTable()
    {
        var lengths = HarnessSupport.Env("LONGCTX_EVICT_LENGTHS", "1024").Split(',').Select(int.Parse).ToArray();
        int limit = int.Parse(HarnessSupport.Env("LONGCTX_EVICT_LIMIT", "10"), CultureInfo.InvariantCulture);
        var budgets = HarnessSupport.Env("LONGCTX_EVICT_BUDGETS", "50%,20%,10%,5%").Split(',');
        var methods = HarnessSupport.Env("LONGCTX_EVICT_METHODS", "snapkv,pyramidkv,h2o,actqkv,adakv").Split(',', StringSplitOptions.RemoveEmptyEntries);
        var gemKeeps = HarnessSupport.Env("LONGCTX_EVICT_GEMFILTER_KEEPS", "1/4,1/8,1/16").Split(',', StringSplitOptions.RemoveEmptyEntries).Where(k => k != "none").ToArray(); // "none": no GemFilter rows
        string gemLayer = HarnessSupport.Env("LONGCTX_EVICT_GEMFILTER_LAYER", "1");
        var tmp = TestSupport.TempDir("lcc-evict-bench");
        var lines = new List<string> { $"uptime: {HarnessSupport.Uptime()}", $"prompts per cell: first {limit} of eval_L.jsonl", "| L | method | budget | question included | question excluded |", "|---|---|---|---|---|" };
        var commands = new List<string>();
        try
        {
            foreach (int len in lengths)
            {
                var file = RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, $"eval_{len}.jsonl"));
                var items = NeedleEval.Read(file, limit);
                string[] rope = len > 256 ? ["--rope", "yarn", "--context", len.ToString(CultureInfo.InvariantCulture)] : [];
                var configs = new List<(string Method, string Budget, string? Spec)> { ("full", "100%", null) };
                foreach (var m in methods)
                    foreach (var b in budgets)
                        configs.Add((m, b, m == "h2o" ? $"h2o:heavy={Half(b)},recent={Half(b)}" : $"{m}:budget={b}"));
                foreach (var k in gemKeeps)
                    configs.Add(("gemfilter", k, $"gemfilter:layer={gemLayer},keep={k}"));
                foreach (var (method, budget, spec) in configs)
                {
                    var dir = Path.Combine(tmp, $"{len}-{method}-{budget.TrimEnd('%').Replace('/', '_')}");
                    string[] option = spec is null ? [] : [method == "gemfilter" ? "--token-filter" : "--kv-evict", spec];
                    string[] args = ["compile", RuntimeFixtures.RecallModel, "-o", dir, .. rope, .. option];
                    var c = Foundation.CliRunner.Run(args);
                    Assert.That(c.ExitCode, Is.Zero, c.Stderr);
                    commands.Add("lcc " + string.Join(' ', args));
                    using var model = LongCtxModel.Load(dir, RuntimeFixtures.Cpu() with { IntraOpThreads = 0 });
                    // question included: eviction compresses before the last token; GemFilter filters the whole prompt
                    var included = NeedleEval.Run(model, file, items, 2048, cut: spec is null || method == "gemfilter" ? null : EvictionSplit.QuestionIncluded);
                    var excluded = spec is null ? included : NeedleEval.Run(model, file, items, 2048, cut: EvictionSplit.BeforeQuestion(EvictionSplit.QueryToken(file), file));
                    lines.Add($"| {len} | {method} | {budget} | {included.Accuracy:F3} ({included.Seconds:F0}s) | {excluded.Accuracy:F3} |");
                    TestContext.Progress.WriteLine(lines[^1]);
                    Directory.Delete(dir, true);
                }
            }
        }
        finally { Directory.Delete(tmp, true); }
        TestContext.Progress.WriteLine(string.Join('\n', lines));
        TestContext.Progress.WriteLine("equivalent commands (then lcc eval DIR --needle eval_L.jsonl --limit N [--evict-before-question]):\n  " + string.Join("\n  ", commands.Distinct()));
    }

    private static string Half(string budget) => budget.EndsWith('%')
        ? (double.Parse(budget[..^1], CultureInfo.InvariantCulture) / 2).ToString(CultureInfo.InvariantCulture) + "%"
        : (int.Parse(budget, CultureInfo.InvariantCulture) / 2).ToString(CultureInfo.InvariantCulture);

}

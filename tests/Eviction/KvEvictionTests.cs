using LongCtx.Compiler;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Contract;
using LongCtx.Passes;
using LongCtx.Passes.Eviction;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Runtime.Eviction;
using LongCtx.Tests.Runtime;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// KV eviction (issue 12) on recall-public (torch export: its materialised Softmax is the reference for the scores, its
/// attention_mask the reference for a cache with holes): key scores, compaction with positions that continue, a
/// budget at least the prompt == the full cache, and the kv-evict pass's bad input.
/// </summary>
[TestFixture]
public sealed class KvEvictionTests : RecallCompileFixture
{
    private const int Window = 8;

    [Test]
    public void Pass_ExposesOneQueryPerLayer_AndRecordsThePolicy()
    {
        var dir = Compile("snap", $"snapkv:budget=24,window={Window},pool=3");
        var manifest = LongCtxManifest.TryReadFolder(dir)!;
        var pass = manifest.Pipeline.Single(p => p.Pass == "kv-evict");
        Assert.That(pass.Counts["attention queries exposed"], Is.EqualTo(4));
        var policy = KvEvictPolicy.From(manifest.Runtime, "test")!;
        Assert.That(policy.Method, Is.EqualTo("snapkv"));
        Assert.That(policy.Budget, Is.EqualTo(24));
        Assert.That(policy.Layers.Select(l => l.PastKey), Is.EqualTo(Enumerable.Range(0, 4).Select(l => $"past_key_values.{l}.key")));
        // recall-public: RoPE theta 10000 over 32 channels, folded into GQA: the angles read back from the cos/sin rows
        var inv = policy.Layers[0].InvFreq!;
        Assert.That(inv.Count, Is.EqualTo(16));
        for (int i = 0; i < 16; i++) Assert.That(inv[i], Is.EqualTo(Math.Pow(10000, -2.0 * i / 32)).Within(1e-6), $"pair {i}");
        var model = OnnxReader.Load(Path.Combine(dir, LongCtxFiles.Model));
        Assert.That(model.Graph.Outputs.Count(o => o.Name.StartsWith(ExposeQueriesForEviction.QueryOutputPrefix)), Is.EqualTo(4));
    }

    /// <summary>The scores the runtime recomputes == the original model's own Softmax, summed over the window rows and each KV group's heads.</summary>
    [Test]
    public void KeyScores_MatchTheOriginalSoftmax()
    {
        const int n = 48;
        var ids = Prompt(n);
        // reference: recall-public with every layer's Softmax made a graph output
        var original = OnnxReader.Load(RuntimeFixtures.Require(RuntimeFixtures.RecallModel));
        var rw = new Rewriter(original);
        var softmax = original.Graph.Nodes.Where(AttentionDiscovery.IsAnchor).ToList();
        Assert.That(softmax, Has.Count.EqualTo(4));
        foreach (var s in softmax) rw.AddOutput(original.Graph, s.Output());
        var refPath = Path.Combine(Tmp, "softmax.onnx");
        OnnxWriter.Save(original, refPath);
        using var session = new InferenceSession(refPath);
        var probs = RunOnce(session, ids, softmax.Select(s => s.Output().Name).ToList());

        using var m = LongCtxModel.Load(Compile("snap", $"snapkv:budget=24,window={Window},pool=3"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        g.Forward(ids); // no end of prompt: nothing compressed
        for (int l = 0; l < 4; l++)
        {
            var got = cache.KeyScores(l);
            for (int kvh = 0; kvh < 2; kvh++)
                for (int j = 0; j < n; j++)
                {
                    double want = 0;
                    for (int h = 2 * kvh; h < 2 * kvh + 2; h++)
                        for (int row = n - Window; row < n; row++) want += probs[l][(h * n + row) * n + j];
                    Assert.That(got[kvh][j], Is.EqualTo(want).Within(1e-4), $"layer {l} kv head {kvh} key {j}");
                }
            Assert.That(got.Sum(v => v.Sum()), Is.EqualTo(4 * Window).Within(1e-3), "every row's probabilities sum to 1");
        }
    }

    /// <summary>
    /// Compaction keeps exactly the chosen rows, and later tokens see them at their original positions: decoding after
    /// keeping some rows == the original model decoding over the full cache with attention_mask 0 on the dropped ones.
    /// </summary>
    [Test]
    public void Keep_ThenDecode_EqualsMaskingTheDroppedTokens()
    {
        const int n = 40;
        var ids = Prompt(n + 3);
        int[] keep = [0, 1, 2, 5, 9, 17, 18, 30, 35, 36, 37, 38, 39];
        using var m = LongCtxModel.Load(Compile("snap", $"snapkv:budget=24,window={Window},pool=3"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        g.Forward(ids.AsSpan(0, n));
        var valuesBefore = cache.OutputBuffers![1].GetTensorDataAsSpan<float>().ToArray();
        int cap = ((SharedBufferKvCache)typeof(EvictingKvCache).GetField("_inner", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(cache)!).BufferLength;
        cache.Keep(keep);
        Assert.That(g.Length, Is.EqualTo(keep.Length));
        Assert.That(cache.NextPosition, Is.EqualTo(n), "positions continue after the dropped tokens");
        var valuesAfter = cache.OutputBuffers![1].GetTensorDataAsSpan<float>();
        for (int h = 0; h < 2; h++)
            for (int r = 0; r < keep.Length; r++)
                for (int d = 0; d < 32; d++)
                    Assert.That(valuesAfter[(h * cap + r) * 32 + d], Is.EqualTo(valuesBefore[(h * cap + keep[r]) * 32 + d]), $"value head {h} row {r}");
        var got = g.Forward(ids.AsSpan(n, 3));

        using var session = new InferenceSession(RuntimeFixtures.RecallModel);
        var mask = Enumerable.Range(0, n + 3).Select(i => i >= n || keep.Contains(i) ? 1L : 0L).ToArray();
        var want = ReferenceWithHoles(session, ids, n, mask);
        float scale = 1 + want.Max(Math.Abs);
        Assert.That(TestSupport.MaxAbsDiff(got, want), Is.LessThan(2e-4f * scale));
    }

    [Test]
    public void SnapKv_KeepsTheTopPooledVotesAndTheWindow()
    {
        const int n = 64;
        var ids = Prompt(n);
        using var m = LongCtxModel.Load(Compile("snap", $"snapkv:budget=24,window={Window},pool=3"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        g.Forward(ids);
        var values = cache.OutputBuffers!.Where((_, i) => i % 2 == 1).Select(b => b.GetTensorDataAsSpan<float>().ToArray()).ToList();
        var expected = Enumerable.Range(0, 4).Select(l => cache.KeyScores(l).Select(v => EvictionSelection.SnapKv(v, n, Window, 24, 3)).ToArray()).ToList();
        cache.EndOfPrompt();
        Assert.That(g.Length, Is.EqualTo(24));
        Assert.That(cache.Evicted, Is.EqualTo(4 * (n - 24)));
        int cap = cache.OutputBuffers[0].GetTensorTypeAndShape().Shape[2] is var c ? (int)c : 0;
        for (int l = 0; l < 4; l++)
        {
            var now = cache.OutputBuffers[2 * l + 1].GetTensorDataAsSpan<float>();
            for (int h = 0; h < 2; h++)
            {
                var rows = expected[l][h];
                Assert.That(rows, Has.Length.EqualTo(24));
                Assert.That(rows[^Window..], Is.EqualTo(Enumerable.Range(n - Window, Window)), "the window is kept");
                for (int r = 0; r < rows.Length; r++)
                    Assert.That(now.Slice((h * cap + r) * 32, 32).ToArray(), Is.EqualTo(values[l].AsSpan((h * cap + rows[r]) * 32, 32).ToArray()), $"layer {l} head {h} row {r}");
            }
        }
    }

    /// <summary>A budget at least the prompt evicts nothing (said once per generator): logits == the compiled model without eviction.</summary>
    [Test]
    public void BudgetAtLeastPrompt_EqualsFullCache_SaidOnce() => AssertNoOpBudgetEqualsFullCache("big", "snapkv:budget=4096");

    [Test]
    public void H2o_HoldsHeavyPlusRecentDuringDecode()
    {
        using var m = LongCtxModel.Load(Compile("h2o", "h2o:heavy=12,recent=8"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        var logits = g.Prefill(Prompt(60), 16);
        Assert.That(g.Length, Is.EqualTo(20));
        for (int i = 0; i < 10; i++)
        {
            logits = g.Forward([Sampler.ArgMax(logits)]);
            Assert.That(g.Length, Is.EqualTo(20), $"step {i}");
            Assert.That(logits.All(float.IsFinite));
        }
        Assert.That(cache.NextPosition, Is.EqualTo(70));
        Assert.That(cache.Evicted, Is.EqualTo(4 * 50));
    }

    /// <summary>h2o with fractions: the budget is a fraction of the prompt, fixed when the prompt ends (it does not grow while decoding).</summary>
    [Test]
    public void H2o_FractionsOfThePrompt_StayFixedWhileDecoding()
    {
        using var m = LongCtxModel.Load(Compile("h2o-frac", "h2o:heavy=10%,recent=10%"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var logits = g.Prefill(Prompt(100), 32);
        Assert.That(g.Length, Is.EqualTo(20));
        for (int i = 0; i < 30; i++) logits = g.Forward([Sampler.ArgMax(logits)]);
        Assert.That(g.Length, Is.EqualTo(20));
        g.Reset();
        g.Prefill(Prompt(200), 32);
        Assert.That(g.Length, Is.EqualTo(40), "a fresh sequence takes its own prompt's fractions");
    }

    [Test]
    public void PyramidKv_LayersKeepFallingBudgets()
    {
        using var m = LongCtxModel.Load(Compile("pyramid", "pyramidkv:budget=24,window=8,pool=3,beta=4"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        var logits = g.Prefill(Prompt(64), 0);
        var budgets = EvictionSelection.PyramidBudgets(24, 8, 4, 4);
        Assert.That(cache.LayerLengths, Is.EqualTo(budgets));
        Assert.That(budgets[0], Is.GreaterThan(budgets[3]));
        Assert.That(budgets.Average(), Is.EqualTo(24).Within(1));
        for (int i = 0; i < 3; i++) logits = g.Forward([Sampler.ArgMax(logits)]);
        Assert.That(cache.LayerLengths, Is.EqualTo(budgets.Select(b => b + 3)));
        Assert.That(logits.All(float.IsFinite));
    }

    [Test]
    public void Selection_PoolsVotesAndKeepsTheWindow()
    {
        float[] votes = [0, 0, 0, 9, 0, 0, 0, 0, 5, 0, 1, 1];
        // window 2 (rows 10, 11), keep 5: 3 selected from the pooled prefix [0..10): 9 at 3 spreads to 2..4
        Assert.That(EvictionSelection.SnapKv(votes, 12, 2, 5, 3), Is.EqualTo(new[] { 2, 3, 4, 10, 11 }));
        Assert.That(EvictionSelection.SnapKv(votes, 12, 2, 5, 1), Is.EqualTo(new[] { 3, 8, 0, 10, 11 }.Order()));
        Assert.That(EvictionSelection.SnapKv(votes, 12, 2, 12, 3), Is.EqualTo(Enumerable.Range(0, 12)));
        Assert.That(EvictionSelection.H2o(votes, 12, 2, 3), Is.EqualTo(new[] { 3, 8, 9, 10, 11 }));
        var b = EvictionSelection.PyramidBudgets(100, 20, 8, 20);
        Assert.That(b, Is.Ordered.Descending);
        Assert.That(b.Average(), Is.EqualTo(100).Within(1));
        Assert.That(b[^1] - 20, Is.EqualTo(4), "top layer: (100 - 20) / beta");
    }

    [TestCase("snapkv:budget=abc", "budget=abc is neither a token count")]
    [TestCase("snapkv:budget=150%", "budget=150% is neither")]
    [TestCase("snapkv:heavy=3", "option 'heavy=3' is not one of budget=20%, window=32, pool=7")]
    [TestCase("lru", "--kv-evict lru: unknown method; valid: snapkv, pyramidkv, h2o")]
    [TestCase("pyramidkv:beta=0.5", "beta=0.5 must be a number >= 1")]
    [TestCase("actqkv:mass=0", "--kv-evict actqkv: mass=0 must be a fraction in (0, 1]")]
    [TestCase("actqkv:mass=1.5", "--kv-evict actqkv: mass=1.5 must be a fraction in (0, 1]")]
    [TestCase("actqkv:mass=abc", "--kv-evict actqkv: mass=abc must be a fraction")]
    [TestCase("actqkv:pool=3", "option 'pool=3' is not one of budget=20%, window=32, mass=0.9")]
    [TestCase("actqkv:budget=0", "--kv-evict actqkv: budget=0 is neither a token count")]
    [TestCase("adakv:floor=1.5", "--kv-evict adakv: floor=1.5 must be a fraction in [0, 1]")]
    [TestCase("adakv:floor=-0.1", "--kv-evict adakv: floor=-0.1 must be a fraction in [0, 1]")]
    [TestCase("adakv:floor=abc", "--kv-evict adakv: floor=abc must be a fraction")]
    [TestCase("adakv:mass=0.5", "option 'mass=0.5' is not one of budget=20%, window=32, pool=7, floor=0.2")]
    [TestCase("adakv:budget=0", "--kv-evict adakv: budget=0 is neither a token count")]
    [TestCase("pyramidkv:ada=2", "--kv-evict pyramidkv: ada=2 must be 0 or 1")]
    [TestCase("pyramidkv:ada=1,floor=2", "--kv-evict pyramidkv: floor=2 must be a fraction in [0, 1]")]
    [TestCase("lemo:tau=-1", "--kv-evict lemo: tau=-1 must be a number in [0, 10]")]
    [TestCase("lemo:tau=x", "--kv-evict lemo: tau=x must be a number")]
    [TestCase("lemo:pool=3", "option 'pool=3' is not one of budget=20%, window=32, tau=0.1")]
    public void BadSpec_IsOneLineError(string spec, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => KvEvictSettings.Parse(KvEvictSettings.FromSpec(spec)))!;
        Assert.That(e.Message, Does.Contain(message));
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }

    [Test]
    public void Streaming_WithEviction_IsAnErrorNamingBoth()
    {
        RuntimeFixtures.Require(RuntimeFixtures.RecallModel); // skip here, not inside Assert.Throws (it would catch the skip)
        var attention = new PipelineStep("lower-attention", new Dictionary<string, string> { ["pattern"] = "streaming", ["sink"] = "4", ["window"] = "60" });
        var e = Assert.Throws<CompileException>(() => Compile("streaming", "snapkv:budget=24", attention: attention))!;
        Assert.That(e.Message, Does.Contain("--attention streaming").And.Contain("--kv-evict snapkv").And.Contain("layer 0"));
    }

    [Test]
    public void Cli_EvictBeforeQuestion_NeedsAnEvictingModel()
    {
        var r = Foundation.CliRunner.Run("eval", Compile("full", null), "--needle", Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl"), "--limit", "1", "--evict-before-question");
        Assert.That(r.ExitCode, Is.Not.Zero);
        Assert.That(r.Stderr, Does.Contain("--evict-before-question").And.Contain("compile it with lcc compile --kv-evict"));
    }

    [Test]
    public void Cli_EvalBothWays_AndInspectShowsThePolicy()
    {
        var dir = Compile("snap", $"snapkv:budget=24,window={Window},pool=3");
        var file = Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl");
        var with = Foundation.CliRunner.Run("eval", dir, "--needle", file, "--limit", "4");
        var without = Foundation.CliRunner.Run("eval", dir, "--needle", file, "--limit", "4", "--evict-before-question");
        Assert.That(with.ExitCode, Is.Zero, with.Stderr);
        Assert.That(without.ExitCode, Is.Zero, without.Stderr);
        Assert.That(with.Stdout, Does.Contain("n=4"));
        var inspect = Foundation.CliRunner.Run("inspect", dir);
        Assert.That(inspect.Stdout, Does.Contain("kv eviction: snapkv budget=24 window=8 pool=3"));
    }

    private static float[][] RunOnce(InferenceSession s, int[] ids, IReadOnlyList<string> outputs)
    {
        int n = ids.Length;
        var inputs = BaseInputs(s, ids.Select(x => (long)x).ToArray(), Enumerable.Repeat(1L, n).ToArray(), 0, null);
        using var ro = new RunOptions();
        using var outs = s.Run(ro, inputs.Keys.ToList(), inputs.Values.ToList(), outputs.ToList());
        foreach (var v in inputs.Values) v.Dispose();
        return outs.Select(o => o.GetTensorDataAsSpan<float>().ToArray()).ToArray();
    }

    /// <summary>Prefills ids[..n] with a full mask, then feeds the rest with <paramref name="mask"/> over the whole sequence; last logits.</summary>
    private static float[] ReferenceWithHoles(InferenceSession s, int[] ids, int n, long[] mask)
    {
        var presentNames = s.OutputMetadata.Keys.Where(k => k.StartsWith("present")).ToList();
        var first = BaseInputs(s, ids[..n].Select(x => (long)x).ToArray(), Enumerable.Repeat(1L, n).ToArray(), 0, null);
        using var ro = new RunOptions();
        using var o1 = s.Run(ro, first.Keys.ToList(), first.Values.ToList(), presentNames);
        var past = presentNames.Select((p, i) => (p.Replace("present", "past_key_values"), o1[i])).ToDictionary(x => x.Item1, x => (OrtValue)x.Item2);
        var second = BaseInputs(s, ids[n..].Select(x => (long)x).ToArray(), mask, n, past);
        using var o2 = s.Run(ro, second.Keys.ToList(), second.Values.ToList(), ["logits"]);
        var all = o2[0].GetTensorDataAsSpan<float>();
        return all[^256..].ToArray();
    }

    private static Dictionary<string, OrtValue> BaseInputs(InferenceSession s, long[] ids, long[] mask, int start, Dictionary<string, OrtValue>? past)
    {
        var r = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, [1, ids.Length]),
            ["attention_mask"] = OrtValue.CreateTensorValueFromMemory(mask, [1, mask.Length]),
            ["position_ids"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(start, ids.Length).Select(x => (long)x).ToArray(), [1, ids.Length]),
        };
        foreach (var name in s.InputMetadata.Keys.Where(k => k.StartsWith("past_key_values")))
            r[name] = past?[name] ?? OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, 2, 0, 32]);
        return r;
    }
}

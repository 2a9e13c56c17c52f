using LongCtx.Compiler;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Contract;
using LongCtx.Passes.Eviction;
using LongCtx.Runtime;
using LongCtx.Runtime.Eviction;
using LongCtx.Tests.Runtime;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// --kv-evict adakv (AdaKV, arXiv:2407.11550) on recall-public (4 layers, 4 query / 2 KV heads, D 32): the joint
/// top-B selection with its floor, the pass's attention_bias inputs, the runtime's per-head lengths against the same
/// graph fed the full cache with -inf on each head's dropped keys, and a budget at least the prompt == the full cache.
/// </summary>
[TestFixture]
public sealed class AdaKvTests : RecallCompileFixture
{
    private const string Spec = "adakv:budget=24,window=8,pool=3";

    [Test]
    public void Select_KeepsTheJointTopWithAFloorPerHead()
    {
        // head 0 has eight strong votes, head 1 weak flat ones: window 2, keep 6 -> 4 selected per head, 8 in all
        float[] h0 = [9, 8, 7, 6, 5, 4, 3, 2, 0, 0, 1, 1];
        float[] h1 = [1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1];
        // no floor: the joint top 8 are all head 0's (its 2 ties head 1's 2: the lower head wins); head 1 keeps its window
        var free = AdaKv.Select([h0, h1], 12, 2, 6, 1, 0);
        Assert.That(free[0], Is.EqualTo(new[] { 0, 1, 2, 3, 4, 5, 6, 7, 10, 11 }));
        Assert.That(free[1], Is.EqualTo(new[] { 10, 11 }));
        // floor 0.5: each head first keeps its own top 2 (head 1: row 4, then the earliest of its ties), the other 4 jointly
        var keep = AdaKv.Select([h0, h1], 12, 2, 6, 1, 0.5);
        Assert.That(keep[0], Is.EqualTo(new[] { 0, 1, 2, 3, 4, 5, 10, 11 }));
        Assert.That(keep[1], Is.EqualTo(new[] { 0, 4, 10, 11 }));
        // floor 1: every head keeps its own top (= snapkv)
        var snap = AdaKv.Select([h0, h1], 12, 2, 6, 1, 1);
        Assert.That(snap[0], Is.EqualTo(EvictionSelection.SnapKv(h0, 12, 2, 6, 1)));
        Assert.That(snap[1], Is.EqualTo(EvictionSelection.SnapKv(h1, 12, 2, 6, 1)));
        // a budget at least the cache keeps every row
        Assert.That(AdaKv.Select([h0, h1], 12, 2, 12, 3, 0.2), Is.EqualTo(new[] { Enumerable.Range(0, 12).ToArray(), Enumerable.Range(0, 12).ToArray() }));
    }

    [Test]
    public void Select_RandomVotes_FloorAndJointTopHold()
    {
        var rng = new Random(12);
        for (int trial = 0; trial < 50; trial++)
        {
            int heads = 1 + rng.Next(4), length = 20 + rng.Next(60), window = 1 + rng.Next(8), keep = window + 1 + rng.Next(length - window - 1);
            double floor = rng.NextDouble();
            var votes = Enumerable.Range(0, heads).Select(_ => Enumerable.Range(0, length).Select(_ => (float)Math.Round(rng.NextDouble() * (1 + rng.Next(20)), 3)).ToArray()).ToArray();
            var got = AdaKv.Select(votes, length, window, keep, 1, floor);
            int select = keep - window, forced = (int)Math.Floor(floor * select), prefix = length - window;
            Assert.That(got.Sum(k => k.Count(j => j < prefix)), Is.EqualTo(heads * select), $"trial {trial}: the layer keeps heads x (budget - window)");
            for (int g = 0; g < heads; g++)
            {
                Assert.That(got[g], Is.Ordered.Ascending.And.Unique);
                Assert.That(got[g][^window..], Is.EqualTo(Enumerable.Range(prefix, window)), "the window");
                var own = EvictionSelection.Top(votes[g].AsSpan(0, prefix), forced);
                Assert.That(got[g], Is.SupersetOf(own), $"trial {trial} head {g}: its own top {forced} (the floor)");
            }
            // the joint part: no dropped (head, row) scores above a kept one that the floor did not force
            var forcedSet = Enumerable.Range(0, heads).SelectMany(g => EvictionSelection.Top(votes[g].AsSpan(0, prefix), forced).Select(j => (g, j))).ToHashSet();
            var kept = Enumerable.Range(0, heads).SelectMany(g => got[g].Where(j => j < prefix).Select(j => (g, j))).ToHashSet();
            var joint = kept.Except(forcedSet).Select(x => votes[x.g][x.j]).DefaultIfEmpty(float.PositiveInfinity).Min();
            var dropped = Enumerable.Range(0, heads).SelectMany(g => Enumerable.Range(0, prefix).Where(j => !kept.Contains((g, j))).Select(j => votes[g][j])).DefaultIfEmpty(float.NegativeInfinity).Max();
            Assert.That(dropped, Is.LessThanOrEqualTo(joint), $"trial {trial}: joint top");
        }
    }

    [Test]
    public void Pass_AddsABiasAndSeqlensPerLayer_AndInspectShowsIt()
    {
        var dir = Compile("ada", Spec);
        var manifest = LongCtxManifest.TryReadFolder(dir)!;
        var pass = manifest.Pipeline.Single(p => p.Pass == "kv-evict");
        Assert.That(pass.Counts["attention_bias inputs (per-head lengths)"], Is.EqualTo(4));
        Assert.That(pass.Counts["per-layer seqlens_k inputs"], Is.EqualTo(4));
        var policy = KvEvictPolicy.From(manifest.Runtime, "test")!;
        Assert.That(policy.Method, Is.EqualTo("adakv"));
        Assert.That(policy.Floor, Is.EqualTo(0.2));
        Assert.That(policy.Layers.Select(l => l.Bias), Is.EqualTo(Enumerable.Range(0, 4).Select(l => $"longctx_evict_bias.{l}")));
        var model = OnnxReader.Load(Path.Combine(dir, LongCtxFiles.Model));
        Assert.That(model.Graph.Inputs.Count(i => i.Name.StartsWith(AdaKvBias.InputPrefix)), Is.EqualTo(4));
        var inspect = Foundation.CliRunner.Run("inspect", dir);
        Assert.That(inspect.Stdout, Does.Contain("kv eviction: adakv budget=24 window=8 pool=3 floor=0.2"));
    }

    /// <summary>
    /// After the prompt each head holds what <see cref="AdaKv.Select"/> chose from the window's votes (different counts,
    /// right-aligned), and decoding on == the same graph fed the FULL cache with -inf (attention_bias) on each head's
    /// dropped keys: compaction, the pad masks and the re-rotation change nothing else.
    /// </summary>
    [Test]
    public void PerHeadLengths_ThenDecode_EqualMaskingEachHeadsDroppedKeys()
    {
        const int n = 64, more = 3;
        var ids = Prompt(n + more);
        var dir = Compile("ada", Spec);
        using var m = LongCtxModel.Load(dir, RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        g.Forward(ids.AsSpan(0, n));
        var expected = Enumerable.Range(0, 4).Select(l => AdaKv.Select(cache.KeyScores(l), n, 8, 24, 3, 0.2)).ToArray();
        cache.EndOfPrompt();
        for (int l = 0; l < 4; l++)
        {
            Assert.That(cache.HeadLengths(l), Is.EqualTo(expected[l].Select(k => k.Length)), $"layer {l}");
            Assert.That(cache.LayerLengths[l], Is.EqualTo(expected[l].Max(k => k.Length)), $"layer {l}: padded to its longest head");
            Assert.That(expected[l].Sum(k => k.Length), Is.EqualTo(2 * 24), $"layer {l}: the heads share 2 x 24");
        }
        Assert.That(expected.Any(e => e[0].Length != e[1].Length), "some layer's heads hold different lengths (else this tests nothing)");
        var got = g.Forward(ids.AsSpan(n, more));
        for (int l = 0; l < 4; l++) Assert.That(cache.HeadLengths(l), Is.EqualTo(expected[l].Select(k => k.Length + more)));

        var want = FullCacheWithBias(Path.Combine(dir, LongCtxFiles.Model), ids, n, expected);
        float scale = 1 + want.Max(Math.Abs);
        Assert.That(TestSupport.MaxAbsDiff(got, want), Is.LessThan(2e-4f * scale));
        Assert.That(cache.NextPosition, Is.EqualTo(n + more));
    }

    [Test]
    public void Decode_AfterCompression_StaysFiniteAndGrowsEveryHead()
    {
        using var m = LongCtxModel.Load(Compile("ada", Spec), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        var logits = g.Prefill(Prompt(100), 32);
        var after = Enumerable.Range(0, 4).Select(cache.HeadLengths).ToArray();
        for (int i = 0; i < 5; i++) logits = g.Forward([Sampler.ArgMax(logits)]);
        Assert.That(logits.All(float.IsFinite));
        for (int l = 0; l < 4; l++) Assert.That(cache.HeadLengths(l), Is.EqualTo(after[l].Select(x => x + 5)));
        // a second prompt on the compressed cache compresses again, over each head's own rows
        logits = g.Prefill(Prompt(40), 16);
        Assert.That(logits.All(float.IsFinite));
        for (int l = 0; l < 4; l++) Assert.That(cache.HeadLengths(l).Sum(), Is.EqualTo(2 * 24), $"layer {l}: the second prompt (a 24-token budget of it) shares the budget again");
    }

    /// <summary>pyramidkv:ada=1 (Ada-PyramidKV): each layer keeps its pyramid budget in all, shared by its heads.</summary>
    [Test]
    public void AdaPyramid_LayersShareFallingBudgetsOverHeads()
    {
        using var m = LongCtxModel.Load(Compile("ada-pyramid", "pyramidkv:budget=24,window=8,pool=3,beta=4,ada=1"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        var logits = g.Prefill(Prompt(64), 0);
        var budgets = EvictionSelection.PyramidBudgets(24, 8, 4, 4);
        for (int l = 0; l < 4; l++) Assert.That(cache.HeadLengths(l).Sum(), Is.EqualTo(2 * budgets[l]), $"layer {l}");
        Assert.That(Enumerable.Range(0, 4).Any(l => cache.HeadLengths(l).Distinct().Count() > 1), "heads hold different lengths");
        logits = g.Forward([Sampler.ArgMax(logits)]);
        Assert.That(logits.All(float.IsFinite));
        var inspect = Foundation.CliRunner.Run("inspect", Compile("ada-pyramid", null));
        Assert.That(inspect.Stdout, Does.Contain("pyramidkv budget=24 window=8 pool=3 beta=4 ada=1 floor=0.2"));
    }

    [Test]
    public void BudgetAtLeastPrompt_EqualsFullCache_SaidOnce() => AssertNoOpBudgetEqualsFullCache("ada-big", "adakv:budget=4096");

    [Test]
    public void DenseLongAttention_WithAdaKv_IsAnErrorNamingBoth()
    {
        RuntimeFixtures.Require(RuntimeFixtures.RecallModel); // skip here, not inside Assert.Throws
        var attention = new PipelineStep("lower-attention", new Dictionary<string, string> { ["pattern"] = "dense" });
        var e = Assert.Throws<CompileException>(() => Compile("ada-dense", Spec, attention: attention))!;
        Assert.That(e.Message, Does.Contain("--attention").And.Contain("--kv-evict adakv").And.Contain("layer 0"));
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }

    /// <summary>The compiled graph run directly: prefill ids[..n] (zero bias), then the rest over the full cache with -inf on each head's dropped keys.</summary>
    private static float[] FullCacheWithBias(string modelPath, int[] ids, int n, int[][][] keep)
    {
        using var s = new InferenceSession(modelPath);
        var presents = s.OutputMetadata.Keys.Where(k => k.StartsWith("present")).ToList();
        using var ro = new RunOptions();
        var first = Inputs(s, ids[..n], 0, null, (l, h, i, j) => false);
        using var o1 = s.Run(ro, first.Keys.ToList(), first.Values.ToList(), presents);
        var past = presents.Select((p, i) => (p.Replace("present", "past_key_values"), (OrtValue)o1[i])).ToDictionary(x => x.Item1, x => x.Item2);
        var second = Inputs(s, ids[n..], n, past, (l, h, i, j) => j < n && !keep[l][h / 2].Contains(j));
        using var o2 = s.Run(ro, second.Keys.ToList(), second.Values.ToList(), ["logits"]);
        foreach (var v in first.Values.Concat(second.Values).Except(past.Values)) v.Dispose();
        return o2[0].GetTensorDataAsSpan<float>()[^256..].ToArray();
    }

    private static Dictionary<string, OrtValue> Inputs(InferenceSession s, int[] ids, int start, Dictionary<string, OrtValue>? past, Func<int, int, int, int, bool> masked)
    {
        int len = ids.Length, total = start + len;
        var r = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids.Select(x => (long)x).ToArray(), [1, len]),
            ["attention_mask"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, total).ToArray(), [1, total]),
        };
        if (s.InputMetadata.ContainsKey("position_ids"))
            r["position_ids"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(start, len).Select(x => (long)x).ToArray(), [1, len]);
        foreach (var name in s.InputMetadata.Keys.Where(k => k.StartsWith("past_key_values")))
            r[name] = past?[name] ?? OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, 2, 0, 32]);
        for (int l = 0; l < 4; l++)
        {
            r[$"{ExposeQueriesForEviction.SeqlensInputPrefix}{l}"] = OrtValue.CreateTensorValueFromMemory(new[] { total - 1 }, [1]);
            var bias = new float[4 * len * total];
            for (int h = 0; h < 4; h++)
                for (int i = 0; i < len; i++)
                    for (int j = 0; j < total; j++)
                        if (masked(l, h, i, j)) bias[(h * len + i) * total + j] = float.NegativeInfinity;
            r[$"{AdaKvBias.InputPrefix}{l}"] = OrtValue.CreateTensorValueFromMemory(bias, [1, 4, len, total]);
        }
        return r;
    }
}

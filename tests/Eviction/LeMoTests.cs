using LongCtx.Contract;
using LongCtx.Runtime;
using LongCtx.Runtime.Eviction;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// --kv-evict lemo (token elimination during chunked prefill, after LeMo, arXiv:2501.09767) on recall-public: the
/// selection rule, a cache that stays bounded while a long prompt is prefilled chunk by chunk, and a budget at least
/// the prompt == the full cache.
/// </summary>
[TestFixture]
public sealed class LeMoTests : RecallCompileFixture
{
    [Test]
    public void Select_DropsTheUninformative_AndKeepsAtMostTheBudget()
    {
        // two KV heads summed per token; window 2 (rows 8, 9); prefix info = [2, 0.1, 6, 0.1, 4, 0.1, 3, 0.1], mean 1.925
        float[] h0 = [1, 0.05f, 3, 0.05f, 2, 0.05f, 1.5f, 0.05f, 1, 1];
        float[] h1 = [1, 0.05f, 3, 0.05f, 2, 0.05f, 1.5f, 0.05f, 1, 1];
        Assert.That(LeMo.Select([h0, h1], 10, 2, 5, 0), Is.EqualTo(new[] { 2, 4, 6, 8, 9 }), "tau 0: the budget's top 3 and the window");
        Assert.That(LeMo.Select([h0, h1], 10, 2, 8, 0.5), Is.EqualTo(new[] { 0, 2, 4, 6, 8, 9 }), "tau 0.5: the four under 0.96 go though the budget has room");
        Assert.That(LeMo.Select([h0, h1], 10, 2, 8, 2), Is.EqualTo(new[] { 2, 4, 8, 9 }), "tau 2: only tokens at twice the mean");
        Assert.That(LeMo.Select([h0, h1], 10, 2, 10, 5), Is.EqualTo(Enumerable.Range(0, 10)), "a budget at least the length keeps everything");
    }

    [Test]
    public void ChunkedPrefill_StaysBounded_AndEveryLayerEndsWithinTheBudget()
    {
        var dir = Compile("lemo", "lemo:budget=24,window=8,tau=0.1");
        var manifest = LongCtxManifest.TryReadFolder(dir)!;
        Assert.That(manifest.Pipeline.Single(p => p.Pass == "kv-evict").Counts["per-layer seqlens_k inputs"], Is.EqualTo(4));
        Assert.That(KvEvictPolicy.From(manifest.Runtime, "test")!.Tau, Is.EqualTo(0.1));
        using var m = LongCtxModel.Load(dir, RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        var ids = Prompt(200);
        int most = 0;
        float[] logits = [];
        for (int i = 0; i < ids.Length; i += 16)
        {
            logits = g.Forward(ids.AsSpan(i, Math.Min(16, ids.Length - i)));
            most = Math.Max(most, cache.LayerLengths.Max());
        }
        Assert.That(most, Is.LessThanOrEqualTo(24 + 16), "before each chunk the cache is cut to the budget: it never holds more than budget + chunk");
        Assert.That(cache.Evicted, Is.GreaterThan(0));
        cache.EndOfPrompt();
        Assert.That(cache.LayerLengths, Has.All.LessThanOrEqualTo(24));
        Assert.That(cache.NextPosition, Is.EqualTo(200));
        for (int i = 0; i < 3; i++) logits = g.Forward([Sampler.ArgMax(logits)]);
        Assert.That(logits.All(float.IsFinite));
        var inspect = Foundation.CliRunner.Run("inspect", dir);
        Assert.That(inspect.Stdout, Does.Contain("kv eviction: lemo budget=24 window=8 tau=0.1"));
    }

    /// <summary>The same prompt in one piece (no chunk boundary) ends at the same rule: only the end of the prompt eliminates.</summary>
    [Test]
    public void OnePiecePrefill_EliminatesOnceAtTheEnd()
    {
        using var m = LongCtxModel.Load(Compile("lemo", "lemo:budget=24,window=8,tau=0.1"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var cache = (EvictingKvCache)g.Cache;
        g.Forward(Prompt(120));
        Assert.That(cache.Evicted, Is.Zero, "one step: nothing is cut before it");
        var expected = Enumerable.Range(0, 4).Select(l => LeMo.Select(cache.KeyScores(l), 120, 8, 24, 0.1).Length).ToArray();
        cache.EndOfPrompt();
        Assert.That(cache.LayerLengths, Is.EqualTo(expected));
    }

    [Test]
    public void BudgetAtLeastPrompt_EqualsFullCache_SaidOnce() => AssertNoOpBudgetEqualsFullCache("lemo-big", "lemo:budget=4096");
}

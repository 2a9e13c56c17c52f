using LongCtx.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

[TestFixture]
public sealed class SamplingTests
{
    private static readonly float[] Logits = [0.1f, 2.0f, 1.9f, -1f, 0.5f, 1.5f];

    [Test]
    public void Greedy_IsArgMax() => Assert.That(Sampler.Sample(Logits, new GenerationOptions(), new Random(0)), Is.EqualTo(1));

    [Test]
    public void TopK1_IsArgMax_AtAnyTemperature()
    {
        var o = new GenerationOptions { Temperature = 5f, TopK = 1 };
        var rng = new Random(3);
        for (int i = 0; i < 50; i++) Assert.That(Sampler.Sample(Logits, o, rng), Is.EqualTo(1));
    }

    [Test]
    public void TopK_And_TopP_RestrictTheSupport_SeedIsReproducible()
    {
        var k2 = new GenerationOptions { Temperature = 1f, TopK = 2, Seed = 1 };
        var seen = new HashSet<int>();
        var rng = new Random(5);
        for (int i = 0; i < 400; i++) seen.Add(Sampler.Sample(Logits, k2, rng));
        Assert.That(seen, Is.EquivalentTo(new[] { 1, 2 }));

        // softmax: 0.341, 0.308, 0.207, ... (cumulative 0.341, 0.649): top-p 0.6 keeps exactly the first two
        var p = new GenerationOptions { Temperature = 1f, TopP = 0.6f };
        seen.Clear();
        for (int i = 0; i < 400; i++) seen.Add(Sampler.Sample(Logits, p, rng));
        Assert.That(seen, Is.EquivalentTo(new[] { 1, 2 }));

        var hot = new GenerationOptions { Temperature = 1f };
        var a = Enumerable.Range(0, 30).Select(_ => 0).ToArray();
        var r1 = new Random(42); var r2 = new Random(42);
        var s1 = a.Select(_ => Sampler.Sample(Logits, hot, r1)).ToArray();
        var s2 = a.Select(_ => Sampler.Sample(Logits, hot, r2)).ToArray();
        Assert.That(s1, Is.EqualTo(s2));
        Assert.That(s1.Distinct().Count(), Is.GreaterThan(2), "temperature 1 over six logits samples more than the top two");
    }

    [Test]
    public void StopToken_EndsGeneration_AndIsNotEmitted()
    {
        using var model = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        int[] prompt = [1, 20, 90, 3, 20, 4];
        using var g = model.CreateGenerator();
        var free = g.Generate(prompt, new GenerationOptions { MaxNewTokens = 5 });
        Assert.That(g.LastFinishReason, Is.EqualTo(FinishReason.MaxNewTokens));
        g.Reset();
        var stopped = g.Generate(prompt, new GenerationOptions { MaxNewTokens = 5, StopTokens = [free[2]] });
        int firstStop = free.IndexOf(free[2]);
        Assert.That(stopped, Is.EqualTo(free.Take(firstStop).ToList()));
        Assert.That(g.LastFinishReason, Is.EqualTo(FinishReason.StopToken));
    }
}

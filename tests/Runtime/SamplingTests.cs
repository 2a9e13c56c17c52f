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

    /// <summary>The sampler before it stopped sorting: a full sort of the vocabulary per token (ties: lower id first).</summary>
    private static int NaiveFullSort(float[] logits, GenerationOptions o, Random rng)
    {
        var idx = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ThenBy(i => i).ToArray();
        int k = o.TopK > 0 ? Math.Min(o.TopK, idx.Length) : idx.Length;
        var p = new double[k];
        double max = logits[idx[0]] / o.Temperature, sum = 0;
        for (int i = 0; i < k; i++) { p[i] = Math.Exp(logits[idx[i]] / o.Temperature - max); sum += p[i]; }
        int keep = k;
        if (o.TopP < 1)
        {
            double acc = 0;
            for (int i = 0; i < k; i++) { acc += p[i] / sum; if (acc >= o.TopP) { keep = i + 1; break; } }
        }
        double total = 0;
        for (int i = 0; i < keep; i++) total += p[i];
        double r = rng.NextDouble() * total;
        for (int i = 0; i < keep; i++) { r -= p[i]; if (r <= 0) return idx[i]; }
        return idx[keep - 1];
    }

    [TestCase(1f, 0, 1f), TestCase(0.7f, 40, 1f), TestCase(1f, 0, 0.9f), TestCase(0.8f, 50, 0.95f), TestCase(1.3f, 5, 0.5f),
     TestCase(1f, 1, 1f), TestCase(2f, 1000, 0.99f), TestCase(0.5f, 3000, 1f)]
    public void TopK_TopP_PickTheSameTokensAsANaiveFullSort(float temperature, int topK, float topP)
    {
        var o = new GenerationOptions { Temperature = temperature, TopK = topK, TopP = topP };
        var data = new Random(11);
        int differences = 0;
        for (int trial = 0; trial < 60; trial++)
        {
            // a vocabulary-sized row: peaked (a few large logits) or flat, with some exact ties
            var logits = new float[2048];
            float spread = trial % 2 == 0 ? 8f : 1f;
            for (int i = 0; i < logits.Length; i++) logits[i] = (float)(data.NextDouble() * 2 - 1) * spread;
            for (int i = 0; i < 8; i++) logits[data.Next(logits.Length)] = logits[data.Next(logits.Length)];
            var a = new Random(trial);
            var b = new Random(trial);
            for (int draw = 0; draw < 20; draw++)
                if (Sampler.Sample(logits, o, a) != NaiveFullSort(logits, o, b)) differences++;
        }
        Assert.That(differences, Is.Zero, "same seed, same logits: the heap sampler and the full sort pick the same tokens");
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

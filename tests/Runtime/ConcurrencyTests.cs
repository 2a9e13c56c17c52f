using LongCtx.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

/// <summary>One loaded model, many generators at once: same outputs as serial, no failures.</summary>
[TestFixture]
public sealed class ConcurrencyTests
{
    [Test]
    public void EightGenerators_HundredRequestsEach_EqualSerial()
    {
        using var model = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var rng = new Random(11);
        var prompts = Enumerable.Range(0, 100)
            .Select(_ => Enumerable.Range(0, rng.Next(3, 9)).Select(_ => rng.Next(1, model.VocabSize)).ToArray()).ToArray();
        var opts = new GenerationOptions { MaxNewTokens = 3, Chunk = 4 };
        // request r of worker w samples with seed r (temperature > 0) so sampling state is per generator too
        GenerationOptions OptsFor(int r) => r % 2 == 0 ? opts : opts with { Temperature = 0.8f, TopK = 20, Seed = r };

        var serial = new List<int>[prompts.Length];
        using (var g = model.CreateGenerator())
            for (int r = 0; r < prompts.Length; r++) { g.Reset(); serial[r] = g.Generate(prompts[r], OptsFor(r)); }

        RuntimeFixtures.AssertConcurrentEqualsSerial(8, serial, r =>
        {
            using var g = model.CreateGenerator();
            return g.Generate(prompts[r], OptsFor(r));
        });
    }

    [Test]
    public async Task Streaming_EqualsGenerate_AndCancellationStops()
    {
        using var model = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        int[] prompt = [1, 20, 90, 3, 20, 4];
        var opts = new GenerationOptions { MaxNewTokens = 6 };
        using var a = model.CreateGenerator();
        var expected = a.Generate(prompt, opts);
        using var b = model.CreateGenerator();
        var streamed = new List<int>();
        await foreach (var t in b.GenerateAsync(prompt, opts)) streamed.Add(t);
        Assert.That(streamed, Is.EqualTo(expected));

        using var cts = new CancellationTokenSource();
        using var c = model.CreateGenerator();
        var got = new List<int>();
        Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), async () =>
        {
            await foreach (var t in c.GenerateAsync(prompt, opts with { MaxNewTokens = 1000 }, cts.Token))
            {
                got.Add(t);
                if (got.Count == 2) cts.Cancel();
            }
        });
        Assert.That(got, Has.Count.EqualTo(2));
    }
}

using NUnit.Framework;
using LongCtx.Runtime;

namespace LongCtx.Tests.Runtime;

/// <summary>Greedy decoding through the KV cache must equal re-running the whole prefix every step.</summary>
[TestFixture]
public sealed class GreedyCacheTests
{
    public static IEnumerable<TestCaseData> Decoders()
    {
        foreach (bool io in new[] { false, true })
        {
            string tag = io ? "_IoBinding" : "";
            yield return new TestCaseData("recall-public", 12, io).SetName("Recall_fp32_gqa" + tag);
            yield return new TestCaseData("llama-mha-rotary-fp16", 12, io).SetName("Llama_fp16_mha_onepiece" + tag);
            yield return new TestCaseData("qwen-gqa-fp16", 12, io).SetName("Qwen_fp16_gqa_int32ids" + tag);
            yield return new TestCaseData("opset24-attention-static-cache", 6, io).SetName("Opset24_static_cache" + tag);
        }
    }

    private static string PathOf(string name) => name switch
    {
        "recall-public" => RuntimeFixtures.RecallModel,
        "llama-mha-rotary-fp16" => RuntimeFixtures.Llama,
        "qwen-gqa-fp16" => RuntimeFixtures.Qwen,
        _ => RuntimeFixtures.Static24,
    };

    [TestCaseSource(nameof(Decoders))]
    public void KvCacheGreedy_EqualsFullPrefixGreedy(string fixture, int newTokens, bool ioBinding)
    {
        using var model = LongCtxModel.Load(RuntimeFixtures.Require(PathOf(fixture)), RuntimeFixtures.Cpu() with { IoBinding = ioBinding });
        Assert.That(model.UseIoBinding, Is.EqualTo(ioBinding));
        var rng = new Random(7);
        var prompt = Enumerable.Range(0, 9).Select(_ => rng.Next(5, Math.Min(model.VocabSize, 250))).ToArray();
        var opts = new GenerationOptions { MaxNewTokens = newTokens, Chunk = 4 };

        using var g = model.CreateGenerator();
        var cached = g.Generate(prompt, opts);
        Assert.That(cached, Has.Count.EqualTo(newTokens));
        Assert.That(g.Length, Is.EqualTo(prompt.Length + newTokens - 1), "tokens in the cache: the prompt plus every generated token but the last");

        var reference = new List<int>();
        var prefix = prompt.ToList();
        for (int i = 0; i < newTokens; i++)
        {
            using var full = model.CreateGenerator();
            var logits = full.Forward(prefix.ToArray());
            int t = Sampler.ArgMax(logits);
            reference.Add(t);
            prefix.Add(t);
        }
        Assert.That(cached, Is.EqualTo(reference), $"{fixture}: cached greedy diverged from full-prefix greedy");
    }

    [Test]
    public void Llama_IsDetectedAsNotChunkable_Others_Are()
    {
        var notes = new List<string>();
        using (var llama = RuntimeFixtures.Load(RuntimeFixtures.Llama, notes))
        {
            Assert.That(llama.SupportsChunkedPrefill, Is.False);
            Assert.That(llama.Notes.Single(), Does.Contain("prefill runs in one piece"));
        }
        using var recall = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        Assert.That(recall.SupportsChunkedPrefill, Is.True);
        Assert.That(recall.Notes, Is.Empty);
    }

    [Test]
    public void ChunkedPrefill_LogitsMatchOnePiece_Recall()
    {
        using var model = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var prompt = Enumerable.Range(0, 100).Select(i => 8 + i % 200).ToArray();
        using var a = model.CreateGenerator();
        using var b = model.CreateGenerator();
        var whole = a.Prefill(prompt, 0);
        var chunked = b.Prefill(prompt, 7);
        Assert.That(b.Length, Is.EqualTo(100));
        float diff = whole.Zip(chunked, (x, y) => Math.Abs(x - y)).Max();
        Assert.That(diff, Is.LessThan(1e-3f), "fp32 chunked vs one-piece prefill");
    }
}

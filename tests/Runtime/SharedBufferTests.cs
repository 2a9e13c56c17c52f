using System.Text.Json;
using LongCtx.Cli;
using LongCtx.Compiler;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

/// <summary>
/// The shared past/present KV buffer (GroupQueryAttention appending in place through an IOBinding) on models compiled
/// with the default pipeline: same greedy tokens as the concat cache and as the original model, chunked prefill,
/// growth, and a clear error when a fixed buffer is too short.
/// </summary>
[TestFixture]
public sealed class SharedBufferTests
{
    private string _tmp = "";
    private string? _recallCompiled;
    private string _demoOriginal = "", _demoCompiled = "";

    [OneTimeSetUp]
    public void Compile()
    {
        _tmp = Directory.CreateTempSubdirectory("lcc-shared-kv-").FullName;
        var demo = Path.Combine(_tmp, "demo");
        DemoModel.WriteTo(demo);
        _demoOriginal = Path.Combine(demo, "model.onnx");
        _demoCompiled = Path.Combine(_tmp, "demo-c");
        CompileJob.Run(_demoOriginal, _demoCompiled, Pipelines.Instantiate(Pipelines.Default));
        if (File.Exists(RuntimeFixtures.RecallModel))
        {
            _recallCompiled = Path.Combine(_tmp, "recall-c");
            CompileJob.Run(RuntimeFixtures.RecallModel, _recallCompiled, Pipelines.Instantiate(Pipelines.Default));
        }
    }

    [OneTimeTearDown] public void Cleanup() => Directory.Delete(_tmp, true);

    private (string Original, string Compiled) Pair(string which) => which == "demo"
        ? (_demoOriginal, _demoCompiled)
        : (RuntimeFixtures.Require(RuntimeFixtures.RecallModel), _recallCompiled ?? RuntimeFixtures.Require(RuntimeFixtures.RecallModel));

    private static LongCtxModel Load(string path, KvCacheMode kv, int? maxContext = null, List<string>? log = null) =>
        LongCtxModel.Load(path, RuntimeFixtures.Cpu(log) with { KvCache = kv, MaxContext = maxContext });

    private static int[] Prompt(int n, int vocab, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(5, vocab)).ToArray(); }

    [TestCase("recall"), TestCase("demo")]
    public void Compiled_UsesSharedBuffer_OriginalFallsBackWithNote(string which)
    {
        var (orig, compiled) = Pair(which);
        using (var c = Load(compiled, KvCacheMode.Auto))
        {
            Assert.That(c.KvCache, Is.EqualTo(KvCacheMode.Shared));
            Assert.That(c.KvCacheNote, Is.Null);
            using var g = c.CreateGenerator();
            Assert.That(g.Cache, Is.InstanceOf<SharedBufferKvCache>());
        }
        var log = new List<string>();
        using var o = Load(orig, KvCacheMode.Auto, log: log);
        Assert.That(o.KvCache, Is.EqualTo(KvCacheMode.Concat));
        Assert.That(o.KvCacheNote, Does.Contain("no shared past/present buffer").And.Contain("'past_key_values.0.key' is read by").And.Contain("not by one com.microsoft.GroupQueryAttention"));
        Assert.That(log, Has.None.Contains("KV cache"), "no GroupQueryAttention in the original: the note is kept, not logged on every load");
        var e = Assert.Throws<RuntimeException>(() => Load(orig, KvCacheMode.Shared).Dispose())!;
        Assert.That(e.Message, Does.Contain("--kv-cache shared is not possible").And.Contain("past_key_values.0.key"));
    }

    [TestCase("recall", 4), TestCase("recall", 0), TestCase("demo", 3)]
    public void Greedy_Shared_EqualsConcat_EqualsOriginal(string which, int chunk)
    {
        var (orig, compiled) = Pair(which);
        using var shared = Load(compiled, KvCacheMode.Shared);
        using var concat = Load(compiled, KvCacheMode.Concat);
        using var original = Load(orig, KvCacheMode.Auto);
        Assert.That(concat.KvCache, Is.EqualTo(KvCacheMode.Concat));
        var prompt = Prompt(11, shared.VocabSize, 3);
        var opts = new GenerationOptions { MaxNewTokens = 16, Chunk = chunk };
        List<int> Run(LongCtxModel m) { using var g = m.CreateGenerator(); return g.Generate(prompt, opts); }
        var a = Run(shared);
        Assert.That(a, Has.Count.EqualTo(16));
        Assert.That(a, Is.EqualTo(Run(concat)), "shared buffer vs concat cache");
        Assert.That(a, Is.EqualTo(Run(original)), "compiled (shared buffer) vs original model");
    }

    [TestCase("recall"), TestCase("demo")]
    public void ChunkedPrefill_IntoSharedBuffer_MatchesOnePieceConcat(string which)
    {
        var (_, compiled) = Pair(which);
        using var shared = Load(compiled, KvCacheMode.Shared);
        using var concat = Load(compiled, KvCacheMode.Concat);
        Assert.That(shared.SupportsChunkedPrefill, Is.True);
        var prompt = Prompt(100, shared.VocabSize, 5);
        using var a = shared.CreateGenerator();
        using var b = concat.CreateGenerator();
        var chunked = a.Prefill(prompt, 7);
        var whole = b.Prefill(prompt, 0);
        Assert.That(a.Length, Is.EqualTo(100));
        Assert.That(chunked.Zip(whole, (x, y) => Math.Abs(x - y)).Max(), Is.LessThan(1e-4f * (1 + whole.Max(Math.Abs))));
        // decode a few steps after the chunked prefill: in-place appends at 100, 101, ...
        for (int i = 0; i < 5; i++)
        {
            int t = Sampler.ArgMax(whole);
            Assert.That(Sampler.ArgMax(chunked), Is.EqualTo(t), $"step {i}");
            chunked = a.Forward([t]);
            whole = b.Forward([t]);
            Assert.That(chunked.Zip(whole, (x, y) => Math.Abs(x - y)).Max(), Is.LessThan(1e-4f * (1 + whole.Max(Math.Abs))), $"step {i}");
        }
    }

    [Test]
    public void PromptLongerThanBuffer_IsClearError_NamingBothNumbers()
    {
        using var m = Load(_demoCompiled, KvCacheMode.Shared, maxContext: 16);
        Assert.That(m.SharedBufferLength, Is.EqualTo(16));
        using var g = m.CreateGenerator();
        var e = Assert.Throws<ArgumentException>(() => g.Generate(Prompt(20, m.VocabSize, 1)))!;
        Assert.That(e.Message, Does.Contain("20 new tokens").And.Contain("shared KV buffer of 16 tokens").And.Contain("--max-context"));
        Assert.That(g.Length, Is.EqualTo(0));

        // decoding into a full fixed buffer ends the generation (context full) instead of failing
        var tokens = g.Generate(Prompt(10, m.VocabSize, 1), new GenerationOptions { MaxNewTokens = 20 });
        Assert.That(g.LastFinishReason, Is.EqualTo(FinishReason.ContextFull));
        Assert.That(g.Length, Is.EqualTo(16));
        Assert.That(tokens, Has.Count.EqualTo(7), "16 - 10 decode steps, plus the token sampled from the last logits");
    }

    [Test]
    public void GrowableBuffer_DoublesAndKeepsTheCache()
    {
        using var m = Load(_demoCompiled, KvCacheMode.Shared);
        using var concat = Load(_demoCompiled, KvCacheMode.Concat);
        Assert.That(m.SharedBufferGrows, Is.True);
        var cache = new SharedBufferKvCache(m.Contract, m.Name, capacity: 4, growable: true);
        using var g = m.CreateGenerator(cache);
        using var r = concat.CreateGenerator();
        var prompt = Prompt(6, m.VocabSize, 9);
        var opts = new GenerationOptions { MaxNewTokens = 12, Chunk = 3 };
        Assert.That(g.Generate(prompt, opts), Is.EqualTo(r.Generate(prompt, opts)));
        Assert.That(cache.BufferLength, Is.EqualTo(32), "4 -> 8 (6 prompt tokens) -> 16 -> 32 (17 tokens)");
        Assert.That(g.PeakKvBytes, Is.EqualTo(32L * 2 * 2 * 2 * 16 * 4), "32 slots, K and V, 2 layers, 2 kv heads, head_dim 16, fp32");
    }

    [Test]
    public void Reset_ReusesTheBuffer()
    {
        using var m = Load(_demoCompiled, KvCacheMode.Shared);
        using var g = m.CreateGenerator();
        var p1 = Prompt(9, m.VocabSize, 1);
        var p2 = Prompt(5, m.VocabSize, 2);
        var first = g.Generate(p1, new GenerationOptions { MaxNewTokens = 6 });
        g.Reset();
        var second = g.Generate(p2, new GenerationOptions { MaxNewTokens = 6 });
        using var fresh = m.CreateGenerator();
        Assert.That(second, Is.EqualTo(fresh.Generate(p2, new GenerationOptions { MaxNewTokens = 6 })), "stale rows past the new length must not leak in");
        Assert.That(first, Has.Count.EqualTo(6));
    }

    [Test]
    public void QwenGqaFixture_BareOnnx_IsDetectedFromTheGraph()
    {
        using var m = Load(RuntimeFixtures.Require(RuntimeFixtures.Qwen), KvCacheMode.Auto);
        Assert.That(m.KvCache, Is.EqualTo(KvCacheMode.Shared), m.KvCacheNote);
        using var concat = Load(RuntimeFixtures.Qwen, KvCacheMode.Concat);
        var prompt = Prompt(9, Math.Min(m.VocabSize, 250), 4);
        var opts = new GenerationOptions { MaxNewTokens = 8, Chunk = 4 };
        using var a = m.CreateGenerator();
        using var b = concat.CreateGenerator();
        Assert.That(a.Generate(prompt, opts), Is.EqualTo(b.Generate(prompt, opts)));
    }

    [Test]
    public void Bench_SharedVsConcat_SideBySide_AndBadKvOption()
    {
        string json = Path.Combine(_tmp, "b.json"), png = Path.Combine(_tmp, "b.png");
        var (o, e) = (Console.Out, Console.Error);
        var out1 = new StringWriter(); var err1 = new StringWriter();
        Console.SetOut(out1); Console.SetError(err1);
        int rc, bad;
        try
        {
            rc = Program.BuildRoot().Parse(["bench", _demoCompiled, "--baseline", _demoCompiled, "--baseline-kv-cache", "concat", "--lengths", "24",
                "--decode", "3", "--reps", "1", "--ep", "cpu", "--json-out", json, "--plot", png]).Invoke();
            bad = Program.BuildRoot().Parse(["run", _demoCompiled, "--prompt-ids", "1,2", "--ep", "cpu", "--kv-cache", "paged"]).Invoke();
        }
        finally { Console.SetOut(o); Console.SetError(e); }
        Assert.That(rc, Is.EqualTo(0), err1.ToString());
        Assert.That(out1.ToString(), Does.Contain("baseline demo-c [concat kv]").And.Contain("demo-c [shared kv]"));
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToArray();
        Assert.That(rows, Has.Length.EqualTo(2));
        Assert.That(rows[0].GetProperty("kv_bytes").GetInt64(), Is.EqualTo((24 + 3) * 2L * 2 * 2 * 16 * 4), "concat: held tokens only");
        Assert.That(rows[1].GetProperty("kv_bytes").GetInt64(), Is.EqualTo(LongCtxModel.DefaultSharedBufferLength * 2L * 2 * 2 * 16 * 4), "shared: the whole buffer (default 4096 tokens)");
        Assert.That(rows[1].GetProperty("vs_baseline").GetProperty("max_abs_diff").GetDouble(), Is.LessThan(1e-4));
        Assert.That(rows[1].GetProperty("vs_baseline").GetProperty("top1_agreement").GetDouble(), Is.EqualTo(1));
        Assert.That(bad, Is.EqualTo(1));
        Assert.That(err1.ToString(), Does.Contain("lcc: error: unknown KV cache 'paged': use auto, concat or shared"));
    }
}

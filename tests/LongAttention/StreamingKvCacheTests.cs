using LongCtx.Compiler;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Contract;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.LongAttention;

/// <summary>
/// The streaming KV manager's mechanics (eviction keeps the sinks and the most recent rows, the mask follows the cache
/// length, memory stays flat) on a GroupQueryAttention builder model: GQA binds the same shared buffer and derives its
/// positions from seqlens_k, so the manager runs without longctx.LongAttention (whose cache-relative rotation is what
/// makes the evicted cache meaningful; end-to-end tests with the op are in LongAttentionEndToEndTests).
/// </summary>
[TestFixture]
public sealed class StreamingKvCacheTests
{
    private string _tmp = "";
    private LongCtxModel _model = null!;
    private static readonly StreamingPolicy Policy = new(Sink: 4, Window: 28, MaxPositions: 128);

    [OneTimeSetUp]
    public void Setup()
    {
        _tmp = Directory.CreateTempSubdirectory("lcc-streaming-kv-").FullName;
        var src = Path.Combine(_tmp, "gqa.onnx");
        OnnxWriter.Save(Builders.Build("gqa", new DecoderConfig(Layers: 2, Vocab: 64, MaxPositions: 128)), src);
        var compiled = Path.Combine(_tmp, "c");
        CompileJob.Run(src, compiled, Pipelines.Instantiate(Pipelines.Default));
        _model = LongCtxModel.Load(compiled, RuntimeFixtures.Cpu() with { KvCache = KvCacheMode.Shared });
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        _model.Dispose();
        Directory.Delete(_tmp, true);
    }

    private StreamingKvCache Cache(int step = 8) => new(_model.Contract, _model.Name, Policy, step);

    [Test]
    public void ThreeThousandSteps_CacheStaysBounded_BytesFlat()
    {
        var cache = Cache();
        using var g = _model.CreateGenerator(cache);
        var logits = g.Prefill([5, 6, 7, 8, 9, 10, 11, 12, 13, 14], chunk: 64);
        long bytes = cache.Bytes;
        Assert.That(bytes, Is.EqualTo(2L * 2 * 2 * 40 * 16 * 4), "2 layers x K/V x 2 kv heads x (4 + 28 + 8) rows x 16 x fp32");
        int max = 0;
        for (int i = 0; i < 3000; i++)
        {
            logits = g.Forward([Sampler.ArgMax(logits)]);
            max = Math.Max(max, g.Length);
            Assert.That(logits.All(float.IsFinite), $"step {i}");
        }
        Assert.That(max, Is.LessThanOrEqualTo(Policy.Sink + Policy.Window + 8));
        Assert.That(max, Is.EqualTo(cache.BufferLength), "the buffer is used to the end before evicting");
        Assert.That(cache.NextPosition, Is.EqualTo(3010));
        Assert.That(cache.Evicted, Is.EqualTo(3010 - g.Length));
        Assert.That(g.PeakKvBytes, Is.EqualTo(bytes), "memory is flat: the buffer never grows");
    }

    [Test]
    public void Eviction_KeepsSinksAndMostRecentRows()
    {
        var cache = Cache();
        using var g = _model.CreateGenerator(cache);
        g.Prefill(Enumerable.Range(5, 40).ToArray(), chunk: 8); // fills the 40-row buffer exactly
        Assert.That(g.Length, Is.EqualTo(40));
        var before = cache.OutputBuffers!.Select(b => b.GetTensorDataAsSpan<float>().ToArray()).ToList();
        cache.Reserve(8);
        Assert.That(g.Length, Is.EqualTo(Policy.Sink + Policy.Window));
        int rows = cache.BufferLength, d = _model.Contract.HeadDim;
        for (int i = 0; i < before.Count; i++)
        {
            var after = cache.OutputBuffers![i].GetTensorDataAsSpan<float>().ToArray();
            for (int h = 0; h < _model.Contract.KvHeads; h++)
            {
                int head = h * rows * d;
                Assert.That(after.AsSpan(head, Policy.Sink * d).ToArray(), Is.EqualTo(before[i].AsSpan(head, Policy.Sink * d).ToArray()), "sinks stay");
                Assert.That(after.AsSpan(head + Policy.Sink * d, Policy.Window * d).ToArray(),
                    Is.EqualTo(before[i].AsSpan(head + (40 - Policy.Window) * d, Policy.Window * d).ToArray()), "the window most recent rows move next to the sinks");
            }
        }
    }

    [Test]
    public void WithoutEviction_SameLogitsAsSharedBuffer()
    {
        using var s = _model.CreateGenerator(Cache());
        using var b = _model.CreateGenerator(new SharedBufferKvCache(_model.Contract, _model.Name, 64));
        int[] prompt = [3, 9, 27, 17, 51, 25, 11, 33, 35, 41, 59, 49];
        var x = s.Prefill(prompt, chunk: 5);
        var y = b.Prefill(prompt, chunk: 5);
        for (int i = 0; i < 20; i++)
        {
            Assert.That(x, Is.EqualTo(y).Within(1e-5f), $"step {i}");
            x = s.Forward([Sampler.ArgMax(x)]);
            y = b.Forward([Sampler.ArgMax(y)]);
        }
        Assert.That(s.Cache.Length, Is.EqualTo(32));
    }

    [Test]
    public void StepLargerThanHeadroom_IsAClearError_PrefillIsSplit()
    {
        var cache = Cache();
        using var g = _model.CreateGenerator(cache);
        var e = Assert.Throws<RuntimeException>(() => g.Forward(Enumerable.Range(5, 9).ToArray()))!;
        Assert.That(e.Message, Does.Contain("exceeds the streaming cache's step of 8").And.Contain("--chunk"));
        g.Prefill(Enumerable.Range(5, 50).ToArray(), chunk: 2048); // split into calls of 8
        Assert.That(cache.NextPosition, Is.EqualTo(50));
        Assert.That(g.Length, Is.LessThanOrEqualTo(cache.BufferLength));
    }

    [Test]
    public void NoHeadroomInRopeRows_DecodesAtSinkPlusWindow()
    {
        var cache = new StreamingKvCache(_model.Contract, _model.Name, new StreamingPolicy(4, 28, 32), step: 64);
        Assert.That((cache.BufferLength, cache.MaxStep), Is.EqualTo((32, 7)), "RoPE rows = sink + window: no extra rows, prefill steps of window / 4");
        Assert.Throws<RuntimeException>(() => _ = new StreamingKvCache(_model.Contract, _model.Name, new StreamingPolicy(4, 28, 16), 8));
    }

    [Test]
    public void PolicyIsReadFromLongctxJson()
    {
        static RuntimeSection Runtime(string json) => LongCtxManifest.Parse($$"""{"runtime": {{json}}}""", "longctx.json").Runtime;
        Assert.That(StreamingPolicy.From(Runtime("""{"kv":{"policy":"streaming","sink":4,"window":252,"max_positions":32768}}"""), "m"),
            Is.EqualTo(new StreamingPolicy(4, 252, 32768)));
        Assert.That(StreamingPolicy.From(Runtime("{}"), "m"), Is.Null);
        var e = Assert.Throws<RuntimeException>(() => StreamingPolicy.From(Runtime("""{"kv":{"policy":"streaming","sink":4,"window":0}}"""), "m"))!;
        Assert.That(e.Message, Does.Contain("window 0").And.Contain("recompile"));
        // sink + window past int range (a tampered file) is refused before any buffer size is computed
        e = Assert.Throws<RuntimeException>(() => StreamingPolicy.From(Runtime("""{"kv":{"policy":"streaming","sink":4,"window":2147483647}}"""), "m"))!;
        Assert.That(e.Message, Does.Contain("window 2147483647"));
    }
}

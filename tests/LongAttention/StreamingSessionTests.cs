using LongCtx.Compiler;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using LongCtx.Runtime.Sessions;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.LongAttention;

/// <summary>
/// Sessions on a streaming model (sinks + window, evicting): fork and snapshot/restore after eviction continue exactly
/// like the original session; truncating after eviction and the prefix cache are refused / skipped. Ignored while the op
/// library cannot run longctx.LongAttention.
/// </summary>
[TestFixture]
public sealed class StreamingSessionTests
{
    private string _tmp = "";
    private LongCtxModel? _model;

    [OneTimeSetUp]
    public void Setup()
    {
        _tmp = Directory.CreateTempSubdirectory("lcc-streaming-session-").FullName;
        var src = Path.Combine(_tmp, "torch.onnx");
        OnnxWriter.Save(Builders.Build("torch", new DecoderConfig(Layers: 2, Vocab: 64)), src);
        var dir = Path.Combine(_tmp, "streaming");
        var step = new PipelineStep("lower-attention", new Dictionary<string, string> { ["pattern"] = "streaming", ["sink"] = "4", ["window"] = "60", ["trained-context"] = "256" });
        CompileJob.Run(src, dir, Pipelines.Instantiate(Pipelines.WithMethods([], step)));
        try { _model = LongCtxModel.Load(dir, RuntimeFixtures.Cpu()); }
        catch (RuntimeException e) when (e.Message.Contains("LongAttention") || e.Message.Contains(SessionFactory.CustomOpLibraryName)) { _model = null; }
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        _model?.Dispose();
        Directory.Delete(_tmp, true);
    }

    private LongCtxModel Model
    {
        get
        {
            if (_model is null) Assert.Ignore("longctx.LongAttention is not available in the op library");
            return _model!;
        }
    }

    private static int[] Ids(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(5, 64)).ToArray(); }

    [Test]
    public void AfterEviction_ForkAndRestore_ContinueLikeTheOriginal_TruncateRefused()
    {
        var m = Model;
        using var conv = new Conversation(m, new PrefixCache(m, 64L << 20, blockTokens: 16));
        conv.Append(Ids(200, 1), chunk: 32);
        Assert.That(conv.Cache, Is.InstanceOf<StreamingKvCache>());
        Assert.That(conv.NextPosition, Is.EqualTo(200));
        Assert.That(conv.Length, Is.LessThan(200), "the cache evicted");
        Assert.That(conv.LastPrefixHit, Is.EqualTo(0), "no prefix cache on an evicting cache");
        var snap = conv.Snapshot();
        Assert.That(snap.Tokens, Has.Length.EqualTo(conv.Length));
        Assert.That(snap.Tokens[..4], Is.EqualTo(conv.Transcript.Take(4)), "the sinks");
        Assert.That(snap.Tokens[4..], Is.EqualTo(conv.Transcript.Skip(200 - (conv.Length - 4))), "the most recent tokens");

        using var fork = conv.Fork();
        using var restored = new Conversation(m);
        restored.Restore(snap);
        var next = Ids(5, 2);
        var a = conv.Append(next);
        var b = fork.Append(next);
        var c = restored.Append(next);
        Assert.That(b, Is.EqualTo(a), "fork = original, bit for bit");
        Assert.That(c, Is.EqualTo(a), "restored = original, bit for bit");
        Assert.That(restored.NextPosition, Is.EqualTo(205));
        var e = Assert.Throws<RuntimeException>(() => conv.Truncate(10))!;
        Assert.That(e.Message, Does.Contain("evicted").And.Contain("truncated before it evicts"));
    }
}

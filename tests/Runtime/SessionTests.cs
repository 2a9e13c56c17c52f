using LongCtx.Compiler;
using LongCtx.Passes;
using LongCtx.Runtime;
using LongCtx.Runtime.KvStore;
using LongCtx.Runtime.Sessions;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

/// <summary>
/// Sessions (Conversation): a cache kept across turns, fork, truncate, snapshot/restore give the logits of a fresh
/// prefill of the same tokens, on every cache kind (concat, shared buffer, static; fp32 and fp16); bad input.
/// </summary>
[TestFixture]
public sealed class SessionTests
{
    private string _tmp = "";
    private string? _recallCompiled;

    [OneTimeSetUp]
    public void Compile()
    {
        _tmp = Directory.CreateTempSubdirectory("lcc-sessions-").FullName;
        if (File.Exists(RuntimeFixtures.RecallModel))
        {
            _recallCompiled = Path.Combine(_tmp, "recall-c");
            CompileJob.Run(RuntimeFixtures.RecallModel, _recallCompiled, Pipelines.Instantiate(Pipelines.Default));
        }
    }

    [OneTimeTearDown] public void Cleanup() => Directory.Delete(_tmp, true);

    /// <summary>(model path, KV cache mode, tolerance). fp32: 1e-5 absolute (the bound; a chunk boundary only
    /// reorders sums). fp16 KV/logits: 2e-2 relative to the logit scale, the runtime's probe tolerance for fp16.</summary>
    private LongCtxModel Open(string which) => which switch
    {
        "recall-concat" => LongCtxModel.Load(RuntimeFixtures.Require(RuntimeFixtures.RecallModel), RuntimeFixtures.Cpu()),
        "recall-shared" => LongCtxModel.Load(_recallCompiled ?? RuntimeFixtures.Require(RuntimeFixtures.RecallModel), RuntimeFixtures.Cpu() with { KvCache = KvCacheMode.Shared }),
        "static-fp32" => LongCtxModel.Load(RuntimeFixtures.Require(RuntimeFixtures.Static24), RuntimeFixtures.Cpu()),
        "qwen-fp16" => LongCtxModel.Load(RuntimeFixtures.Require(RuntimeFixtures.Qwen), RuntimeFixtures.Cpu() with { KvCache = KvCacheMode.Concat }),
        _ => throw new ArgumentException(which),
    };

    private static float Tolerance(LongCtxModel m, float[] reference) =>
        m.Contract.LogitsType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16 || m.Contract.KvType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16
            ? 2e-2f * (1 + reference.Max(Math.Abs)) : 1e-5f;

    private static int[] Ids(int n, int vocab, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(5, vocab)).ToArray(); }

    private static float[] Fresh(LongCtxModel m, params int[][] parts)
    {
        using var g = m.CreateGenerator();
        return g.Prefill(parts.SelectMany(p => p).ToArray(), 0);
    }

    private static float MaxDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    [TestCase("recall-concat"), TestCase("recall-shared"), TestCase("static-fp32"), TestCase("qwen-fp16")]
    public void Turns_ReusedCache_EqualsRecomputed(string which)
    {
        using var m = Open(which);
        int n = m.Contract.CacheKind == KvCacheKind.Static ? 4 : 9;
        int[] a = Ids(n, m.VocabSize, 1), b = Ids(3, m.VocabSize, 2), c = Ids(2, m.VocabSize, 3);
        using var conv = new Conversation(m);
        conv.Append(a, chunk: 4);
        conv.Append(b);
        var logits = conv.Append(c);
        var fresh = Fresh(m, a, b, c);
        Assert.That(MaxDiff(logits, fresh), Is.LessThanOrEqualTo(Tolerance(m, fresh)));
        Assert.That(conv.Length, Is.EqualTo(n + 5));
        Assert.That(conv.Transcript, Is.EqualTo(a.Concat(b).Concat(c)));
    }

    [TestCase("recall-concat"), TestCase("recall-shared"), TestCase("static-fp32"), TestCase("qwen-fp16")]
    public void Fork_TwoContinuations_EqualFreshRuns(string which)
    {
        using var m = Open(which);
        int[] prefix = Ids(5, m.VocabSize, 4), x = Ids(3, m.VocabSize, 5), y = Ids(4, m.VocabSize, 6);
        using var left = new Conversation(m);
        left.Append(prefix);
        using var right = left.Fork();
        var lx = left.Append(x);
        var ry = right.Append(y);
        var fx = Fresh(m, prefix, x);
        var fy = Fresh(m, prefix, y);
        Assert.That(MaxDiff(lx, fx), Is.LessThanOrEqualTo(Tolerance(m, fx)), "left = prefix + x");
        Assert.That(MaxDiff(ry, fy), Is.LessThanOrEqualTo(Tolerance(m, fy)), "right = prefix + y: its own cache, not left's");
        Assert.That(left.Transcript, Is.EqualTo(prefix.Concat(x)));
        Assert.That(right.Transcript, Is.EqualTo(prefix.Concat(y)));
    }

    [TestCase("recall-concat"), TestCase("recall-shared"), TestCase("static-fp32"), TestCase("qwen-fp16")]
    public void Truncate_ThenContinue_EqualsFreshRun(string which)
    {
        using var m = Open(which);
        int[] keep = Ids(4, m.VocabSize, 7), drop = Ids(5, m.VocabSize, 8), next = Ids(3, m.VocabSize, 9);
        using var conv = new Conversation(m);
        conv.Append([.. keep, .. drop]);
        conv.Truncate(keep.Length);
        Assert.That(conv.Length, Is.EqualTo(keep.Length));
        Assert.That(conv.LastLogits, Is.Null);
        var logits = conv.Append(next);
        var fresh = Fresh(m, keep, next);
        Assert.That(MaxDiff(logits, fresh), Is.LessThanOrEqualTo(Tolerance(m, fresh)));
    }

    [TestCase("recall-concat"), TestCase("recall-shared"), TestCase("static-fp32"), TestCase("qwen-fp16")]
    public void PrefixCache_RestoredBlocks_EqualFreshRun(string which)
    {
        using var m = Open(which);
        var cache = new PrefixCache(m, 16L << 20, blockTokens: 4);
        int[] doc = Ids(9, m.VocabSize, 15), x = Ids(2, m.VocabSize, 16), y = Ids(3, m.VocabSize, 17);
        using (var first = new Conversation(m, cache)) first.Append([.. doc, .. x]);
        using var second = new Conversation(m, cache);
        var logits = second.Append([.. doc, .. y]);
        Assert.That(second.LastPrefixHit, Is.EqualTo(8), "two 4-token blocks of the shared 9-token prefix");
        var fresh = Fresh(m, doc, y);
        Assert.That(MaxDiff(logits, fresh), Is.LessThanOrEqualTo(Tolerance(m, fresh)));
        Assert.That(second.Transcript, Is.EqualTo(doc.Concat(y)));
    }

    [Test]
    public void Generate_KeepsTheTranscript_PendingTokenFedNextTurn()
    {
        using var m = Open("recall-concat");
        int[] prompt = [1, 20, 90, 3, 20, 4];
        var opts = new GenerationOptions { MaxNewTokens = 4 };
        using var conv = new Conversation(m);
        var first = conv.Generate(prompt, opts);
        Assert.That(first, Has.Count.EqualTo(4));
        Assert.That(conv.Pending, Is.EqualTo(1), "the last sampled token is not in the cache yet");
        Assert.That(conv.Length, Is.EqualTo(prompt.Length + 3));
        var second = conv.Generate([3, 20, 4], opts);
        using var g = m.CreateGenerator();
        var expected = g.Generate([.. prompt, .. first, 3, 20, 4], opts);
        Assert.That(second, Is.EqualTo(expected));
        Assert.That(conv.Transcript, Is.EqualTo(prompt.Concat(first).Concat([3, 20, 4]).Concat(second)));
    }

    [TestCase("recall-concat"), TestCase("recall-shared"), TestCase("static-fp32"), TestCase("qwen-fp16")]
    public void Snapshot_Restore_RoundTrip(string which)
    {
        using var m = Open(which);
        int[] a = Ids(6, m.VocabSize, 10), b = Ids(2, m.VocabSize, 11);
        using var conv = new Conversation(m);
        conv.Append(a);
        var snap = conv.Snapshot();
        Assert.That(snap.ModelHash, Is.EqualTo(m.ModelHash).And.StartWith("sha256:"));
        Assert.That(snap.Tokens, Is.EqualTo(a));
        Assert.That(snap.NextPosition, Is.EqualTo(a.Length));
        Assert.DoesNotThrow(snap.Validate);
        using var other = new Conversation(m);
        other.Append(Ids(3, m.VocabSize, 12)); // replaced by the restore
        other.Restore(snap);
        Assert.That(other.Snapshot().Keys[^1], Is.EqualTo(snap.Keys[^1]), "exact round trip (fp16 -> fp32 -> fp16 too)");
        Assert.That(other.Transcript, Is.EqualTo(a));
        var restored = other.Append(b);
        var fresh = Fresh(m, a, b);
        Assert.That(MaxDiff(restored, fresh), Is.LessThanOrEqualTo(Tolerance(m, fresh)));
    }

    [Test]
    public void Restore_SnapshotOfAnotherModel_RefusedNamingBoth_NothingChanges()
    {
        using var m = Open("recall-concat");
        using var conv = new Conversation(m);
        conv.Append([1, 20, 90]);
        var foreign = conv.Snapshot() with { ModelHash = "sha256:0123" };
        var e = Assert.Throws<RuntimeException>(() => conv.Restore(foreign))!;
        Assert.That(e.Message, Does.Contain("sha256:0123").And.Contain(m.ModelHash).And.Contain("recall-public"));
        Assert.That(conv.Length, Is.EqualTo(3));
        Assert.That(conv.Transcript, Is.EqualTo(new[] { 1, 20, 90 }));

        var wrongShape = conv.Snapshot() with { HeadDim = 16 };
        Assert.Throws<ArgumentException>(() => conv.Restore(wrongShape));
        Assert.That(conv.Length, Is.EqualTo(3), "a malformed snapshot leaves the session as it was");
    }

    [Test]
    public void ModelHash_DiffersBetweenCompiledAndOriginal()
    {
        using var a = Open("recall-concat");
        using var b = Open("recall-shared");
        if (_recallCompiled is null) Assert.Ignore("recall-public not compiled");
        Assert.That(a.ModelHash, Is.Not.EqualTo(b.ModelHash));
        using var conv = new Conversation(b);
        conv.Append([1, 2, 3]);
        using var other = new Conversation(a);
        Assert.Throws<RuntimeException>(() => other.Restore(conv.Snapshot()));
    }

    [Test]
    public void Session_BeyondMaxContext_ErrorNamesBothNumbers()
    {
        using var m = Open("static-fp32");
        int cap = m.MaxContext!.Value;
        using var conv = new Conversation(m);
        conv.Append(Ids(cap - 3, m.VocabSize, 13));
        var e = Assert.Throws<ArgumentException>(() => conv.Append(Ids(5, m.VocabSize, 14)))!;
        Assert.That(e.Message, Does.Contain($"holds {cap - 3} tokens").And.Contain($"adds 5").And.Contain($"max context of {cap}"));
        Assert.That(conv.Length, Is.EqualTo(cap - 3), "nothing fed");
        Assert.Throws<ArgumentOutOfRangeException>(() => conv.Truncate(cap));

        var s = conv.Snapshot();
        long per = (long)s.KvHeads * (cap + 1) * s.HeadDim;
        var tooLong = s with
        {
            Tokens = new int[cap + 1], NextPosition = cap + 1,
            Keys = [.. s.Keys.Select(_ => new float[per])], Values = [.. s.Values.Select(_ => new float[per])],
        };
        var r = Assert.Throws<RuntimeException>(() => conv.Restore(tooLong))!;
        Assert.That(r.Message, Does.Contain($"holds {cap + 1} tokens").And.Contain($"max context of {cap}"));
        Assert.That(conv.Length, Is.EqualTo(cap - 3), "nothing restored, the session unchanged");
    }
}

using NUnit.Framework;
using LongCtx.Compiler;
using LongCtx.Passes;
using LongCtx.Runtime;
using LongCtx.Runtime.KvStore;
using LongCtx.Runtime.Sessions;
using LongCtx.Tests.Runtime;

namespace LongCtx.Tests.KvStore;

/// <summary>
/// A session's cache through the KV store (<see cref="Conversation.Save"/> / <see cref="Conversation.Load"/>, built on
/// Snapshot / Restore and KvTransfer): store it, load it into a fresh session, continue; on recall-public (fp32) with the
/// concat cache, the shared buffer (the runtime's default on a compiled model) and the static cache.
/// </summary>
[TestFixture]
public sealed class KvCacheSnapshotTests() : TempDirTest("kvsnap")
{
    private string _compiled = "";

    [OneTimeSetUp]
    public void Compile()
    {
        if (!File.Exists(RuntimeFixtures.RecallModel)) return;
        _compiled = TestSupport.TempDir("kvsnap-compiled");
        CompileJob.Run(RuntimeFixtures.RecallModel, Path.Combine(_compiled, "out"), Pipelines.Instantiate(Pipelines.Default));
    }

    [OneTimeTearDown]
    public void RemoveCompiled()
    {
        if (_compiled.Length > 0) Directory.Delete(_compiled, true);
    }

    private static int[] Prompt(int n, int seed = 3)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(i => i == 0 ? 1 : rng.Next(8, 256)).ToArray();
    }

    private static float MaxDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    /// <summary>
    /// Through the file: raw gives the same logits (&lt;= 1e-5); int8 and cachegen stay close and keep the answer.
    /// Measured shifts on this prompt (logits spanning 25): int8 (error max|row|/254) 0.013, cachegen at its default bins
    /// (error up to max|x|/L, L = 2..5) 0.89; tolerances about 2-3x those. Over all 200 4096-token prompts
    /// (KvStoreBench) cachegen's largest shift was 3.99 with every answer unchanged.
    /// </summary>
    [TestCase("raw", 1e-5f), TestCase("int8", 0.03f), TestCase("cachegen", 2.7f)]
    public void SaveLoadContinue_MatchesTheLiveCache(string codec, float tolerance)
    {
        using var model = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var item = LongCtx.Runtime.Eval.NeedleEval.Read(Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl"), 1)[0];
        var hay = item.Prompt[..^3];
        var path = Path.Combine(Dir, "hay.lckv");
        using var live = new Conversation(model);
        live.Append(hay, 64);
        live.Save(path, KvCodecs.Get(codec));
        var want = live.Append(item.Prompt[^3..]);

        using var loaded = Conversation.Load(model, path);
        Assert.That(loaded.Transcript, Is.EqualTo(hay));
        var got = loaded.Append(item.Prompt[^3..]);
        TestContext.Out.WriteLine($"{codec}: {new FileInfo(path).Length} bytes, max |dlogit| {MaxDiff(got, want):G3}, logits span {want.Max() - want.Min():G3}");
        Assert.That(MaxDiff(got, want), Is.LessThanOrEqualTo(tolerance), codec);
        Assert.That(Sampler.ArgMax(got), Is.EqualTo(Sampler.ArgMax(want)).And.EqualTo(item.Expected));
    }

    /// <summary>
    /// The case for the unified store: saved from a session on a compiled model's default cache (the shared
    /// buffer), loaded into a fresh session on a freshly loaded model, the next step's logits equal (raw, &lt;= 1e-5: the
    /// same rows, the same graph). Also loaded into a concat cache of the same model: the file does not depend on the kind.
    /// </summary>
    [TestCase(KvCacheMode.Auto), TestCase(KvCacheMode.Concat)]
    public void SharedBufferSession_SavedAndLoaded_NextStepLogitsEqual(KvCacheMode loadInto)
    {
        if (_compiled.Length == 0) Assert.Ignore("recall-public not present");
        var folder = Path.Combine(_compiled, "out");
        var prompt = Prompt(300);
        var path = Path.Combine(Dir, "shared.lckv");
        float[] want;
        using (var model = LongCtxModel.Load(folder, RuntimeFixtures.Cpu()))
        using (var conv = new Conversation(model))
        {
            Assert.That(conv.Cache, Is.InstanceOf<SharedBufferKvCache>(), "a compiled model's default cache");
            conv.Append(prompt, 128);
            conv.Save(path, KvCodecs.Get("raw"));
            want = conv.Append([3, 40, 4]);
        }
        using var fresh = LongCtxModel.Load(folder, RuntimeFixtures.Cpu() with { KvCache = loadInto });
        using var loaded = Conversation.Load(fresh, path);
        Assert.That(loaded.Cache, loadInto == KvCacheMode.Concat ? Is.InstanceOf<ConcatKvCache>() : Is.InstanceOf<SharedBufferKvCache>());
        Assert.That((loaded.Length, loaded.NextPosition), Is.EqualTo((300, 300)));
        var got = loaded.Append([3, 40, 4]);
        Assert.That(MaxDiff(got, want), Is.LessThanOrEqualTo(1e-5f));
    }

    [Test]
    public void StaticCacheSession_SavedAndLoaded_NextStepLogitsEqual()
    {
        using var model = RuntimeFixtures.Load(RuntimeFixtures.Static24);
        var path = Path.Combine(Dir, "static.lckv");
        using var conv = new Conversation(model);
        conv.Append([1, 2, 3, 4, 5]);
        conv.Save(path, KvCodecs.Get("raw"));
        var want = conv.Append([6, 7]);
        using var loaded = Conversation.Load(model, path);
        Assert.That(loaded.Cache, Is.InstanceOf<StaticKvCache>());
        Assert.That(MaxDiff(loaded.Append([6, 7]), want), Is.LessThanOrEqualTo(1e-5f));
    }

    [Test]
    public void AnotherModelsFile_IsRefusedBeforeDecoding_NamingBothHashes()
    {
        using var recall = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        using var qwen = RuntimeFixtures.Load(RuntimeFixtures.Qwen);
        string recallHash = recall.ModelHash;
        Assert.That(ModelIdentity.Compute(recall.ModelPath), Is.EqualTo(recallHash), "the hash is a function of the model's files");
        Assert.That(qwen.ModelHash, Is.Not.EqualTo(recallHash));
        var path = Path.Combine(Dir, "recall.lckv");
        using (var conv = new Conversation(recall))
        {
            conv.Append(Prompt(40));
            conv.Save(path, new CacheGenKvCodec());
        }
        Assert.That(KvStoreFile.ReadHeader(path).ModelHash, Is.EqualTo(recallHash), "the file records LongCtxModel.ModelHash");
        var e = Assert.Throws<KvStoreException>(() => Conversation.Load(qwen, path))!;
        Assert.That(e.Error, Is.EqualTo(KvStoreError.ModelMismatch));
        Assert.That(e.Message, Does.Contain(recallHash).And.Contain(qwen.ModelHash));
    }

    [Test]
    public void ASnapshotOfAnotherShapeOrWithAGap_IsNotRestored_AndTheSessionKeepsItsTokens()
    {
        using var recall = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        using var r = new Conversation(recall);
        r.Append([1, 2, 3]);
        var wrong = KvFixtures.Snapshot(4, 2, 16, 10, hash: recall.ModelHash);
        Assert.That(Assert.Throws<RuntimeException>(() => r.Restore(wrong))!.Message, Does.Contain("x 16 dims").And.Contain("has 4 x 2 x 32"));
        var gap = KvFixtures.Snapshot(4, 2, 32, 10, hash: recall.ModelHash) with { NextPosition = 20 };
        Assert.That(Assert.Throws<RuntimeException>(() => r.Restore(gap))!.Message, Does.Contain("next token at 20"));
        Assert.That(r.Length, Is.EqualTo(3));
        Assert.That(r.Transcript, Is.EqualTo(new[] { 1, 2, 3 }));
    }
}

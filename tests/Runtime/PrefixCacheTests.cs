using LongCtx.Runtime;
using LongCtx.Runtime.Sessions;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

/// <summary>
/// The prefix cache: a prompt that starts with a cached prefix restores it and prefills only the rest, with the logits
/// of a full prefill (&lt;= 1e-5); 8 concurrent generators sharing one cache (with evictions) give the serial outputs;
/// a budget below one block is said once and the cache is off.
/// </summary>
[TestFixture]
public sealed class PrefixCacheTests
{
    private static int[] Ids(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(5, 256)).ToArray(); }

    [Test]
    public void SharedPrefix_RestoredBlocks_LogitsEqualFullPrefill()
    {
        using var m = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var cache = new PrefixCache(m, 64L << 20);
        int[] doc = Ids(600, 1), q1 = [3, 20, 4], q2 = [3, 33, 4];
        using (var g = m.CreateGenerator()) cache.Prefill(g, [.. doc, .. q1], chunk: 256);
        Assert.That(cache.Stats().Blocks, Is.EqualTo(2), "603 tokens: two full 256-token blocks");

        using var h = m.CreateGenerator();
        int hit = cache.Restore(h, [.. doc, .. q2]);
        Assert.That(hit, Is.EqualTo(512));
        Assert.That(h.Length, Is.EqualTo(512));
        var reused = h.Prefill([.. doc[512..], .. q2], 0);
        using var fresh = m.CreateGenerator();
        var full = fresh.Prefill([.. doc, .. q2], 0);
        Assert.That(reused.Zip(full, (a, b) => Math.Abs(a - b)).Max(), Is.LessThanOrEqualTo(1e-5f));
        var s = cache.Stats();
        Assert.That(s.HitTokens, Is.EqualTo(512));
        Assert.That(s.LookupTokens, Is.EqualTo(1206));
        Assert.That(s.HitRate, Is.EqualTo(512.0 / 1206).Within(1e-9));
        Assert.That(s.ToString(), Does.Contain("hit rate"));
    }

    [Test]
    public void WholePromptCached_LastTokenStillFed_DifferentPrefixMisses()
    {
        using var m = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var cache = new PrefixCache(m, 64L << 20, blockTokens: 8);
        var p = Ids(16, 2);
        using (var g = m.CreateGenerator()) cache.Prefill(g, p);
        using var h = m.CreateGenerator();
        Assert.That(cache.Restore(h, p), Is.EqualTo(8), "16 tokens cached, but the last one is always fed: one block restored");
        using var k = m.CreateGenerator();
        int[] changedFirst = [.. p];
        changedFirst[0] ^= 1;
        Assert.That(cache.Restore(k, changedFirst), Is.EqualTo(0), "the hash chain keys the whole prefix");
        Assert.Throws<InvalidOperationException>(() => cache.Restore(h, p), "restores only into an empty generator");
    }

    [Test]
    public void EightConcurrentGenerators_SharedCacheWithEviction_EqualSerial()
    {
        using var m = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var docs = Enumerable.Range(0, 4).Select(i => Ids(40 + 8 * i, 100 + i)).ToArray();
        var rng = new Random(5);
        var prompts = Enumerable.Range(0, 48).Select(r => docs[r % docs.Length].Concat(Ids(rng.Next(1, 12), 200 + r)).ToArray()).ToArray();
        var opts = new GenerationOptions { MaxNewTokens = 3, Chunk = 8 };
        var serial = prompts.Select(p => { using var g = m.CreateGenerator(); return g.Generate(p, opts); }).ToArray();

        // 8-token blocks; a budget of 12 blocks, far below the ~30 the prompts need: eviction runs while others read
        var probe = new PrefixCache(m, long.MaxValue, blockTokens: 8);
        var cache = new PrefixCache(m, 12 * probe.BlockBytes, blockTokens: 8);
        RuntimeFixtures.AssertConcurrentEqualsSerial(8, serial, r =>
        {
            using var g = m.CreateGenerator();
            int hit = cache.Restore(g, prompts[r]);
            var tokens = g.Generate(prompts[r][hit..], opts);
            cache.Store(g, prompts[r]);
            return tokens;
        });
        var s = cache.Stats();
        Assert.That(s.HitTokens, Is.GreaterThan(0));
        Assert.That(s.BlocksEvicted, Is.GreaterThan(0));
        Assert.That(s.Bytes, Is.LessThanOrEqualTo(s.BudgetBytes));
        Assert.That(s.Blocks, Is.LessThanOrEqualTo(12));
    }

    [Test]
    public void BudgetBelowOneBlock_SaidOnce_CacheOff()
    {
        using var m = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var log = new List<string>();
        var cache = new PrefixCache(m, 1000, log: log.Add);
        Assert.That(cache.Enabled, Is.False);
        Assert.That(log, Has.Count.EqualTo(1));
        Assert.That(log[0], Does.Contain("1000 bytes").And.Contain("one block of 256 tokens").And.Contain("prefix cache off"));
        var p = Ids(600, 3);
        using var g = m.CreateGenerator();
        var logits = cache.Prefill(g, p);
        using var h = m.CreateGenerator();
        Assert.That(logits, Is.EqualTo(h.Prefill(p)));
        Assert.That(cache.Stats().Blocks, Is.EqualTo(0));
        Assert.That(log, Has.Count.EqualTo(1), "said once, not per request");
    }

    [Test]
    public void Cli_Run_PrefixCache_ReportsHitRate_SameTokens()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var ids = string.Join(',', Ids(300, 4));
        var plain = Foundation.CliRunner.Run("run", model, "--prompt-ids", ids, "--max-new-tokens", "3", "--ep", "cpu");
        var cached = Foundation.CliRunner.Run("run", model, "--prompt-ids", ids, "--max-new-tokens", "3", "--ep", "cpu", "--prefix-cache", "64MiB");
        Assert.That(cached.ExitCode, Is.EqualTo(0), cached.Stderr);
        Assert.That(cached.Stdout, Is.EqualTo(plain.Stdout));
        Assert.That(cached.Stderr, Does.Contain("prefix cache: 1 lookups, 0/300 prompt tokens reused").And.Contain("1 stored"));
        var bad = Foundation.CliRunner.Run("run", model, "--prompt-ids", ids, "--ep", "cpu", "--prefix-cache", "lots");
        Assert.That(bad.ExitCode, Is.EqualTo(1));
        Assert.That(bad.Stderr.Trim(), Does.StartWith("lcc: error: --prefix-cache"));
    }
}

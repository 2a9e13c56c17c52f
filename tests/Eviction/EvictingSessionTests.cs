using LongCtx.Runtime;
using LongCtx.Runtime.KvStore;
using LongCtx.Runtime.Sessions;
using LongCtx.Tests.Foundation;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// A session (what <c>lcc run</c> drives since the KV store moved onto <see cref="Conversation"/>) on a model compiled
/// with --kv-evict: it generates what a bare generator does, and a snapshot / --save-kv is a one-line refusal, --save-kv's
/// before any work (an evicting cache keeps rows per head: no host copy of one token list).
/// </summary>
[TestFixture]
public sealed class EvictingSessionTests : RecallCompileFixture
{
    [Test]
    public void Session_OnAnEvictingCache_GeneratesLikeAGenerator_AndRefusesSnapshots()
    {
        using var m = LongCtxModel.Load(Compile("snap", "snapkv:budget=24,window=8,pool=3"), RuntimeFixtures.Cpu());
        var prompt = Prompt(100);
        var opts = new GenerationOptions { MaxNewTokens = 4 };
        using var g = m.CreateGenerator();
        var expected = g.Generate(prompt, opts);
        using var conv = new Conversation(m);
        Assert.That(conv.Generate(prompt, opts), Is.EqualTo(expected));
        Assert.That(conv.NextPosition - conv.Length, Is.GreaterThan(0), "the cache evicted");
        Assert.That(conv.Transcript, Is.EqualTo(prompt.Concat(expected)));
        var e = Assert.Throws<RuntimeException>(() => conv.Snapshot())!;
        Assert.That(e.Message, Does.Contain("EvictingKvCache cannot be copied"));

        var kv = Path.Combine(Tmp, "evict.lckv");
        var r = CliRunner.Run("run", Compile("snap", "snapkv:budget=24,window=8,pool=3"), "--prompt-ids", string.Join(",", prompt), "--max-new-tokens", "4", "--ep", "cpu", "--save-kv", kv);
        Assert.That(r.ExitCode, Is.Not.EqualTo(0));
        Assert.That(r.Stdout.Trim(), Is.Empty, "refused before generating");
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.Contains("note:")).ToArray();
        Assert.That(lines, Has.Length.EqualTo(1), r.Stderr);
        Assert.That(lines[0], Does.StartWith("lcc: error: a EvictingKvCache cannot be copied"));

        var run = CliRunner.Run("run", Compile("snap", "snapkv:budget=24,window=8,pool=3"), "--prompt-ids", string.Join(",", prompt), "--max-new-tokens", "4", "--ep", "cpu");
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Stderr);
        Assert.That(run.Stdout.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse), Is.EqualTo(expected), "lcc run drives the same session");
        Assert.That(File.Exists(kv), Is.False);
    }
}

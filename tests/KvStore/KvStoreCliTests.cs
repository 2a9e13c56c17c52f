using NUnit.Framework;
using LongCtx.Tests.Foundation;
using LongCtx.Tests.Runtime;

namespace LongCtx.Tests.KvStore;

/// <summary><c>lcc run --save-kv / --load-kv / --kv-codec</c> end to end, in process.</summary>
[TestFixture]
public sealed class KvStoreCliTests() : TempDirTest("kvcli")
{
    private static string Ids(IEnumerable<int> ids) => string.Join(",", ids);

    [TestCase("raw"), TestCase("cachegen")]
    public void SaveThenLoad_GeneratesWhatTheWholePromptGenerates(string codec)
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var item = LongCtx.Runtime.Eval.NeedleEval.Read(Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl"), 1)[0];
        var kv = Path.Combine(Dir, "hay.lckv");
        var save = CliRunner.Run("run", model, "--prompt-ids", Ids(item.Prompt[..^3]), "--max-new-tokens", "0", "--ep", "cpu", "--save-kv", kv, "--kv-codec", codec);
        Assert.That(save.ExitCode, Is.EqualTo(0), save.Stderr);
        Assert.That(save.Stderr, Does.Contain($"saved {item.Prompt.Length - 3} tokens to hay.lckv ({codec},"));

        var whole = CliRunner.Run("run", model, "--prompt-ids", Ids(item.Prompt), "--max-new-tokens", "1", "--ep", "cpu");
        var loaded = CliRunner.Run("run", model, "--load-kv", kv, "--prompt-ids", Ids(item.Prompt[^3..]), "--max-new-tokens", "1", "--ep", "cpu");
        Assert.That(loaded.ExitCode, Is.EqualTo(0), loaded.Stderr);
        Assert.That(loaded.Stderr, Does.Contain($"loaded {item.Prompt.Length - 3} cached tokens from hay.lckv ({codec}"));
        Assert.That(loaded.Stdout.Trim(), Is.EqualTo(whole.Stdout.Trim()).And.EqualTo(item.Expected.ToString()));
    }

    /// <summary>--load-kv restores into the model's default cache, here a compiled model's shared buffer (not only concat).</summary>
    [Test]
    public void CompiledModel_LoadsIntoItsSharedBuffer_AndGeneratesWhatTheWholePromptGenerates()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var compiled = Path.Combine(Dir, "c");
        Assert.That(CliRunner.Run("compile", model, "-o", compiled).ExitCode, Is.EqualTo(0));
        var kv = Path.Combine(Dir, "c.lckv");
        Assert.That(CliRunner.Run("run", compiled, "--prompt-ids", "1,20,90,5,6", "--max-new-tokens", "0", "--ep", "cpu", "--save-kv", kv, "--kv-codec", "raw").ExitCode, Is.EqualTo(0));
        var whole = CliRunner.Run("run", compiled, "--prompt-ids", "1,20,90,5,6,3,20,4", "--max-new-tokens", "3", "--ep", "cpu");
        var loaded = CliRunner.Run("run", compiled, "--load-kv", kv, "--prompt-ids", "3,20,4", "--max-new-tokens", "3", "--ep", "cpu");
        Assert.That(loaded.ExitCode, Is.EqualTo(0), loaded.Stderr);
        Assert.That(loaded.Stderr, Does.Contain("loaded 5 cached tokens from c.lckv (raw").And.Contain("into a SharedBufferKvCache"));
        Assert.That(loaded.Stdout.Trim(), Is.EqualTo(whole.Stdout.Trim()));
    }

    [Test]
    public void ResavingAfterLoad_KeepsTheLoadedAndTheNewTokens()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        string a = Path.Combine(Dir, "a.lckv"), b = Path.Combine(Dir, "b.lckv");
        Assert.That(CliRunner.Run("run", model, "--prompt-ids", "1,20,90", "--max-new-tokens", "0", "--ep", "cpu", "--save-kv", a).ExitCode, Is.EqualTo(0));
        var r = CliRunner.Run("run", model, "--load-kv", a, "--prompt-ids", "3,20,4", "--max-new-tokens", "3", "--ep", "cpu", "--save-kv", b, "--kv-codec", "raw");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Stderr);
        var snap = LongCtx.Runtime.KvStore.KvStoreFile.Load(b);
        var generated = r.Stdout.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
        Assert.That(snap.Tokens, Is.EqualTo(new[] { 1, 20, 90, 3, 20, 4 }.Concat(generated[..^1])), "the cache holds every fed token: the last sampled one was never fed");
    }

    [Test]
    public void BadKvOptionsAndFiles_AreOneLineErrors()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var kv = Path.Combine(Dir, "kv.lckv");
        void Fails(string expected, params string[] args)
        {
            var r = CliRunner.Run(["run", model, "--ep", "cpu", "--max-new-tokens", "1", .. args]);
            Assert.That(r.ExitCode, Is.Not.EqualTo(0), string.Join(" ", args));
            var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.That(lines, Has.Length.EqualTo(1), r.Stderr);
            Assert.That(lines[0], Does.StartWith("lcc: error: ").And.Contain(expected));
        }
        Fails("give --save-kv FILE too", "--prompt-ids", "1,2", "--kv-codec", "int8");
        Fails("'zstd' is unknown", "--prompt-ids", "1,2", "--save-kv", kv, "--kv-codec", "zstd");
        Fails("cachegen setting 'bins' is unknown", "--prompt-ids", "1,2", "--save-kv", kv, "--kv-codec", "cachegen:bins=3");
        Fails("not found", "--prompt-ids", "1,2", "--load-kv", Path.Combine(Dir, "none.lckv"));
        Assert.That(File.Exists(kv), Is.False, "nothing saved by failed runs");

        Assert.That(CliRunner.Run("run", model, "--prompt-ids", "1,2,3", "--max-new-tokens", "0", "--ep", "cpu", "--save-kv", kv).ExitCode, Is.EqualTo(0));
        var bytes = File.ReadAllBytes(kv);
        bytes[^3] ^= 1;
        var bad = Path.Combine(Dir, "bad.lckv");
        File.WriteAllBytes(bad, bytes);
        Fails("is corrupted", "--prompt-ids", "4", "--load-kv", bad);

        var qwen = RuntimeFixtures.Require(RuntimeFixtures.Qwen);
        var other = CliRunner.Run("run", qwen, "--ep", "cpu", "--max-new-tokens", "1", "--prompt-ids", "4", "--load-kv", kv);
        Assert.That(other.ExitCode, Is.Not.EqualTo(0));
        Assert.That(other.Stderr.Trim(), Does.StartWith("lcc: error: KV file").And.Contain("was saved from model").And.Contain("not this model"));
    }
}

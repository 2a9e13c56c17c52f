using LongCtx.Tests.Foundation;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Runtime.Sessions;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

/// <summary>
/// lcc eval --multi-turn: conversations built from recall-public haystacks (every key of the haystack recovered from
/// its KEY VALUE pairs), reuse gives the recompute predictions turn by turn, and the CLI table and bad input.
/// </summary>
[TestFixture]
public sealed class MultiTurnEvalTests
{
    private static string Eval256 => RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl"));
    private static RetrievalVocab Vocab => RetrievalVocab.Read(Path.Combine(RuntimeFixtures.Recall, "config.json"));

    [Test]
    public void Build_RecoversTheHaystackKeys_NeedleFirst()
    {
        var needles = NeedleEval.Read(Eval256, 40);
        var (items, skipped) = MultiTurnEval.Build(needles, Vocab, 6);
        Assert.That(items.Count + skipped, Is.EqualTo(40));
        Assert.That(items, Is.Not.Empty);
        foreach (var it in items)
        {
            var n = needles.Single(x => x.Id == it.Id);
            Assert.That(it.Haystack, Is.EqualTo(n.Prompt[..^3]));
            Assert.That(it.Questions, Has.Count.EqualTo(6));
            Assert.That(it.Questions[0], Is.EqualTo((n.Prompt[^2], n.Expected)), "turn 1 is the single-turn question");
            Assert.That(it.Questions.Select(q => q.Key).Distinct().Count(), Is.EqualTo(6));
            foreach (var (k, v) in it.Questions)
            {
                int at = Array.IndexOf(it.Haystack, k);
                Assert.That(at, Is.GreaterThanOrEqualTo(0));
                Assert.That(it.Haystack[at + 1], Is.EqualTo(v), "the value follows its key in the haystack");
            }
        }
        Assert.That(MultiTurnEval.Build(needles, Vocab, 40).Items, Is.Empty, "no haystack has 40 keys: all skipped");
    }

    [Test]
    public void Reuse_GivesTheRecomputePredictions_EveryTurn()
    {
        using var m = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var (items, skipped) = MultiTurnEval.Build(NeedleEval.Read(Eval256), Vocab, 4, limit: 3);
        var cache = new PrefixCache(m, 64L << 20, blockTokens: 64);
        var r = MultiTurnEval.Run(m, Eval256, Vocab, items, 4, skipped, 64, recompute: true, cache);
        Assert.That(r.Conversations, Is.EqualTo(3));
        Assert.That(r.PerTurn, Has.Count.EqualTo(4));
        foreach (var t in r.PerTurn)
        {
            Assert.That(t.Agree, Is.EqualTo(3), $"turn {t.Turn}: reuse and recompute predict the same tokens");
            Assert.That(t.CorrectRecompute, Is.EqualTo(t.CorrectReuse));
            Assert.That(t.TtftReuseMs, Is.GreaterThan(0));
        }
        Assert.That(r.PerTurn[0].AccuracyReuse, Is.EqualTo(1.0), "recall-public answers its trained length");
        Assert.That(r.PerTurn[1].ContextTokens, Is.EqualTo(r.PerTurn[0].ContextTokens + 4), "a turn adds the answer, QUERY, KEY, ANSWER");
        Assert.That(r.PrefixCache!.HitTokens, Is.GreaterThan(0), "later turns reuse the haystack's blocks");
    }

    [Test]
    public void Cli_MultiTurnTable_AndBadInput()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var r = CliRunner.Run("eval", model, "--needle", Eval256, "--multi-turn", "3", "--limit", "2", "--ep", "cpu", "--chunk", "128", "--prefix-cache", "16MiB");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Stderr);
        Assert.That(r.Stdout, Does.Contain("multi-turn 3: 2 conversations").And.Contain("TTFT reuse ms").And.Contain("turns 2..3: TTFT reuse").And.Contain("prefix cache:").And.Contain("uptime"));

        var tmp = Directory.CreateTempSubdirectory("lcc-mt-").FullName;
        try
        {
            var copy = Path.Combine(tmp, "eval.jsonl");
            File.Copy(Eval256, copy);
            var noConfig = CliRunner.Run("eval", model, "--needle", copy, "--multi-turn", "3", "--ep", "cpu");
            Assert.That(noConfig.ExitCode, Is.EqualTo(1));
            Assert.That(noConfig.Stderr.Trim(), Does.StartWith("lcc: error: ").And.Contain("config.json").And.Contain("--multi-turn needs"));
            Assert.That(noConfig.Stderr.Trim().Split('\n'), Has.Length.EqualTo(1));
        }
        finally { Directory.Delete(tmp, true); }

        var tooMany = CliRunner.Run("eval", model, "--needle", Eval256, "--multi-turn", "40", "--ep", "cpu");
        Assert.That(tooMany.ExitCode, Is.EqualTo(1));
        Assert.That(tooMany.Stderr, Does.Contain("no haystack has 40 keys").And.Contain("lower --multi-turn"));

        var small = CliRunner.Run("eval", model, "--needle", Eval256, "--limit", "2", "--ep", "cpu", "--prefix-cache", "1KiB");
        Assert.That(small.ExitCode, Is.EqualTo(0), small.Stderr);
        Assert.That(small.Stderr.Split('\n').Count(l => l.Contains("prefix cache off")), Is.EqualTo(1), "said once");
    }
}

using System.Text.Json;
using LongCtx.Cli;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

/// <summary>
/// recall-public needle accuracy vs the PyTorch baseline (baseline.json "plain" correct_mask), on
/// prefixes of the eval sets (the full 200-prompt sets are a CLI run, see the runtime note), and
/// chunked prefill (many KV-cache chunks) giving the same predictions as one piece.
/// </summary>
[TestFixture]
public sealed class NeedleEvalTests
{
    private static string BaselineMask(int length)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, "baseline.json"))));
        return doc.RootElement.GetProperty("correct_mask").GetProperty("plain").GetProperty(length.ToString()).GetString()!;
    }

    [TestCase(256, 50)]
    [TestCase(512, 30)]
    public void Accuracy_MatchesPyTorchBaseline_AndChunk64IsIdentical(int length, int limit)
    {
        var file = RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, $"eval_{length}.jsonl"));
        var items = NeedleEval.Read(file, limit);
        Assert.That(items, Has.Count.EqualTo(limit));
        using var model = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        var whole = NeedleEval.Run(model, file, items, chunk: 0);
        var chunked = NeedleEval.Run(model, file, items, chunk: 64);

        var baseline = BaselineMask(length)[..limit];
        int expected = baseline.Count(c => c == '1');
        // within 1 point of the baseline on this subset means at most floor(limit/100) prompts apart
        Assert.That(Math.Abs(whole.Correct - expected), Is.LessThanOrEqualTo(limit / 100),
            $"eval_{length}[..{limit}]: {whole.Correct} correct vs PyTorch {expected}; mask {whole.CorrectMask} vs {baseline}");
        Assert.That(chunked.Predictions, Is.EqualTo(whole.Predictions), "chunk=64 must give the same argmax as one-piece prefill");
        Assert.That(chunked.Chunked, Is.True);
    }

    [Test]
    public void LccEval_WritesJson_WithAccuracy()
    {
        var file = RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl"));
        RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var json = Path.Combine(Path.GetTempPath(), $"lcc-eval-{Guid.NewGuid():N}.json");
        try
        {
            var rc = Program.BuildRoot().Parse(["eval", RuntimeFixtures.RecallModel, "--needle", file, "--limit", "10", "--chunk", "64", "--ep", "cpu", "--json-out", json]).Invoke();
            Assert.That(rc, Is.EqualTo(0));
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var r = doc.RootElement;
            Assert.That(r.GetProperty("n").GetInt32(), Is.EqualTo(10));
            Assert.That(r.GetProperty("correct").GetInt32(), Is.EqualTo(BaselineMask(256)[..10].Count(c => c == '1')));
            Assert.That(r.GetProperty("predictions").GetArrayLength(), Is.EqualTo(10));
        }
        finally { File.Delete(json); }
    }

    [Test]
    public void LccEval_MissingNeedleFile_IsOneLineError()
    {
        RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var err = new StringWriter();
        var old = Console.Error;
        Console.SetError(err);
        try
        {
            var rc = Program.BuildRoot().Parse(["eval", RuntimeFixtures.RecallModel, "--needle", "/nonexistent/x.jsonl", "--ep", "cpu"]).Invoke();
            Assert.That(rc, Is.EqualTo(1));
        }
        finally { Console.SetError(old); }
        Assert.That(err.ToString(), Does.StartWith("lcc: error: ").And.Contain("x.jsonl"));
    }
}

using LongCtx.Compiler.OnnxIO;
using LongCtx.Fuzz;
using LongCtx.Models;
using NUnit.Framework;

namespace LongCtx.Tests.Fuzz;

/// <summary>
/// The fuzzer's findings, kept: every file in tests/Fuzz/inputs (inputs fuzz/run.sh found that once escaped as a .NET
/// exception, i.e. a stack trace from lcc inspect) goes through the harness's one entry point
/// (<see cref="FuzzTarget.Run"/>: reader, Verifier, inspect's analyses) and must end as "ok" or a one-line refusal. Plus
/// the cheapest hostile family, generated here: every truncation of a builder model.
/// </summary>
[TestFixture]
public sealed class FuzzRegressionTests
{
    private static string InputsDir => Path.Combine(TestSupport.RepoRoot, "tests", "Fuzz", "inputs");

    public static IEnumerable<TestCaseData> Findings() =>
        Directory.Exists(InputsDir)
            ? Directory.EnumerateFiles(InputsDir).Where(f => !f.EndsWith(".md", StringComparison.Ordinal)).Order(StringComparer.Ordinal)
                .Select(f => new TestCaseData(Path.GetFileName(f)).SetName($"Finding({Path.GetFileName(f)})"))
            : [];

    [TestCaseSource(nameof(Findings))]
    public void Finding_IsNowARefusalOrOk(string file)
    {
        var outcome = FuzzTarget.Run(File.ReadAllBytes(Path.Combine(InputsDir, file)));
        TestContext.Out.WriteLine($"{file}: {outcome}");
        Assert.That(outcome, Does.StartWith("ok").Or.StartWith("refused"));
    }

    [Test]
    public void EveryTruncationOfABuilderModel_IsARefusalOrOk_NeverACrash()
    {
        var tiny = new DecoderConfig(Layers: 1, Hidden: 32, Heads: 2, KvHeads: 2, HeadDim: 16, Vocab: 16, MaxPositions: 8, Intermediate: 16);
        var outcomes = new Dictionary<string, int>();
        foreach (var form in new[] { "torch", "ort-gpt2", "opset24-static" })
        {
            var bytes = OnnxWriter.ToBytes(Builders.Build(form, tiny));
            for (int cut = 1; cut < bytes.Length; cut += Math.Max(1, bytes.Length / 150))
            {
                string o;
                try { o = FuzzTarget.Run(bytes[..cut]); }
                catch (Exception e) { throw new AssertionException($"{form} truncated to {cut} of {bytes.Length} bytes: {e.GetType().Name}: {e.Message}", e); }
                outcomes[o] = outcomes.GetValueOrDefault(o) + 1;
            }
            Assert.That(FuzzTarget.Run(bytes), Is.EqualTo("ok"), $"{form} whole");
        }
        foreach (var (o, n) in outcomes) TestContext.Out.WriteLine($"{n,5} {o}");
        Assert.That(outcomes.Keys, Has.Some.StartWith("refused by the reader"), "truncations are refused, not read");
    }
}

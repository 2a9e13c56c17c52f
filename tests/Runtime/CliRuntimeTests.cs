using System.Text.Json;
using LongCtx.Cli;
using LongCtx.Runtime;
using LongCtx.Runtime.Bench;
using NUnit.Framework;

namespace LongCtx.Tests.Runtime;

/// <summary>lcc run / lcc bench end to end, in process.</summary>
[TestFixture]
public sealed class CliRuntimeTests
{
    private string _tmp = "";
    [SetUp] public void SetUp() => _tmp = Directory.CreateTempSubdirectory("lcc-cli-rt-").FullName;
    [TearDown] public void TearDown() => Directory.Delete(_tmp, true);

    private static (int rc, string stdout, string stderr) Lcc(params string[] args)
    {
        var (o, e) = (Console.Out, Console.Error);
        var out1 = new StringWriter(); var err1 = new StringWriter();
        Console.SetOut(out1); Console.SetError(err1);
        try { return (Program.BuildRoot().Parse(args).Invoke(), out1.ToString(), err1.ToString()); }
        finally { Console.SetOut(o); Console.SetError(e); }
    }

    [Test]
    public void Run_StreamsTheGreedyTokens()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var (rc, stdout, stderr) = Lcc("run", model, "--prompt-ids", "1,20,90,3,20,4", "--max-new-tokens", "5", "--ep", "cpu", "--chunk", "2");
        Assert.That(rc, Is.EqualTo(0), stderr);
        using var m = RuntimeFixtures.Load(model);
        using var g = m.CreateGenerator();
        var expected = g.Generate([1, 20, 90, 3, 20, 4], new GenerationOptions { MaxNewTokens = 5 });
        Assert.That(stdout.Trim(), Is.EqualTo(string.Join(' ', expected)));

        File.WriteAllText(Path.Combine(_tmp, "p.txt"), "1, 20, 90\n3 20 4\n");
        var fromFile = Lcc("run", model, "--prompt-file", Path.Combine(_tmp, "p.txt"), "--max-new-tokens", "5", "--ep", "cpu", "--io-binding", "on");
        Assert.That(fromFile.stdout, Is.EqualTo(stdout));
    }

    [Test]
    public void Run_TextPromptOnIdLevelModel_IsOneLineError()
    {
        var (rc, _, stderr) = Lcc("run", RuntimeFixtures.Require(RuntimeFixtures.RecallModel), "--prompt", "where is the key?", "--ep", "cpu");
        Assert.That(rc, Is.EqualTo(1));
        Assert.That(stderr.Trim(), Does.StartWith("lcc: error: recall-public/model.onnx: the model has no tokenizer"));
        var both = Lcc("run", RuntimeFixtures.RecallModel, "--prompt", "x", "--prompt-ids", "1", "--ep", "cpu");
        Assert.That(both.stderr, Does.Contain("exactly one of"));
    }

    [Test]
    public void Run_BadProvider_AndUnavailableProvider_AreOneLineErrors()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var bad = Lcc("run", model, "--prompt-ids", "1,2", "--ep", "gpu");
        Assert.That(bad.rc, Is.EqualTo(1));
        Assert.That(bad.stderr.Trim(), Is.EqualTo("lcc: error: unknown execution provider 'gpu': use auto, cpu, cuda or tensorrt"));
        var cuda = Lcc("run", model, "--prompt-ids", "1,2", "--max-new-tokens", "1", "--ep", "cuda");
        if (cuda.rc == 0) Assert.Pass("CUDA is available on this machine");
        Assert.That(cuda.stderr.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(cuda.stderr, Does.StartWith("lcc: error: recall-public/model.onnx: execution provider CUDA is not available"));
    }

    [Test]
    public void Bench_AgainstItself_IsExact_AndWritesJsonAndPng()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        string json = Path.Combine(_tmp, "b.json"), png = Path.Combine(_tmp, "b.png");
        var (rc, stdout, stderr) = Lcc("bench", model, "--baseline", model, "--lengths", "32,64", "--decode", "3", "--reps", "2",
            "--ep", "cpu", "--json-out", json, "--plot", png);
        Assert.That(rc, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("prefill ms").And.Contain("baseline recall-public/model.onnx"));
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToArray();
        Assert.That(rows, Has.Length.EqualTo(4));
        var cand = rows[1];
        Assert.That(cand.GetProperty("length").GetInt32(), Is.EqualTo(32));
        Assert.That(cand.GetProperty("kv_bytes").GetInt64(), Is.EqualTo((32 + 3) * 2L * 4 * 2 * 32 * 4), "K and V, 4 layers, 2 kv heads, head_dim 32, fp32");
        var f = cand.GetProperty("vs_baseline");
        Assert.That(f.GetProperty("max_abs_diff").GetDouble(), Is.EqualTo(0));
        Assert.That(f.GetProperty("top1_agreement").GetDouble(), Is.EqualTo(1));
        Assert.That(new FileInfo(png).Length, Is.GreaterThan(1000));
        Assert.That(File.ReadAllBytes(png)[1..4], Is.EqualTo("PNG"u8.ToArray()));
    }

    [Test]
    public void Bench_RepeatedBaseline_InterleavesEveryModelPerLength()
    {
        var model = RuntimeFixtures.Require(RuntimeFixtures.RecallModel);
        var other = RuntimeFixtures.Require(RuntimeFixtures.Static24); // same vocabulary (256), different weights, context 16
        string json = Path.Combine(_tmp, "m.json"), png = Path.Combine(_tmp, "m.png");
        var (rc, stdout, stderr) = Lcc("bench", model, "--baseline", model, "--baseline", other, "--lengths", "8,12", "--decode", "2", "--reps", "1",
            "--ep", "cpu", "--json-out", json, "--plot", png);
        Assert.That(rc, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("baseline1 recall-public/model.onnx").And.Contain("load average at start -> end"));
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToArray();
        Assert.That(rows.Select(r => r.GetProperty("length").GetInt32()), Is.EqualTo(new[] { 8, 8, 8, 12, 12, 12 }), "all three models at one length before the next");
        Assert.That(rows[0].GetProperty("vs_baseline").ValueKind, Is.EqualTo(JsonValueKind.Null), "the first baseline is the reference");
        Assert.That(rows[1].GetProperty("vs_baseline").GetProperty("mean_kl").GetDouble(), Is.GreaterThan(0.01), "the second baseline differs from the first");
        Assert.That(rows[2].GetProperty("vs_baseline").GetProperty("max_abs_diff").GetDouble(), Is.EqualTo(0), "MODEL equals the first baseline");

        var quick = Lcc("bench", model, "--baseline", model, "--baseline", other, "--lengths", "8", "--decode", "1", "--reps", "1", "--no-fidelity",
            "--ep", "cpu", "--json-out", json, "--plot", png);
        Assert.That(quick.rc, Is.EqualTo(0), quick.stderr);
        using var q = JsonDocument.Parse(File.ReadAllText(json));
        Assert.That(q.RootElement.GetProperty("rows").EnumerateArray().Select(r => r.GetProperty("vs_baseline").ValueKind), Is.All.EqualTo(JsonValueKind.Null));
    }

    [Test]
    public void Fidelity_SeesADifferentModel()
    {
        using var a = RuntimeFixtures.Load(RuntimeFixtures.RecallModel);
        using var b = RuntimeFixtures.Load(RuntimeFixtures.Static24); // same vocabulary (256), different weights
        var f = Benchmark.Compare(a, b, length: 8, decode: 4, chunk: 0);
        Assert.That(f.Positions, Is.EqualTo(5));
        Assert.That(f.MaxAbsDiff, Is.GreaterThan(0.1));
        Assert.That(f.MeanKl, Is.GreaterThan(0.01));
    }

    [Test]
    public void Kl_IsZeroForEqualRows_PositiveOtherwise()
    {
        float[] p = [1f, 2f, 3f], q = [3f, 2f, 1f];
        Assert.That(Benchmark.Kl(p, p), Is.EqualTo(0).Within(1e-12));
        // softmax(p) = [0.090, 0.245, 0.665]; KL(p||reverse) = sum p_i (x_i - y_i) = 0.665*2 - 0.090*2 = 1.150
        Assert.That(Benchmark.Kl(p, q), Is.EqualTo(1.150).Within(2e-3));
        Assert.That(Stat.Of([3, 1, 2, 10]), Is.EqualTo(new Stat(2.5, 1, 10)));
    }
}

using System.Text.Json;
using LongCtx.Cli.Calibration;
using LongCtx.Cli.Commands;
using LongCtx.Compiler;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using LongCtx.Passes.Attention;
using LongCtx.Tests.Foundation;
using NUnit.Framework;
using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.LongAttention;

/// <summary>
/// Attention calibration (issue 10 items 2-3): the chosen candidate is the least-error one within the density budget (on a
/// hand-made layer whose attention is a pure local band, a local pattern wins over a sink-only one; a dense-covering one is
/// over budget); <c>lcc calibrate --attention</c> is deterministic for a seed; <c>--attention auto --calib FILE</c> lowers
/// each layer with the file's pattern and records it (inspect shows it); a file for another model and auto without a file.
/// </summary>
[TestFixture]
public sealed class AttentionCalibrationTests
{
    [Test]
    public void Choose_LeastErrorWithinBudget_ElseSparsest()
    {
        CandidateScore S(string p, double d, double e) => new(AttentionCandidate.Of(p), [d], [e]);
        var scores = new[] { S("xattn", 0.9, 0.0), S("vslash", 0.25, 0.02), S("trishape", 0.2, 0.01), S("block", 0.1, 0.5) };
        var (best, note) = AttentionCalibration.Choose(scores, 0.3);
        Assert.That((best.Candidate.Pattern, note), Is.EqualTo(("trishape", (string?)null)));
        var (sparsest, why) = AttentionCalibration.Choose(scores, 0.05);
        Assert.That(sparsest.Candidate.Pattern, Is.EqualTo("block"));
        Assert.That(why, Does.StartWith("no candidate within density 0.05; took the sparsest, block:"));
    }

    [Test]
    public void LocalBandLayer_PicksTheLocalPattern()
    {
        RequireLibrary();
        // keys and queries on a circle: logit(i, t) = c cos((i - t) delta), so each query attends only its ~30 nearest keys
        const int S = 1024, D = 32, H = 2, Hkv = 1;
        double delta = Math.PI / (2 * S), c = 20000;
        var rng = new Random(11);
        float[] q = new float[S * H * D], k = new float[S * Hkv * D], v = new float[S * Hkv * D];
        for (int i = 0; i < S; i++)
        {
            for (int h = 0; h < H; h++) { q[(i * H + h) * D] = (float)(Math.Sqrt(c) * Math.Cos(i * delta)); q[(i * H + h) * D + 1] = (float)(Math.Sqrt(c) * Math.Sin(i * delta)); }
            k[i * D] = (float)(Math.Sqrt(c) * Math.Cos(i * delta));
            k[i * D + 1] = (float)(Math.Sqrt(c) * Math.Sin(i * delta));
            for (int j = 0; j < D; j++) v[i * D + j] = (float)rng.NextDouble();
        }
        var x = new LayerInputs(0, H, Hkv, D, S, q, k, v, null, null, 0, 1.0);
        var local = AttentionCandidate.Of("trishape", ("sink", "4"), ("window", "64"), ("last", "64"));
        var sinkOnly = AttentionCandidate.Of("trishape", ("sink", "64"), ("window", "1"), ("last", "64"));
        var dense = AttentionCandidate.Of("vslash", ("vertical", "1000"), ("slash", "0"));
        var scores = AttentionCalibration.ScoreLayer(x, [sinkOnly, local, dense], LibPath);
        TestContext.Out.WriteLine(string.Join("\n", scores.Select(s => $"{s.Candidate}: density {s.Density:F3} error {s.Error:G3}")));
        Assert.That(scores[2].Density, Is.EqualTo(1.0), "30 + 1000 columns cover every key");
        Assert.That(scores[2].Error, Is.LessThan(1e-9));
        Assert.That(scores[1].Error, Is.LessThan(1e-6), "the band lies inside the window");
        Assert.That(scores[0].Error, Is.GreaterThan(0.05), "sink-only misses the band");
        Assert.That(scores.Take(2).Select(s => s.Density), Is.All.LessThan(0.3));
        var (best, _) = AttentionCalibration.Choose(scores, 0.3);
        Assert.That(best.Candidate, Is.SameAs(local));
    }

    [Test]
    public void BuiltInPrompts_DependOnlyOnTheSeed()
    {
        Assert.That(CalibrateAttention.BuiltIn(2, 300, 7, 128), Is.EqualTo(CalibrateAttention.BuiltIn(2, 300, 7, 128)));
        Assert.That(CalibrateAttention.BuiltIn(2, 300, 7, 128), Is.Not.EqualTo(CalibrateAttention.BuiltIn(2, 300, 8, 128)));
        Assert.That(CalibrateAttention.BuiltIn(1, 300, 7, 128)[0], Is.All.InRange(1, 127));
    }

    [Test]
    public void Cli_Calibrate_IsDeterministic_AutoCompileUsesTheFile()
    {
        WithSourceModel((dir, src) =>
        {
            var dense = Path.Combine(dir, "dense");
            Assert.That(CliRunner.Run("compile", src, "-o", dense, "--attention", "dense").ExitCode, Is.Zero);
            string a = Path.Combine(dir, "a.json"), b = Path.Combine(dir, "b.json");
            var ra = CliRunner.Run("calibrate", dense, "--attention", "--samples", "1", "--length", "256", "--seed", "3", "-o", a);
            Assert.That(ra.ExitCode, Is.Zero, ra.Stderr);
            Assert.That(ra.Stderr, Does.Contain("calibrating attention on the built-in synthetic set"));
            Assert.That(CliRunner.Run("calibrate", dense, "--attention", "--samples", "1", "--length", "256", "--seed", "3", "-o", b).ExitCode, Is.Zero);
            Assert.That(File.ReadAllText(b), Is.EqualTo(File.ReadAllText(a)), "same seed, same file");
            var file = AttentionCalibrationFile.Load(a);
            Assert.That((file.Layers, file.Heads, file.KvHeads, file.Length, file.PerLayer.Count), Is.EqualTo((2, 4, 2, 256, 2)));

            // a hand-made file: layer 0 vslash, layer 1 xattn; auto lowers exactly those
            var hand = file with
            {
                PerLayer =
                [
                    file.PerLayer[0] with { Pattern = "vslash", Options = new Dictionary<string, string> { ["vertical"] = "30", ["slash"] = "800" }, Heads = null },
                    file.PerLayer[1] with { Pattern = "xattn", Options = new Dictionary<string, string> { ["threshold"] = "0.8" }, Heads = null },
                ],
            };
            var handPath = Path.Combine(dir, "hand.json");
            hand.Save(handPath);
            var outDir = Path.Combine(dir, "auto");
            var c = CliRunner.Run("compile", src, "-o", outDir, "--attention", "auto", "--calib", handPath);
            Assert.That(c.ExitCode, Is.Zero, c.Stderr);
            Assert.That(c.Stdout, Does.Contain("auto: per-layer patterns from").And.Contain("layer 0 vslash:slash=800,vertical=30; layer 1 xattn:threshold=0.8"));
            var m = OnnxReader.Load(Path.Combine(outDir, "model.onnx"));
            var la = m.Graph.Nodes.Where(n => n.OpType == "LongAttention").OrderBy(n => n.Name, StringComparer.Ordinal).ToList();
            Assert.That(la.Select(n => n.StringAttr("pattern", "")), Is.EqualTo(new[] { "vslash", "xattn" }));
            Assert.That((la[0].IntAttr("vertical", 0), la[0].IntAttr("slash", 0), la[1].FloatAttr("threshold", 0)), Is.EqualTo((30L, 800L, 0.8f)));
            var i = CliRunner.Run("inspect", outDir);
            Assert.That(i.ExitCode, Is.Zero, i.Stderr);
            Assert.That(i.Stdout, Does.Contain("vslash (vertical=30 slash=800 min_len=8192 density_at=32768)  expected density 0.062 (calibrated"));
            Assert.That(i.Stdout, Does.Contain("xattn (threshold=0.8 stride=8 min_len=8192 density_at=32768)  expected density dynamic (calibrated"));
        });
    }

    [Test]
    public void CalibrationForAnotherModel_IsOneLineErrorNamingBoth()
    {
        var dir = Directory.CreateTempSubdirectory("lcc-calib-mismatch-").FullName;
        try
        {
            var path = Path.Combine(dir, "cal.json");
            new AttentionCalibrationFile(AttentionCalibrationFile.CurrentVersion, "big-model", "00", 3, 4, 2, "test", 1, 256, 0.3, 0,
                Enumerable.Range(0, 3).Select(l => new CalibratedLayer(l, "xattn", new Dictionary<string, string>(), 0.2, 0.01, [0.2, 0.2], [0.01, 0.01])).ToList()).Save(path);
            var m = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
            var ex = Assert.Throws<CompileException>(() => LowerToLongAttentionTests.Lower(m, ("pattern", "auto"), ("calib", path)))!;
            Assert.That(ex.Message, Does.Contain("calibrated for big-model (3 layers, 4 heads, 2 KV heads) but").And.Contain("has 2 layers, 4 heads, 2 KV heads").And.Not.Contain("\n"));
            Assert.That(m.Graph.Nodes.Count(n => n.OpType == "LongAttention"), Is.Zero, "nothing lowered");
            var none = Assert.Throws<CompileException>(() => LowerToLongAttentionTests.Lower(Builders.Build("gqa", new DecoderConfig(Layers: 2)), ("pattern", "auto"), ("calib", Path.Combine(dir, "missing.json"))))!;
            Assert.That(none.Message, Does.Contain("calibration file not found"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void Cli_AutoWithoutCalib_CalibratesOnTheBuiltInSet()
    {
        WithSourceModel((dir, src) =>
        {
            var outDir = Path.Combine(dir, "out");
            var c = CliRunner.Run("compile", src, "-o", outDir, "--attention", "auto", "--context", "256");
            Assert.That(c.ExitCode, Is.Zero, c.Stderr);
            Assert.That(c.Stdout, Does.Contain("note: --attention auto without --calib: calibrating on the built-in synthetic set"));
            Assert.That(AttentionCalibrationFile.Load(outDir + "-attention-calib.json").Length, Is.EqualTo(256), "calibrated at the target context");
            var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "longctx.json")));
            Assert.That(json.RootElement.GetProperty("runtime").GetProperty("attention").GetProperty("pattern").GetString(), Is.EqualTo("auto"));
            var bad = CliRunner.Run("compile", src, "-o", Path.Combine(dir, "x"), "--attention", "vslash", "--calib", outDir + "-attention-calib.json");
            Assert.That(bad.Stderr, Does.Contain("only --attention auto reads a calibration file"));
        });
    }

    /// <summary>Runs <paramref name="body"/> with a temp folder holding a 2-layer torch-style source model (torch.onnx).</summary>
    private static void WithSourceModel(Action<string, string> body)
    {
        RequireLibrary();
        var dir = Directory.CreateTempSubdirectory("lcc-calib-").FullName;
        try
        {
            var src = Path.Combine(dir, "torch.onnx");
            OnnxWriter.Save(Builders.Build("torch", new DecoderConfig(Layers: 2, Vocab: 64)), src);
            body(dir, src);
        }
        finally { Directory.Delete(dir, true); }
    }
}

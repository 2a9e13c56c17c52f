using LongCtx.Cli.Calibration;
using LongCtx.Compiler;
using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Passes.Attention;
using LongCtx.Tests.Foundation;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Snapshooter;
using Snapshooter.NUnit;
using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.LongAttention;

/// <summary>
/// Per-head calibration (issue 10 items 2-3): the greedy choice per layer and KV head within the model's density budget
/// (<see cref="PerHeadChoice"/>) on hand-made scores, deterministic; a version 2 calibration file with per-head choices
/// lowers one layer with per-head attributes (diff snapshot) that ONNX Runtime accepts, <c>lcc inspect</c> prints the
/// per-head table (snapshot); version 1 files are still read; a head count that does not match is one line naming both.
/// </summary>
[TestFixture]
public sealed class PerHeadCalibrationTests
{
    private static readonly AttentionCandidate Cheap = AttentionCandidate.Of("trishape", ("sink", "100"), ("window", "800"));
    private static readonly AttentionCandidate Wide = AttentionCandidate.Of("vslash", ("vertical", "1000"), ("slash", "4096"));

    /// <summary>2 layers x 2 KV heads: Cheap (density 0.1) and Wide (density 0.5); head errors differ per head.</summary>
    private static IReadOnlyList<IReadOnlyList<CandidateScore>> Scores() =>
    [
        [new CandidateScore(Cheap, [0.1, 0.1], [0.30, 0.02]), new CandidateScore(Wide, [0.5, 0.5], [0.05, 0.01])],
        [new CandidateScore(Cheap, [0.1, 0.1], [0.10, 0.40]), new CandidateScore(Wide, [0.5, 0.5], [0.09, 0.02])],
    ];

    [Test]
    public void Greedy_SpendsTheBudgetWhereErrorDropsMost()
    {
        // budget 0.3 x 4 heads = 1.2: all Cheap = 0.4; two upgrades of +0.4 fit. Ratios: (1,1) 0.38/0.4, (0,0) 0.25/0.4,
        // (1,0) 0.01/0.4, (0,1) 0.01/0.4; dense (+0.9) does not fit after the first upgrade.
        var (heads, note) = PerHeadChoice.Choose(Scores(), 0.3);
        Assert.That(note, Is.Null);
        Assert.That(heads.SelectMany(l => l).Select(h => h.Pattern), Is.EqualTo(new[] { "vslash", "trishape", "trishape", "vslash" }));
        Assert.That(heads.SelectMany(l => l).Average(h => h.Density), Is.LessThanOrEqualTo(0.3));
        var again = PerHeadChoice.Choose(Scores(), 0.3).Heads;
        Assert.That(again.SelectMany(l => l), Is.EqualTo(heads.SelectMany(l => l)), "a pure function of the scores");

        var all = PerHeadChoice.Choose(Scores(), 1.0).Heads;
        Assert.That(all.SelectMany(l => l).Select(h => h.Pattern), Is.All.EqualTo("dense"), "a budget of 1 buys dense (error 0) everywhere");
        var (tight, why) = PerHeadChoice.Choose(Scores(), 0.05);
        Assert.That(tight.SelectMany(l => l).Select(h => h.Pattern), Is.All.EqualTo("trishape"));
        Assert.That(why, Does.StartWith("the sparsest choice of every head already attends 0.1 of the causal pairs, over the density budget 0.05"));

        var layer = PerHeadChoice.ToLayer(0, heads[0]);
        Assert.That((layer.IsPerHead, layer.Pattern, layer.Density), Is.EqualTo((true, "vslash", 0.3)));
    }

    /// <summary>A version 2 file for the 2-layer builder model (4 heads, 2 KV heads): layer 0 per head (vslash, dense), layer 1
    /// uniform xattn.</summary>
    private static AttentionCalibrationFile File2(int kvHeads = 2)
    {
        CalibratedHead H(int h, string p, double d, params (string, string)[] o) => new(h, p, o.ToDictionary(x => x.Item1, x => x.Item2), d, 0.01);
        var l0 = new CalibratedLayer(0, "vslash", new Dictionary<string, string> { ["vertical"] = "30", ["slash"] = "800" }, 0.53, 0.01,
            [0.06, 1.0], [0.02, 0.0], [H(0, "vslash", 0.06, ("vertical", "30"), ("slash", "800")), H(1, "dense", 1.0)]);
        var xattn = new Dictionary<string, string> { ["threshold"] = "0.8" };
        var l1 = new CalibratedLayer(1, "xattn", xattn, 0.2, 0.01, [0.2, 0.2], [0.01, 0.01], [H(0, "xattn", 0.2, ("threshold", "0.8")), H(1, "xattn", 0.2, ("threshold", "0.8"))]);
        if (kvHeads != 2) l0 = l0 with { Heads = [.. l0.Heads!, H(2, "dense", 1.0)] };
        return new AttentionCalibrationFile(AttentionCalibrationFile.CurrentVersion, "builder", "00", 2, 4, 2, "hand-made", 1, 1024, 0.5, 0, [l0, l1]);
    }

    private static PipelineResult Lower(Model m, string calib) => LowerToLongAttentionTests.Lower(m, ("pattern", "auto"), ("calib", calib));

    [Test]
    public void PerHeadFile_LowersHeadAttributes_OrtAcceptsThem()
    {
        WithTemp(dir =>
        {
            var path = Path.Combine(dir, "cal.json");
            File2().Save(path);
            var m = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
            var r = Lower(m, path);
            var la = m.Graph.Nodes.Where(n => n.OpType == "LongAttention").OrderBy(n => n.Name, StringComparer.Ordinal).ToList();
            Assert.That(la.Select(n => n.StringAttr("pattern", "")), Is.EqualTo(new[] { "vslash", "xattn" }));
            Assert.That(la[0].Attribute("head_pattern")!.Value, Is.EqualTo(new long[] { 4, 0 }));
            Assert.That(la[0].Attribute("head_vertical")!.Value, Is.EqualTo(new long[] { 30, 0 }));
            Assert.That(la[1].Attribute("head_pattern"), Is.Null, "a layer whose heads agree lowers per layer");
            var rows = (IEnumerable<Dictionary<string, object?>>)((Dictionary<string, object?>)r.RuntimeConfig["attention"]!)["layers"]!;
            var heads = (IEnumerable<Dictionary<string, object?>>)rows.First()["heads"]!;
            Assert.That(heads.Select(h => (h["pattern"], h["budget"], h["density"])),
                Is.EqualTo(new[] { ((object?)"vslash", (object?)"vslash 30/800", (object?)"0.062"), ("dense", "dense", "1") }));
            Assert.That(rows.First()["density"], Is.EqualTo("0.531"), "the mean of the heads' expected densities at 32768");

            // ORT creates the kernels (attributes checked at session creation)
            RequireLibrary();
            var model = Path.Combine(dir, "m.onnx");
            OnnxWriter.Save(m, model);
            using var options = new SessionOptions();
            options.RegisterCustomOpLibrary(LibPath);
            Assert.DoesNotThrow(() => new InferenceSession(model, options).Dispose());
        });
    }

    [Test]
    public void PerHeadFile_DiffSnapshot()
    {
        WithTemp(dir =>
        {
            var path = Path.Combine(dir, "cal.json");
            var f = File2();
            (f with { Layers = 1, PerLayer = [f.PerLayer[0]] }).Save(path);
            var c = new DecoderConfig(Layers: 1, Vocab: 32, MaxPositions: 64);
            var canonical = Builders.Build("gqa", c);
            PassManager.Run(canonical, Pipelines.Instantiate(Pipelines.Default));
            var lowered = Builders.Build("gqa", c);
            Lower(lowered, path);
            Snapshot.Match(ModelDiff.Compare(canonical, lowered).ToText());
        });
    }

    [Test]
    public void Cli_InspectPrintsPerHeadTable_Snapshot()
    {
        RequireLibrary();
        WithTemp(dir =>
        {
            var path = Path.Combine(dir, "cal.json");
            File2().Save(path);
            var src = Path.Combine(dir, "torch.onnx");
            OnnxWriter.Save(Builders.Build("torch", new DecoderConfig(Layers: 2, Vocab: 32)), src);
            var outDir = Path.Combine(dir, "out");
            var c = CliRunner.Run("compile", src, "-o", outDir, "--attention", "auto", "--calib", path);
            Assert.That(c.ExitCode, Is.Zero, c.Stderr);
            Assert.That(c.Stdout, Does.Contain("layer 0 per KV head [vslash:slash=800,vertical=30 | dense]; layer 1 xattn:threshold=0.8"));
            var i = CliRunner.Run("inspect", outDir);
            Assert.That(i.ExitCode, Is.Zero, i.Stderr);
            Snapshot.Match(string.Join("\n", i.Stdout.Split('\n').Where(l => l.StartsWith("  attention layer", StringComparison.Ordinal))));
        });
    }

    [Test]
    public void Version1File_IsStillRead_HeadMismatch_IsOneLine()
    {
        WithTemp(dir =>
        {
            var f = File2();
            var v1 = Path.Combine(dir, "v1.json");
            (f with { Version = 1, PerLayer = f.PerLayer.Select(l => l with { Heads = null }).ToList() }).Save(v1);
            var m = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
            Lower(m, v1);
            Assert.That(m.Graph.Nodes.Where(n => n.OpType == "LongAttention").Select(n => n.Attribute("head_pattern")), Is.All.Null);

            var bad = Path.Combine(dir, "bad.json");
            File2(kvHeads: 3).Save(bad);
            var ex = Assert.Throws<CompileException>(() => Lower(Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512)), bad))!;
            Assert.That(ex.Message, Does.Contain("layer 0 has 3 head choices (KV heads 0,1,2) but the file's model has 2 KV heads (0-1)").And.Not.Contain("\n"));

            var v3 = Path.Combine(dir, "v3.json");
            (f with { Version = 3 }).Save(v3);
            var old = Assert.Throws<CompileException>(() => Lower(Builders.Build("gqa", new DecoderConfig(Layers: 2)), v3))!;
            Assert.That(old.Message, Does.Contain("calibration file version 3, this lcc reads versions 1 and 2; recalibrate"));
        });
    }

    private static void WithTemp(Action<string> body)
    {
        var dir = Directory.CreateTempSubdirectory("lcc-perhead-").FullName;
        try { body(dir); }
        finally { Directory.Delete(dir, true); }
    }
}

/// <summary>
/// The native calibration scorer (<c>LongCtxLaMaskErrors</c>) against the managed reference loop: same densities, errors
/// within 1e-9 relative. <see cref="ScorerTiming"/> times both side by side (explicit:
/// <c>LONGCTX_SCORER_S=8192 ./test.sh -c Release --no-build --filter "FullyQualifiedName~ScorerTiming"</c>).
/// </summary>
[TestFixture]
public sealed class NativeScorerTests
{
    internal static LayerInputs RandomLayer(int S, int seed)
    {
        const int H = 4, Hkv = 2, D = 32;
        var rng = new Random(seed);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var cos = new float[S * D / 2];
        var sin = new float[S * D / 2];
        for (int p = 0; p < S; p++)
            for (int i = 0; i < D / 2; i++)
            {
                double th = p * Math.Pow(10000.0, -2.0 * i / D);
                (cos[p * D / 2 + i], sin[p * D / 2 + i]) = ((float)Math.Cos(th), (float)Math.Sin(th));
            }
        return new LayerInputs(0, H, Hkv, D, S, R(S * H * D), R(S * Hkv * D), R(S * Hkv * D), cos, sin, S, 1 / Math.Sqrt(D));
    }

    [Test]
    public void Native_EqualsManaged()
    {
        RequireLibrary();
        var x = RandomLayer(512, 21);
        var native = AttentionCalibration.ScoreLayer(x, AttentionCalibration.DefaultCandidates, LibPath);
        var managed = AttentionCalibration.ScoreLayer(x, AttentionCalibration.DefaultCandidates, LibPath, managed: true);
        for (int c = 0; c < native.Count; c++)
        {
            Assert.That(native[c].HeadDensity, Is.EqualTo(managed[c].HeadDensity));
            for (int h = 0; h < native[c].HeadError.Length; h++)
                Assert.That(native[c].HeadError[h], Is.EqualTo(managed[c].HeadError[h]).Within(1e-9 * Math.Max(1e-12, managed[c].HeadError[h])), $"{native[c].Candidate} head {h}");
        }
        Assert.That(native.Select(s => s.Error), Has.Some.GreaterThan(1e-3), "some candidate leaves mass out");
    }

    [Test, Explicit("timing: managed vs native scorer, side by side")]
    public void ScorerTiming()
    {
        RequireLibrary();
        int S = int.TryParse(Environment.GetEnvironmentVariable("LONGCTX_SCORER_S"), out var s) ? s : 2048;
        var x = RandomLayer(S, 5);
        TestContext.Out.WriteLine($"uptime: {File.ReadAllText("/proc/loadavg").Trim()}; S={S}, 4 heads / 2 KV heads x 32, {AttentionCalibration.DefaultCandidates.Count} candidates");
        TestContext.Out.WriteLine("| rep | managed s | native s |");
        for (int rep = 0; rep < 2; rep++)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            AttentionCalibration.ScoreLayer(x, AttentionCalibration.DefaultCandidates, LibPath, managed: true);
            double m = sw.Elapsed.TotalSeconds;
            sw.Restart();
            AttentionCalibration.ScoreLayer(x, AttentionCalibration.DefaultCandidates, LibPath);
            TestContext.Out.WriteLine($"| {rep} | {m:0.00} | {sw.Elapsed.TotalSeconds:0.00} |");
        }
    }
}

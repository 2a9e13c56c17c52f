using NUnit.Framework;
using LongCtx.Compiler;
using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Passes.Rope;
using Microsoft.ML.OnnxRuntime;
using Snapshooter;
using Snapshooter.NUnit;

namespace LongCtx.Tests.Rope;

/// <summary>lcc diff snapshots per method on tiny IR-built models, numerical checks against the reference tables, negative cases.</summary>
[TestFixture]
public sealed class RopeSnapshotTests
{
    private static Dictionary<string, string> Options(string method, int context)
    {
        var o = RopeFixture.Opts(("context", context.ToString()), ("trained-context", TinyRope.Trained.ToString()));
        if (method == "longrope")
        {
            var f = Path.Combine(Directory.CreateTempSubdirectory("rope-tiny").FullName, "factors.json");
            File.WriteAllText(f, "{\"short_factor\": [1,1,1,1.1,1.2,1.3,1.4,1.5], \"long_factor\": [1,1.5,2,3,4,5,6,8]}");
            o["factors"] = f;
        }
        return o;
    }

    [TestCase("linear"), TestCase("ntk"), TestCase("dynamic-ntk"), TestCase("yarn"), TestCase("longrope"), TestCase("llama3"), TestCase("giraffe-truncate"), TestCase("giraffe-power")]
    public void TorchFormDiff(string method)
    {
        var before = TinyRope.TorchForm();
        var after = TinyRope.TorchForm();
        var r = RopeFixture.Apply(after, method, Options(method, 128));
        Assert.That(r.Rewrites, Is.GreaterThan(0));
        Snapshot.Match(ModelDiff.Compare(before, after).ToText(), SnapshotNameExtension.Create(method));
    }

    [TestCase("ntk"), TestCase("yarn"), TestCase("llama3")]
    public void CacheFormDiff(string method)
    {
        var before = TinyRope.CacheForm();
        var after = TinyRope.CacheForm();
        var r = RopeFixture.Apply(after, method, RopeFixture.Opts(("context", "128")));
        Assert.That(r.Counts["cos/sin caches recomputed"], Is.EqualTo(1));
        var cos = after.Graph.Initializer("cos_cache")!.Const!;
        Assert.That(cos.Dims, Is.EqualTo(new long[] { 128, TinyRope.Dim / 2 }), "caches grow to the new context");
        Snapshot.Match(ModelDiff.Compare(before, after).ToText(), SnapshotNameExtension.Create(method));
    }

    [Test]
    public void CacheFormTablesAreTheReferenceTables()
    {
        var m = TinyRope.CacheForm();
        RopeFixture.Apply(m, "yarn", RopeFixture.Opts(("context", "128")));
        var t = RopeFrequencies.Yarn(TinyRope.Theta, TinyRope.Dim, 4, TinyRope.Trained);
        var cos = m.Graph.Initializer("cos_cache")!.Const!.ToFloats();
        var sin = m.Graph.Initializer("sin_cache")!.Const!.ToFloats();
        int h = TinyRope.Dim / 2;
        for (int p = 0; p < 128; p += 7)
            for (int i = 0; i < h; i++)
            {
                Assert.That(cos[p * h + i], Is.EqualTo(Math.Cos(p * t.InvFreq[i]) * t.CosSinMultiplier).Within(1e-6));
                Assert.That(sin[p * h + i], Is.EqualTo(Math.Sin(p * t.InvFreq[i]) * t.CosSinMultiplier).Within(1e-6));
            }
    }

    /// <summary>Runs the tiny torch-form model: y = x (cos + sin) with x = 1, i.e. m (cos + sin)(p theta_i').</summary>
    private static float[] RunTorch(Model m, int len)
    {
        using var s = new InferenceSession(OnnxWriter.ToBytes(m));
        var pos = Enumerable.Range(0, len).Select(i => (long)i).ToArray();
        var x = Enumerable.Repeat(1f, len * TinyRope.Dim).ToArray();
        using var pv = OrtValue.CreateTensorValueFromMemory(pos, [1, len]);
        using var xv = OrtValue.CreateTensorValueFromMemory(x, [1, len, TinyRope.Dim]);
        using var o = s.Run(new RunOptions(), ["position_ids", "x"], [pv, xv], ["y"]);
        return o[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static void AssertMatches(float[] y, RopeTables t, int len, string what)
    {
        int h = TinyRope.Dim / 2;
        for (int p = 0; p < len; p++)
            for (int j = 0; j < TinyRope.Dim; j++)
            {
                double a = p * t.InvFreq[j % h];
                double want = (Math.Cos(a) + Math.Sin(a)) * t.CosSinMultiplier;
                Assert.That(y[p * TinyRope.Dim + j], Is.EqualTo(want).Within(2e-4 + 2e-6 * p), $"{what}: position {p} dim {j}");
            }
    }

    [TestCase("linear"), TestCase("ntk"), TestCase("yarn"), TestCase("llama3"), TestCase("giraffe-truncate"), TestCase("giraffe-power")]
    public void TorchFormComputesTheReferenceRotation(string method)
    {
        var m = TinyRope.TorchForm();
        RopeFixture.Apply(m, method, Options(method, 128));
        var t = method switch
        {
            "linear" => RopeFrequencies.Linear(TinyRope.Theta, TinyRope.Dim, 4),
            "ntk" => RopeFrequencies.Ntk(TinyRope.Theta, TinyRope.Dim, 4),
            "yarn" => RopeFrequencies.Yarn(TinyRope.Theta, TinyRope.Dim, 4, TinyRope.Trained),
            "llama3" => RopeFrequencies.Llama3(TinyRope.Theta, TinyRope.Dim, 4, TinyRope.Trained),
            "giraffe-truncate" => RopeFrequencies.GiraffeTruncate(TinyRope.Theta, TinyRope.Dim, TinyRope.Trained),
            _ => RopeFrequencies.GiraffePower(TinyRope.Theta, TinyRope.Dim, 1),
        };
        AssertMatches(RunTorch(m, 128), t, 128, method);
    }

    [Test]
    public void DynamicNtkFollowsTheCurrentLengthInTheGraph()
    {
        var m = TinyRope.TorchForm();
        var r = RopeFixture.Apply(m, "dynamic-ntk", Options("dynamic-ntk", 128));
        Assert.That(r.Counts["inv_freq computed in graph"], Is.EqualTo(1));
        foreach (var len in new[] { 20, 32, 50, 128 })
            AssertMatches(RunTorch(m, len), RopeFrequencies.DynamicNtk(TinyRope.Theta, TinyRope.Dim, len, TinyRope.Trained), len, $"L={len}");
    }

    [Test]
    public void LongRopeSwitchesShortToLongAtTheTrainedLength()
    {
        var m = TinyRope.TorchForm();
        var o = Options("longrope", 128);
        RopeFixture.Apply(m, "longrope", o);
        var f = LongRope.ReadFactors(o["factors"]);
        AssertMatches(RunTorch(m, 32), RopeFrequencies.LongRope(TinyRope.Theta, TinyRope.Dim, f.Short, 128, TinyRope.Trained), 32, "short");
        AssertMatches(RunTorch(m, 33), RopeFrequencies.LongRope(TinyRope.Theta, TinyRope.Dim, f.Long, 128, TinyRope.Trained), 33, "long");
    }

    [Test]
    public void ModelWithoutRopeIsAClearError()
    {
        var ex = Assert.Throws<CompileException>(() => RopeFixture.Apply(TinyRope.NoRope(), "yarn", RopeFixture.Opts(("context", "128"), ("trained-context", "32"))));
        Assert.That(ex!.Message, Does.Contain("tiny_no_rope").And.Contain("no rotary embedding found").And.Contain("none in the graph"));
    }

    [Test]
    public void DynamicNtkOnCachesIsRefusedWithTheReason()
    {
        var ex = Assert.Throws<CompileException>(() => RopeFixture.Apply(TinyRope.CacheForm(), "dynamic-ntk", RopeFixture.Opts(("context", "128"))));
        Assert.That(ex!.Message, Does.Contain("per-length cos/sin tables"));
    }

    [Test]
    public void NtkScaledTablesReadBackAsPlainRopeWithTheScaledBase()
    {
        // NTK only changes the base, so its output is again theta'^(-2i/d): a second --rope run would compound (documented).
        var m = TinyRope.TorchForm();
        RopeFixture.Apply(m, "ntk", Options("ntk", 128));
        var site = RopeLocator.Find(m).Sites.OfType<InvFreqSite>().Single();
        Assert.That(site.Theta, Is.EqualTo(RopeFrequencies.Ntk(TinyRope.Theta, TinyRope.Dim, 4).Extra["base_scaled"]).Within(1e-3 * site.Theta));
        var y = TinyRope.TorchForm();
        RopeFixture.Apply(y, "yarn", Options("yarn", 128));
        Assert.That(RopeLocator.Find(y).Sites, Is.Empty, "YaRN tables are not a plain geometric basis");
    }

    [Test]
    public void SecondScaling_IsRefused_UnlessForced()
    {
        var m = TinyRope.TorchForm();
        RopeFixture.Apply(m, "ntk", Options("ntk", 128));
        var ex = Assert.Throws<CompileException>(() => RopeFixture.Apply(m, "ntk", Options("ntk", 128)));
        Assert.That(ex!.Message, Does.Contain("already scaled").And.Contain("compound"));
    }
}

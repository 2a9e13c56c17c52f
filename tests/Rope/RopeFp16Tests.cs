using NUnit.Framework;
using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Passes.Rope;
using Microsoft.ML.OnnxRuntime;
using Snapshooter;
using Snapshooter.NUnit;

namespace LongCtx.Tests.Rope;

/// <summary>
/// fp16 rotary chains whose angles (context - 1) x max(inv_freq) exceed 65504: the pass says so and computes the chain
/// in fp32 (Cast to fp16 after Cos/Sin) instead of refusing.
/// </summary>
[TestFixture]
public sealed class RopeFp16Tests
{
    // linear at s = 2: max angle = 131071 / 2 = 65535.5 > 65504 (fp16 max).
    private const int Trained = 65536, Context = 131072;
    private static readonly long[] NearPositions = Enumerable.Range(99_990, 10).Select(i => (long)i).ToArray();

    private static Dictionary<string, string> Opts(int context = Context, int trained = Trained) =>
        RopeFixture.Opts(("context", context.ToString()), ("trained-context", trained.ToString()));

    /// <summary>Runs y = x (cos + sin) with x = 1 at the given positions; returns y as floats (fp16 models: widened).</summary>
    private static float[] Run(Model m, long[] pos, bool half)
    {
        using var s = new InferenceSession(OnnxWriter.ToBytes(m));
        int len = pos.Length;
        using var pv = OrtValue.CreateTensorValueFromMemory(pos, [1, len]);
        using var xv = half
            ? OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat((Float16)1f, len * TinyRope.Dim).ToArray(), [1, len, TinyRope.Dim])
            : OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1f, len * TinyRope.Dim).ToArray(), [1, len, TinyRope.Dim]);
        using var o = s.Run(new RunOptions(), ["position_ids", "x"], [pv, xv], ["y"]);
        return half ? o[0].GetTensorDataAsSpan<Float16>().ToArray().Select(v => (float)v).ToArray() : o[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Test]
    public void OverflowingFp16Chain_IsComputedInFp32_AndMatchesTheFp32Model()
    {
        var m = TinyRope.TorchFormFp16();
        var r = RopeFixture.Apply(m, "linear", Opts());
        Assert.That(r.Counts["fp16 rotary chains promoted to fp32"], Is.EqualTo(1));
        Assert.That(string.Join("\n", r.Notes), Does.Contain("overflow fp16").And.Contain("computed in fp32"));
        Assert.That(RopeLocator.ConstOf(m.Graph.Nodes.Single(n => n.OpType == "Constant").Output())!.Value.et, Is.EqualTo(ElementType.Float));
        Assert.That(m.Graph.Outputs.Single().Type!.Element, Is.EqualTo(ElementType.Float16), "the rest of the graph still sees fp16");

        var reference = TinyRope.TorchForm();
        RopeFixture.Apply(reference, "linear", Opts());
        var y = Run(m, NearPositions, half: true);
        var want = Run(reference, NearPositions, half: false);
        Assert.That(y.All(float.IsFinite), "promoted chain: finite at positions near 1e5");
        double maxDiff = y.Zip(want, (a, b) => Math.Abs(a - b)).Max();
        TestContext.Out.WriteLine($"fp16 promoted vs fp32 reference at positions {NearPositions[0]}..{NearPositions[^1]}: max|diff| = {maxDiff:G3}");
        Assert.That(maxDiff, Is.LessThanOrEqualTo(2e-2));

        // The same angles from the formula, in double: the fp32 reference itself is right.
        var t = RopeFrequencies.Linear(TinyRope.Theta, TinyRope.Dim, (double)Context / Trained);
        for (int p = 0; p < NearPositions.Length; p++)
            for (int j = 0; j < TinyRope.Dim; j++)
            {
                double a = NearPositions[p] * t.InvFreq[j % (TinyRope.Dim / 2)];
                Assert.That(y[p * TinyRope.Dim + j], Is.EqualTo(Math.Cos(a) + Math.Sin(a)).Within(2e-2), $"position {NearPositions[p]} dim {j}");
            }

        // Without the promotion the fp16 chain cannot represent these positions (above 65504: inf or clamped by the Cast),
        // so the same linear scaling computed in fp16 — positions x (inv_freq / 2), all in fp16 — is non-finite or wrong.
        var unfixed = TinyRope.TorchFormFp16();
        var k = unfixed.Graph.Nodes.Single(n => n.OpType == "Constant");
        new Rewriter(unfixed).SetAttribute(k, Attr.TensorValue("value", Tensor.FromHalves(t.InvFreq.Select(v => (Half)v).ToArray(), 1, 1, TinyRope.Dim / 2)));
        var broken = Run(unfixed, NearPositions, half: true);
        double brokenDiff = broken.Zip(want, (a, b) => float.IsFinite(a) ? Math.Abs(a - b) : double.PositiveInfinity).Max();
        TestContext.Out.WriteLine($"unfixed fp16 chain: {broken.Count(v => !float.IsFinite(v))} of {broken.Length} non-finite, max|diff| = {brokenDiff:G3}");
        Assert.That(brokenDiff, Is.GreaterThan(0.5), "the unfixed fp16 chain is non-finite or clearly wrong here: this test can fail");
    }

    [Test]
    public void OverflowingFp16Chain_KeepsTheMultiplierInFp16_AfterTheCast()
    {
        // YaRN multiplies cos/sin by 0.1 ln(s) + 1: the Mul comes after the Cast back to fp16, with an fp16 constant.
        var m = TinyRope.TorchFormFp16();
        var r = RopeFixture.Apply(m, "ntk", Opts(context: 131072, trained: 256));
        Assert.That(r.Counts["fp16 rotary chains promoted to fp32"], Is.EqualTo(1));
        var y = TinyRope.TorchFormFp16();
        RopeFixture.Apply(y, "yarn", Opts(context: 131072, trained: 256));
        var muls = y.Graph.Nodes.Where(n => n.OpType == "Mul" && n.Output().Name.EndsWith("_mscaled")).ToList();
        Assert.That(muls, Has.Count.EqualTo(2));
        foreach (var mul in muls)
        {
            Assert.That(mul.Input(0)!.Producer!.OpType, Is.EqualTo("Cast"));
            Assert.That(mul.Input(1)!.Const!.Element, Is.EqualTo(ElementType.Float16));
        }
        var yv = Run(y, NearPositions, half: true);
        var t = RopeFrequencies.Yarn(TinyRope.Theta, TinyRope.Dim, 512, 256);
        for (int p = 0; p < NearPositions.Length; p++)
            for (int j = 0; j < TinyRope.Dim; j++)
            {
                double a = NearPositions[p] * t.InvFreq[j % (TinyRope.Dim / 2)];
                Assert.That(yv[p * TinyRope.Dim + j], Is.EqualTo((Math.Cos(a) + Math.Sin(a)) * t.CosSinMultiplier).Within(2e-2), $"yarn: position {NearPositions[p]} dim {j}");
            }
        var nv = Run(m, NearPositions, half: true);
        Assert.That(nv.All(float.IsFinite));
    }

    [Test]
    public void Fp16ChainWithinRange_StaysFp16()
    {
        var m = TinyRope.TorchFormFp16();
        var r = RopeFixture.Apply(m, "linear", RopeFixture.Opts(("context", "128"), ("trained-context", TinyRope.Trained.ToString())));
        Assert.That(r.Counts.ContainsKey("fp16 rotary chains promoted to fp32"), Is.False);
        Assert.That(RopeLocator.ConstOf(m.Graph.Nodes.Single(n => n.OpType == "Constant").Output())!.Value.et, Is.EqualTo(ElementType.Float16));
        var pos = Enumerable.Range(0, 128).Select(i => (long)i).ToArray();
        var y = Run(m, pos, half: true);
        var t = RopeFrequencies.Linear(TinyRope.Theta, TinyRope.Dim, 4);
        for (int p = 0; p < 128; p += 9)
            for (int j = 0; j < TinyRope.Dim; j++)
            {
                double a = p * t.InvFreq[j % (TinyRope.Dim / 2)];
                Assert.That(y[p * TinyRope.Dim + j], Is.EqualTo(Math.Cos(a) + Math.Sin(a)).Within(3e-2), $"position {p} dim {j}");
            }
    }

    [Test]
    public void PromotionDiff()
    {
        var before = TinyRope.TorchFormFp16();
        var after = TinyRope.TorchFormFp16();
        RopeFixture.Apply(after, "linear", Opts());
        Snapshot.Match(ModelDiff.Compare(before, after).ToText());
    }
}

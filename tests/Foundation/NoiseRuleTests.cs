using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Snapshooter.NUnit;

namespace LongCtx.Tests.Foundation;

/// <summary>canonicalize-noise (the one-line rule table): snapshot, negatives, numerics, convergence.</summary>
public sealed class NoiseRuleTests
{
    /// <summary>
    /// z = Identity(Add(Cast(Cast(Cast(Identity(x), f32), f16), f32), Cast(Cast(x, f64), f32))): an Identity, a no-op
    /// Cast (visible once the Identity is gone), a lossy f32 -> f16 -> f32 round trip (kept), an exact f32 -> f64 -> f32
    /// round trip, and an Identity producing a graph output (kept: its name is the contract).
    /// </summary>
    private static Model Noisy()
    {
        var m = Model.Create("noisy", 17);
        var r = new Rewriter(m);
        var g = m.Graph;
        var x = r.AddInput(g, "x", new TensorType(ElementType.Float, new Shape("batch", 4)));
        var a = r.Op(g, "Identity", [x], outputName: "a");
        var b = r.Op(g, "Cast", [a], [Attr.Int("to", (long)ElementType.Float)], outputName: "b");
        var h = r.Op(g, "Cast", [b], [Attr.Int("to", (long)ElementType.Float16)], outputName: "h");
        var c = r.Op(g, "Cast", [h], [Attr.Int("to", (long)ElementType.Float)], outputName: "c");
        var i = r.Op(g, "Cast", [x], [Attr.Int("to", (long)ElementType.Double)], outputName: "i");
        var j = r.Op(g, "Cast", [i], [Attr.Int("to", (long)ElementType.Float)], outputName: "j");
        var y = r.Op(g, "Add", [c, j], outputName: "y");
        var z = r.Op(g, "Identity", [y], outputName: "z");
        r.AddOutput(g, z);
        r.SetType(z, new TensorType(ElementType.Float, new Shape("batch", 4)));
        return m;
    }

    private static PipelineResult Run(Model m) => PassManager.Run(m, Pipelines.Instantiate([new PipelineStep("canonicalize-noise")]));

    [Test]
    public void Snapshot_OfLccDiff()
    {
        var before = Noisy();
        var after = Noisy();
        var r = Run(after);
        Assert.That(r.Passes[0].Counts["noise nodes removed"], Is.EqualTo(3), "identity, no-op-cast, cast-round-trip");
        Assert.That(after.Graph.Nodes.Select(n => n.OpType), Is.EqualTo(new[] { "Cast", "Cast", "Add", "Identity" }));
        Snapshot.Match(ModelDiff.Compare(before, after).ToText().Split('\n'));
    }

    [Test]
    public void IsNotRewritten_LossyRoundTripsAndGraphOutputs()
    {
        var m = Noisy();
        Run(m);
        var add = m.Graph.Nodes.Single(n => n.OpType == "Add");
        Assert.That(add.Input(0)!.Producer, Is.Not.Null.And.Property("OpType").EqualTo("Cast"), "f32 -> f16 -> f32 rounds: kept");
        Assert.That(add.Input(1)!.Name, Is.EqualTo("x"), "f32 -> f64 -> f32 is exact: removed");
        Assert.That(m.Graph.Outputs.Single().Name, Is.EqualTo("z"));
        Assert.That(m.Graph.Outputs.Single().Producer!.OpType, Is.EqualTo("Identity"), "the graph output keeps its producer and name");
        var again = Run(m);
        Assert.That(again.Passes[0].Rewrites, Is.Zero, "one more iteration changes nothing");
    }

    [Test]
    public void PreservesOutputsExactly()
    {
        var original = Noisy();
        var clean = Noisy();
        Run(clean);
        using var a = new InferenceSession(OnnxWriter.ToBytes(original));
        using var b = new InferenceSession(OnnxWriter.ToBytes(clean));
        var inputs = TestSupport.MakeInputs(a, seq: 3);
        Assert.That(TestSupport.MaxAbsDiff(TestSupport.RunAll(a, inputs)["z"], TestSupport.RunAll(b, inputs)["z"]), Is.EqualTo(0f));
    }
}

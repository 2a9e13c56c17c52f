using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

public sealed class CanonicalizeAttentionTests
{
    internal static PipelineResult Canonicalize(Model m, Dictionary<string, string>? options = null) =>
        PassManager.Run(m, [(new CanonicalizeAttention(), options ?? []), (new DeadCodeElimination(), new Dictionary<string, string>())]);

    [Test]
    public void RecallPublicBecomesGqaAndMatchesOriginal()
    {
        var path = Fixtures.Require("recall-public/model.onnx");
        var original = OnnxReader.Load(path);
        var canonical = OnnxReader.Load(path);
        var r = Canonicalize(canonical);
        Assert.That(r.Passes[0].Counts["blocks rewritten to GroupQueryAttention"], Is.EqualTo(4), string.Join("; ", r.Passes[0].Notes));
        Assert.That(canonical.Graph.Nodes.Count(n => n.OpType == "GroupQueryAttention" && n.Domain == "com.microsoft"), Is.EqualTo(4));
        Assert.That(canonical.Graph.Nodes.Count(n => n.OpType is "Softmax" or "Sin" or "Cos" or "Neg"), Is.Zero, "the unfused attention and RoPE subgraphs are gone");
        Assert.That(canonical.Graph.Inputs.Select(v => (v.Name, v.Type)), Is.EqualTo(original.Graph.Inputs.Select(v => (v.Name, v.Type))));
        Assert.That(canonical.Graph.Outputs.Select(v => (v.Name, v.Type)), Is.EqualTo(original.Graph.Outputs.Select(v => (v.Name, v.Type))));

        var diff = Parity.Run(OnnxWriter.ToBytes(original), OnnxWriter.ToBytes(canonical), vocab: 256);
        TestContext.Out.WriteLine(string.Join("\n", diff.Select(kv => $"{kv.Key}: {kv.Value:E2}")));
        Assert.That(diff.Keys, Is.EquivalentTo(original.Graph.Outputs.Select(v => v.Name)));
        Assert.That(diff.Values, Has.All.LessThanOrEqualTo(1e-4));

        // a second run changes nothing: GQA blocks are already canonical
        var again = Canonicalize(canonical);
        Assert.That(again.Passes[0].Counts.GetValueOrDefault("blocks rewritten to GroupQueryAttention"), Is.Zero);
        Assert.That(again.Passes[0].Rewrites + again.Passes[1].Rewrites, Is.Zero);
    }
}

public sealed class CanonicalizeAttentionSnapshotTests
{
    [Test]
    public void RecallPublicDiff()
    {
        var path = Fixtures.Require("recall-public/model.onnx");
        var original = OnnxReader.Load(path);
        var canonical = OnnxReader.Load(path);
        CanonicalizeAttentionTests.Canonicalize(canonical);
        Snapshooter.NUnit.Snapshot.Match(ModelDiff.Compare(original, canonical).ToText());
    }

    [Test]
    public void UnrecognisedAttentionIsNotRewritten()
    {
        // softmax(q @ k^T) @ v on raw graph inputs: no projections, no head split, so no form applies.
        var m = Model.Create("bare", 17);
        var rw = new Rewriter(m);
        var t = new TensorType(ElementType.Float, new Shape(1, 2, 8, 16));
        var q = rw.AddInput(m.Graph, "q", t);
        var k = rw.AddInput(m.Graph, "k", t);
        var v = rw.AddInput(m.Graph, "v", t);
        var kt = rw.Op(m.Graph, "Transpose", [k], [Attr.Ints("perm", [0, 1, 3, 2])]);
        var s = rw.Op(m.Graph, "MatMul", [q, kt]);
        var p = rw.Op(m.Graph, "Softmax", [s], [Attr.Int("axis", -1)]);
        var o = rw.Op(m.Graph, "MatMul", [p, v], outputName: "out");
        rw.AddOutput(m.Graph, o);
        var before = OnnxWriter.ToBytes(m);

        var d = AttentionDiscovery.Discover(m);
        Assert.That(d.Blocks, Is.Empty);
        Assert.That(d.Unrecognised, Has.Count.EqualTo(1));
        Assert.That(d.Unrecognised[0], Does.StartWith("layer 0: matching stopped at"));
        Assert.That(d.Unrecognised[0], Does.Contain("expected Transpose, found graph input 'q'"));

        var r = CanonicalizeAttentionTests.Canonicalize(m);
        Assert.That(r.Passes[0].Rewrites, Is.Zero);
        Assert.That(r.Passes[0].Notes, Has.Some.Contains("not recognised: layer 0"));
        Assert.That(OnnxWriter.ToBytes(m), Is.EqualTo(before));
    }
}

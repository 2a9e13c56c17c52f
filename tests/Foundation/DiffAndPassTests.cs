using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Snapshooter.NUnit;

namespace LongCtx.Tests.Foundation;

public sealed class DiffAndPassTests
{
    private static PipelineResult Run(Model m, params string[] passes) =>
        PassManager.Run(m, Pipelines.Instantiate(passes.Select(p => new PipelineStep(p))));

    [Test]
    public void Dce_Snapshot_OfLccDiff()
    {
        var before = TinyGraphs.WithDeadCode();
        var after = TinyGraphs.WithDeadCode();
        var r = Run(after, "dce");
        Assert.That(r.Passes[0].Counts["nodes removed"], Is.EqualTo(2));
        Assert.That(r.Passes[0].Counts["initializers removed"], Is.EqualTo(1));
        Snapshot.Match(ModelDiff.Compare(before, after).ToText().Split('\n'));
    }

    [Test]
    public void Dedup_Snapshot_OfLccDiff()
    {
        var before = TinyGraphs.WithDeadCode();
        var after = TinyGraphs.WithDeadCode();
        var r = Run(after, "dedup-initializers");
        Assert.That(r.Passes[0].Counts["initializers merged"], Is.EqualTo(1));
        Snapshot.Match(ModelDiff.Compare(before, after).ToText().Split('\n'));
    }

    [Test]
    public void Dce_IsNotRewritten_WhenNothingIsDead()
    {
        var m = TinyGraphs.WithDeadCode();
        Run(m, "dce");
        var again = Run(m, "dce", "dedup-initializers", "dce");
        Assert.That(again.Passes[0].Counts, Is.Empty, "a second run changes nothing (fixed point)");
        Assert.That(again.Passes[0].Rewrites, Is.EqualTo(0));
    }

    [Test]
    public void Passes_PreserveOutputs_Numerically()
    {
        var original = TinyGraphs.WithDeadCode();
        var compiled = TinyGraphs.WithDeadCode();
        Run(compiled, "dce", "dedup-initializers");
        using var a = new InferenceSession(OnnxWriter.ToBytes(original));
        using var b = new InferenceSession(OnnxWriter.ToBytes(compiled));
        var inputs = TestSupport.MakeInputs(a, seq: 3);
        var ra = TestSupport.RunAll(a, inputs);
        var rb = TestSupport.RunAll(b, inputs);
        Assert.That(TestSupport.MaxAbsDiff(ra["y"], rb["y"]), Is.EqualTo(0f));
    }

    [Test]
    public void Diff_IgnoresNodeOrderAndGeneratedNames()
    {
        var a = TinyGraphs.WithDeadCode();
        var b = TinyGraphs.WithDeadCode();
        b.Graph.NodeList.Reverse();
        foreach (var n in b.Graph.NodeList) n.Name = "renamed_" + n.Name.GetHashCode();
        new Rewriter(b).SortTopologically(b.Graph);
        var d = ModelDiff.Compare(a, b);
        Assert.That(d.AddedNodes, Is.Empty);
        Assert.That(d.RemovedNodes, Is.Empty);
        Assert.That(d.UnchangedNodes, Is.EqualTo(6));
    }

    [Test]
    public void Diff_ReportsAttributeInputAndInitializerChanges()
    {
        var a = TinyGraphs.WithDeadCode();
        var b = TinyGraphs.WithDeadCode();
        var r = new Rewriter(b);
        var relu = b.Graph.Nodes.Single(n => n.OpType == "Relu");
        r.SetAttribute(relu, Attr.Float("alpha", 0.1f));
        r.SetInitializerData(b.Graph.Initializer("W")!, Tensor.FromFloats(new float[16], 4, 4));
        var text = ModelDiff.Compare(a, b).ToText();
        Assert.That(text, Does.Contain("attr alpha: - -> 0.1"));
        Assert.That(text, Does.Contain("~ W: float32[4,4]"));
        Assert.That(text, Does.Not.Contain("0.25"), "no raw weights in diffs");
    }

    [Test]
    public void StepLimit_CountsSingleMutationsOfPassesWithoutRules()
    {
        var m = TinyGraphs.WithDeadCode();
        var r = PassManager.Run(m, Pipelines.Instantiate([new PipelineStep("dce")]), new PassManagerOptions { StepLimit = 1, Trace = true });
        Assert.That(r.StoppedAtStepLimit, Is.True);
        Assert.That(r.Trace, Has.Count.EqualTo(1));
        Assert.That(r.Passes[0].Counts["nodes removed"], Is.EqualTo(1));
        Verifier.Verify(m);
    }

    /// <summary>
    /// --step-limit N counts whole rule applications: on a 3-layer model, N = 0..3 leaves exactly N blocks rewritten
    /// (never a half-done one: the IR verifies and the rest of the graph is untouched), and a large N equals no limit.
    /// </summary>
    [Test]
    public void StepLimit_StopsThePipelineBetweenWholeRuleApplications()
    {
        var config = new LongCtx.Models.DecoderConfig(Layers: 3);
        var unlimited = LongCtx.Models.Builders.Build("torch", config);
        var full = Run(unlimited, "canonicalize-attention");
        Assert.That(full.StoppedAtStepLimit, Is.False);
        Assert.That(full.Passes[0].Counts["blocks rewritten to GroupQueryAttention"], Is.EqualTo(3));
        for (int n = 0; n <= 3; n++)
        {
            var m = LongCtx.Models.Builders.Build("torch", config);
            var r = PassManager.Run(m, Pipelines.Instantiate([new PipelineStep("canonicalize-attention")]), new PassManagerOptions { StepLimit = n, Trace = true });
            Verifier.Verify(m);
            Assert.That(r.StoppedAtStepLimit, Is.EqualTo(n < 3), $"limit {n}");
            Assert.That(m.Graph.Nodes.Count(x => x.OpType == "GroupQueryAttention"), Is.EqualTo(n), $"limit {n}");
            Assert.That(m.Graph.Nodes.Count(x => x.OpType == "Softmax"), Is.EqualTo(3 - n), $"limit {n}: the blocks not reached are intact");
            Assert.That(r.Passes[0].Counts.GetValueOrDefault("blocks rewritten to GroupQueryAttention"), Is.EqualTo(n));
            Assert.That(r.Trace.Count(t => !t.StartsWith(' ')), Is.EqualTo(n), "one trace entry per whole rule application");
        }
        var large = LongCtx.Models.Builders.Build("torch", config);
        PassManager.Run(large, Pipelines.Instantiate([new PipelineStep("canonicalize-attention")]), new PassManagerOptions { StepLimit = 1000 });
        Assert.That(OnnxWriter.ToBytes(large), Is.EqualTo(OnnxWriter.ToBytes(unlimited)));
    }
}

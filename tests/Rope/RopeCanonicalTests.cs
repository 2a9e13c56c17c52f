using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using NUnit.Framework;

namespace LongCtx.Tests.Rope;

/// <summary>
/// RoPE scaling composed with canonicalisation: the rope pass rewrites the exported inv_freq (and inserts the cos/sin
/// multiplier), then canonicalize-attention folds both into the GroupQueryAttention caches. The canonical model must
/// compute what the scaled exported model computes.
/// </summary>
public sealed class RopeCanonicalTests
{
    private static Model Compile(IReadOnlyList<PipelineStep> steps)
    {
        var m = OnnxReader.Load(TestSupport.Fixture("recall-public/model.onnx"));
        PassManager.Run(m, Pipelines.Instantiate(steps));
        return m;
    }

    [TestCase("yarn"), TestCase("ntk"), TestCase("linear")]
    public void ScaledThenCanonical_MatchesScaledExported(string method)
    {
        var rope = new PipelineStep("rope-" + method, new Dictionary<string, string> { ["context"] = "1024", ["trained-context"] = "256" });
        var exported = Compile([rope]);
        var canonical = Compile(Pipelines.WithMethods([rope]));
        Assert.That(canonical.Graph.Nodes.Count(n => n.OpType == "GroupQueryAttention"), Is.EqualTo(4), "every layer canonicalised after scaling");
        Assert.That(exported.Graph.Nodes.Count(n => n.OpType == "GroupQueryAttention"), Is.EqualTo(0));
        var prompt = NeedleEval.Load(TestSupport.Fixture("recall-public/eval_1024.jsonl"), 1)[0].Prompt;
        using var a = new NeedleEval(exported);
        using var b = new NeedleEval(canonical);
        float d = TestSupport.MaxAbsDiff(a.LastLogits(prompt), b.LastLogits(prompt));
        TestContext.Out.WriteLine($"{method}: max |logit diff| at 1024 tokens = {d:G3}");
        Assert.That(d, Is.LessThanOrEqualTo(1e-4f));
    }

    [Test]
    public void DynamicNtk_KeepsBlocksWithAReason()
    {
        var rope = new PipelineStep("rope-dynamic-ntk", new Dictionary<string, string> { ["context"] = "1024", ["trained-context"] = "256" });
        var m = OnnxReader.Load(TestSupport.Fixture("recall-public/model.onnx"));
        var r = PassManager.Run(m, Pipelines.Instantiate(Pipelines.WithMethods([rope])));
        var canon = r.Passes.Single(p => p.Pass == "canonicalize-attention");
        Assert.That(canon.Counts, Is.Empty);
        Assert.That(canon.Notes, Has.Count.EqualTo(4).And.All.Contains("RoPE cos"));
    }

    [Test]
    public void ExtendedContext_LengthensCanonicalCaches_AndRecordsMaxContext()
    {
        // the target context is a typed pipeline option (lcc compile --context), read by both passes from their PassContext
        var rope = new PipelineStep("rope-yarn", new Dictionary<string, string> { ["trained-context"] = "256" });
        var m = OnnxReader.Load(TestSupport.Fixture("recall-public/model.onnx"));
        var r = PassManager.Run(m, Pipelines.Instantiate(Pipelines.WithMethods([rope])), new PassManagerOptions { TargetContext = 65536 });
        var caches = m.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention").Select(n => n.Input(7)!.Const!.Dims[0]).Distinct().ToList();
        Assert.That(caches, Is.EqualTo(new[] { 65536L }), "GQA reads RoPE rows by position: the cache must cover the extended context");
        Assert.That(r.RuntimeConfig["max_context"], Is.EqualTo(65536L));
    }
}

using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Rewriting;
using LongCtx.Models;
using LongCtx.Passes;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

/// <summary>
/// The rule driver behind canonicalize-attention: convergence (one more iteration changes nothing), applications
/// counted per rule, one negative case (IsNotRewritten) per rule, and <c>--explain</c> on a model no rule matches.
/// </summary>
public sealed class RuleDriverTests
{
    private static readonly DecoderConfig Base = new(Layers: 2);

    /// <summary>Runs the canonicalisation rules once more on <paramref name="m"/>, on a fresh rewriter.</summary>
    private static (DriverResult Result, int Mutations, PassContext Ctx) DriveAgain(Model m)
    {
        var rw = new Rewriter(m);
        var ctx = new PassContext(rw);
        var r = GreedyDriver.Run(m, CanonicalizeAttention.Rules, ctx, "again");
        return (r, rw.Steps, ctx);
    }

    private static void AssertConverged(Model m, string what)
    {
        PassManager.Run(m, [(new CanonicalizeAttention(), new Dictionary<string, string>())]);
        var before = OnnxWriter.ToBytes(m);
        var (again, mutations, _) = DriveAgain(m);
        Assert.That(again.Total, Is.Zero, $"{what}: a rule still matches after the driver stopped");
        Assert.That(mutations, Is.Zero, what);
        Assert.That(again.Converged, Is.True);
        Assert.That(OnnxWriter.ToBytes(m), Is.EqualTo(before), what);
    }

    public static IEnumerable<BuilderParityTests.Variant> Variants() => BuilderParityTests.Variants();

    [TestCaseSource(nameof(Variants))]
    public void OneMoreIterationChangesNothing_Builders(BuilderParityTests.Variant v) =>
        AssertConverged(Builders.Build(v.Form, v.Config), v.ToString());

    [TestCaseSource(typeof(TestSupport), nameof(TestSupport.DecoderFixtures))]
    public void OneMoreIterationChangesNothing_Fixtures(string fixture) =>
        AssertConverged(OnnxReader.Load(Fixtures.Require(fixture)), fixture);

    [Test]
    public void OneMoreIterationChangesNothing_UnrecognisedAndEncoder()
    {
        AssertConverged(BareAttention(), "bare attention");
        AssertConverged(Builders.Build("bert", Base), "bert");
    }

    [TestCase("torch", "torch-attention-to-gqa", "blocks rewritten to GroupQueryAttention")]
    [TestCase("mha", "mha-to-gqa", "blocks rewritten to GroupQueryAttention")]
    [TestCase("opset24", "onnx-attention-to-gqa", "blocks rewritten to GroupQueryAttention")]
    [TestCase("gqa-separate-rope", "fold-rotary-into-gqa", "external RoPE folded into GroupQueryAttention")]
    public void ApplicationsAreCountedPerRule(string form, string rule, string counter)
    {
        var m = Builders.Build(form, form == "mha" ? Base with { KvHeads = 4 } : Base);
        var rw = new Rewriter(m);
        var ctx = new PassContext(rw);
        var r = GreedyDriver.Run(m, CanonicalizeAttention.Rules, ctx, "canonicalize-attention");
        Verifier.Verify(m);
        Assert.That(r.Applications[rule], Is.EqualTo(2));
        Assert.That(r.Total, Is.EqualTo(2), "no other rule applied");
        Assert.That(ctx.Counts[counter], Is.EqualTo(2));
        Assert.That(r.Failures, Is.Empty, "the fold rule does not report the GQA nodes it (or another rule) made");
    }

    /// <summary>IsNotRewritten, one per rule: rotary_dim/2 = 4 is not a multiple of 8 (ORT CPU GQA), so every form is kept byte-identical with a note.</summary>
    [TestCase("torch", "torch-attention-to-gqa", "torch-matmul-softmax")]
    [TestCase("mha", "mha-to-gqa", "ms-mha-rotary")]
    [TestCase("opset24", "onnx-attention-to-gqa", "onnx-attention")]
    [TestCase("gqa-separate-rope", "fold-rotary-into-gqa", "ms-gqa, external RoPE")]
    public void IsNotRewritten_WhenRotaryDimIsUnsupported(string form, string rule, string formNote)
    {
        var m = Builders.Build(form, Base with { RotaryDim = 8, KvHeads = form == "mha" ? 4 : Base.KvHeads });
        var before = OnnxWriter.ToBytes(m);
        var r = PassManager.Run(m, [(new CanonicalizeAttention(), new Dictionary<string, string>())], new PassManagerOptions { Explain = true });
        var pass = r.Passes[0];
        Assert.That(pass.Rewrites, Is.Zero);
        Assert.That(OnnxWriter.ToBytes(m), Is.EqualTo(before));
        Assert.That(pass.Counts["blocks kept"], Is.EqualTo(2));
        Assert.That(pass.Notes, Is.EqualTo(new[] { 0, 1 }.Select(l => $"layer {l} ({formNote}) kept: rotary dim 8: ORT CPU GroupQueryAttention needs rotary_dim/2"
            + (form == "gqa-separate-rope" ? "" : " (the cos cache width)") + " to be a multiple of 8")));
        Assert.That(pass.Explain, Has.Some.StartsWith($"{rule}: matched nothing; furthest failure at "));
    }

    /// <summary>softmax(q @ k^T) @ v on raw graph inputs: no projections, no head split, so no form applies.</summary>
    internal static Model BareAttention()
    {
        var m = Model.Create("bare", 17);
        var rw = new Rewriter(m);
        var t = new TensorType(ElementType.Float, new Shape(1, 2, 8, 16));
        var q = rw.AddInput(m.Graph, "q", t);
        var k = rw.AddInput(m.Graph, "k", t);
        var v = rw.AddInput(m.Graph, "v", t);
        var kt = rw.Op(m.Graph, "Transpose", [k], [Attr.Ints("perm", [0, 1, 3, 2])]);
        var s = rw.Op(m.Graph, "MatMul", [q, kt]);
        var p = rw.Op(m.Graph, "Softmax", [s], [Attr.Int("axis", -1)]);
        rw.AddOutput(m.Graph, rw.Op(m.Graph, "MatMul", [p, v], outputName: "out"));
        return m;
    }

    [Test]
    public void Explain_PrintsTheFurthestFailurePerRule_WhenNothingMatched()
    {
        var dir = TestSupport.TempDir("explain");
        var path = Path.Combine(dir, "bare.onnx");
        OnnxWriter.Save(BareAttention(), path);
        var r = Foundation.CliRunner.Run("compile", path, "-o", Path.Combine(dir, "out"), "--explain");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Stderr);
        Assert.That(r.Stdout, Does.Contain("explain: torch-attention-to-gqa: matched nothing; furthest failure at value 'q': expected ")
            .And.Contain("or expected Transpose, found graph input 'q'"));
        Assert.That(r.Stdout, Does.Contain("explain: mha-to-gqa: matched nothing; the model has no com.microsoft.MultiHeadAttention node"));
        Assert.That(r.Stdout, Does.Contain("explain: onnx-attention-to-gqa: matched nothing; the model has no Attention node"));
        Assert.That(r.Stdout, Does.Contain("explain: fold-rotary-into-gqa: matched nothing; the model has no com.microsoft.GroupQueryAttention node"));
        var plain = Foundation.CliRunner.Run("compile", path, "-o", Path.Combine(dir, "out2"));
        Assert.That(plain.Stdout, Does.Not.Contain("explain:"), "only with --explain");
        Directory.Delete(dir, true);
    }

    [Test]
    public void Trace_RecordsEachRuleApplicationAsOneStep()
    {
        var m = Builders.Build("torch", Base);
        var r = PassManager.Run(m, [(new CanonicalizeAttention(), new Dictionary<string, string>())], new PassManagerOptions { Trace = true });
        var applications = r.Trace.Where(t => !t.StartsWith(' ')).ToList();
        Assert.That(applications, Has.Count.EqualTo(2));
        Assert.That(applications, Has.All.StartWith("canonicalize-attention: torch-attention-to-gqa at Softmax '"));
        Assert.That(r.Trace.Count(t => t.StartsWith("  add GroupQueryAttention") || t.StartsWith("  add com.microsoft.GroupQueryAttention")), Is.EqualTo(2), "the mutations are traced under their application");
    }
}

/// <summary>The driver's guard: a rule that re-matches its own output forever is stopped, with a note, not looped on.</summary>
public sealed class DriverGuardTests
{
    private sealed record Bump(Node Node);

    /// <summary>Rewrites every Relu by bumping an attribute: the node is touched, so it comes back and matches again.</summary>
    private sealed class NeverDone : RewriteRule<Bump>
    {
        public override string Name => "never-done";
        public override string Counter => "bumps";
        public override IReadOnlyList<OpKey> Roots { get; } = [new("", "Relu")];
        public override Checked<Bump> Check(Node root, LongCtx.Compiler.Patterns.Bindings bindings, RuleContext ctx) => new Bump(root);
        public override void Rewrite(IRewriter rw, Bump m) => rw.SetAttribute(m.Node, Attr.Int("bump", m.Node.IntAttr("bump", 0) + 1));
    }

    [Test]
    public void StopsAfterMaxApplicationsWithANote()
    {
        var m = Foundation.TinyGraphs.WithDeadCode();
        var ctx = new PassContext(new Rewriter(m));
        var r = GreedyDriver.Run(m, [new NeverDone()], ctx, "guard", maxApplications: 5);
        Assert.That(r.Converged, Is.False);
        Assert.That(r.Applications["never-done"], Is.EqualTo(5));
        Assert.That(ctx.Counts["bumps"], Is.EqualTo(5));
        Assert.That(ctx.Notes.Single(), Does.Contain("guard: stopped after 5 rule applications without reaching a fixed point (never-done still matches at Relu"));
        Verifier.Verify(m);
    }
}

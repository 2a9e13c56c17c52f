using LongCtx.Cli;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Contract;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

/// <summary>
/// The onnxruntime.transformers GPT-2 form (<see cref="OrtGpt2Decoder"/>): com.microsoft.Attention with packed QKV and a
/// packed past_N. Discovery reads it, canonicalize-attention rewrites it to GroupQueryAttention with the same logits
/// and presents, forms GQA cannot express are kept with the reason, attention ops no form reads are "not recognised"
/// with the reason, and the runtime drives the packed contract as it is (bare model, lcc run).
/// </summary>
[TestFixture]
public sealed class OrtAttentionFormTests
{
    private static readonly DecoderConfig Config = new(Layers: 2, Hidden: 64, Heads: 4, KvHeads: 4, HeadDim: 16, Vocab: 96, MaxPositions: 128, Seed: 41);

    private static Model Build(DecoderConfig? c = null) => OrtGpt2Decoder.Build(c ?? Config);

    [Test]
    public void Discovery_ReadsEveryLayer_AsThePackedForm()
    {
        var found = AttentionDiscovery.Discover(Build());
        Assert.That(found.Unrecognised, Is.Empty);
        Assert.That(found.Blocks.Select(b => (b.Layer, b.Form, b.NumHeads, b.KvNumHeads, b.HeadDim, b.Hidden, b.Causal, b.KvLayout, b.PastKey, b.PresentKey, b.MaskSource)),
            Is.EqualTo(new[]
            {
                (0, OrtAttentionForm.Form, 4, 4, 16, 64, true, OrtAttentionForm.PackedKvLayout, "past_0", "present_0", IoNames.AttentionMask),
                (1, OrtAttentionForm.Form, 4, 4, 16, 64, true, OrtAttentionForm.PackedKvLayout, "past_1", "present_1", IoNames.AttentionMask),
            }));
        Assert.That(AttentionReport.ToText(found), Does.Contain("2 blocks recognised, 0 not recognised"));
    }

    [Test]
    public void ArchitectureCard_ReadsThePackedPast()
    {
        var card = ArchitectureCard.FromModelIo(Build(), out var why);
        Assert.That(card, Is.Not.Null, why);
        Assert.That((card!.Layers, card.KvHeads, card.HeadDim, card.Vocab), Is.EqualTo((2, 4, 16, 96)));
    }

    [TestCase(ModelDtype.Float32, 1e-4)]
    [TestCase(ModelDtype.Float16, 2e-2)] // fp16: ORT's Attention and GQA round q·kᵀ and softmax in different orders
    public void Canonicalised_MatchesOriginal_OverPrefillAndCachedDecode(ModelDtype dtype, double tolerance)
    {
        var original = Build(Config with { Dtype = dtype });
        var canonical = OnnxReader.FromBytes(OnnxWriter.ToBytes(original));
        var r = PassManager.Run(canonical, Pipelines.Instantiate(Pipelines.Default));
        var pass = r.Passes.Single(p => p.Pass == "canonicalize-attention");
        Assert.That(pass.Counts.GetValueOrDefault("blocks rewritten to GroupQueryAttention"), Is.EqualTo(2), string.Join("\n", pass.Notes));
        Assert.That(canonical.Graph.Nodes.Count(n => n.OpType == "GroupQueryAttention"), Is.EqualTo(2));
        Assert.That(canonical.Graph.Nodes.Count(n => n is { Domain: "com.microsoft", OpType: "Attention" }), Is.Zero);
        // the packed cache is unpacked into the contract's names, in place
        Assert.That(canonical.Graph.Inputs.Where(v => !v.IsInitializer).Select(v => v.Name), Is.EqualTo(new[]
            { "input_ids", "position_ids", "attention_mask", "past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value" }));
        Assert.That(canonical.Graph.Outputs.Select(v => v.Name), Is.EqualTo(new[] { "logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value" }));
        Verifier.Verify(canonical);

        // prefill 12 tokens, then 4 cached decode steps; each model is fed its own cache; present_N = stack(present.N.key, present.N.value)
        using var a = new TestDecoder(OnnxWriter.ToBytes(original), threads: 1, Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_DISABLE_ALL);
        using var c = new TestDecoder(OnnxWriter.ToBytes(canonical), threads: 1, Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_DISABLE_ALL);
        Assert.That((a.Contract.CacheKind, c.Contract.CacheKind), Is.EqualTo((KvCacheKind.Packed, KvCacheKind.Concat)));
        var rng = new Random(3);
        var steps = new List<long[]> { Enumerable.Range(0, 12).Select(_ => (long)rng.Next(Config.Vocab)).ToArray() };
        for (int i = 0; i < 4; i++) steps.Add([rng.Next(Config.Vocab)]);
        double worstLogits = 0, worstPresent = 0;
        foreach (var tokens in steps)
        {
            var ra = a.Step(tokens, allOutputs: true);
            var rc = c.Step(tokens, allOutputs: true);
            worstLogits = Math.Max(worstLogits, TestDecoder.MaxDiff(ra["logits"].Data, rc["logits"].Data));
            for (int l = 0; l < 2; l++)
            {
                var stacked = rc[$"present.{l}.key"].Data.Concat(rc[$"present.{l}.value"].Data).ToArray();
                Assert.That(ra[$"present_{l}"].Dims, Is.EqualTo(new[] { 2, 1, 4, a.Past, 16 }));
                worstPresent = Math.Max(worstPresent, TestDecoder.MaxDiff(ra[$"present_{l}"].Data, stacked));
            }
        }
        Assert.That(worstLogits, Is.LessThan(tolerance), "logits");
        Assert.That(worstPresent, Is.LessThan(tolerance), "presents");
        TestContext.Out.WriteLine($"{dtype}: max |diff| logits {worstLogits:E2}, presents {worstPresent:E2}");
        // one more driver run changes nothing
        var again = PassManager.Run(canonical, Pipelines.Instantiate([new PipelineStep("canonicalize-attention")]));
        Assert.That(again.Passes[0].Counts.GetValueOrDefault("blocks rewritten to GroupQueryAttention"), Is.Zero);
    }

    [Test]
    public void NotUnidirectional_IsKept_WithTheReason()
    {
        var m = Build();
        var rw = new Rewriter(m);
        foreach (var n in m.Graph.Nodes.Where(n => n.OpType == "Attention").ToList()) rw.SetAttribute(n, Attr.Int("unidirectional", 0));
        var r = PassManager.Run(m, Pipelines.Instantiate(Pipelines.Default));
        var pass = r.Passes.Single(p => p.Pass == "canonicalize-attention");
        Assert.That(pass.Counts.GetValueOrDefault("blocks rewritten to GroupQueryAttention"), Is.Zero);
        Assert.That(pass.Notes, Has.Some.Contains($"layer 0 ({OrtAttentionForm.Form}) kept: not causal"));
        Assert.That(m.Graph.Nodes.Count(n => n.OpType == "Attention"), Is.EqualTo(2));
    }

    [Test]
    public void SharedPastPresentBuffer_IsKept_WithTheReason()
    {
        var m = Build();
        var rw = new Rewriter(m);
        foreach (var n in m.Graph.Nodes.Where(n => n.OpType == "Attention").ToList()) rw.SetAttribute(n, Attr.Int("past_present_share_buffer", 1));
        var pass = PassManager.Run(m, Pipelines.Instantiate(Pipelines.Default)).Passes.Single(p => p.Pass == "canonicalize-attention");
        Assert.That(pass.Notes, Has.Some.Contains("past_present_share_buffer=1"));
    }

    /// <summary>Attention-like sites no form reads: each one is "not recognised" with what it is.</summary>
    [TestCase("SparseAttention", "block-sparse")]
    [TestCase("PagedAttention", "paged KV blocks")]
    [TestCase("DecoderMaskedMultiHeadAttention", "beam-search")]
    public void UnreadAttentionOps_AreNotRecognised_WithTheReason(string op, string because)
    {
        var m = Model.Create("g", 17);
        var rw = new Rewriter(m);
        rw.EnsureOpset("com.microsoft", 1);
        var x = rw.AddInput(m.Graph, "x", new TensorType(ElementType.Float, new Shape(1, 4, 8)));
        var y = rw.AddNode(m.Graph, op, [x, x, x], ["y"], [Attr.Int("num_heads", 2)], "com.microsoft", "att").Output();
        rw.AddOutput(m.Graph, y);
        var found = AttentionDiscovery.Discover(m);
        Assert.That(found.Blocks, Is.Empty);
        Assert.That(found.Unrecognised, Has.Count.EqualTo(1));
        Assert.That(found.Unrecognised[0], Does.Contain($"com.microsoft.{op}: ").And.Contain(because));
        Assert.That(AttentionReport.ToText(found), Does.Contain("0 blocks recognised, 1 not recognised"));
    }

    [Test]
    public void SoftmaxOverQKScores_NotFeedingV_IsNotRecognised()
    {
        var m = Model.Create("g", 17);
        var rw = new Rewriter(m);
        var q = rw.AddInput(m.Graph, "q", new TensorType(ElementType.Float, new Shape(1, 2, 4, 8)));
        var k = rw.AddInput(m.Graph, "kt", new TensorType(ElementType.Float, new Shape(1, 2, 8, 4)));
        var scores = rw.Op(m.Graph, "Div", [rw.Op(m.Graph, "MatMul", [q, k]), rw.AddInitializer(m.Graph, "s", Tensor.Scalar(2.8f))]);
        var p = rw.Op(m.Graph, "Softmax", [scores], [Attr.Int("axis", -1)], outputName: "probs");
        rw.AddOutput(m.Graph, p);
        var found = AttentionDiscovery.Discover(m);
        Assert.That(found.Unrecognised, Has.Count.EqualTo(1));
        Assert.That(found.Unrecognised[0], Does.Contain("does not feed a MatMul with V"));

        // a classifier head (Softmax over x·W with a constant W) is not attention: nothing reported
        var c = Model.Create("g", 17);
        var crw = new Rewriter(c);
        var h = crw.AddInput(c.Graph, "h", new TensorType(ElementType.Float, new Shape(1, 8)));
        var logits = crw.Op(c.Graph, "MatMul", [h, crw.AddInitializer(c.Graph, "w", Tensor.FromFloats(new float[16], 8, 2))]);
        crw.AddOutput(c.Graph, crw.Op(c.Graph, "Softmax", [logits], outputName: "probs"));
        Assert.That(AttentionDiscovery.Discover(c).Unrecognised, Is.Empty);
    }

    [Test]
    public void Runtime_DrivesThePackedContract_AsTheTestRunnerDoes()
    {
        var bytes = OnnxWriter.ToBytes(Build());
        var dir = TestSupport.TempDir("packed");
        try
        {
            var path = Path.Combine(dir, "model.onnx");
            File.WriteAllBytes(path, bytes);
            using var model = LongCtxModel.Load(path, RuntimeOptions.Default with { ExecutionProvider = ExecutionProviderKind.Cpu, Log = _ => { } });
            Assert.That(model.Contract.CacheKind, Is.EqualTo(KvCacheKind.Packed));
            Assert.That(model.Contract.Layers.Select(l => (l.PastKey, l.PresentValue)), Is.EqualTo(new[] { ("past_0", "present_0"), ("past_1", "present_1") }));
            int[] prompt = [5, 17, 3, 80, 41, 9];
            using var g = model.CreateGenerator();
            var got = g.Generate(prompt, new GenerationOptions { MaxNewTokens = 6, Chunk = 4 });
            Assert.That(g.Cache, Is.InstanceOf<PackedKvCache>());
            Assert.That(g.Length, Is.EqualTo(prompt.Length + 5));

            // the same greedy tokens from plain ORT feeding present_N back as past_N
            using var reference = new TestDecoder(bytes);
            var want = new List<int>();
            var logits = reference.LastLogits(prompt.Select(t => (long)t).ToArray());
            for (int i = 0; i < 6; i++)
            {
                int next = Array.IndexOf(logits, logits.Max());
                want.Add(next);
                logits = reference.Next([next]);
            }
            Assert.That(got, Is.EqualTo(want));

            // lcc compile unpacks the cache; the compiled folder runs on the standard concat contract with the same tokens
            var compiled = Path.Combine(dir, "compiled");
            LongCtx.Compiler.CompileJob.Run(path, compiled, Pipelines.Instantiate(Pipelines.Default), new LongCtx.Compiler.CompileOptions { Force = true });
            using (var cm = LongCtxModel.Load(compiled, RuntimeOptions.Default with { ExecutionProvider = ExecutionProviderKind.Cpu, Log = _ => { } }))
            using (var cg = cm.CreateGenerator())
            {
                Assert.That(cm.Contract.CacheKind, Is.EqualTo(KvCacheKind.Concat));
                Assert.That(cg.Generate(prompt, new GenerationOptions { MaxNewTokens = 6, Chunk = 4 }), Is.EqualTo(want));
            }

            var (o, e) = (Console.Out, Console.Error);
            var stdout = new StringWriter(); var stderr = new StringWriter();
            Console.SetOut(stdout); Console.SetError(stderr);
            int rc;
            try { rc = Program.BuildRoot().Parse(["run", path, "--prompt-ids", string.Join(",", prompt), "--max-new-tokens", "6", "--ep", "cpu"]).Invoke(); }
            finally { Console.SetOut(o); Console.SetError(e); }
            Assert.That(rc, Is.EqualTo(0), stderr.ToString());
            Assert.That(stdout.ToString().Trim(), Is.EqualTo(string.Join(' ', want)));
        }
        finally { Directory.Delete(dir, true); }
    }
}

using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.OnnxIO;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

public sealed class FusedFormTests
{
    [Test]
    public void QwenGroupQueryAttentionIsCanonicalAlready()
    {
        var m = OnnxReader.Load(Fixtures.Require("genai/qwen-gqa-fp16/decoder.onnx"));
        var r = AttentionDiscovery.Discover(m);
        Assert.That(r.Unrecognised, Is.Empty);
        Assert.That(r.Blocks.Select(b => (b.Layer, b.Form, b.NumHeads, b.KvNumHeads, b.HeadDim, b.Causal, b.Rope.Present)),
            Is.EqualTo(new[] { (0, "ms-gqa", 4, 2, 16, true, false), (1, "ms-gqa", 4, 2, 16, true, false) }));
        Assert.That(r.Blocks[1].PresentKey, Is.EqualTo("present.1.key"));
        var before = OnnxWriter.ToBytes(m);
        var p = CanonicalizeAttentionTests.Canonicalize(m);
        Assert.That(p.Passes[0].Counts["blocks already canonical"], Is.EqualTo(2));
        Assert.That(p.Passes[0].Rewrites, Is.Zero);
        Assert.That(OnnxWriter.ToBytes(m), Is.EqualTo(before));
    }

    [Test]
    public void GenaiRotaryPlusMultiHeadAttention()
    {
        var m = OnnxReader.Load(Fixtures.Require("genai/llama-mha-rotary-fp16/model.onnx"));
        var r = AttentionDiscovery.Discover(m);
        Assert.That(r.Unrecognised, Is.Empty);
        Assert.That(r.Blocks, Has.Count.EqualTo(2));
        var b = r.Blocks[0];
        Assert.That((b.Form, b.NumHeads, b.KvNumHeads, b.HeadDim, b.Scale), Is.EqualTo(("ms-mha-rotary", 1, 1, 16, 0.25)));
        Assert.That(b.Rope is { Present: true, RotaryDim: 16, Interleaved: false, OriginalMaxPositions: 2048, Source: "cos_cache" }, Is.True, b.Rope.ToString());
        Assert.That(b.Rope.Theta, Is.EqualTo(10000).Within(10), "fp16 cache: theta is only recovered to ~0.1%");
        Assert.That(b.Match.Positions?.Name, Is.EqualTo("position_ids"));
        Assert.That((b.PastKey, b.PresentValue), Is.EqualTo(("past_key_values.0.key", "present.0.value")));
    }

    [Test]
    public void Opset24AttentionWithStaticCache()
    {
        var m = OnnxReader.Load(Fixtures.Require("genai/opset24-attention-static-cache/model.onnx"));
        var r = AttentionDiscovery.Discover(m);
        Assert.That(r.Unrecognised, Is.Empty);
        Assert.That(r.Blocks, Has.Count.EqualTo(2));
        var b = r.Blocks[1];
        Assert.That((b.Form, b.NumHeads, b.KvNumHeads, b.HeadDim, b.Causal), Is.EqualTo(("onnx-attention", 4, 2, 16, true)));
        Assert.That((b.PastKey, b.PresentKey, b.KvLayout), Is.EqualTo(("key_cache.1", "updated_key_cache.1", "BSH-static")));
        Assert.That(b.Rope.Theta, Is.EqualTo(10000).Within(1));
        Assert.That(b.Rope.RotaryDim, Is.EqualTo(16));
        // not canonicalised (yet): kept with a reason
        var p = CanonicalizeAttentionTests.Canonicalize(m);
        Assert.That(p.Passes[0].Notes, Has.Some.Contains("layer 0 (onnx-attention) kept"));
        Assert.That(p.Passes[0].Rewrites, Is.Zero);
    }
}

public sealed class EncoderFormTests
{
    [Test]
    public void BertStyleSelfAttentionIsRecognisedAsNonCausalEncoder()
    {
        var m = LongCtx.Compiler.IR.Model.Create("bert", 17);
        var rw = new LongCtx.Compiler.IR.Rewriter(m);
        var g = m.Graph;
        var rng = new Random(1);
        LongCtx.Compiler.IR.Value W(string n, params long[] d) => rw.AddInitializer(g, n, LongCtx.Compiler.IR.Tensor.FromFloats(Enumerable.Range(0, (int)d.Aggregate(1L, (a, b) => a * b)).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray(), d));
        var x = rw.AddInput(g, "x", new(LongCtx.Compiler.IR.ElementType.Float, new LongCtx.Compiler.IR.Shape(1, 8, 32)));
        var mask = rw.AddInput(g, "attention_mask", new(LongCtx.Compiler.IR.ElementType.Float, new LongCtx.Compiler.IR.Shape(1, 1, 1, 8)));
        var split = rw.AddInitializer(g, "split", LongCtx.Compiler.IR.Tensor.FromInt64s([0, 0, 2, 16], 4));
        LongCtx.Compiler.IR.Value Heads(string p)
        {
            var proj = rw.Op(g, "Add", [rw.Op(g, "MatMul", [x, W(p + "_w", 32, 32)]), W(p + "_b", 32)]);
            return rw.Op(g, "Transpose", [rw.Op(g, "Reshape", [proj, split])], [LongCtx.Compiler.IR.Attr.Ints("perm", [0, 2, 1, 3])]);
        }
        var q = Heads("q"); var k = Heads("k"); var v = Heads("v");
        var scores = rw.Op(g, "MatMul", [q, rw.Op(g, "Transpose", [k], [LongCtx.Compiler.IR.Attr.Ints("perm", [0, 1, 3, 2])])]);
        var scaled = rw.Op(g, "Div", [scores, rw.AddInitializer(g, "sqrt_d", LongCtx.Compiler.IR.Tensor.Scalar(4f))]);
        var probs = rw.Op(g, "Softmax", [rw.Op(g, "Add", [scaled, mask])], [LongCtx.Compiler.IR.Attr.Int("axis", -1)]);
        var ctx = rw.Op(g, "MatMul", [probs, v]);
        var merged = rw.Op(g, "Reshape", [rw.Op(g, "Transpose", [ctx], [LongCtx.Compiler.IR.Attr.Ints("perm", [0, 2, 1, 3])]), rw.AddInitializer(g, "merge", LongCtx.Compiler.IR.Tensor.FromInt64s([0, 0, 32], 3))]);
        rw.AddOutput(g, rw.Op(g, "MatMul", [merged, W("o_w", 32, 32)], outputName: "y"));

        var r = AttentionDiscovery.Discover(m);
        Assert.That(r.Unrecognised, Is.Empty);
        var b = r.Blocks.Single();
        Assert.That((b.Form, b.NumHeads, b.KvNumHeads, b.HeadDim, b.Hidden, b.Causal, b.Rope.Present, b.PastKey), Is.EqualTo(("bert-encoder", 2, 2, 16, 32, false, false, (string?)null)));
        Assert.That(b.Scale, Is.EqualTo(0.25));
        Assert.That(b.MaskSource, Is.EqualTo("attention_mask"));
        var p = CanonicalizeAttentionTests.Canonicalize(m);
        Assert.That(p.Passes[0].Notes, Has.Some.Contains("layer 0 (bert-encoder) kept"));
        Assert.That(p.Passes[0].Rewrites, Is.Zero);
    }
}

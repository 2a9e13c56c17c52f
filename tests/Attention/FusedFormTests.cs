using LongCtx.Compiler.Analysis;
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

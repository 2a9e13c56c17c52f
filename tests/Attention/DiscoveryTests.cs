using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.OnnxIO;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

public sealed class DiscoveryTests
{
    [Test]
    public void RecallPublicTorchExport()
    {
        var m = OnnxReader.Load(Fixtures.Require("recall-public/model.onnx"));
        var r = AttentionDiscovery.Discover(m);
        Assert.That(r.Unrecognised, Is.Empty);
        Assert.That(r.Blocks, Has.Count.EqualTo(4));
        for (int i = 0; i < 4; i++)
        {
            var b = r.Blocks[i];
            Assert.That(b.Layer, Is.EqualTo(i));
            Assert.That(b.Form, Is.EqualTo("torch-matmul-softmax"));
            Assert.That((b.NumHeads, b.KvNumHeads, b.HeadDim, b.Hidden), Is.EqualTo((4, 2, 32, 128)));
            Assert.That(b.Causal, Is.True);
            Assert.That(b.Scale, Is.EqualTo(1 / Math.Sqrt(32)).Within(1e-6));
            Assert.That(b.Rope.Present && b.Rope.RotaryDim == 32 && !b.Rope.Interleaved && b.Rope.Source == "inv_freq", Is.True, b.Rope.ToString());
            Assert.That(b.Rope.Theta, Is.EqualTo(10000).Within(1));
            Assert.That((b.PastKey, b.PastValue, b.PresentKey, b.PresentValue), Is.EqualTo(($"past_key_values.{i}.key", $"past_key_values.{i}.value", $"present.{i}.key", $"present.{i}.value")));
            Assert.That(b.MaskSource, Is.EqualTo("attention_mask"));
            Assert.That(b.Match.Positions?.Name, Is.EqualTo("position_ids"));
            Assert.That(b.Match.OWeight, Is.Not.Null);
        }
    }
}

using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;

namespace LongCtx.Tests.Models;

[TestFixture]
public sealed class EncoderAndDemoTests
{
    private static float[] RunBert(InferenceSession s, long[] ids, long[] mask)
    {
        using var i = OrtValue.CreateTensorValueFromMemory(ids, [1, ids.Length]);
        using var m = OrtValue.CreateTensorValueFromMemory(mask, [1, mask.Length]);
        using var ro = new RunOptions();
        using var r = s.Run(ro, ["input_ids", "attention_mask"], [i, m], ["last_hidden_state"]);
        return r[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Test]
    public void Bert_encoder_is_bidirectional_and_respects_padding()
    {
        var c = new DecoderConfig(Layers: 2, Heads: 4, HeadDim: 16, Vocab: 100, MaxPositions: 32, Seed: 5);
        var bytes = OnnxWriter.ToBytes(BertEncoder.Build(c));
        Assert.That(OnnxWriter.ToBytes(BertEncoder.Build(c)), Is.EqualTo(bytes), "deterministic");
        using var s = new InferenceSession(bytes);
        int hidden = c.Heads * c.HeadDim;
        long[] ids = [3, 14, 15, 92, 65, 35], ones = [1, 1, 1, 1, 1, 1];
        var a = RunBert(s, ids, ones);
        // changing the LAST token changes the FIRST position's output: attention is not causal
        var b = RunBert(s, [3, 14, 15, 92, 65, 99], ones);
        Assert.That(TestDecoder.MaxDiff(a[..hidden], b[..hidden]), Is.GreaterThan(1e-3));
        // with the last token masked, its content no longer affects the other positions
        long[] padMask = [1, 1, 1, 1, 1, 0];
        var p1 = RunBert(s, ids, padMask);
        var p2 = RunBert(s, [3, 14, 15, 92, 65, 99], padMask);
        Assert.That(TestDecoder.MaxDiff(p1[..(5 * hidden)], p2[..(5 * hidden)]), Is.LessThan(1e-5));
        Assert.That(TestDecoder.MaxDiff(p1[..(5 * hidden)], a[..(5 * hidden)]), Is.GreaterThan(1e-3), "masking must matter");
    }

    [Test]
    public void Demo_model_writes_model_and_config_and_runs()
    {
        var dir = Path.Combine(Path.GetTempPath(), "longctx-demo-" + Guid.NewGuid().ToString("N"));
        try
        {
            DemoModel.WriteTo(dir);
            var cfg = File.ReadAllText(Path.Combine(dir, "config.json"));
            Assert.That(cfg, Does.Contain("\"num_key_value_heads\": 2").And.Contain("\"head_dim\": 16").And.Contain("\"vocab_size\": 128"));
            var bytes = File.ReadAllBytes(Path.Combine(dir, "model.onnx"));
            Assert.That(bytes, Is.EqualTo(OnnxWriter.ToBytes(DemoModel.Build())));
            using var h = new TestDecoder(bytes, threads: 0);
            var (diff, _, _) = h.CacheConsistency([1, 2, 3, 4, 5, 6, 7, 8], 5);
            Assert.That(diff, Is.LessThan(1e-4));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [Test]
    public void LccDemo_original_GroupQueryAttention_and_LongAttention_agree()
    {
        var dir = Path.Combine(Path.GetTempPath(), "longctx-lccdemo-" + Guid.NewGuid().ToString("N"));
        try
        {
            var r = LongCtx.Tests.Foundation.CliRunner.Run("demo", "--out", dir, "--max-new-tokens", "8");
            Assert.That(r.ExitCode, Is.Zero, r.Stdout + r.Stderr);
            Assert.That(r.Stdout, Does.Contain("2 blocks rewritten to GroupQueryAttention").And.Contain("2 blocks lowered to LongAttention")
                .And.Contain("OK: both compiled models produce the same tokens"));
            Assert.That(File.Exists(Path.Combine(dir, "compiled-longattention", "model.onnx")), Is.True);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}

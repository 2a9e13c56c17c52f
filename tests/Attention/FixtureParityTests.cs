using LongCtx.Compiler.OnnxIO;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

/// <summary>The default pipeline on the exported fixtures: what becomes GroupQueryAttention, what is kept and why, and parity.</summary>
public sealed class FixtureParityTests
{
    /// <summary>
    /// Form b: com.microsoft RotaryEmbedding + MultiHeadAttention (fp16, external data) becomes GQA with the model's own
    /// 2048-row cos/sin caches. Its mask subgraph supports prefill with an empty past and 1-token decode, which is what
    /// the parity run does (16-token prefill, 8 decode steps). Tolerance 2e-2: fp16.
    /// </summary>
    [Test]
    public void GenaiMhaRotaryBecomesGqaAndMatchesOriginal()
    {
        var path = Fixtures.Require("genai/llama-mha-rotary-fp16/model.onnx");
        var original = OnnxReader.Load(path);
        var canonical = OnnxReader.Load(path);
        var r = BuilderParityTests.Compile(canonical);
        var pass = r.Passes.Single(p => p.Pass == "canonicalize-attention");
        Assert.That(pass.Counts.GetValueOrDefault("blocks rewritten to GroupQueryAttention"), Is.EqualTo(2), string.Join("; ", pass.Notes));
        Assert.That(canonical.Graph.Nodes.Count(n => n.OpType is "MultiHeadAttention" or "RotaryEmbedding"), Is.Zero);
        var gqa = canonical.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention").ToList();
        Assert.That(gqa.Select(n => (n.IntAttr("num_heads", 0), n.IntAttr("kv_num_heads", 0), n.IntAttr("do_rotary", 0))), Has.All.EqualTo((1L, 1L, 1L)));
        Assert.That(gqa[0].Input(7)!.Const!.Dims, Is.EqualTo(new long[] { 2048, 8 }), "the model's own cos cache");
        Assert.That(canonical.Graph.Inputs.Select(v => (v.Name, v.Type)), Is.EqualTo(original.Graph.Inputs.Select(v => (v.Name, v.Type))));
        Assert.That(canonical.Graph.Outputs.Select(v => (v.Name, v.Type)), Is.EqualTo(original.Graph.Outputs.Select(v => (v.Name, v.Type))));

        var diff = Parity.Run(OnnxWriter.ToBytes(original), OnnxWriter.ToBytes(canonical), vocab: 32000);
        TestContext.Out.WriteLine("llama-mha-rotary-fp16: " + string.Join(", ", diff.Select(kv => $"{kv.Key} {kv.Value:E2}")));
        Assert.That(diff.Keys, Is.EquivalentTo(original.Graph.Outputs.Select(v => v.Name)));
        Assert.That(diff.Values, Has.All.LessThanOrEqualTo(2e-2));
    }

    /// <summary>The same through the CLI: <c>lcc compile</c> writes OUT/model.onnx (+ external data); that file matches the original.</summary>
    [Test]
    public void LccCompileOutputOfGenaiMhaMatchesOriginal()
    {
        var path = Fixtures.Require("genai/llama-mha-rotary-fp16/model.onnx");
        var dir = TestSupport.TempDir("attn-compile");
        var r = LongCtx.Tests.Foundation.CliRunner.Run("compile", path, "-o", Path.Combine(dir, "out"));
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Stderr);
        Assert.That(r.Stdout, Does.Contain("2 blocks rewritten to GroupQueryAttention"));
        var compiled = OnnxReader.Load(Path.Combine(dir, "out", "model.onnx"));
        Assert.That(compiled.Graph.Nodes.Count(n => n.OpType == "GroupQueryAttention"), Is.EqualTo(2));
        var diff = Parity.Run(OnnxWriter.ToBytes(OnnxReader.Load(path)), OnnxWriter.ToBytes(compiled), vocab: 32000);
        TestContext.Out.WriteLine("lcc compile llama-mha-rotary-fp16: " + string.Join(", ", diff.Select(kv => $"{kv.Key} {kv.Value:E2}")));
        Assert.That(diff.Values, Has.All.LessThanOrEqualTo(2e-2));
        Directory.Delete(dir, true);
    }

    /// <summary>Form d with the TensorScatter static cache: kept byte-identical, with the reason in the pass notes.</summary>
    [Test]
    public void Opset24StaticCacheIsKeptWithReason()
    {
        var path = Fixtures.Require("genai/opset24-attention-static-cache/model.onnx");
        var m = OnnxReader.Load(path);
        var r = CanonicalizeAttentionTests.Canonicalize(m);
        Assert.That(r.Passes[0].Counts.GetValueOrDefault("blocks kept"), Is.EqualTo(2));
        Assert.That(r.Passes[0].Notes, Has.Exactly(2).Contains("BSH-static cache").And.Contains("TensorScatter").And.Contains("same I/O contract"));
        Assert.That(r.Passes[0].Rewrites, Is.Zero);
    }
}

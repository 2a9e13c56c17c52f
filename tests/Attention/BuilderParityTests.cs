using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Models;
using LongCtx.Passes;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

/// <summary>
/// Every decoder builder variant: discovery reads every layer, and the default <c>lcc compile</c> pipeline's output
/// matches the original (logits and presents) over a 16-token prefill and 8 cached decode steps.
/// </summary>
public sealed class BuilderParityTests
{
    /// <param name="Canonical">whether every block is expected to end up as GroupQueryAttention with in-op RoPE</param>
    /// <param name="KeptBecause">for variants GQA cannot express: a fragment of the note the pass must write</param>
    public sealed record Variant(string Form, DecoderConfig Config, bool Canonical = true, string? KeptBecause = null)
    {
        public override string ToString() =>
            $"{Form} H{Config.Heads}/{Config.KvHeads} D{Config.HeadDim} R{Config.Rotary}{(Config.Interleaved ? " interleaved" : "")} theta {Config.RopeTheta} {Config.Dtype}";
    }

    private static readonly DecoderConfig Base = new(Layers: 2);

    public static IEnumerable<Variant> Variants()
    {
        // form a (torch.onnx.export style)
        yield return new("torch", Base);                                                            // GQA 4/2, head_dim 16
        yield return new("torch", Base with { KvHeads = 4, Seed = 2 });                             // MHA
        yield return new("torch", Base with { Heads = 4, KvHeads = 1, HeadDim = 32, Seed = 3 });    // MQA, head_dim 32
        yield return new("torch", Base with { Heads = 2, KvHeads = 1, HeadDim = 64, RopeTheta = 500000, Seed = 4 }); // head_dim 64, theta 5e5
        yield return new("torch", Base with { Dtype = ModelDtype.Float16, Seed = 5 });
        yield return new("torch", Base with { HeadDim = 32, RotaryDim = 16, Seed = 6 });           // partial rotary
        yield return new("torch", Base with { Interleaved = true, Seed = 7 });                     // GPT-J interleaved
        yield return new("torch", Base with { HeadDim = 32, RotaryDim = 16, Interleaved = true, RopeTheta = 1e6, Seed = 8 });
        yield return new("torch", Base with { RotaryDim = 8, Seed = 9 }, false, "rotary dim 8");    // ORT CPU GQA: rotary_dim/2 % 8
        yield return new("torch", Base with { HeadDim = 8, Hidden = 32, Seed = 10 }, false, "head_dim 8 is not a multiple of 16");
        // form c (already canonical)
        yield return new("gqa", Base);
        yield return new("gqa", Base with { HeadDim = 32, RotaryDim = 16, Interleaved = true, Seed = 11 });
        yield return new("gqa-separate-rope", Base);                                                 // RoPE folded into the op
        yield return new("gqa-separate-rope", Base with { RotaryDim = 8, Seed = 16 }, false, "rotary dim 8");
        yield return new("gqa-norope", Base, false);
        // form b (com.microsoft RotaryEmbedding + MultiHeadAttention)
        yield return new("mha", Base with { KvHeads = 4 });
        yield return new("mha", Base with { KvHeads = 4, HeadDim = 32, RotaryDim = 16, Interleaved = true, RopeTheta = 500000, Seed = 12 });
        yield return new("mha", Base with { KvHeads = 4, Dtype = ModelDtype.Float16, Seed = 13 });
        // form d (ONNX opset-24 Attention + RotaryEmbedding, Concat cache)
        yield return new("opset24", Base);
        yield return new("opset24", Base with { Heads = 4, KvHeads = 1, HeadDim = 32, RotaryDim = 16, Interleaved = true, Seed = 14 });
        yield return new("opset24", Base with { Dtype = ModelDtype.Float16, Seed = 15 });
    }

    internal static PipelineResult Compile(Model m) => PassManager.Run(m, Pipelines.Instantiate(Pipelines.Default));

    [TestCaseSource(nameof(Variants))]
    public void DiscoveredAndCanonicalFormMatchesOriginal(Variant v)
    {
        var original = Builders.Build(v.Form, v.Config);
        var found = AttentionDiscovery.Discover(original);
        Assert.That(found.Unrecognised, Is.Empty);
        Assert.That(found.Blocks.Select(b => (b.Layer, b.NumHeads, b.KvNumHeads, b.HeadDim, b.Causal)),
            Is.EqualTo(Enumerable.Range(0, v.Config.Layers).Select(l => (l, v.Config.Heads, v.Config.KvHeads, v.Config.HeadDim, true))));
        if (v.Form != "gqa-norope")
            foreach (var b in found.Blocks)
            {
                Assert.That((b.Rope.Present, b.Rope.RotaryDim, b.Rope.Interleaved), Is.EqualTo((true, v.Config.Rotary, v.Config.Interleaved)), b.Rope.ToString());
                Assert.That(b.Rope.Theta, Is.EqualTo(v.Config.RopeTheta).Within(v.Config.RopeTheta * (v.Config.Dtype == ModelDtype.Float16 ? 2e-2 : 1e-3)));
            }

        var canonical = OnnxReader.FromBytes(OnnxWriter.ToBytes(original));
        var r = Compile(canonical);
        var pass = r.Passes.Single(p => p.Pass == "canonicalize-attention");
        int gqa = canonical.Graph.Nodes.Count(n => n.OpType == "GroupQueryAttention" && n.Domain == "com.microsoft");
        if (v.Canonical)
        {
            Assert.That(gqa, Is.EqualTo(v.Config.Layers), string.Join("; ", pass.Notes));
            Assert.That(canonical.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention").Select(n => n.IntAttr("do_rotary", 0)), Has.All.EqualTo(1));
            Assert.That(canonical.Graph.Nodes.Count(n => n.OpType is "Softmax" or "MultiHeadAttention" or "Attention" or "RotaryEmbedding"), Is.Zero);
        }
        if (v.KeptBecause is not null)
            Assert.That(pass.Notes, Has.Some.Contains(v.KeptBecause));
        Assert.That(canonical.Graph.Inputs.Select(x => (x.Name, x.Type)), Is.EqualTo(original.Graph.Inputs.Select(x => (x.Name, x.Type))));
        Assert.That(canonical.Graph.Outputs.Select(x => (x.Name, x.Type)), Is.EqualTo(original.Graph.Outputs.Select(x => (x.Name, x.Type))));

        var diff = Parity.Run(OnnxWriter.ToBytes(original), OnnxWriter.ToBytes(canonical), v.Config.Vocab);
        TestContext.Out.WriteLine($"{v}: {gqa} GQA; " + string.Join(", ", diff.Select(kv => $"{kv.Key} {kv.Value:E2}")));
        Assert.That(diff.Keys, Is.EquivalentTo(original.Graph.Outputs.Select(x => x.Name)));
        Assert.That(diff.Values, Has.All.LessThanOrEqualTo(v.Config.Dtype == ModelDtype.Float16 ? 2e-2 : 1e-4));
    }
}

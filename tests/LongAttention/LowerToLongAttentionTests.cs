using LongCtx.Compiler;
using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Models;
using LongCtx.Passes;
using NUnit.Framework;
using Snapshooter;
using Snapshooter.NUnit;

namespace LongCtx.Tests.LongAttention;

/// <summary>
/// lower-attention on builder decoders: counts and attributes per pattern, the longctx.json runtime record, layer
/// selection, blocks kept with the reason (IsNotRewritten), bad options, a second run changing nothing, and
/// <c>lcc diff</c> snapshots per pattern.
/// </summary>
[TestFixture]
public sealed class LowerToLongAttentionTests
{
    /// <summary>Form c (canonical GroupQueryAttention), 2 layers, RoPE tables of 512 rows (trained context given as 256).</summary>
    private static readonly DecoderConfig Gqa = new(Layers: 2, MaxPositions: 512);

    internal static PipelineResult Lower(Model m, params (string Key, string Value)[] options)
    {
        var opts = options.ToDictionary(o => o.Key, o => o.Value);
        return PassManager.Run(m, Pipelines.Instantiate(Pipelines.WithMethods([], new PipelineStep("lower-attention", opts))));
    }

    private static PassReport Report(PipelineResult r) => r.Passes.Single(p => p.Pass == "lower-attention");

    private static List<Node> Long(Model m) => m.Graph.Nodes.Where(n => n.OpType == "LongAttention" && n.Domain == "longctx").ToList();
    private static int Gqas(Model m) => m.Graph.Nodes.Count(n => n.OpType == "GroupQueryAttention");

    [Test]
    public void Dense_LowersEveryLayer_SameInputsAndAttributes()
    {
        var m = Builders.Build("gqa", Gqa);
        var outputs = m.Graph.Outputs.Select(o => o.Name).ToList();
        var before = m.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention").Select(n => (n.Inputs.Select(i => i?.Name).ToList(), n.IntAttr("num_heads", 0), n.IntAttr("kv_num_heads", 0))).ToList();
        var r = Lower(m, ("pattern", "dense"));
        Assert.That(Report(r).Counts, Is.EquivalentTo(new Dictionary<string, int> { ["blocks lowered to LongAttention"] = 2 }));
        Assert.That(Gqas(m), Is.Zero);
        var la = Long(m);
        Assert.That(la.Select(n => (n.Inputs.Select(i => i?.Name).ToList(), n.IntAttr("num_heads", 0), n.IntAttr("kv_num_heads", 0))), Is.EqualTo(before));
        Assert.That(la.Select(n => n.StringAttr("pattern", "")), Is.All.EqualTo("dense"));
        Assert.That(la.All(n => n.IntAttr("do_rotary", 0) == 1 && n.Attribute("sink") is null && n.Attribute("chunk_size") is null));
        Assert.That(m.Opset("longctx"), Is.EqualTo(1));
        Assert.That(m.Graph.Outputs.Select(o => o.Name), Is.EqualTo(outputs), "the model's I/O contract is unchanged");
        Assert.That(la.SelectMany(n => n.Outputs.Skip(1)).All(o => o!.IsGraphOutput), "present key/value are the graph outputs");
        Assert.That(r.RuntimeConfig["max_context"], Is.EqualTo(512L), "dense reads RoPE rows by absolute position: bounded by the cos cache");
    }

    [Test]
    public void Streaming_DefaultsFromTrainedContext_RecordsEvictionPolicy()
    {
        var m = Builders.Build("gqa", Gqa);
        var r = Lower(m, ("pattern", "streaming"), ("trained-context", "256"));
        var rep = Report(r);
        Assert.That(rep.Counts["blocks lowered to LongAttention"], Is.EqualTo(2));
        Assert.That(rep.Notes, Has.Some.Contains("streaming: sink=4, window=252 = 256 - 4 (from trained context 256, --trained-context)"));
        Assert.That(Long(m).Select(n => (n.IntAttr("sink", -1), n.IntAttr("window", -1))), Is.All.EqualTo((4L, 252L)));
        var kv = (Dictionary<string, object?>)r.RuntimeConfig["kv"]!;
        Assert.That(kv, Is.EquivalentTo(new Dictionary<string, object?> { ["policy"] = "streaming", ["sink"] = 4, ["window"] = 252, ["max_positions"] = 512 }));
        Assert.That(r.RuntimeConfig["max_context"], Is.Null, "the evicting cache makes the context unbounded");
    }

    [Test]
    public void Dca_TruncatesRopeTables_ContextFollowsOption()
    {
        var m = Builders.Build("gqa", Gqa);
        var r = Lower(m, ("pattern", "dca"), ("trained-context", "256"), ("context", "4096"));
        var rep = Report(r);
        Assert.That(rep.Counts["blocks lowered to LongAttention"], Is.EqualTo(2));
        Assert.That(rep.Counts["cos/sin caches truncated"], Is.EqualTo(2), "one cos and one sin table, shared by both layers");
        Assert.That(rep.Notes, Has.Some.Contains("chunk=192 = 3/4 x 256, local=16 = 256/16 (ChunkLlama defaults"));
        foreach (var n in Long(m))
        {
            Assert.That((n.IntAttr("chunk_size", 0), n.IntAttr("local_size", 0), n.IntAttr("trained_context", 0)), Is.EqualTo((192L, 16L, 256L)));
            Assert.That(n.Input(7)!.Const!.Dims, Is.EqualTo(new long[] { 193, Gqa.Rotary / 2 }));
            // the first rows are the original table's, byte for byte
            var full = Gqa.RopeCaches().Cos;
            Assert.That(n.Input(7)!.Const!.ToFloats(), Is.EqualTo(full.Take(193 * Gqa.Rotary / 2).ToArray()));
        }
        Assert.That(m.Graph.Initializers.Count(v => v.Const?.Dims is [512, _]), Is.Zero, "the 512-row tables are gone");
        Assert.That(r.RuntimeConfig["max_context"], Is.EqualTo(4096L));
    }

    [Test]
    public void Layers_SelectsBlocks_PartialStreamingDoesNotEvict()
    {
        var m = Builders.Build("gqa", Gqa with { Layers = 3 });
        var r = Lower(m, ("pattern", "streaming"), ("sink", "2"), ("window", "64"), ("layers", "0,2"));
        var rep = Report(r);
        Assert.That(rep.Counts["blocks lowered to LongAttention"], Is.EqualTo(2));
        Assert.That(Gqas(m), Is.EqualTo(1));
        Assert.That(r.RuntimeConfig.ContainsKey("kv"), Is.False);
        Assert.That(rep.Notes, Has.Some.Contains("runtime cannot evict"));
        var layers = (List<Dictionary<string, object?>>)((Dictionary<string, object?>)r.RuntimeConfig["attention"]!)["layers"]!;
        Assert.That(layers.Select(l => (l["layer"], l["op"])), Is.EqualTo(new object[] { (0, "longctx.LongAttention"), (1, "com.microsoft.GroupQueryAttention"), (2, "longctx.LongAttention") }));
    }

    [Test]
    public void HeadDim24_IsNotRewritten_NoteNamesLayerAndReason()
    {
        var m = Builders.Build("gqa", new DecoderConfig(Layers: 2, Hidden: 48, Heads: 2, KvHeads: 1, HeadDim: 24, RotaryDim: 16));
        var r = Lower(m, ("pattern", "dense"));
        var rep = Report(r);
        Assert.That(rep.Rewrites, Is.Zero);
        Assert.That(Long(m), Is.Empty);
        Assert.That(rep.Counts["blocks kept"], Is.EqualTo(2));
        Assert.That(rep.Notes, Has.Some.EqualTo("layer 0 stays on GroupQueryAttention: head_dim 24: the kernel supports multiples of 16 up to 256"));
    }

    [Test]
    public void NonCanonicalAttention_IsNotRewritten_NoteNamesLayer()
    {
        // torch export with head_dim 8: canonicalize-attention keeps the MatMul/Softmax block, so there is no GQA to lower
        var m = Builders.Build("torch", new DecoderConfig(Layers: 2, HeadDim: 8, Hidden: 32));
        var r = Lower(m, ("pattern", "streaming"), ("window", "32"));
        var rep = Report(r);
        Assert.That(rep.Rewrites, Is.Zero);
        Assert.That(Long(m), Is.Empty);
        Assert.That(rep.Notes, Has.Some.EqualTo("layer 1 stays on its torch-matmul-softmax attention: not canonical GroupQueryAttention (canonicalize-attention kept it)"));
        Assert.That(r.RuntimeConfig.ContainsKey("kv"), Is.False);
    }

    [Test]
    public void ExternalRope_IsNotRewritten()
    {
        // rotary dim 8: canonicalize-attention cannot fold the RotaryEmbedding nodes into GQA, so RoPE stays outside the op
        var m = Builders.Build("gqa-separate-rope", Gqa with { RotaryDim = 8 });
        var rep = Report(Lower(m, ("pattern", "dense")));
        Assert.That(Long(m), Is.Empty);
        Assert.That(rep.Notes, Has.Some.Contains("RoPE is applied outside the op"));
    }

    [Test]
    public void SecondRun_ChangesNothing()
    {
        var m = Builders.Build("gqa", Gqa);
        Lower(m, ("pattern", "dca"), ("trained-context", "256"));
        var bytes = OnnxWriter.ToBytes(m);
        var again = PassManager.Run(m, Pipelines.Instantiate([new PipelineStep("lower-attention", new Dictionary<string, string> { ["pattern"] = "dca", ["trained-context"] = "256" })]));
        Assert.That(again.Passes[0].Rewrites, Is.Zero);
        Assert.That(again.Passes[0].Counts["blocks already LongAttention"], Is.EqualTo(2));
        Assert.That(OnnxWriter.ToBytes(m), Is.EqualTo(bytes));
    }

    [TestCase("sparse", "unknown pattern; valid: dense, streaming, dca")]
    [TestCase("streaming", "unknown option 'chunk'; valid for streaming: sink, window, layers", "chunk", "8")]
    [TestCase("streaming", "sink 4 + window 300 = 304 exceed the trained context 256", "window", "300")]
    [TestCase("dca", "chunk 512 exceeds the trained context 256", "chunk", "512")]
    [TestCase("dca", "local=192 must be in [1, chunk) = [1, 192)", "local", "192")]
    [TestCase("dense", "'x' is not a layer or a range", "layers", "0,x")]
    [TestCase("dense", "the model has no attention layer 7 (its layers are 0-", "layers", "0,7")]
    public void BadOptions_AreOneLineErrors(string pattern, string message, string? key = null, string? value = null)
    {
        var o = new List<(string, string)> { ("pattern", pattern), ("trained-context", "256") };
        if (key is not null) o.Add((key, value!));
        var ex = Assert.Throws<CompileException>(() => Lower(Builders.Build("gqa", Gqa), o.ToArray()))!;
        Assert.That(ex.Message, Does.Contain(message));
        Assert.That(ex.Message, Does.Not.Contain("\n"));
    }

    [Test]
    public void StreamingWindowBeyondRopeRows_KeepsBlocksWithReason()
    {
        var m = Builders.Build("gqa", Gqa with { MaxPositions = 64 });
        var rep = Report(Lower(m, ("pattern", "streaming"), ("window", "100"), ("trained-context", "256")));
        Assert.That(Long(m), Is.Empty);
        Assert.That(rep.Notes, Has.Some.Contains("the cos cache has 64 rows; streaming with sink 4 + window 100 indexes 104 positions"));
    }

    private static string Diff(string pattern, params (string, string)[] extra)
    {
        var c = new DecoderConfig(Layers: 1, Vocab: 32, MaxPositions: 64);
        var canonical = Builders.Build("gqa", c);
        PassManager.Run(canonical, Pipelines.Instantiate(Pipelines.Default));
        var lowered = Builders.Build("gqa", c);
        var r = Lower(lowered, [("pattern", pattern), ("trained-context", "32"), .. extra]);
        Assert.That(Report(r).Rewrites, Is.Positive, string.Join("; ", Report(r).Notes));
        return ModelDiff.Compare(canonical, lowered).ToText();
    }

    [TestCase("dense"), TestCase("streaming"), TestCase("dca")]
    public void DiffSnapshot(string pattern) => Snapshot.Match(Diff(pattern), SnapshotNameExtension.Create(pattern));
}

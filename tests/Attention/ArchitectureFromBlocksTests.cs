using System.Text.Json;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

public sealed class ArchitectureFromBlocksTests
{
    private static readonly DecoderConfig C = new(Layers: 3, Hidden: 96, Heads: 6, KvHeads: 2, HeadDim: 32, Vocab: 200, RopeTheta: 500000, RotaryDim: 16, MaxPositions: 512);

    private static ArchitectureCard Card(LongCtx.Compiler.IR.Model m)
    {
        var card = ArchitectureCard.FromBlocks(m, AttentionDiscovery.Discover(m).Blocks, out var why);
        Assert.That(why, Is.Null);
        return card!;
    }

    [Test]
    public void CardFromDiscoveryKnowsHeadsAndHidden()
    {
        foreach (var form in new[] { "torch", "gqa", "opset24" })
        {
            var card = Card(Builders.Build(form, C));
            Assert.That((card.Layers, card.Hidden, card.Heads, card.KvHeads, card.HeadDim, card.Vocab, card.KvWidth), Is.EqualTo((3, (int?)96, (int?)6, (int?)2, (int?)32, (int?)200, 64)), form);
            Assert.That((card.RopeTheta, card.RotaryDim), Is.EqualTo(((double?)500000, (int?)16)), form);
            var io = ArchitectureCard.FromModelIo(Builders.Build(form, C), out _)!;
            long tables = form == "torch" ? 0 : 2L * C.MaxPositions * C.Rotary / 2; // cos + sin caches are not weights
            Assert.That((card.Parameters, card.ParameterBytes, card.EmbeddingParameters), Is.EqualTo((io.Parameters - tables, io.ParameterBytes - 4 * tables, io.EmbeddingParameters)), form);
            Assert.That(LongCtx.Compiler.Analysis.CostModel.Compute(card, new CostOptions()).PrefillAttentionFlops, Is.EqualTo(2.0 * 3 * 6 * 32 * 32768.0 * 32768.0), form);
        }
        // torch form: RoPE from inv_freq, no cos cache, so no trained context; cos-cache forms give it
        Assert.That(Card(Builders.Build("torch", C)).TrainedContext, Is.Null);
        Assert.That(Card(Builders.Build("gqa", C)).TrainedContext, Is.EqualTo(512));
        var stat = Card(Builders.Build("opset24-static", C));
        Assert.That((stat.StaticCacheLength, stat.KvWidth, stat.Heads), Is.EqualTo(((int?)512, 64, (int?)6)));
    }

    /// <summary>After canonicalisation the 32768-row GQA cos cache is lcc's, not the model's: the card must not call it the trained context.</summary>
    [Test]
    public void CompiledModelKeepsTrainedContextAndWeightCount()
    {
        var original = Builders.Build("torch", C);
        var canonical = Builders.Build("torch", C);
        BuilderParityTests.Compile(canonical);
        var card = Card(canonical);
        Assert.That(card.TrainedContext, Is.Null, "the torch export has no cos cache: unknown");
        Assert.That(card.Sources, Has.Some.Contains("longctx.original_max_positions = unknown"));
        Assert.That(card.CosCacheLength, Is.EqualTo(32768));
        // the generated 2 x 32768 x 8 RoPE tables are not parameters; the pass adds two int64 scalars (axes, one) for seqlens_k
        Assert.That(card.Parameters, Is.EqualTo(Card(original).Parameters + 2), "generated RoPE tables are not parameters");
        Assert.That((card.Heads, card.KvHeads, card.HeadDim, card.Hidden), Is.EqualTo(((int?)6, (int?)2, (int?)32, (int?)96)));
        var gqa = Builders.Build("mha", C with { KvHeads = 6 });
        BuilderParityTests.Compile(gqa);
        Assert.That(Card(gqa).TrainedContext, Is.EqualTo(512), "forms b/d keep the model's own cache");
    }

    [Test]
    public void EncoderHasNoCard()
    {
        var m = Builders.Build("bert", C);
        var blocks = AttentionDiscovery.Discover(m).Blocks;
        Assert.That(blocks.Select(b => (b.Form, b.NumHeads, b.KvNumHeads, b.HeadDim, b.Causal, b.PastKey, b.Rope.Present)),
            Is.EqualTo(Enumerable.Repeat(("bert-encoder", 6, 6, 32, false, (string?)null, false), C.Layers)), "form e: HF BERT's K^T = Transpose(Reshape(k), [0,2,3,1])");
        Assert.That(ArchitectureCard.FromBlocks(m, blocks, out var why), Is.Null);
        Assert.That(why, Does.Contain("without a KV cache"));
    }

    [Test]
    public void RecallPublicCardFromBlocksMatchesIoCard()
    {
        var path = Fixtures.Require("recall-public/model.onnx");
        var m = OnnxReader.Load(path);
        var card = Card(m);
        var io = ArchitectureCard.FromModelIo(m, out _)!;
        Assert.That((card.Layers, card.Hidden, card.Heads, card.KvHeads, card.HeadDim, card.Vocab, card.RopeTheta, card.RotaryDim, card.TrainedContext),
            Is.EqualTo((4, (int?)128, (int?)4, (int?)2, (int?)32, (int?)256, (double?)10000, (int?)32, (int?)256)));
        Assert.That(card with { Sources = io.Sources }, Is.EqualTo(io), "same numbers from both routes");
    }

    [Test]
    public void InspectJsonUsesDiscoveryCardAndListsBlocks()
    {
        var dir = TestSupport.TempDir("attn-inspect");
        var path = Path.Combine(dir, "model.onnx");
        OnnxWriter.Save(Builders.Build("torch", C), path, new());
        var (rc, json, err) = Run("inspect", path, "--json");
        Assert.That(rc, Is.EqualTo(0), err);
        using var doc = JsonDocument.Parse(json);
        var arch = doc.RootElement.GetProperty("architecture");
        Assert.That((arch.GetProperty("heads").GetInt32(), arch.GetProperty("hidden").GetInt32()), Is.EqualTo((6, 96)), "heads are unknown to the I/O-only card");
        var blocks = doc.RootElement.GetProperty("attention").GetProperty("blocks");
        Assert.That(blocks.GetArrayLength(), Is.EqualTo(3));
        var b0 = blocks[0];
        Assert.That(b0.GetProperty("form").GetString(), Is.EqualTo("torch-matmul-softmax"));
        Assert.That(b0.GetProperty("rope").GetProperty("rotary_dim").GetInt32(), Is.EqualTo(16));
        Assert.That(b0.TryGetProperty("match", out _), Is.False, "IR handles stay out of JSON");
        Assert.That(doc.RootElement.GetProperty("cost").GetProperty("prefill_attention_flops").ValueKind, Is.EqualTo(JsonValueKind.Number));
        var (rcT, text, _) = Run("inspect", path);
        Assert.That(rcT, Is.EqualTo(0));
        Assert.That(text, Does.Contain("layers 3   hidden 96   heads 6   kv heads 2   head_dim 32   vocab 200"));
        Directory.Delete(dir, true);
    }

    private static (int, string, string) Run(params string[] args)
    {
        var r = LongCtx.Tests.Foundation.CliRunner.Run(args);
        return (r.ExitCode, r.Stdout, r.Stderr);
    }
}

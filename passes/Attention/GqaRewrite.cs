using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;
using LongCtx.Compiler.Schemas;

namespace LongCtx.Passes.Attention;

/// <summary>What a block-to-GQA rule's Check established, for its Rewrite.</summary>
/// <param name="Block">the recognised block (IR handles in <c>Block.Match</c>)</param>
/// <param name="Element">q/k/v element type (float32 or float16)</param>
/// <param name="GenerateCaches">true: build [MaxPositions, R/2] cos/sin caches from the recovered inv_freq (form a);
/// false: GQA reads the model's own caches (forms b, d)</param>
/// <param name="MaxPositions">rows of generated caches (option max-positions, or the longest of 32k, the model's own
/// length and the target context)</param>
/// <param name="FeedPositions">option positions=input: position_ids feed GQA instead of seqlens_k</param>
internal sealed record GqaMatch(AttentionBlock Block, ElementType Element, bool GenerateCaches, int MaxPositions, bool FeedPositions);

/// <summary>
/// The checks and the rewrite the three block-to-GroupQueryAttention rules share (forms a, b, d): one
/// com.microsoft.GroupQueryAttention (Ainslie et al. 2023, arXiv:2305.13245) with RoPE inside the op
/// (Su et al. 2021, arXiv:2104.09864), seqlens_k = ReduceSum(attention_mask, axis 1) - 1 (int32) and
/// total_sequence_length = attention_mask.shape[1], shared by all layers.
/// </summary>
internal static class GqaRewrite
{
    public const string Counter = "blocks rewritten to GroupQueryAttention";
    public const int DefaultMaxPositions = 32768;
    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention;

    /// <summary>Why GQA cannot express <paramref name="b"/> whatever its form (checked first, in this order), or null.</summary>
    public static string? CheckCommon(AttentionBlock b, RuleContext ctx)
    {
        var m = b.Match;
        if (b.KvLayout != "BHSD")
            return $"the {b.KvLayout} cache (a fixed [batch, max_seq, kv_heads*head_dim] buffer updated by TensorScatter at write_indices, read up to nonpad_kv_seqlen) "
                 + "has no GroupQueryAttention equivalent with the same I/O contract (GQA's cache is [batch, kv_heads, seq, head_dim] and is written at seqlens_k, not at a caller-chosen index)";
        if (b.HeadDim % 16 != 0) return $"head_dim {b.HeadDim} is not a multiple of 16 (ORT CPU GroupQueryAttention)";
        if (!b.Causal) return "not causal (GroupQueryAttention is causal only)";
        if (m.Query is null || m.Key is null || m.ValueIn is null) return "q/k/v projections not found";
        if ((m.PastKey is null) != (m.PresentKey is null) || (m.PastValue is null) != (m.PresentValue is null)) return "cache inputs and outputs do not pair up";
        if (b.MaskSource is null || ctx.Model.Graph.Input(b.MaskSource) is not { } mask) return "no attention_mask input to derive seqlens_k from";
        if (mask.Type is { Shape.Rank: not 2 } || mask.Type?.Element is not (ElementType.Int64 or ElementType.Int32 or null))
            return $"mask input {mask.Name} is not an integer [batch, total_length] tensor";
        if (AttentionSite.ElementOf(b) is not (ElementType.Float or ElementType.Float16)) return "element type is neither float32 nor float16";
        if (b.Rope.Present)
        {
            if (b.Rope.RotaryDim / 2 % 8 != 0)
                return $"rotary dim {b.Rope.RotaryDim}: ORT CPU GroupQueryAttention needs rotary_dim/2 (the cos cache width) to be a multiple of 8";
            if (b.Rope.RotaryDim > b.HeadDim) return $"rotary dim {b.Rope.RotaryDim} exceeds head_dim {b.HeadDim}";
        }
        if (FeedPositions(b, ctx) && m.Positions is null) return "positions=input but the RoPE positions do not come from a graph input";
        return null;
    }

    public static bool FeedPositions(AttentionBlock b, RuleContext ctx) => b.Rope.Present && ctx.Option("positions", "seqlens") == "input";

    /// <summary>Forms b and d: RoPE must come from constant [maxPos, R/2] caches GQA can read as they are, the same for q and k.</summary>
    public static string? CheckFusedRope(AttentionBlock b, ElementType elem)
    {
        if (!b.Rope.Present) return null;
        var cos = Consts.Of(b.Match.CosCache);
        var sin = Consts.Of(b.Match.SinCache);
        if (cos is not { Dims.Length: 2 } || sin is not { Dims.Length: 2 } || !cos.Dims.SequenceEqual(sin.Dims))
            return "RoPE cos/sin are not constant [max_positions, rotary_dim/2] caches";
        if (cos.Element != elem) return $"RoPE caches are {cos.Element} but q/k are {elem} (GQA needs the same type)";
        if (cos.Dims[1] * 2 != b.Rope.RotaryDim) return $"cos cache width {cos.Dims[1]} does not match rotary dim {b.Rope.RotaryDim}";
        foreach (var rot in RotaryNodes(b))
        {
            if (rot.FloatAttr("scale", 1) != 1) return $"RotaryEmbedding '{rot.Name}' has scale {rot.FloatAttr("scale", 1)}";
            if (rot.IntAttr("is_packed_batching", 0) != 0) return $"RotaryEmbedding '{rot.Name}' uses packed batching";
            if ((rot.IntAttr("interleaved", 0) == 1) != b.Rope.Interleaved) return "q and k RotaryEmbedding disagree on interleaving";
            if (RotCos(rot) != b.Match.CosCache || RotSin(rot) != b.Match.SinCache) return "q and k RotaryEmbedding use different cos/sin caches";
        }
        return null;
    }

    /// <summary>The RotaryEmbedding nodes feeding q and k of a fused block.</summary>
    public static IEnumerable<Node> RotaryNodes(AttentionBlock b)
    {
        var n = b.Match.Anchor;
        var s = OpSchemas.Of(n)!;
        var (q, k) = s == OpSchemas.Attention ? ("Q", "K") : ("query", "key");
        foreach (var v in new[] { s.Input(n, q), s.Input(n, k) })
            if (Noise.Skip(v)?.Producer is { OpType: "RotaryEmbedding" } r) yield return r;
    }

    public static Value? RotCos(Node rot) => OpSchemas.Of(rot)!.Input(rot, "cos_cache");
    public static Value? RotSin(Node rot) => OpSchemas.Of(rot)!.Input(rot, "sin_cache");

    /// <summary>The match record for a block that passed all checks.</summary>
    public static GqaMatch Matched(AttentionBlock b, RuleContext ctx, bool generateCaches)
    {
        bool generate = generateCaches && b.Rope.Present;
        // rows: at least 32k, the model's own length, and the pipeline's target context (lcc compile --context)
        int maxPos = generate ? int.Parse(ctx.Option("max-positions",
            new[] { DefaultMaxPositions, b.Rope.OriginalMaxPositions ?? 0, ctx.TargetContext ?? 0 }.Max().ToString())) : 0;
        return new GqaMatch(b, AttentionSite.ElementOf(b), generate, maxPos, FeedPositions(b, ctx));
    }

    private sealed record MaskLengths(Value Seqlens, Value Total);
    private sealed record RopeCachePair(Value Cos, Value Sin);

    /// <summary>Replaces the block by one GroupQueryAttention (returned); the replaced nodes die and the driver erases them.</summary>
    public static Node Rewrite(IRewriter rw, GqaMatch match)
    {
        var model = rw.Model;
        var g = model.Graph;
        var b = match.Block;
        var m = b.Match;
        var elem = match.Element;
        rw.EnsureOpset("com.microsoft", 1);

        var mask = g.Input(b.MaskSource!)!;
        var lengths = rw.Shared("seqlens:" + mask.Name, () =>
        {
            // seqlens_k[b] = sum(mask[b, :]) - 1 ; total_sequence_length = mask.shape[1]
            Value sum = model.Opset("") >= 13
                ? rw.Op(g, "ReduceSum", [mask, rw.AddInitializer(g, "gqa_axes_1", Tensor.FromInt64s([1], 1))], [Attr.Int("keepdims", 0)], outputName: "gqa_mask_sum")
                : rw.Op(g, "ReduceSum", [mask], [Attr.Ints("axes", [1]), Attr.Int("keepdims", 0)], outputName: "gqa_mask_sum");
            var one = rw.AddInitializer(g, "gqa_one", mask.Type?.Element == ElementType.Int32 ? Tensor.FromInt32s([1]) : Tensor.Scalar(1L));
            var minus = rw.Op(g, "Sub", [sum, one], outputName: "gqa_seqlens_minus_one");
            var seqlens = rw.Op(g, "Cast", [minus], [Attr.Int("to", (long)ElementType.Int32)], outputName: "gqa_seqlens_k");
            var shape = rw.Op(g, "Shape", [mask], outputName: "gqa_mask_shape");
            var len = rw.Op(g, "Gather", [shape, rw.AddInitializer(g, "gqa_index_1", new Tensor(ElementType.Int64, [], new InMemorySource(BitConverter.GetBytes(1L))))], [Attr.Int("axis", 0)], outputName: "gqa_total_length64");
            return new MaskLengths(seqlens, rw.Op(g, "Cast", [len], [Attr.Int("to", (long)ElementType.Int32)], outputName: "gqa_total_sequence_length"));
        });

        Value? cos = null, sin = null;
        if (b.Rope.Present && !match.GenerateCaches)
        {
            // forms b and d: GQA reads the model's own [maxPos, R/2] caches (same values, same dtype, same length)
            cos = m.CosCache;
            sin = m.SinCache;
        }
        else if (b.Rope.Present)
        {
            // the generated caches are longer than what the model was trained on: say so, so that lcc inspect does
            // not take their length for the trained context
            rw.SetMetadata(CanonicalizeAttention.OriginalMaxPositionsKey, b.Rope.OriginalMaxPositions?.ToString() ?? "unknown");
            var inv = m.InvFreq!;
            string key = $"rope:{match.MaxPositions}:{elem}:{m.RopeMultiplier:R}:{string.Join(",", inv.Select(f => BitConverter.SingleToInt32Bits(f)))}";
            var caches = rw.Shared(key, () =>
            {
                var (c, s) = RopeCaches(inv, match.MaxPositions, elem, m.RopeMultiplier);
                var cv = rw.AddInitializer(g, "gqa_cos_cache", c);
                return new RopeCachePair(cv, rw.AddInitializer(g, "gqa_sin_cache", s));
            });
            (cos, sin) = (caches.Cos, caches.Sin);
        }
        var inputs = Gqa.Operands(("query", m.Query), ("key", m.Key), ("value", m.ValueIn), ("past_key", m.PastKey), ("past_value", m.PastValue),
            ("seqlens_k", lengths.Seqlens), ("total_sequence_length", lengths.Total), ("cos_cache", cos), ("sin_cache", sin),
            ("position_ids", match.FeedPositions ? m.Positions : null));
        var attrs = new List<Attr>
        {
            Attr.Int("num_heads", b.NumHeads),
            Attr.Int("kv_num_heads", b.KvNumHeads),
            Attr.Float("scale", (float)b.Scale),
            Attr.Int("do_rotary", b.Rope.Present ? 1 : 0),
            Attr.Int("rotary_interleaved", b.Rope.Interleaved ? 1 : 0),
        };
        string prefix = $"layers.{b.Layer}.gqa";
        var gqa = rw.AddNode(g, Gqa.OpType, inputs, [prefix + ".output", prefix + ".present_key", prefix + ".present_value"],
            attrs, domain: Gqa.Domain, name: $"/layers.{b.Layer}/GroupQueryAttention");
        var output = Gqa.Output(gqa, "output")!;
        rw.SetType(output, m.Output.Type);
        rw.ReplaceAllUsesWith(m.Output, output);
        if (m.PresentKey is not null) rw.ReplaceAllUsesWith(m.PresentKey, Gqa.Output(gqa, "present_key")!);
        if (m.PresentValue is not null) rw.ReplaceAllUsesWith(m.PresentValue, Gqa.Output(gqa, "present_value")!);
        return gqa;
    }

    /// <summary>
    /// cos/sin caches [maxPos, d/2]: cache[p, i] = cos(p * inv_freq[i]) * multiplier, each step rounded to float32 as the
    /// exported graph computes it (so the rewrite stays exact when a rope pass scaled the frequencies or inserted a multiplier).
    /// </summary>
    internal static (Tensor Cos, Tensor Sin) RopeCaches(float[] invFreq, int maxPos, ElementType elem, double multiplier = 1.0) =>
        Compiler.Analysis.Rope.RopeCacheTables.Float32Chain(invFreq, maxPos, elem, multiplier);
}

using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;

namespace LongCtx.Passes;

/// <summary>
/// Rewrites every recognised decoder attention block into the canonical form the rest of the compiler targets:
/// one <c>com.microsoft.GroupQueryAttention</c> (Ainslie et al. 2023, "GQA", arXiv:2305.13245) with RoPE applied
/// inside the op from cos/sin cache initializers (Su et al. 2021, arXiv:2104.09864). Exact up to float reassociation.
/// <code>
///   x@Wq ─ Reshape ─ Transpose ─ RoPE ─┐                           x@Wq ──┐
///   x@Wk ─ Reshape ─ Transpose ─ RoPE ─ Concat(past_k) ─ present.k   x@Wk ──┤
///                           repeat_kv ─ MatMul ─ Div ─ Add(mask)  ==>  x@Wv ──┼─ GroupQueryAttention ─ o ─ @Wo
///   x@Wv ─ Reshape ─ Transpose ─ Concat(past_v) ─ present.v         past_k/v ┤      ├ present.k
///                repeat_kv ─ Softmax ─ MatMul ─ Transpose ─ Reshape ─ o ─ @Wo     seqlens_k, total_len, cos, sin ┘      └ present.v
/// </code>
/// seqlens_k = ReduceSum(attention_mask, axis 1) - 1 (int32) and total_sequence_length = attention_mask.shape[1]: the
/// causal + padding mask the exporter built from attention_mask is what GQA derives from them, for masks that are
/// ones followed by zeros per row (no left padding). RoPE positions come from seqlens_k (past length + i), which
/// equals the position_ids input whenever the caller passes position_ids = arange(past, past + S), the usual contract;
/// option <c>positions=input</c> feeds position_ids to GQA instead (ORT CPU only). The model's inputs and outputs keep
/// their names, dtypes and meaning. Blocks GQA cannot express stay as they are, with a note saying why; the
/// replaced subgraphs become dead and <c>dce</c> removes them (so this pass must run before dce).
/// Options: <c>max-positions</c> (rows of the cos/sin caches, default 32768 or the model's own cache length if larger),
/// <c>positions</c> (seqlens | input).
/// </summary>
public sealed class CanonicalizeAttention : IPass
{
    public string Name => "canonicalize-attention";
    public string Description => "rewrite recognised attention blocks into com.microsoft.GroupQueryAttention with in-op RoPE";
    public bool IsExact => true;

    public const int DefaultMaxPositions = 32768;

    public void Run(Model model, PassContext ctx)
    {
        var found = AttentionDiscovery.Discover(model);
        foreach (var u in found.Unrecognised) ctx.Note("not recognised: " + u);
        var rw = ctx.Rewriter;
        var g = model.Graph;
        var shared = new Dictionary<string, Value>(StringComparer.Ordinal);
        bool changed = false;
        foreach (var block in found.Blocks)
        {
            ctx.Cancellation.ThrowIfCancellationRequested();
            if (block.Form == "ms-gqa") { ctx.Count("blocks already canonical"); continue; }
            if (Check(model, block, ctx) is { } reason)
            {
                ctx.Note($"layer {block.Layer} ({block.Form}) kept: {reason}");
                ctx.Count("blocks kept");
                continue;
            }
            Rewrite(model, block, ctx, shared);
            ctx.Count("blocks rewritten to GroupQueryAttention");
            changed = true;
        }
        if (changed) rw.SortTopologically(g);
    }

    /// <summary>Why GQA cannot express <paramref name="b"/>, or null.</summary>
    private static string? Check(Model model, AttentionBlock b, PassContext ctx)
    {
        var m = b.Match;
        if (b.Form != TorchAttentionForm.Name) return $"no canonical rewrite for form {b.Form} yet";
        if (b.HeadDim % 16 != 0) return $"head_dim {b.HeadDim} is not a multiple of 16 (ORT CPU GroupQueryAttention)";
        if (!b.Causal) return "not causal (GroupQueryAttention is causal only)";
        if (m.Query is null || m.Key is null || m.ValueIn is null) return "q/k/v projections not found";
        if ((m.PastKey is null) != (m.PresentKey is null) || (m.PastValue is null) != (m.PresentValue is null)) return "cache inputs and outputs do not pair up";
        if (b.MaskSource is null || model.Graph.Input(b.MaskSource) is not { } mask) return "no attention_mask input to derive seqlens_k from";
        if (mask.Type is { Shape.Rank: not 2 } || mask.Type?.Element is not (ElementType.Int64 or ElementType.Int32 or null))
            return $"mask input {mask.Name} is not an integer [batch, total_length] tensor";
        if (b.Rope.Present && m.InvFreq is null) return "RoPE frequencies not recovered";
        if (ElementOf(b) is not (ElementType.Float or ElementType.Float16)) return "element type is neither float32 nor float16";
        if (ctx.Option("positions", "seqlens") == "input" && b.Rope.Present && m.Positions is null) return "positions=input but the RoPE positions do not come from a graph input";
        return null;
    }

    private static ElementType ElementOf(AttentionBlock b) =>
        b.Match.PastKey?.Type?.Element ?? (b.Match.QWeight?.Const ?? Compiler.Patterns.Consts.Of(b.Match.QWeight))?.Element ?? ElementType.Float;

    private static void Rewrite(Model model, AttentionBlock b, PassContext ctx, Dictionary<string, Value> shared)
    {
        var rw = ctx.Rewriter;
        var g = model.Graph;
        var m = b.Match;
        var elem = ElementOf(b);
        rw.EnsureOpset("com.microsoft", 1);

        var mask = g.Input(b.MaskSource!)!;
        if (!shared.TryGetValue("seqlens:" + mask.Name, out var seqlens))
        {
            // seqlens_k[b] = sum(mask[b, :]) - 1 ; total_sequence_length = mask.shape[1]
            Value sum = model.Opset("") >= 13
                ? rw.Op(g, "ReduceSum", [mask, rw.AddInitializer(g, "gqa_axes_1", Tensor.FromInt64s([1], 1))], [Attr.Int("keepdims", 0)], outputName: "gqa_mask_sum")
                : rw.Op(g, "ReduceSum", [mask], [Attr.Ints("axes", [1]), Attr.Int("keepdims", 0)], outputName: "gqa_mask_sum");
            var one = rw.AddInitializer(g, "gqa_one", mask.Type?.Element == ElementType.Int32 ? Tensor.FromInt32s([1]) : Tensor.Scalar(1L));
            var minus = rw.Op(g, "Sub", [sum, one], outputName: "gqa_seqlens_minus_one");
            seqlens = rw.Op(g, "Cast", [minus], [Attr.Int("to", (long)ElementType.Int32)], outputName: "gqa_seqlens_k");
            var shape = rw.Op(g, "Shape", [mask], outputName: "gqa_mask_shape");
            var len = rw.Op(g, "Gather", [shape, rw.AddInitializer(g, "gqa_index_1", new Tensor(ElementType.Int64, [], new InMemorySource(BitConverter.GetBytes(1L))))], [Attr.Int("axis", 0)], outputName: "gqa_total_length64");
            shared["seqlens:" + mask.Name] = seqlens;
            shared["total:" + mask.Name] = rw.Op(g, "Cast", [len], [Attr.Int("to", (long)ElementType.Int32)], outputName: "gqa_total_sequence_length");
        }
        var total = shared["total:" + mask.Name];

        Value? cos = null, sin = null;
        if (b.Rope.Present)
        {
            int maxPos = int.Parse(ctx.Option("max-positions", Math.Max(DefaultMaxPositions, b.Rope.OriginalMaxPositions ?? 0).ToString()));
            var inv = m.InvFreq!;
            string key = $"rope:{maxPos}:{elem}:{m.RopeMultiplier:R}:{string.Join(",", inv.Select(f => BitConverter.SingleToInt32Bits(f)))}";
            if (!shared.TryGetValue(key, out cos))
            {
                var (c, s) = RopeCaches(inv, maxPos, elem, m.RopeMultiplier);
                cos = rw.AddInitializer(g, "gqa_cos_cache", c);
                sin = rw.AddInitializer(g, "gqa_sin_cache", s);
                shared[key] = cos;
                shared[key + ":sin"] = sin;
            }
            sin = shared[key + ":sin"];
        }
        bool feedPositions = b.Rope.Present && ctx.Option("positions", "seqlens") == "input";
        var inputs = new List<Value?> { m.Query, m.Key, m.ValueIn, m.PastKey, m.PastValue, seqlens, total, cos, sin };
        if (feedPositions) inputs.Add(m.Positions);
        var attrs = new List<Attr>
        {
            Attr.Int("num_heads", b.NumHeads),
            Attr.Int("kv_num_heads", b.KvNumHeads),
            Attr.Float("scale", (float)b.Scale),
            Attr.Int("do_rotary", b.Rope.Present ? 1 : 0),
            Attr.Int("rotary_interleaved", b.Rope.Interleaved ? 1 : 0),
        };
        string prefix = $"layers.{b.Layer}.gqa";
        var gqa = rw.AddNode(g, "GroupQueryAttention", inputs, [prefix + ".output", prefix + ".present_key", prefix + ".present_value"],
            attrs, domain: "com.microsoft", name: $"/layers.{b.Layer}/GroupQueryAttention");
        rw.SetType(gqa.Output(0), m.Output.Type);
        rw.ReplaceAllUsesWith(m.Output, gqa.Output(0));
        if (m.PresentKey is not null) rw.ReplaceAllUsesWith(m.PresentKey, gqa.Output(1));
        if (m.PresentValue is not null) rw.ReplaceAllUsesWith(m.PresentValue, gqa.Output(2));
    }

    /// <summary>
    /// cos/sin caches [maxPos, d/2]: cache[p, i] = cos(p * inv_freq[i]) * multiplier, each step rounded to float32 as the
    /// exported graph computes it (so the rewrite stays exact when a rope pass scaled the frequencies or inserted a multiplier).
    /// </summary>
    internal static (Tensor Cos, Tensor Sin) RopeCaches(float[] invFreq, int maxPos, ElementType elem, double multiplier = 1.0)
    {
        int h = invFreq.Length;
        var c = new float[(long)maxPos * h];
        var s = new float[c.Length];
        for (int p = 0; p < maxPos; p++)
            for (int i = 0; i < h; i++)
            {
                float angle = (float)p * invFreq[i];
                float mult = (float)multiplier;
                c[p * h + i] = multiplier == 1.0 ? (float)Math.Cos(angle) : (float)Math.Cos(angle) * mult;
                s[p * h + i] = multiplier == 1.0 ? (float)Math.Sin(angle) : (float)Math.Sin(angle) * mult;
            }
        if (elem == ElementType.Float16)
            return (Tensor.FromHalves(c.Select(x => (Half)x).ToArray(), maxPos, h), Tensor.FromHalves(s.Select(x => (Half)x).ToArray(), maxPos, h));
        return (Tensor.FromFloats(c, maxPos, h), Tensor.FromFloats(s, maxPos, h));
    }
}

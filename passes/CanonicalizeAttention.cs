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
/// Sources: form a (torch export: the subgraph above; partial rotary and GPT-J interleaved RoPE included, caches built
/// from the recovered inv_freq), form b (com.microsoft RotaryEmbedding + MultiHeadAttention) and form d (ONNX
/// Attention + RotaryEmbedding with a Concat cache): q/k are taken before their RotaryEmbedding and GQA reads the
/// model's own [max_pos, R/2] cos/sin caches; form c with RotaryEmbedding outside the op: RoPE moves into the op.
/// Kept (with a note): the TensorScatter static cache of form d (GQA cannot keep its [B, max_S, kvH*D] +
/// write_indices contract), encoders (not causal), head_dim % 16 != 0, rotary_dim/2 % 8 != 0 (ORT CPU kernels).
/// seqlens_k = ReduceSum(attention_mask, axis 1) - 1 (int32) and total_sequence_length = attention_mask.shape[1]: the
/// causal + padding mask the exporter built from attention_mask is what GQA derives from them, for masks that are
/// ones followed by zeros per row (no left padding). RoPE positions come from seqlens_k (past length + i), which
/// equals the position_ids input whenever the caller passes position_ids = arange(past, past + S), the usual contract;
/// option <c>positions=input</c> feeds position_ids to GQA instead (ORT CPU only). The model's inputs and outputs keep
/// their names, dtypes and meaning. Blocks GQA cannot express stay as they are, with a note saying why; the
/// replaced subgraphs become dead and <c>dce</c> removes them (so this pass must run before dce).
/// Options: <c>max-positions</c> (rows of the cos/sin caches, default the largest of 32768, the model's own cache length
/// and the pipeline's target context <see cref="PassContext.TargetContext"/>),
/// <c>positions</c> (seqlens | input).
/// </summary>
public sealed class CanonicalizeAttention : IPass
{
    public string Name => "canonicalize-attention";
    public string Description => "rewrite recognised attention blocks into com.microsoft.GroupQueryAttention with in-op RoPE";
    public bool IsExact => true;

    public const int DefaultMaxPositions = 32768;
    /// <summary>Model metadata key: rows of the model's own cos cache before this pass made longer ones ("unknown" when it had none).</summary>
    public const string OriginalMaxPositionsKey = ArchitectureCard.OriginalMaxPositionsKey;

    /// <summary>
    /// The longest sequence the rewritten model can take: GroupQueryAttention reads RoPE rows by position, so the
    /// shortest cos cache bounds it. Written to longctx.json ("runtime.max_context"), which the runtime enforces.
    /// </summary>
    private static void RecordMaxContext(Model model, PassContext ctx)
    {
        var rows = model.Graph.Nodes
            .Where(n => n.OpType == "GroupQueryAttention" && n.Domain == "com.microsoft" && n.IntAttr("do_rotary", 0) == 1)
            .Select(n => n.Input(7)?.Const?.Dims is { Length: 2 } d ? (long?)d[0] : null)
            .Where(r => r is not null).ToList();
        if (rows.Count > 0) ctx.RuntimeConfig["max_context"] = rows.Min();
    }

    public void Run(Model model, PassContext ctx)
    {
        try { RunBlocks(model, ctx); }
        finally { RecordMaxContext(model, ctx); }
    }

    private void RunBlocks(Model model, PassContext ctx)
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
            if (block.Form == FusedAttentionForms.Gqa)
            {
                var gqa = block.Match.Anchor;
                if (!block.Rope.Present || gqa.IntAttr("do_rotary", 0) == 1) { ctx.Count("blocks already canonical"); continue; }
                // GQA fed by external com.microsoft.RotaryEmbedding on q and k: move RoPE into the op
                if (CheckFold(block, ElementOf(block)) is { } why)
                {
                    ctx.Note($"layer {block.Layer} ({block.Form}, external RoPE) kept: {why}");
                    ctx.Count("blocks kept");
                    continue;
                }
                var frw = ctx.Rewriter;
                frw.SetInput(gqa, 0, block.Match.Query);
                frw.SetInput(gqa, 1, block.Match.Key);
                frw.SetInput(gqa, 7, block.Match.CosCache);
                frw.SetInput(gqa, 8, block.Match.SinCache);
                frw.SetAttribute(gqa, Attr.Int("do_rotary", 1));
                frw.SetAttribute(gqa, Attr.Int("rotary_interleaved", block.Rope.Interleaved ? 1 : 0));
                ctx.Count("external RoPE folded into GroupQueryAttention");
                changed = true;
                continue;
            }
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
        if (b.Form is not (TorchAttentionForm.Name or FusedAttentionForms.MsMha or FusedAttentionForms.OnnxAttention))
            return $"no canonical rewrite for form {b.Form}";
        if (b.KvLayout != "BHSD")
            return $"the {b.KvLayout} cache (a fixed [batch, max_seq, kv_heads*head_dim] buffer updated by TensorScatter at write_indices, read up to nonpad_kv_seqlen) "
                 + "has no GroupQueryAttention equivalent with the same I/O contract (GQA's cache is [batch, kv_heads, seq, head_dim] and is written at seqlens_k, not at a caller-chosen index)";
        if (b.HeadDim % 16 != 0) return $"head_dim {b.HeadDim} is not a multiple of 16 (ORT CPU GroupQueryAttention)";
        if (!b.Causal) return "not causal (GroupQueryAttention is causal only)";
        if (m.Query is null || m.Key is null || m.ValueIn is null) return "q/k/v projections not found";
        if ((m.PastKey is null) != (m.PresentKey is null) || (m.PastValue is null) != (m.PresentValue is null)) return "cache inputs and outputs do not pair up";
        if (b.MaskSource is null || model.Graph.Input(b.MaskSource) is not { } mask) return "no attention_mask input to derive seqlens_k from";
        if (mask.Type is { Shape.Rank: not 2 } || mask.Type?.Element is not (ElementType.Int64 or ElementType.Int32 or null))
            return $"mask input {mask.Name} is not an integer [batch, total_length] tensor";
        if (ElementOf(b) is not (ElementType.Float or ElementType.Float16)) return "element type is neither float32 nor float16";
        if (b.Rope.Present)
        {
            if (b.Rope.RotaryDim / 2 % 8 != 0)
                return $"rotary dim {b.Rope.RotaryDim}: ORT CPU GroupQueryAttention needs rotary_dim/2 (the cos cache width) to be a multiple of 8";
            if (b.Rope.RotaryDim > b.HeadDim) return $"rotary dim {b.Rope.RotaryDim} exceeds head_dim {b.HeadDim}";
        }
        if (ctx.Option("positions", "seqlens") == "input" && b.Rope.Present && m.Positions is null) return "positions=input but the RoPE positions do not come from a graph input";
        return b.Form == TorchAttentionForm.Name ? CheckTorch(b) : CheckFused(b, ElementOf(b));
    }

    private static string? CheckTorch(AttentionBlock b) =>
        b.Rope.Present && b.Match.InvFreq is null ? "RoPE frequencies not recovered" : null;

    /// <summary>Forms b and d: the fused op must not use anything GQA lacks, and RoPE must come from a [maxPos, R/2] cache GQA can read as is.</summary>
    private static string? CheckFused(AttentionBlock b, ElementType elem)
    {
        var n = b.Match.Anchor;
        int used = n.Outputs.Count(o => o is not null && (o.Uses.Count > 0 || o.IsGraphOutput));
        if (b.Form == FusedAttentionForms.MsMha)
        {
            if (n.Input(3) is not null) return "MultiHeadAttention has a packed bias input";
            if (n.Input(4) is not null) return "MultiHeadAttention has a key_padding_mask input (GQA derives padding from attention_mask)";
            if (n.Inputs.Skip(8).Any(i => i is not null)) return "MultiHeadAttention uses past_sequence_length/cache_indirection inputs";
            if (Rank(b.Match.Key) is int kr && kr != 3 || Rank(b.Match.ValueIn) is int vr && vr != 3) return "MultiHeadAttention key/value are not [batch, seq, hidden] (cross-attention or BNSH layout)";
            if (n.Outputs.Skip(3).Any(o => o is not null && (o.Uses.Count > 0 || o.IsGraphOutput))) return "MultiHeadAttention's qk output is used";
        }
        else
        {
            if (n.FloatAttr("softcap", 0) != 0) return "Attention softcap is set (GQA's softcap differs in where it applies)";
            if (n.IntAttr("qk_matmul_output_mode", 0) != 0 || n.Outputs.Skip(3).Any(o => o is not null && (o.Uses.Count > 0 || o.IsGraphOutput))) return "Attention's qk_matmul output is used";
            if (n.Input(6) is not null) return "Attention has a nonpad_kv_seqlen input";
            if (Rank(n.Input(0)) is int qr && qr != 3) return "Attention inputs are 4-D";
        }
        if (!b.Rope.Present) return null;
        var cos = Compiler.Patterns.Consts.Of(b.Match.CosCache);
        var sin = Compiler.Patterns.Consts.Of(b.Match.SinCache);
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

    /// <summary>Why external RoPE cannot move into a GQA node (<paramref name="b"/> is form c with RotaryEmbedding on q and k), or null.</summary>
    private static string? CheckFold(AttentionBlock b, ElementType elem)
    {
        var n = b.Match.Anchor;
        if (n.Inputs.Skip(7).Any(i => i is not null)) return "GroupQueryAttention already has cos/sin/position inputs";
        if (b.Rope.RotaryDim / 2 % 8 != 0) return $"rotary dim {b.Rope.RotaryDim}: ORT CPU GroupQueryAttention needs rotary_dim/2 to be a multiple of 8";
        if (b.Match.Positions is null) return "RoPE positions do not come from a graph input";
        var cos = Compiler.Patterns.Consts.Of(b.Match.CosCache);
        if (cos is not { Dims.Length: 2 } || cos.Element != elem || cos.Dims[1] * 2 != b.Rope.RotaryDim) return "RoPE cos/sin are not [max_positions, rotary_dim/2] caches of the model dtype";
        foreach (var rot in RotaryNodes(b))
        {
            if (rot.FloatAttr("scale", 1) != 1 || rot.IntAttr("is_packed_batching", 0) != 0) return $"RotaryEmbedding '{rot.Name}' uses scale or packed batching";
            if (RotCos(rot) != b.Match.CosCache || RotSin(rot) != b.Match.SinCache) return "q and k RotaryEmbedding use different cos/sin caches";
            if ((rot.IntAttr("interleaved", 0) == 1) != b.Rope.Interleaved) return "q and k RotaryEmbedding disagree on interleaving";
        }
        return null;
    }

    private static int? Rank(Value? v) => v?.Type?.Shape?.Rank;

    /// <summary>The RotaryEmbedding nodes feeding q and k of a fused block.</summary>
    private static IEnumerable<Node> RotaryNodes(AttentionBlock b)
    {
        var n = b.Match.Anchor;
        foreach (var v in new[] { n.Input(0), n.Input(1) })
            if (Compiler.Patterns.Noise.Skip(v)?.Producer is { OpType: "RotaryEmbedding" } r) yield return r;
    }

    private static Value? RotCos(Node rot) => rot.Domain == "com.microsoft" ? rot.Input(2) : rot.Input(1);
    private static Value? RotSin(Node rot) => rot.Domain == "com.microsoft" ? rot.Input(3) : rot.Input(2);

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
        if (b.Rope.Present && b.Form != TorchAttentionForm.Name)
        {
            // forms b and d: GQA reads the model's own [maxPos, R/2] caches (same values, same dtype, same length)
            cos = m.CosCache;
            sin = m.SinCache;
        }
        else if (b.Rope.Present)
        {
            // the generated caches are longer than what the model was trained on: say so, so that lcc inspect does
            // not take their length for the trained context
            rw.SetMetadata(OriginalMaxPositionsKey, b.Rope.OriginalMaxPositions?.ToString() ?? "unknown");
            // rows: at least 32k, the model's own length, and the context a RoPE-scaling pass extended it to
            int maxPos = int.Parse(ctx.Option("max-positions", new[] { DefaultMaxPositions, b.Rope.OriginalMaxPositions ?? 0, ctx.TargetContext ?? 0 }.Max().ToString()));
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
    internal static (Tensor Cos, Tensor Sin) RopeCaches(float[] invFreq, int maxPos, ElementType elem, double multiplier = 1.0) =>
        Compiler.Analysis.Rope.RopeCacheTables.Float32Chain(invFreq, maxPos, elem, multiplier);
}

using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;

namespace LongCtx.Compiler.Attention;

/// <summary>
/// Finds the attention blocks of a model, whichever exporter wrote it. Anchors: every Softmax that feeds a MatMul
/// (unfused forms) and every fused attention operator. Each anchor is tried against the forms in turn; anchors no
/// form reads are reported with the place and reason matching stopped. Pure: the model is not changed.
/// Layers are numbered by anchor position in the (topologically ordered) main graph.
/// </summary>
public static class AttentionDiscovery
{
    public static DiscoveryResult Discover(Model m)
    {
        var blocks = new List<AttentionBlock>();
        var unrecognised = new List<string>();
        int layer = 0;
        foreach (var n in m.Graph.Nodes)
        {
            if (!IsAnchor(n)) continue;
            var (block, failure) = TryForms(n, layer, m);
            if (block is not null) blocks.Add(block);
            else unrecognised.Add($"layer {layer}: matching stopped at {failure.Where}: {failure.Reason}");
            layer++;
        }
        return new DiscoveryResult(blocks, unrecognised);
    }

    /// <summary>
    /// The layer number discovery gives <paramref name="anchor"/>: how many anchors precede it in its graph. Stable
    /// under rewrites that replace a block by one fused op and re-sort (the fused op takes the block's place).
    /// </summary>
    public static int LayerOf(Node anchor)
    {
        int layer = 0;
        foreach (var n in anchor.Graph.Nodes)
        {
            if (n == anchor) return layer;
            if (IsAnchor(n)) layer++;
        }
        throw new ArgumentException($"{anchor} is not in its graph");
    }

    /// <summary>Tries the forms at <paramref name="anchor"/> (an <see cref="IsAnchor"/> node) as layer <paramref name="layer"/>.</summary>
    public static (AttentionBlock? Block, MatchResult Failure) Match(Node anchor, int layer) => TryForms(anchor, layer, null);

    /// <summary>
    /// Every Softmax that feeds a MatMul (unfused forms), every Softmax over a product of two activations (q·kᵀ: an
    /// attention score whose use no form reads), every fused attention operator, and every other attention operator of
    /// onnxruntime (<see cref="UnreadAttentionOps"/>, reported as not recognised with the reason).
    /// </summary>
    public static bool IsAnchor(Node n) => (n.Domain, n.OpType) switch
    {
        ("", "Softmax") => FeedsMatMul(n) || ScoresOfTwoActivations(n),
        ("com.microsoft", "GroupQueryAttention" or "MultiHeadAttention" or "Attention") or ("", "Attention") or ("longctx", "LongAttention") => true,
        ("com.microsoft", var op) => UnreadAttentionOps.ContainsKey(op),
        _ => false,
    };

    /// <summary>onnxruntime attention operators no form reads, and why (what "not recognised" says for them).</summary>
    public static IReadOnlyDictionary<string, string> UnreadAttentionOps { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["SparseAttention"] = "block-sparse attention (block_row_indices/block_col_indices layout) has no dense form lcc reads",
        ["PackedAttention"] = "packed-batch attention (token_offset/cumulative_sequence_length inputs, no padding) is an encoder form without a cache",
        ["PackedMultiHeadAttention"] = "packed-batch multi-head attention (token_offset/cumulative_sequence_length inputs) is an encoder form without a cache",
        ["DecoderMaskedMultiHeadAttention"] = "beam-search attention with a shared past/present buffer and cache_indirection is not read",
        ["DecoderMaskedSelfAttention"] = "beam-search self-attention with a shared past/present buffer is not read",
        ["PagedAttention"] = "paged KV blocks (block_table) are not read",
        ["LongformerAttention"] = "Longformer's global + sliding-window attention is not read",
        ["QAttention"] = "quantized (int8) attention is not read",
        ["RelativePositionBias"] = "T5 relative position bias is not read",
    };

    private static bool FeedsMatMul(Node n) =>
        n.Output().Uses.Any(u => u.Node.OpType == "MatMul" || (u.Node.OpType == "Cast" && u.Node.Output().Uses.Any(w => w.Node.OpType == "MatMul")));

    /// <summary>Softmax of (MatMul(a, b) scaled / masked) where neither a nor b is a constant: attention scores.</summary>
    private static bool ScoresOfTwoActivations(Node softmax)
    {
        var v = softmax.Input(0);
        for (int hops = 0; hops < 6 && v?.Producer is { } p; hops++, v = p.Input(0))
        {
            if (p.OpType == "MatMul") return p.Input(0) is { } a && p.Input(1) is { } b && !Consts.IsConst(a) && !Consts.IsConst(b);
            if (p.OpType is not ("Add" or "Div" or "Mul" or "Where" or "Cast" or "Sub")) return false;
        }
        return false;
    }

    private static (AttentionBlock?, MatchResult) TryForms(Node anchor, int layer, Model? m) => (anchor.Domain, anchor.OpType) switch
    {
        ("", "Softmax") when !FeedsMatMul(anchor) => (null, MatchResult.Fail(
            "Softmax over q·kᵀ scores whose result does not feed a MatMul with V (probabilities used otherwise; no form reads this)", anchor.Outputs[0], 0)),
        ("", "Softmax") => TorchAttentionForm.Match(anchor, layer),
        ("com.microsoft", "Attention") => OrtAttentionForm.Match(anchor, layer),
        ("com.microsoft", var op) when UnreadAttentionOps.TryGetValue(op, out var why) => (null, MatchResult.Fail($"{anchor.QualifiedOp}: {why}", anchor.Outputs[0], 0)),
        (_, "GroupQueryAttention" or "MultiHeadAttention" or "Attention" or "LongAttention") => FusedAttentionForms.Match(anchor, layer),
        _ => (null, MatchResult.Fail($"no form for {anchor.QualifiedOp}", anchor.Outputs[0], 0)),
    };
}

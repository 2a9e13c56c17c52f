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

    /// <summary>Every Softmax that feeds a MatMul (unfused forms) and every fused attention operator.</summary>
    public static bool IsAnchor(Node n) => (n.Domain, n.OpType) switch
    {
        ("", "Softmax") => n.Output().Uses.Any(u => u.Node.OpType == "MatMul" || (u.Node.OpType == "Cast" && u.Node.Output().Uses.Any(w => w.Node.OpType == "MatMul"))),
        ("com.microsoft", "GroupQueryAttention" or "MultiHeadAttention") or ("", "Attention") or ("longctx", "LongAttention") => true,
        _ => false,
    };

    private static (AttentionBlock?, MatchResult) TryForms(Node anchor, int layer, Model? m) => anchor.OpType switch
    {
        "Softmax" => TorchAttentionForm.Match(anchor, layer),
        "GroupQueryAttention" or "MultiHeadAttention" or "Attention" or "LongAttention" => FusedAttentionForms.Match(anchor, layer),
        _ => (null, MatchResult.Fail($"no form for {anchor.QualifiedOp}", anchor.Outputs[0], 0)),
    };
}

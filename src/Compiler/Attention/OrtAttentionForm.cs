using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Schemas;

namespace LongCtx.Compiler.Attention;

/// <summary>
/// Form e-gpt2: com.microsoft.Attention as onnxruntime.transformers' optimiser writes it for GPT-2 (ORT
/// ContribOperators.md, Attention v1). One op computes
/// <code>
///   qkv = input · weights + bias                       weights [hidden_in, 3*hidden] (q | k | v columns)
///   k', v' = concat(past[0], k), concat(past[1], v)     past [2, B, H, P, D] -> present = stack(k', v') [2, B, H, P+S, D]
///   output = softmax(q k'ᵀ / sqrt(D) + mask) v'         mask: mask_index (1 = keep) and, when unidirectional=1, causal
/// </code>
/// Recognition reads the attributes and the constant packed weights; the block's q/k/v handles stay null (the
/// projections are inside the op) and its cache is the one packed tensor (<see cref="PackedKvLayout"/>: PastKey and
/// PastValue both name past_N). What GroupQueryAttention cannot express is decided by the rewrite rule, not here.
/// </summary>
public static class OrtAttentionForm
{
    public const string Form = "ms-attention-packed";
    /// <summary>KvLayout of the block: key and value stacked on a leading axis of 2, each [B, H, S, D].</summary>
    public const string PackedKvLayout = "packed-2BHSD";
    private static readonly OpSchema Att = OpSchemas.MsAttention;

    private static MatchResult Fail(Node n, string reason) => MatchResult.Fail(reason, n.Outputs[0], 1);

    public static (AttentionBlock?, MatchResult) Match(Node n, int layer)
    {
        int heads = (int)n.IntAttr("num_heads", 0);
        if (heads <= 0) return (null, Fail(n, "com.microsoft.Attention has no num_heads"));
        if (n.IntAttr("do_rotary", 0) != 0) return (null, Fail(n, "com.microsoft.Attention with do_rotary=1 (RoPE inside the op, frequencies not in the graph) is not read"));
        var weights = Consts.Of(Att.Input(n, "weights"));
        if (weights is not { Dims.Length: 2 }) return (null, Fail(n, "com.microsoft.Attention weights are not a constant 2-D [hidden_in, q+k+v] matrix"));
        long[] sizes = n.Attribute("qkv_hidden_sizes") is { Kind: AttrKind.Ints } qa && qa.AsInts() is { Length: 3 } q ? [.. q] : [weights.Dims[1] / 3, weights.Dims[1] / 3, weights.Dims[1] / 3];
        if (sizes.Sum() != weights.Dims[1] || sizes[0] % heads != 0 || sizes[2] % heads != 0)
            return (null, Fail(n, $"com.microsoft.Attention weights [{string.Join(",", weights.Dims)}] do not split into qkv_hidden_sizes [{string.Join(",", sizes)}] over {heads} heads"));
        int headDim = (int)(sizes[0] / heads);
        double scale = n.FloatAttr("scale", 0) is var s && s != 0 ? s : 1 / Math.Sqrt(headDim);
        Value? past = Att.Input(n, "past"), present = Att.Output(n, "present");
        var mask = Att.Input(n, "mask_index");
        var o = n.Output(0);
        var oProj = o.Uses.Select(u => u.Node).FirstOrDefault(x => x.OpType == "MatMul" && x.Input(0) == o);
        var m = new AttentionMatch(n, null, null, null, o, Att.Input(n, "weights"), null, null,
            oProj?.Input(1) is { } w && Consts.IsConst(w) ? w : null,
            past, past, present, present, null, null, null, null, mask, [n]);
        return (new AttentionBlock(layer, Form, heads, heads, headDim, (int)weights.Dims[0], n.IntAttr("unidirectional", 0) == 1, scale, RopeInfo.None,
            past?.Name, past?.Name, present?.Name, present?.Name, PackedKvLayout, GraphFacts.MaskInput(mask), m), MatchResult.Success(Bindings.Empty, 1));
    }
}

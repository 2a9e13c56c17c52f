using System.Globalization;
using LongCtx.Compiler;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Schemas;
using LongCtx.Contract;

namespace LongCtx.Passes.Eviction;

/// <summary>
/// Part of pass <c>kv-evict</c> for adakv (AdaKV, Feng et al. 2024, arXiv:2407.11550: the heads of a layer keep
/// different numbers of keys). ORT's GroupQueryAttention holds one length per layer (seqlens_k), so each layer gets a
/// graph input <c>longctx_evict_bias.L</c> wired to the op's optional attention_bias (slot 10, [1, num_heads or 1,
/// S, total_sequence_length], added to the logits before the softmax; ORT 1.31 CPU checked by
/// tests/Eviction/GqaAttentionBiasProbeTests). The runtime pads each layer to its longest head and feeds 0 where a
/// head holds a key and -inf on the slots it does not.
/// <code>
///   q,k,v ──► GroupQueryAttention(.., attention_bias = ∅)   ==>   q,k,v ──► GroupQueryAttention(.., attention_bias = longctx_evict_bias.L)
/// </code>
/// Refused (one line): a dense LongAttention (no attention_bias input: name --attention), an op that already has an
/// attention_bias.
/// </summary>
public static class AdaKvBias
{
    /// <summary>Prefix of the per-layer attention_bias inputs (layer number appended).</summary>
    public const string InputPrefix = KvEvictPolicy.IoPrefix + "bias.";

    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention;

    /// <summary>Adds and wires the layer's bias input; <paramref name="where"/> starts each error.</summary>
    public static Value Add(AttentionBlock b, PassContext ctx, string where)
    {
        var n = b.Match.Anchor;
        if (!Gqa.Is(n))
            throw new CompileException($"{where} is longctx.LongAttention (from --attention), which has no attention_bias input for the per-head masks (only GroupQueryAttention has one): drop --attention, or evict with snapkv / pyramidkv without ada");
        if (Gqa.Input(n, "attention_bias") is { } existing)
            throw new CompileException($"{where} already feeds attention_bias ({existing.Name}), which the per-head masks need: evict with snapkv / pyramidkv without ada");
        var type = Gqa.Input(n, "query")!.Type is TensorType { Element: var e } ? e : ElementType.Float;
        var bias = ctx.Rewriter.AddInput(n.Graph, InputPrefix + b.Layer.ToString(CultureInfo.InvariantCulture),
            new TensorType(type, new Shape(Dim.Sym("batch_size"), Dim.Sym("evict_bias_heads"), Dim.Sym("sequence_length"), Dim.Sym("total_sequence_length"))));
        ctx.Rewriter.SetInput(n, Gqa.In("attention_bias"), bias);
        ctx.Count("attention_bias inputs (per-head lengths)");
        return bias;
    }
}

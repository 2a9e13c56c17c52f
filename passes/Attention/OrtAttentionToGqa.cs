using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;
using LongCtx.Compiler.Schemas;
using LongCtx.Contract;

namespace LongCtx.Passes.Attention;

/// <summary>
/// Form e-gpt2 (onnxruntime.transformers GPT-2): com.microsoft.Attention with packed QKV weights W [in, 3*hidden] + bias
/// and a packed cache past [2, B, H, P, D] becomes three projections and one com.microsoft.GroupQueryAttention (Ainslie
/// et al. 2023, arXiv:2305.13245; kv_num_heads = num_heads, no RoPE: GPT-2's positions are learned embeddings):
/// <code>
///   q = x W[:, 0:h] + b[0:h],  k = x W[:, h:2h] + b[h:2h],  v = x W[:, 2h:3h] + b[2h:3h]     (column blocks of W)
///   past_N = stack(past_key_values.N.key, past_key_values.N.value)      [2, B, H, P, D] = 2 x [B, H, P, D]
///   present_N = stack(present.N.key, present.N.value)
///
///   x ─┐                                          x ─ MatMul(Wq)+bq ─┐
///   W, b ─┼─ Attention(unidirectional=1) ─ o  ==>  x ─ MatMul(Wk)+bk ─┼─ GroupQueryAttention ─ o
///   mask ─┤        └ present_N                     x ─ MatMul(Wv)+bv ─┤     ├ present.N.key
///   past_N ┘                                       past_key_values.N.key/value ┘     └ present.N.value
/// </code>
/// softmax(q kᵀ / sqrt(D) + causal + padding) v is what both compute (exact up to float reassociation). Unlike the other
/// forms this rule changes the I/O contract: the packed cache is unpacked into the contract's standard KV names (the
/// halves of past_N, same dtype, at past_N's place; present.N.key/value at present_N's output position), because ORT's
/// GroupQueryAttention may reuse its past's buffer for the present, which only a graph input allows; the runtime maps
/// either contract.
/// seqlens_k and total_sequence_length come from the 2-D attention_mask as for the other forms (<see cref="GqaRewrite"/>).
/// Kept (with a note): not unidirectional (GQA is causal only), past_present_share_buffer, attention_bias,
/// past_sequence_length, unequal qkv_hidden_sizes, a bias that is not constant, a mask_index that is not the 2-D
/// attention_mask (or its Cast), and anything <see cref="GqaRewrite.CheckCommon"/> refuses.
/// </summary>
internal sealed class OrtAttentionToGqa : RewriteRule<GqaMatch>
{
    private static readonly OpSchema Att = OpSchemas.MsAttention;

    public override string Name => "ms-attention-to-gqa";
    public override string Counter => GqaRewrite.Counter;
    public override IReadOnlyList<OpKey> Roots { get; } = [new(Att.Domain, Att.OpType)];

    public override Checked<GqaMatch> Check(Node root, Bindings bindings, RuleContext ctx)
    {
        var (b, failure) = AttentionSite.Discover(root);
        if (b is null) return failure!;
        var n = b.Match.Anchor;
        if (n.IntAttr("past_present_share_buffer", 0) != 0) return AttentionSite.Kept(b, "com.microsoft.Attention shares the past/present buffer (past_present_share_buffer=1)");
        if (Att.Input(n, "attention_bias") is not null) return AttentionSite.Kept(b, "com.microsoft.Attention has an attention_bias input");
        if (Att.Input(n, "past_sequence_length") is not null) return AttentionSite.Kept(b, "com.microsoft.Attention has a past_sequence_length input");
        if (n.Attribute("qkv_hidden_sizes") is { Kind: AttrKind.Ints } q && q.AsInts().Distinct().Count() != 1)
            return AttentionSite.Kept(b, $"qkv_hidden_sizes [{string.Join(",", q.AsInts())}] are not equal (GQA's packed heads share one head_dim)");
        if (Att.Input(n, "bias") is { } bias && Consts.Of(bias) is not { Dims.Length: 1 })
            return AttentionSite.Kept(b, "the QKV bias is not a constant vector");
        var mask = Att.Input(n, "mask_index");
        if (mask is null) return AttentionSite.Kept(b, "no mask_index (GQA derives seqlens_k from the attention_mask)");
        var maskSource = mask.Producer is { OpType: "Cast" } cast ? cast.Input(0) : mask;
        if (maskSource is not { Producer: null, IsInitializer: false } || maskSource.Type?.Shape?.Rank is not 2)
            return AttentionSite.Kept(b, "mask_index is not the 2-D [batch, total_length] attention_mask input (1-D end positions and 3-D/4-D masks have no GQA equivalent)");
        if (b.Match.PastKey is { } past && (past.Producer is not null || past.IsInitializer || !ctx.Model.Graph.Inputs.Contains(past)
                || KvNames.Parse(past.Name, KvRole.Past) is not { Layout: KvLayout.Packed } name || past.Type?.Shape is not { Rank: 5 }
                || b.Match.PresentKey is not { IsGraphOutput: true, Uses.Count: 0 }
                || ctx.Model.Graph.Inputs.Any(i => i.Name == KvNames.PastKeyValues.Format(name.Layer, KvPart.Key))))
            return AttentionSite.Kept(b, "the packed past is not a rank-5 graph input past_N whose present_N is only a graph output (cannot unpack it into past_key_values.N.key/value)");
        // CheckCommon reads the projections and a BHSD cache; the rewrite makes both, so check the block as it will be
        var asSplit = b with { KvLayout = "BHSD", Match = b.Match with { Query = n.Input(0), Key = n.Input(0), ValueIn = n.Input(0) } };
        if (GqaRewrite.CheckCommon(asSplit, ctx) is { } why) return AttentionSite.Kept(b, why);
        return GqaRewrite.Matched(b, ctx, generateCaches: false);
    }

    public override void Rewrite(IRewriter rw, GqaMatch match)
    {
        var g = rw.Model.Graph;
        var b = match.Block;
        var n = b.Match.Anchor;
        var x = Att.Input(n, "input")!;
        var w = Consts.Of(Att.Input(n, "weights"))!;
        var bias = Consts.Of(Att.Input(n, "bias"));
        int width = b.NumHeads * b.HeadDim;
        string prefix = $"layers.{b.Layer}.attn";
        Value Project(int part, string name)
        {
            var y = rw.Op(g, "MatMul", [x, rw.AddInitializer(g, $"{prefix}.{name}_proj.weight", Columns(w, part * width, width))], outputName: $"{prefix}.{name}_proj");
            return bias is null ? y : rw.Op(g, "Add", [y, rw.AddInitializer(g, $"{prefix}.{name}_proj.bias", Columns(bias, part * width, width))], outputName: $"{prefix}.{name}_proj_bias");
        }
        var (q, k, v) = (Project(0, "q"), Project(1, "k"), Project(2, "v"));

        // the packed cache becomes the contract's two caches: past_N [2, B, H, P, D] -> past_key_values.N.key/value
        // [B, H, P, D] (graph inputs: ORT's GroupQueryAttention may write present into its past's buffer, which a
        // Gather output would not survive), present_N -> present.N.key/value at the same output position
        var past = b.Match.PastKey;
        var present = b.Match.PresentKey;
        int layer = past is not null && KvNames.Parse(past.Name, KvRole.Past) is { } kv ? kv.Layer : b.Layer;
        Value? pastK = null, pastV = null;
        if (past is not null)
        {
            var s = past.Type!.Shape!;
            var half = new TensorType(match.Element, new Shape(s[1], b.NumHeads, s[3], b.HeadDim));
            pastK = rw.AddInput(g, KvNames.PastKeyValues.Format(layer, KvPart.Key), half);
            pastV = rw.AddInput(g, KvNames.PastKeyValues.Format(layer, KvPart.Value), half);
        }
        var split = b with
        {
            KvLayout = "BHSD",
            Match = b.Match with { Query = q, Key = k, ValueIn = v, PastKey = pastK, PastValue = pastV, PresentKey = null, PresentValue = null },
        };
        var gqa = GqaRewrite.Rewrite(rw, match with { Block = split });
        if (past is null || present is null) return;
        int at = g.Outputs.ToList().IndexOf(present);
        rw.RemoveOutput(g, present);
        rw.Erase(n);
        rw.RemoveInput(g, past);
        var ps = present.Type?.Shape;
        var presentType = new TensorType(match.Element, new Shape(ps?[1] ?? (Dim)"batch_size", b.NumHeads, ps?[3] ?? (Dim)"total_sequence_length", b.HeadDim));
        var gq = OpSchemas.GroupQueryAttention;
        foreach (var (slot, part, i) in new[] { ("present_key", KvPart.Key, 0), ("present_value", KvPart.Value, 1) })
        {
            var o = gq.Output(gqa, slot)!;
            rw.RenameValue(o, KvNames.Present.Format(layer, part));
            rw.SetType(o, presentType);
            rw.AddOutput(g, o, at + i);
        }
    }

    /// <summary>Columns [start, start + count) of a row-major 2-D tensor (or elements of a 1-D one), any element type.</summary>
    internal static Tensor Columns(Tensor t, long start, long count)
    {
        long rows = t.Dims.Length == 2 ? t.Dims[0] : 1, cols = t.Dims[^1];
        int size = (int)t.Element.ByteCount(1);
        var src = t.Source.ReadAll();
        var dst = new byte[rows * count * size];
        for (long r = 0; r < rows; r++)
            Array.Copy(src, (r * cols + start) * size, dst, r * count * size, count * size);
        return new Tensor(t.Element, t.Dims.Length == 2 ? [rows, count] : [count], new InMemorySource(dst));
    }
}

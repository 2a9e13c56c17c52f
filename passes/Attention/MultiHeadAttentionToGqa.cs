using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;
using LongCtx.Compiler.Schemas;

namespace LongCtx.Passes.Attention;

/// <summary>
/// Form b (onnxruntime-genai builder): com.microsoft.RotaryEmbedding on q and k feeding com.microsoft.MultiHeadAttention
/// becomes one com.microsoft.GroupQueryAttention (Ainslie et al. 2023, arXiv:2305.13245; kv_num_heads = num_heads)
/// taking q/k before their RotaryEmbedding and reading the model's own [max_pos, R/2] cos/sin caches
/// (RoPE: x' = x cos(p θ_i) + rotate(x) sin(p θ_i), Su et al. 2021): same values, same dtype, same length.
/// <code>
///   q ─ RotaryEmbedding(pos, cos, sin) ─┐                          q ──┐
///   k ─ RotaryEmbedding(pos, cos, sin) ─┼─ MultiHeadAttention  ==>  k ──┼─ GroupQueryAttention(do_rotary=1) ─ o
///   v ─────────────────────────────────┘   (past_k/v, mask)         v ──┘   seqlens_k, total_len, cos, sin
/// </code>
/// Kept (with a note): packed bias, key_padding_mask, past_sequence_length/cache_indirection, cross-attention or
/// BNSH key/value, a used qk output, and anything <see cref="GqaRewrite.CheckCommon"/> refuses.
/// </summary>
internal sealed class MultiHeadAttentionToGqa : RewriteRule<GqaMatch>
{
    private static readonly OpSchema Mha = OpSchemas.MultiHeadAttention;

    public override string Name => "mha-to-gqa";
    public override string Counter => GqaRewrite.Counter;
    public override IReadOnlyList<OpKey> Roots { get; } = [new(Mha.Domain, Mha.OpType)];

    public override Checked<GqaMatch> Check(Node root, Bindings bindings, RuleContext ctx)
    {
        var (b, failure) = AttentionSite.Discover(root);
        if (b is null) return failure!;
        if (GqaRewrite.CheckCommon(b, ctx) is { } why) return AttentionSite.Kept(b, why);
        var n = b.Match.Anchor;
        if (Mha.Input(n, "bias") is not null) return AttentionSite.Kept(b, "MultiHeadAttention has a packed bias input");
        if (Mha.Input(n, "key_padding_mask") is not null) return AttentionSite.Kept(b, "MultiHeadAttention has a key_padding_mask input (GQA derives padding from attention_mask)");
        if (n.Inputs.Skip(Mha.In("past_sequence_length")).Any(i => i is not null)) return AttentionSite.Kept(b, "MultiHeadAttention uses past_sequence_length/cache_indirection inputs");
        if (AttentionSite.Rank(b.Match.Key) is int kr && kr != 3 || AttentionSite.Rank(b.Match.ValueIn) is int vr && vr != 3)
            return AttentionSite.Kept(b, "MultiHeadAttention key/value are not [batch, seq, hidden] (cross-attention or BNSH layout)");
        if (n.Outputs.Skip(Mha.Out("qk")).Any(AttentionSite.Used)) return AttentionSite.Kept(b, "MultiHeadAttention's qk output is used");
        if (GqaRewrite.CheckFusedRope(b, AttentionSite.ElementOf(b)) is { } rope) return AttentionSite.Kept(b, rope);
        return GqaRewrite.Matched(b, ctx, generateCaches: false);
    }

    public override void Rewrite(IRewriter rw, GqaMatch match) => GqaRewrite.Rewrite(rw, match);
}

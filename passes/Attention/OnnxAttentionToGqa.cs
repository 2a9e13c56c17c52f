using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;
using LongCtx.Compiler.Schemas;

namespace LongCtx.Passes.Attention;

/// <summary>
/// Form d: ONNX opset-23/24 Attention with ONNX RotaryEmbedding on q and k and a Concat (BHSD) cache becomes one
/// com.microsoft.GroupQueryAttention (Ainslie et al. 2023, arXiv:2305.13245) taking q/k before their RotaryEmbedding
/// and reading the model's own [max_pos, R/2] cos/sin caches (softmax(q k^T * scale + causal mask) v, RoPE of
/// Su et al. 2021 inside the op).
/// <code>
///   q ─ RotaryEmbedding(cos, sin, pos) ─┐                         q ──┐
///   k ─ RotaryEmbedding(cos, sin, pos) ─┼─ Attention(is_causal) ==> k ──┼─ GroupQueryAttention(do_rotary=1) ─ Y
///   v ─────────────────────────────────┘   past_key/past_value      v ──┘   seqlens_k, total_len, cos, sin
/// </code>
/// Kept (with a note): the TensorScatter static cache (GQA cannot keep its [B, max_S, kvH*D] + write_indices
/// contract), softcap, a used qk_matmul output, nonpad_kv_seqlen, 4-D inputs, and anything
/// <see cref="GqaRewrite.CheckCommon"/> refuses.
/// </summary>
internal sealed class OnnxAttentionToGqa : RewriteRule<GqaMatch>
{
    private static readonly OpSchema Att = OpSchemas.Attention;

    public override string Name => "onnx-attention-to-gqa";
    public override string Counter => GqaRewrite.Counter;
    public override IReadOnlyList<OpKey> Roots { get; } = [new(Att.Domain, Att.OpType)];

    public override Checked<GqaMatch> Check(Node root, Bindings bindings, RuleContext ctx)
    {
        var (b, failure) = AttentionSite.Discover(root);
        if (b is null) return failure!;
        if (GqaRewrite.CheckCommon(b, ctx) is { } why) return AttentionSite.Kept(b, why);
        var n = b.Match.Anchor;
        if (n.FloatAttr("softcap", 0) != 0) return AttentionSite.Kept(b, "Attention softcap is set (GQA's softcap differs in where it applies)");
        if (n.IntAttr("qk_matmul_output_mode", 0) != 0 || n.Outputs.Skip(Att.Out("qk_matmul_output")).Any(AttentionSite.Used))
            return AttentionSite.Kept(b, "Attention's qk_matmul output is used");
        if (Att.Input(n, "nonpad_kv_seqlen") is not null) return AttentionSite.Kept(b, "Attention has a nonpad_kv_seqlen input");
        if (AttentionSite.Rank(Att.Input(n, "Q")) is int qr && qr != 3) return AttentionSite.Kept(b, "Attention inputs are 4-D");
        if (GqaRewrite.CheckFusedRope(b, AttentionSite.ElementOf(b)) is { } rope) return AttentionSite.Kept(b, rope);
        return GqaRewrite.Matched(b, ctx, generateCaches: false);
    }

    public override void Rewrite(IRewriter rw, GqaMatch match) => GqaRewrite.Rewrite(rw, match);
}

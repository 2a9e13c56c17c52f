using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;

namespace LongCtx.Passes.Attention;

/// <summary>
/// Form a: attention as torch.onnx.export writes HF modules (Vaswani et al. 2017, softmax(QK^T/sqrt(d) + M) V, with
/// RoPE of Su et al. 2021, arXiv:2104.09864; partial rotary and GPT-J interleaving included) becomes one
/// com.microsoft.GroupQueryAttention (Ainslie et al. 2023, arXiv:2305.13245) whose cos/sin caches are built from the
/// recovered inv_freq: cache[p, i] = cos/sin(p * inv_freq[i]) (times the YaRN/LongRoPE multiplier when present).
/// <code>
///   x@Wq ─ Reshape ─ Transpose ─ RoPE ─┐                                   x@Wq ──┐
///   x@Wk ─ Reshape ─ Transpose ─ RoPE ─ Concat(past_k) ─ present.k           x@Wk ──┤
///                           repeat_kv ─ MatMul ─ Div ─ Add(mask)   ==>       x@Wv ──┼─ GroupQueryAttention ─ o ─ @Wo
///   x@Wv ─ Reshape ─ Transpose ─ Concat(past_v) ─ present.v                 past_k/v ┤      ├ present.k
///                repeat_kv ─ Softmax ─ MatMul ─ Transpose ─ Reshape ─ o ─ @Wo  seqlens_k, total_len, cos, sin ┘  └ present.v
/// </code>
/// Rooted at the Softmax; kept (with a note): encoders (not causal) and anything <see cref="GqaRewrite.CheckCommon"/> refuses.
/// </summary>
internal sealed class TorchAttentionToGqa : RewriteRule<GqaMatch>
{
    public override string Name => "torch-attention-to-gqa";
    public override string Counter => GqaRewrite.Counter;
    public override IReadOnlyList<OpKey> Roots { get; } = [new("", "Softmax")];

    public override Checked<GqaMatch> Check(Node root, Bindings bindings, RuleContext ctx)
    {
        var (b, failure) = AttentionSite.Discover(root);
        if (b is null) return failure!;
        if (b.Form != TorchAttentionForm.Name) return AttentionSite.Kept(b, $"no canonical rewrite for form {b.Form}");
        if (GqaRewrite.CheckCommon(b, ctx) is { } why) return AttentionSite.Kept(b, why);
        if (b.Rope.Present && b.Match.InvFreq is null) return AttentionSite.Kept(b, "RoPE frequencies not recovered");
        return GqaRewrite.Matched(b, ctx, generateCaches: true);
    }

    public override void Rewrite(IRewriter rw, GqaMatch match) => GqaRewrite.Rewrite(rw, match);
}

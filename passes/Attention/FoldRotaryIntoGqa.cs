using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;
using LongCtx.Compiler.Schemas;

namespace LongCtx.Passes.Attention;

/// <summary>The GQA node, the q/k before their RotaryEmbedding, and the caches and layout that move into the op.</summary>
internal sealed record FoldMatch(Node Gqa, Value Query, Value Key, Value Cos, Value Sin, bool Interleaved);

/// <summary>
/// Form c with RoPE outside the op: com.microsoft.RotaryEmbedding on q and k in front of a GroupQueryAttention without
/// do_rotary moves into the op (GQA applies the same rotation, x' = x cos(p θ_i) + rotate(x) sin(p θ_i) of Su et al.
/// 2021, from the same [max_pos, R/2] caches at positions seqlens_k-derived, which equal position_ids under the usual
/// contract).
/// <code>
///   q ─ RotaryEmbedding(pos, cos, sin) ─┐                          q ──┐
///   k ─ RotaryEmbedding(pos, cos, sin) ─┼─ GroupQueryAttention ==>  k ──┼─ GroupQueryAttention(do_rotary=1, cos, sin)
///   v ─────────────────────────────────┘                           v ──┘
/// </code>
/// GQA blocks without external RoPE, or with do_rotary already set, are canonical (counted, not rewritten).
/// </summary>
internal sealed class FoldRotaryIntoGqa : RewriteRule<FoldMatch>
{
    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention;

    public override string Name => "fold-rotary-into-gqa";
    public override string Counter => "external RoPE folded into GroupQueryAttention";
    public override IReadOnlyList<OpKey> Roots { get; } = [new(Gqa.Domain, Gqa.OpType)];

    public override Checked<FoldMatch> Check(Node root, Bindings bindings, RuleContext ctx)
    {
        var (b, failure) = AttentionSite.Discover(root);
        if (b is null) return failure!;
        if (b.Form != FusedAttentionForms.Gqa) return AttentionSite.Kept(b, $"no canonical rewrite for form {b.Form}");
        if (!b.Rope.Present || root.IntAttr("do_rotary", 0) == 1)
            return new RuleFailure(MatchResult.Fail("GroupQueryAttention has no external RoPE to fold (already canonical)", root.Outputs[0], 1), Count: "blocks already canonical");
        if (CheckFold(b, AttentionSite.ElementOf(b)) is { } why) return AttentionSite.Kept(b, why, $"{b.Form}, external RoPE");
        var m = b.Match;
        return new FoldMatch(root, m.Query!, m.Key!, m.CosCache!, m.SinCache!, b.Rope.Interleaved);
    }

    /// <summary>Why external RoPE cannot move into the GQA node of <paramref name="b"/>, or null.</summary>
    private static string? CheckFold(AttentionBlock b, ElementType elem)
    {
        var n = b.Match.Anchor;
        if (n.Inputs.Skip(Gqa.In("cos_cache")).Any(i => i is not null)) return "GroupQueryAttention already has cos/sin/position inputs";
        if (b.Rope.RotaryDim / 2 % 8 != 0) return $"rotary dim {b.Rope.RotaryDim}: ORT CPU GroupQueryAttention needs rotary_dim/2 to be a multiple of 8";
        if (b.Match.Positions is null) return "RoPE positions do not come from a graph input";
        var cos = Consts.Of(b.Match.CosCache);
        if (cos is not { Dims.Length: 2 } || cos.Element != elem || cos.Dims[1] * 2 != b.Rope.RotaryDim) return "RoPE cos/sin are not [max_positions, rotary_dim/2] caches of the model dtype";
        foreach (var rot in GqaRewrite.RotaryNodes(b))
        {
            if (rot.FloatAttr("scale", 1) != 1 || rot.IntAttr("is_packed_batching", 0) != 0) return $"RotaryEmbedding '{rot.Name}' uses scale or packed batching";
            if (GqaRewrite.RotCos(rot) != b.Match.CosCache || GqaRewrite.RotSin(rot) != b.Match.SinCache) return "q and k RotaryEmbedding use different cos/sin caches";
            if ((rot.IntAttr("interleaved", 0) == 1) != b.Rope.Interleaved) return "q and k RotaryEmbedding disagree on interleaving";
        }
        return null;
    }

    public override void Rewrite(IRewriter rw, FoldMatch m)
    {
        rw.SetInput(m.Gqa, Gqa.In("query"), m.Query);
        rw.SetInput(m.Gqa, Gqa.In("key"), m.Key);
        rw.SetInput(m.Gqa, Gqa.In("cos_cache"), m.Cos);
        rw.SetInput(m.Gqa, Gqa.In("sin_cache"), m.Sin);
        rw.SetAttribute(m.Gqa, Attr.Int("do_rotary", 1));
        rw.SetAttribute(m.Gqa, Attr.Int("rotary_interleaved", m.Interleaved ? 1 : 0));
    }
}

using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;

namespace LongCtx.Passes.Attention;

/// <summary>
/// The matching half the attention rules share: discovery of the block at an anchor (the form matchers of
/// src/Compiler/Attention, the same ones <c>lcc inspect</c> reports with), and the failures the pass turns into its
/// notes and counts ("not recognised: ...", "layer N (form) kept: ...", "blocks kept").
/// </summary>
internal static class AttentionSite
{
    public const string KeptCount = "blocks kept";

    /// <summary>The block at <paramref name="anchor"/>, or why there is none (the "not recognised" note for anchors).</summary>
    public static (AttentionBlock? Block, RuleFailure? Failure) Discover(Node anchor)
    {
        if (!AttentionDiscovery.IsAnchor(anchor))
            return (null, new RuleFailure(MatchResult.Fail("Softmax output does not feed a MatMul with V", anchor.Outputs[0], 0)));
        int layer = AttentionDiscovery.LayerOf(anchor);
        var (block, failure) = AttentionDiscovery.Match(anchor, layer);
        return block is not null
            ? (block, null)
            : (null, new RuleFailure(failure, $"not recognised: layer {layer}: matching stopped at {failure.Where}: {failure.Reason}", Recognised: false));
    }

    /// <summary>A recognised block GQA cannot express: kept as it is, with the reason in the pass notes.</summary>
    public static RuleFailure Kept(AttentionBlock b, string reason, string? formNote = null) =>
        new(MatchResult.Fail(reason, b.Match.Anchor.Outputs[0], 9), $"layer {b.Layer} ({formNote ?? b.Form}) kept: {reason}", KeptCount);

    public static int? Rank(Value? v) => v?.Type?.Shape?.Rank;

    /// <summary>True when output <paramref name="o"/> is read (by a node or as a graph output).</summary>
    public static bool Used(Value? o) => o is not null && (o.Uses.Count > 0 || o.IsGraphOutput);

    public static ElementType ElementOf(AttentionBlock b) =>
        b.Match.PastKey?.Type?.Element ?? (b.Match.QWeight?.Const ?? Consts.Of(b.Match.QWeight))?.Element ?? ElementType.Float;
}

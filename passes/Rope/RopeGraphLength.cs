using LongCtx.Compiler.IR;

namespace LongCtx.Passes.Rope;

/// <summary>
/// In-graph helpers for length-dependent RoPE methods on the exported form: the current sequence length
/// L = max(position) + 1, read from the float positions that multiply inv_freq (prefill: the last prompt position;
/// decode: the new token's position), so the same graph serves every length without runtime help.
/// </summary>
internal static class RopeGraphLength
{
    /// <summary>Scalar float L = ReduceMax(positions) + 1, inserted before <paramref name="before"/>.</summary>
    public static Value CurrentLength(InvFreqSite site, Rewriter rw, Node before)
    {
        var n = site.FreqUse.Node;
        var positions = n.Inputs.Where((v, i) => i != site.FreqUse.Index && v is not null).Single()!;
        if (site.Element != ElementType.Float)
            throw new NotSupportedException($"{site.Where}: length-dependent RoPE needs an fp32 rotary chain (found {site.Element.ShortName()})");
        var g = n.Graph;
        var max = rw.Op(g, "ReduceMax", [positions], [Attr.Int("keepdims", 0)], outputName: "rope_max_position", before: before);
        var one = rw.AddInitializer(g, "rope_one", Tensor.Scalar(1f));
        return rw.Op(g, "Add", [max, one], outputName: "rope_current_length", before: before);
    }

    public static Value Const(Rewriter rw, Graph g, string hint, float v) => rw.AddInitializer(g, hint, Tensor.Scalar(v));
}

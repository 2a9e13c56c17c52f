using LongCtx.Compiler.IR;

namespace LongCtx.Passes.Rope;

/// <summary>
/// <c>--rope dynamic-ntk</c>: dynamic NTK scaling (emozilla, r/LocalLLaMA 2023; HF <c>_compute_dynamic_ntk_parameters</c>):
/// alpha = max(1, factor * L / L_train - (factor - 1)) with L the current length, base' = base * alpha^(d/(d-2)).
/// Since theta_i' = theta_i * alpha^(-2i/(d-2)), the graph computes the frequencies itself:
/// <code>
///   positions ─ ReduceMax ─ +1 ─ xf/L_train ─ -(f-1) ─ Max(.,1) ─ Pow(., e) ─ Mul(inv_freq) ─ (old inv_freq use)
///                                                         e_i = -2i/(d-2)
/// </code>
/// Decision: computed in the graph, not tables per length bucket — the exported graph already derives cos/sin from
/// the positions on every call, so the extra cost is a few scalar ops, the result is exact for every length, and the
/// runtime needs no table switching. As in HF, keys already in the KV cache keep the rotation of the length at which
/// they were written. Cache-form models (precomputed cos/sin caches) would need per-bucket caches chosen by the
/// runtime: refused with a clear error until the runtime supports that. Option: <c>factor</c> (1).
/// </summary>
public sealed class DynamicNtkRope : RopeScalingPass
{
    protected override string MethodName => "dynamic-ntk";

    /// <summary>Tables at the compile-time context (what the graph produces at L = context), for the report.</summary>
    protected override RopeTables Compute(RopeSetting p) => RopeFrequencies.DynamicNtk(p.Theta, p.RotaryDim, p.Context, p.TrainedContext, DynFactor(p));

    private static double DynFactor(RopeSetting p) => p.Ctx.Option("factor", "").Length > 0 ? p.Scale : 1.0;

    protected override string? CacheFormUnsupported(RopeSetting p) =>
        "needs per-length cos/sin tables chosen by the runtime; static caches cannot express it: use ntk or yarn for cache-form models";

    protected override Value? BuildDynamicFrequencies(InvFreqSite site, RopeSetting p, RopeTables tables, Rewriter rw, Node before)
    {
        var g = before.Graph;
        double f = DynFactor(p);
        var len = RopeGraphLength.CurrentLength(site, rw, before);
        var a = rw.Op(g, "Mul", [len, RopeGraphLength.Const(rw, g, "rope_f_over_trained", (float)(f / p.TrainedContext))], outputName: "rope_alpha_raw", before: before);
        if (f != 1.0) a = rw.Op(g, "Sub", [a, RopeGraphLength.Const(rw, g, "rope_f_minus_1", (float)(f - 1))], outputName: "rope_alpha_shift", before: before);
        var alpha = rw.Op(g, "Max", [a, RopeGraphLength.Const(rw, g, "rope_one", 1f)], outputName: "rope_alpha", before: before);
        var (orig, _) = RopeLocator.ConstOf(site.InvFreq)!.Value;
        int d = p.RotaryDim;
        var e = Enumerable.Range(0, d / 2).Select(i => (float)(-2.0 * i / (d - 2))).ToArray();
        var exps = rw.AddInitializer(g, "rope_ntk_exponents", Tensor.FromFloats(e, orig.Dims.ToArray()));
        var pw = rw.Op(g, "Pow", [alpha, exps], outputName: "rope_alpha_pow", before: before);
        return rw.Op(g, "Mul", [site.InvFreq, pw], outputName: "rope_dynamic_inv_freq", before: before);
    }
}

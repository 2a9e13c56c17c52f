using LongCtx.Compiler.Config;
using LongCtx.Compiler.IR;

namespace LongCtx.Passes.Rope;

/// <summary>
/// <c>--rope longrope:factors=FILE.json</c>: LongRoPE (Ding et al. 2024, arXiv 2402.13753; HF
/// <c>_compute_longrope_parameters</c>, Phi-3 "su"/"longrope"): theta_i' = theta_i / lambda_i with searched per-pair
/// factors: <c>short_factor</c> while the sequence is at most L_train, <c>long_factor</c> beyond; cos and sin times
/// sqrt(1 + ln(s)/ln(L_train)), s = context / L_train (option <c>attention-factor</c> overrides). FILE is a JSON object
/// with <c>short_factor</c> and <c>long_factor</c> (top level or under <c>rope_scaling</c>, as in an HF config.json), each
/// rotary_dim/2 numbers. Exported form: the graph switches with Where(L &gt; L_train, long, short); cache form: the
/// static caches use the long factors (noted).
/// </summary>
public sealed class LongRope : RopeScalingPass
{
    protected override string MethodName => "longrope";

    public sealed record Factors(double[] Short, double[] Long);

    public static Factors ReadFactors(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"longrope: factor file {path} not found (JSON with short_factor and long_factor)");
        var scaling = ModelConfig.Load(path).RopeScaling;
        double[] Get(string k, IReadOnlyList<double>? list) => list?.ToArray() ?? throw new ArgumentException($"longrope: {path} has no '{k}' list");
        return new Factors(Get("short_factor", scaling?.ShortFactor), Get("long_factor", scaling?.LongFactor));
    }

    private static Factors Load(RopeSetting p)
    {
        var path = p.Ctx.Option("factors", "");
        if (path.Length == 0) throw new ArgumentException("longrope needs factors=FILE.json (short_factor and long_factor lists)");
        var f = ReadFactors(path);
        foreach (var (name, list) in new[] { ("short_factor", f.Short), ("long_factor", f.Long) })
            if (list.Length != p.RotaryDim / 2)
                throw new ArgumentException($"longrope: {name} in {path} has {list.Length} entries, but the model's rotary dim {p.RotaryDim} needs {p.RotaryDim / 2} (one per frequency pair)");
        return f;
    }

    protected override RopeTables Compute(RopeSetting p) =>
        RopeFrequencies.LongRope(p.Theta, p.RotaryDim, Load(p).Long, p.Context, p.TrainedContext, p.OptNum("attention-factor"));

    protected override Value? BuildDynamicFrequencies(InvFreqSite site, RopeSetting p, RopeTables tables, Rewriter rw, Node before)
    {
        var f = Load(p);
        var shortT = RopeFrequencies.LongRope(p.Theta, p.RotaryDim, f.Short, p.Context, p.TrainedContext, p.OptNum("attention-factor"));
        var g = before.Graph;
        var len = RopeGraphLength.CurrentLength(site, rw, before);
        var isLong = rw.Op(g, "Greater", [len, RopeGraphLength.Const(rw, g, "rope_trained_context", (float)p.TrainedContext)], outputName: "rope_is_long", before: before);
        var longV = rw.AddInitializer(g, "rope_long_inv_freq", MakeTable(site, Scaled(site, p, tables.InvFreq)));
        var shortV = rw.AddInitializer(g, "rope_short_inv_freq", MakeTable(site, Scaled(site, p, shortT.InvFreq)));
        return rw.Op(g, "Where", [isLong, longV, shortV], outputName: "rope_longrope_inv_freq", before: before);
    }
}

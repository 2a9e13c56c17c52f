namespace LongCtx.Passes.Rope;

/// <summary>
/// <c>--rope linear</c>: position interpolation (Chen et al. 2023, arXiv 2306.15595; Giraffe, Pal et al. 2023, finds it
/// the best baseline): theta_i' = theta_i / s, s = context / trained (option <c>factor</c> overrides). No temperature.
/// </summary>
public sealed class LinearRope : RopeScalingPass
{
    protected override string MethodName => "linear";
    protected override RopeTables Compute(RopeSetting p) => RopeFrequencies.Linear(p.Theta, p.RotaryDim, p.Scale);
}

namespace LongCtx.Passes.Rope;

/// <summary>
/// <c>--rope yarn</c>: YaRN (Peng et al. 2023, arXiv 2309.00071), as HF transformers' <c>_compute_yarn_parameters</c>:
/// NTK-by-parts ramp between interpolation (theta_i / s) and extrapolation (theta_i) over the dims
/// [floor(corr_dim(beta_fast)), ceil(corr_dim(beta_slow))], corr_dim(r) = d ln(L_train / (2 pi r)) / (2 ln base), and
/// attention temperature sqrt(1/t) = 0.1 ln(s) + 1 multiplying cos and sin (so q.k is scaled by its square).
/// Options: <c>beta-fast</c> (32), <c>beta-slow</c> (1), <c>attention-factor</c> (overrides the temperature).
/// </summary>
public sealed class YarnRope : RopeScalingPass
{
    protected override string MethodName => "yarn";
    protected override RopeTables Compute(RopeSetting p) =>
        RopeFrequencies.Yarn(p.Theta, p.RotaryDim, p.Scale, p.TrainedContext, p.Num("beta-fast"), p.Num("beta-slow"), p.OptNum("attention-factor"));
}

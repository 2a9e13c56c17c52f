namespace LongCtx.Passes.Rope;

/// <summary>
/// <c>--rope giraffe-power</c>: Giraffe's power scaling (Pal et al. 2023, arXiv 2308.10882, sec. 3.2; abacusai/Long-Context
/// <c>scale_power</c>): theta_i' = theta_i / s_lin * (1 - 2i/d)^k — high frequencies barely move, low ones shrink.
/// Options: <c>power</c> = k (default 1; 0 is the identity), <c>scale</c> (linear scale s_lin, default 1).
/// </summary>
public sealed class GiraffePowerRope : RopeScalingPass
{
    protected override string MethodName => "giraffe-power";
    protected override RopeTables Compute(RopeSetting p) => RopeFrequencies.GiraffePower(p.Theta, p.RotaryDim, p.Num("power"), p.Num("scale"));
}

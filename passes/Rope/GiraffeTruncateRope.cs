namespace LongCtx.Passes.Rope;

/// <summary>
/// <c>--rope giraffe-truncate</c>: Giraffe's truncated basis (Pal et al. 2023, arXiv 2308.10882, sec. 3.2;
/// abacusai/Long-Context <c>truncate_frequency</c>): with b = 2 pi / T, a = b / z: theta_i' = theta_i (theta_i &gt;= b),
/// rho = 2 pi / (16 T) (a &lt;= theta_i &lt; b), 0 (theta_i &lt; a). Options: <c>truncate</c> = T (default: the trained
/// context, so every frequency whose wavelength exceeds it is truncated; 0 disables), <c>z</c> (8), <c>rho-div</c> (16),
/// <c>scale</c> (linear scale applied first, default 1).
/// </summary>
public sealed class GiraffeTruncateRope : RopeScalingPass
{
    protected override string MethodName => "giraffe-truncate";
    protected override RopeTables Compute(RopeSetting p) =>
        RopeFrequencies.GiraffeTruncate(p.Theta, p.RotaryDim, p.Num("truncate", p.TrainedContext), p.Num("scale"), p.Num("z"), p.Num("rho-div"));
}

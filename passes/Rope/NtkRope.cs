namespace LongCtx.Passes.Rope;

/// <summary>
/// <c>--rope ntk</c>: NTK-aware base change (bloc97, r/LocalLLaMA, June 2023): base' = base * s^(d/(d-2)),
/// theta_i' = base'^(-2i/d); interpolates the lowest frequency by s and keeps the highest. No temperature.
/// </summary>
public sealed class NtkRope : RopeScalingPass
{
    protected override string MethodName => "ntk";
    protected override RopeTables Compute(RopeSetting p) => RopeFrequencies.Ntk(p.Theta, p.RotaryDim, p.Scale);
}

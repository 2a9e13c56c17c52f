namespace LongCtx.Passes.Rope;

/// <summary>
/// <c>--rope llama3</c>: Llama 3.1 frequency-dependent scaling (HF <c>_compute_llama3_parameters</c>): wavelengths
/// shorter than L_orig/high_freq_factor keep theta_i, longer than L_orig/low_freq_factor get theta_i / factor, a smooth
/// blend in between. Options: <c>factor</c> (default context / trained), <c>low-freq-factor</c> (1),
/// <c>high-freq-factor</c> (4), <c>original-max-position</c> (default the trained context).
/// </summary>
public sealed class Llama3Rope : RopeScalingPass
{
    protected override string MethodName => "llama3";
    protected override RopeTables Compute(RopeSetting p) =>
        RopeFrequencies.Llama3(p.Theta, p.RotaryDim, p.Scale, p.Num("original-max-position", p.TrainedContext), p.Num("low-freq-factor"), p.Num("high-freq-factor"));
}

namespace LongCtx.Runtime;

/// <summary>
/// The valid ranges of <see cref="GenerationOptions"/> (issue 14, "Sampling"): a NaN or negative temperature, a top-p
/// outside (0, 1], a negative top-k, a negative token budget or chunk are refused with the valid range; a temperature
/// below <see cref="MinTemperature"/> is taken as greedy (dividing logits by it overflows float and used to make the
/// sampler return the least likely token).
/// </summary>
public static class GenerationChecks
{
    /// <summary>Temperatures below this sample like 0 (greedy): exp(l/T) differences are far below double precision.</summary>
    public const float MinTemperature = 1e-4f;

    /// <summary>The options, checked; a tiny temperature becomes 0 (greedy).</summary>
    public static GenerationOptions Validated(this GenerationOptions o)
    {
        if (!float.IsFinite(o.Temperature) || o.Temperature < 0)
            throw new ArgumentException($"temperature {o.Temperature}: give 0 (greedy) or a positive finite number");
        if (!float.IsFinite(o.TopP) || o.TopP <= 0 || o.TopP > 1)
            throw new ArgumentException($"top-p {o.TopP}: give a probability mass in (0, 1] (1 = off)");
        if (o.TopK < 0) throw new ArgumentException($"top-k {o.TopK}: give 0 (off) or a positive number of tokens");
        if (o.MaxNewTokens < 0) throw new ArgumentException($"max new tokens {o.MaxNewTokens}: must not be negative");
        if (o.Chunk < 0) throw new ArgumentException($"chunk {o.Chunk}: give 0 (whole prompt) or a positive number of tokens");
        return o.Temperature is > 0 and < MinTemperature ? o with { Temperature = 0 } : o;
    }
}

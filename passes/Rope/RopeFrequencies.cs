namespace LongCtx.Passes.Rope;

/// <summary>
/// Rotary tables for one method at one scale: the per-pair inverse frequencies (radians per position, length
/// rotary_dim/2, the order of HF <c>inv_freq</c>) and the multiplier applied to cos and sin (YaRN's attention
/// temperature, LongRoPE's magnitude scaling; 1 for the others). Extra holds derived quantities for reports.
/// </summary>
public sealed record RopeTables(string Method, double Scale, double[] InvFreq, double CosSinMultiplier, IReadOnlyDictionary<string, double> Extra)
{
    public static RopeTables Of(string method, double s, double[] invFreq, double mscale = 1.0, IReadOnlyDictionary<string, double>? extra = null) =>
        new(method, s, invFreq, mscale, extra ?? new Dictionary<string, double>());
}

/// <summary>
/// Reference implementations (double precision) of RoPE inverse frequencies for the context-extension methods LongCtx
/// supports. <c>d</c> is the rotary dimension, <c>i</c> = 0..d/2-1 the pair index, theta_i = base^(-2i/d) the plain
/// RoPE frequency (Su et al. 2021, RoFormer). Every function is pure; the passes and the tests both call these.
/// </summary>
public static class RopeFrequencies
{
    /// <summary>Plain RoPE (RoFormer): theta_i = base^(-2i/d).</summary>
    public static double[] Plain(double theta, int dim)
    {
        CheckDim(dim);
        var r = new double[dim / 2];
        for (int i = 0; i < r.Length; i++) r[i] = 1.0 / Math.Pow(theta, 2.0 * i / dim);
        return r;
    }

    /// <summary>
    /// Position interpolation (Chen et al. 2023, "Extending Context Window of LLMs via Positional Interpolation"; the
    /// best baseline in Giraffe, Pal et al. 2023): positions m -> m/s, equivalently theta_i' = theta_i / s.
    /// </summary>
    public static RopeTables Linear(double theta, int dim, double s)
    {
        var f = Plain(theta, dim);
        return RopeTables.Of("linear", s, f.Select(x => x / s).ToArray());
    }

    /// <summary>
    /// NTK-aware scaling (bloc97, r/LocalLLaMA 2023): change the base so the lowest frequency is interpolated by s while
    /// the highest is kept: base' = base * s^(d/(d-2)), theta_i' = base'^(-2i/d).
    /// </summary>
    public static RopeTables Ntk(double theta, int dim, double s)
    {
        double b = theta * Math.Pow(s, dim / (dim - 2.0));
        return RopeTables.Of("ntk", s, Plain(b, dim), 1.0, new Dictionary<string, double> { ["base_scaled"] = b });
    }

    /// <summary>
    /// Dynamic NTK (emozilla 2023; HF transformers <c>_compute_dynamic_ntk_parameters</c>): NTK with a scale recomputed
    /// from the current sequence length L: alpha = max(1, factor * L / L_train - (factor - 1)); base' = base *
    /// alpha^(d/(d-2)). With factor 1 (the default) alpha = max(1, L / L_train). Note theta_i' = theta_i *
    /// alpha^(-2i/(d-2)), which is how the graph computes it (see <see cref="DynamicNtkRope"/>).
    /// </summary>
    public static RopeTables DynamicNtk(double theta, int dim, double length, double trainedLength, double factor = 1.0)
    {
        double alpha = Math.Max(1.0, factor * length / trainedLength - (factor - 1.0));
        double b = theta * Math.Pow(alpha, dim / (dim - 2.0));
        return RopeTables.Of("dynamic-ntk", alpha, Plain(b, dim), 1.0, new Dictionary<string, double> { ["base_scaled"] = b, ["length"] = length });
    }

    /// <summary>YaRN correction dimension (Peng et al. 2023, eq. 17): d * ln(L_train / (2 pi r)) / (2 ln base).</summary>
    public static double YarnCorrectionDim(double rotations, int dim, double theta, double trainedLength) =>
        dim * Math.Log(trainedLength / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));

    /// <summary>YaRN attention temperature sqrt(1/t) = 0.1 ln(s) + 1 (1 for s &lt;= 1) (Peng et al. 2023, eq. 22).</summary>
    public static double YarnMscale(double s, double mscale = 1.0) => s <= 1 ? 1.0 : 0.1 * mscale * Math.Log(s) + 1.0;

    /// <summary>
    /// YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension of LLMs"), exactly as HF transformers'
    /// <c>_compute_yarn_parameters</c>: low = max(floor(corr_dim(beta_fast)), 0), high = min(ceil(corr_dim(beta_slow)),
    /// d-1) (high += 0.001 when equal); ramp_i = clamp((i - low)/(high - low), 0, 1); mask_i = 1 - ramp_i (the
    /// extrapolation share); theta_i' = (theta_i / s) * (1 - mask_i) + theta_i * mask_i. cos and sin are multiplied by
    /// the attention factor 0.1 ln(s) + 1 (or <paramref name="attentionFactor"/> when given).
    /// </summary>
    public static RopeTables Yarn(double theta, int dim, double s, double trainedLength, double betaFast = 32, double betaSlow = 1,
        double? attentionFactor = null, bool truncate = true)
    {
        double lo = YarnCorrectionDim(betaFast, dim, theta, trainedLength), hi = YarnCorrectionDim(betaSlow, dim, theta, trainedLength);
        if (truncate) { lo = Math.Floor(lo); hi = Math.Ceiling(hi); }
        lo = Math.Max(lo, 0); hi = Math.Min(hi, dim - 1);
        double hiR = hi == lo ? hi + 0.001 : hi;
        var f = Plain(theta, dim);
        var r = new double[f.Length];
        for (int i = 0; i < f.Length; i++)
        {
            double ramp = Math.Clamp((i - lo) / (hiR - lo), 0.0, 1.0);
            double mask = 1 - ramp;
            r[i] = f[i] / s * (1 - mask) + f[i] * mask;
        }
        double m = attentionFactor ?? YarnMscale(s);
        return RopeTables.Of("yarn", s, r, m, new Dictionary<string, double> { ["yarn_low"] = lo, ["yarn_high"] = hi, ["mscale"] = m });
    }

    /// <summary>
    /// LongRoPE (Ding et al. 2024, "LongRoPE: Extending LLM Context Window Beyond 2 Million Tokens"; HF
    /// <c>_compute_longrope_parameters</c>, Phi-3): theta_i' = theta_i / lambda_i with per-pair rescale factors lambda
    /// (the short list while the sequence is at most L_train, the long list beyond), and cos/sin multiplied by
    /// sqrt(1 + ln(s) / ln(L_train)), s = L_max / L_train (1 when s &lt;= 1), unless an attention factor is given.
    /// </summary>
    public static RopeTables LongRope(double theta, int dim, IReadOnlyList<double> factors, double contextLength, double trainedLength, double? attentionFactor = null)
    {
        var f = Plain(theta, dim);
        if (factors.Count != f.Length)
            throw new ArgumentException($"longrope: the factor list has {factors.Count} entries, but rotary dim {dim} needs {f.Length} (one per pair)");
        double s = contextLength / trainedLength;
        double m = attentionFactor ?? LongRopeMscale(s, trainedLength);
        return RopeTables.Of("longrope", s, f.Select((x, i) => x / factors[i]).ToArray(), m, new Dictionary<string, double> { ["mscale"] = m });
    }

    /// <summary>LongRoPE magnitude scaling sqrt(1 + ln(s)/ln(L_train)), 1 for s &lt;= 1.</summary>
    public static double LongRopeMscale(double s, double trainedLength) => s <= 1 ? 1.0 : Math.Sqrt(1 + Math.Log(s) / Math.Log(trainedLength));

    /// <summary>
    /// Llama 3.1 scaling (Meta 2024; HF <c>_compute_llama3_parameters</c>): wavelength w_i = 2 pi / theta_i;
    /// w_i &lt; L_orig/high_freq_factor: keep theta_i; w_i &gt; L_orig/low_freq_factor: theta_i / factor; in between, with
    /// smooth = (L_orig / w_i - low) / (high - low): theta_i' = (1 - smooth) theta_i / factor + smooth theta_i.
    /// </summary>
    public static RopeTables Llama3(double theta, int dim, double factor, double originalMaxPosition, double lowFreqFactor = 1, double highFreqFactor = 4)
    {
        if (highFreqFactor <= lowFreqFactor) throw new ArgumentException($"llama3: high-freq-factor ({highFreqFactor}) must exceed low-freq-factor ({lowFreqFactor})");
        double lowWl = originalMaxPosition / lowFreqFactor, highWl = originalMaxPosition / highFreqFactor;
        var f = Plain(theta, dim);
        var r = new double[f.Length];
        for (int i = 0; i < f.Length; i++)
        {
            double wl = 2 * Math.PI / f[i];
            double g = wl > lowWl ? f[i] / factor : f[i];
            if (!(wl < highWl) && !(wl > lowWl))
            {
                double smooth = (originalMaxPosition / wl - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                g = (1 - smooth) * g / factor + smooth * g;
            }
            r[i] = g;
        }
        return RopeTables.Of("llama3", factor, r);
    }

    /// <summary>
    /// Giraffe truncated basis (Pal et al. 2023, "Giraffe: Adventures in Expanding Context Lengths in LLMs", sec. 3.2;
    /// abacusai/Long-Context <c>truncate_frequency</c>): with cutoff b = 2 pi / T (T = <paramref name="truncateWavelength"/>,
    /// by default the trained context), a = b / z and rho = 2 pi / (T * rhoDivisor): theta_i' = theta_i if theta_i &gt;= b,
    /// rho if a &lt;= theta_i &lt; b, 0 if theta_i &lt; a (defaults z = 8, rhoDivisor = 16, as in the released code). Frequencies
    /// are first divided by the linear scale s (1 by default; Giraffe combines both). T &lt;= 0 disables truncation.
    /// </summary>
    public static RopeTables GiraffeTruncate(double theta, int dim, double truncateWavelength, double s = 1.0, double z = 8, double rhoDivisor = 16)
    {
        var f = Plain(theta, dim).Select(x => s > 1 ? x / s : x).ToArray();
        if (truncateWavelength > 0)
        {
            double b = 2 * Math.PI / truncateWavelength, rho = 2 * Math.PI / (truncateWavelength * rhoDivisor);
            for (int i = 0; i < f.Length; i++) f[i] = f[i] < b / z ? 0 : f[i] < b ? rho : f[i];
        }
        return RopeTables.Of("giraffe-truncate", s, f, 1.0, new Dictionary<string, double> { ["truncate"] = truncateWavelength });
    }

    /// <summary>
    /// Giraffe power scaling (Pal et al. 2023, sec. 3.2; abacusai/Long-Context <c>scale_power</c>): theta_i' =
    /// theta_i / s * (1 - 2i/d)^k: high frequencies (small i) barely change, low ones shrink towards 0. s = 1 by default
    /// (pure power scaling); k = 0 is the identity.
    /// </summary>
    public static RopeTables GiraffePower(double theta, int dim, double k, double s = 1.0)
    {
        var f = Plain(theta, dim);
        var r = new double[f.Length];
        for (int i = 0; i < f.Length; i++) r[i] = (s > 1 ? f[i] / s : f[i]) * Math.Pow(1.0 - 2.0 * i / dim, k);
        return RopeTables.Of("giraffe-power", s, r, 1.0, new Dictionary<string, double> { ["power"] = k });
    }

    private static void CheckDim(int dim)
    {
        if (dim < 4 || dim % 2 != 0) throw new ArgumentException($"rotary dimension {dim} must be even and at least 4");
    }
}

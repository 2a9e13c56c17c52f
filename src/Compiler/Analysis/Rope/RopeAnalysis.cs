using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Analysis.Rope;

/// <summary>
/// How exactly a model states its rotary frequencies, which sets the two tolerances of <see cref="RopeAnalysis"/>:
/// <see cref="FitTolerance"/> (relative; how far a frequency may sit from theta^(-2i/d) and still be RoPE) and
/// <see cref="SnapTolerance"/> (relative; how far a fitted base may sit from a round value and still be taken as it).
/// </summary>
public sealed record RopePrecision(string Name, double FitTolerance, double SnapTolerance)
{
    /// <summary>fp32 (or double) inv_freq constant: each value rounded to 2^-24 relative.</summary>
    public static readonly RopePrecision InvFreqFloat32 = new("float32 inv_freq", 1e-4, 1e-5);
    /// <summary>fp16 inv_freq constant: relative rounding up to 2^-11.</summary>
    public static readonly RopePrecision InvFreqFloat16 = new("float16 inv_freq", 1e-3, 1e-3);
    /// <summary>bf16 inv_freq constant: relative rounding up to 2^-8.</summary>
    public static readonly RopePrecision InvFreqBFloat16 = new("bfloat16 inv_freq", 8e-3, 1e-3);
    /// <summary>fp32 cos/sin cache: the frequencies are angles read back from rounded cos and sin.</summary>
    public static readonly RopePrecision CacheFloat32 = new("float32 cos/sin cache", 1e-3, 1e-4);
    /// <summary>fp16 (or bf16) cos/sin cache: absolute rounding ~5e-4 on every cos and sin.</summary>
    public static readonly RopePrecision CacheFloat16 = new("float16 cos/sin cache", 2e-2, 2e-3);

    /// <summary>The precision of frequencies stored as <paramref name="element"/>, directly or as cos/sin caches.</summary>
    public static RopePrecision Of(ElementType element, bool fromCache) => (element, fromCache) switch
    {
        (ElementType.Float or ElementType.Double, false) => InvFreqFloat32,
        (ElementType.Float16, false) => InvFreqFloat16,
        (_, false) => InvFreqBFloat16,
        (ElementType.Float or ElementType.Double, true) => CacheFloat32,
        _ => CacheFloat16,
    };
}

/// <summary>
/// The base recovered from a list of rotary frequencies.
/// </summary>
/// <param name="Theta">the base after the rounding rule of <see cref="RopeAnalysis.RoundTheta"/> (null when no base fits at all)</param>
/// <param name="RawTheta">the least-squares base before rounding (0 when none)</param>
/// <param name="RotaryDim">2 x the number of frequencies</param>
/// <param name="Mismatch">why the frequencies are not exactly theta^(-2i/d) within the precision's fit tolerance (null when they are)</param>
public sealed record RopeFit(double? Theta, double RawTheta, int RotaryDim, string? Mismatch)
{
    /// <summary>The frequencies are plain RoPE: 1, theta^(-2/d), theta^(-4/d), ... within tolerance.</summary>
    public bool IsPlain => Theta is not null && Mismatch is null;
}

/// <summary>How a cos (or sin) table lays out the d/2 frequencies along its last axis.</summary>
public enum CacheLayout
{
    /// <summary>[max_pos, d/2]: column i is frequency i (com.microsoft RotaryEmbedding / GroupQueryAttention, ONNX RotaryEmbedding).</summary>
    Half,
    /// <summary>[max_pos, d] = Concat(f, f): column i is frequency i (HF rotate_half caches).</summary>
    Duplicated,
    /// <summary>[max_pos, d] = repeat_interleave(f, 2): column 2i is frequency i (GPT-J rotate_every_two caches).</summary>
    RepeatInterleaved,
}

/// <summary>
/// THE place where LongCtx recovers RoPE parameters (Su et al. 2021, "RoFormer", arXiv:2104.09864, eq. 15:
/// inv_freq_i = theta^(-2i/d), i = 0..d/2-1, d the rotary dimension) from what a graph stores: an inv_freq constant
/// (torch exports) or cos/sin caches (fused ops). Attention discovery, the RoPE locator of the scaling passes and the
/// architecture card all call these functions, so they agree on theta, the rotary dim and the rounding.
/// <para>Fit: least squares on ln f_i - ln f_0 = -(2i/d) ln theta, anchored at the first frequency (so a uniform
/// scaling of all frequencies, position interpolation, leaves the base unchanged).</para>
/// <para>Rounding (one rule): a fitted base within the source's snap tolerance (<see cref="RopePrecision"/>) of a
/// 2-significant-digit number (1e4, 5e5, 1e6, 2.5e4, ...) is that number; any other base is rounded to 6 significant
/// digits (what a float32 table can carry).</para>
/// <para>Caches: row p holds (cos, sin)(p f_i) (times a multiplier for YaRN/LongRoPE, which atan2 cancels). With both
/// tables, f_i is the least-squares slope through the origin of the phase atan2(sin, cos) unwrapped along the positions
/// (rows 1..<see cref="MaxFitRows"/> contribute, so fp16 rounding averages out); with cos alone, f_i = acos(cos[1, i]).</para>
/// </summary>
public static class RopeAnalysis
{
    /// <summary>Rows of a cos/sin cache the phase fit reads (the slope error falls as rows^-1.5; 4096 rows put it near 1e-9 rad for fp16).</summary>
    public const int MaxFitRows = 4096;

    /// <summary>Fits theta to <paramref name="freqs"/> (f_0 first) and checks that they are plain RoPE.</summary>
    public static RopeFit Fit(IReadOnlyList<double> freqs, RopePrecision precision)
    {
        int d = 2 * freqs.Count;
        if (freqs.Count < 2) return new RopeFit(null, 0, d, "fewer than 2 frequencies");
        for (int i = 0; i < freqs.Count; i++)
            if (!(freqs[i] > 0)) return new RopeFit(null, 0, d, $"frequency {i} is {freqs[i]}");
        double l0 = Math.Log(freqs[0]), num = 0, den = 0;
        for (int i = 1; i < freqs.Count; i++)
        {
            double x = 2.0 * i / d;
            num += x * -(Math.Log(freqs[i]) - l0);
            den += x * x;
        }
        double raw = Math.Exp(num / den);
        if (!(raw > 1)) return new RopeFit(null, raw, d, $"fitted base {raw} is not above 1");
        double tol = precision.FitTolerance;
        string? why = null;
        if (Math.Abs(freqs[0] - 1) > tol) why = $"first frequency is {freqs[0]}, not 1";
        else
            for (int i = 0; i < freqs.Count && why is null; i++)
            {
                double want = Math.Pow(raw, -2.0 * i / d);
                if (Math.Abs(freqs[i] - want) > tol * want + 1e-7) why = $"frequency {i} is {freqs[i]}, base {raw:G6} predicts {want:G6}";
            }
        return new RopeFit(RoundTheta(raw, precision), raw, d, why);
    }

    /// <inheritdoc cref="Fit(IReadOnlyList{double}, RopePrecision)"/>
    public static RopeFit Fit(float[] freqs, RopePrecision precision) => Fit(freqs.Select(f => (double)f).ToArray(), precision);

    /// <summary>
    /// The rounding rule: <paramref name="raw"/> within <see cref="RopePrecision.SnapTolerance"/> (relative) of a
    /// 2-significant-digit number becomes that number; otherwise it is rounded to 6 significant digits.
    /// </summary>
    public static double RoundTheta(double raw, RopePrecision precision)
    {
        if (!(raw > 0) || double.IsInfinity(raw)) return raw;
        double round = RoundSignificant(raw, 2);
        return Math.Abs(round - raw) <= precision.SnapTolerance * raw ? round : RoundSignificant(raw, 6);
    }

    /// <summary><paramref name="x"/> rounded to <paramref name="digits"/> significant digits.</summary>
    public static double RoundSignificant(double x, int digits)
    {
        if (x == 0 || double.IsNaN(x) || double.IsInfinity(x)) return x;
        double scale = Math.Pow(10, Math.Floor(Math.Log10(Math.Abs(x))) + 1 - digits);
        return Math.Round(x / scale) * scale;
    }

    /// <summary>
    /// Frequencies f_i from cos (and, when given, sin) tables [max_pos, width] laid out as <paramref name="layout"/>;
    /// null when the tables have fewer than 2 rows or disagree in shape.
    /// </summary>
    public static double[]? CacheFrequencies(Tensor cos, Tensor? sin, CacheLayout layout)
    {
        if (cos.Dims.Length != 2 || cos.Dims[0] < 2) return null;
        if (sin is not null && !sin.Dims.SequenceEqual(cos.Dims)) sin = null;
        int rows = (int)Math.Min(cos.Dims[0], MaxFitRows), width = (int)cos.Dims[1];
        int n = layout == CacheLayout.Half ? width : width / 2;
        int Col(int i) => layout == CacheLayout.RepeatInterleaved ? 2 * i : i;
        var c = cos.ToFloats();
        var r = new double[n];
        if (sin is null)
        {
            for (int i = 0; i < n; i++) r[i] = Math.Acos(Math.Clamp(c[width + Col(i)], -1f, 1f));
            return r;
        }
        var s = sin.ToFloats();
        double sumPP = 0;
        for (int p = 1; p < rows; p++) sumPP += (double)p * p;
        for (int i = 0; i < n; i++)
        {
            int col = Col(i);
            double phase = 0, prev = 0, sumP = 0;
            for (int p = 1; p < rows; p++)
            {
                double a = Math.Atan2(s[p * width + col], c[p * width + col]);
                double step = a - prev;
                step -= 2 * Math.PI * Math.Round(step / (2 * Math.PI));
                phase += step;
                prev = a;
                sumP += p * phase;
            }
            r[i] = sumP / sumPP;
        }
        return r;
    }

    /// <summary>RoPE of a block that computes its tables from an inv_freq constant (<c>Source</c> "inv_freq").</summary>
    public static RopeInfo FromInvFreq(float[] invFreq, ElementType element, bool interleaved) =>
        new(true, Fit(invFreq, RopePrecision.Of(element, fromCache: false)).Theta, 2 * invFreq.Length, interleaved, null, "inv_freq");

    /// <summary>
    /// RoPE of a block that reads cos/sin caches (<c>Source</c> "cos_cache"): rotary dim from
    /// <paramref name="rotaryDimAttr"/> when positive, else from the cache width; theta fitted to
    /// <see cref="CacheFrequencies"/>. Without a constant cache only the attribute is known (<c>Source</c> "attribute").
    /// </summary>
    public static RopeInfo FromCache(Tensor? cos, Tensor? sin, CacheLayout layout, bool interleaved, long rotaryDimAttr = 0)
    {
        if (cos is null || cos.Dims.Length == 0) return new RopeInfo(true, null, (int)rotaryDimAttr, interleaved, null, "attribute");
        int width = (int)cos.Dims[^1];
        int dim = rotaryDimAttr > 0 ? (int)rotaryDimAttr : layout == CacheLayout.Half ? 2 * width : width;
        var f = CacheFrequencies(cos, sin, layout);
        double? theta = f is null ? null : Fit(f, RopePrecision.Of(cos.Element, fromCache: true)).Theta;
        return new RopeInfo(true, theta, dim, interleaved, (int)cos.Dims[0], "cos_cache");
    }
}

using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Analysis.Rope;

/// <summary>
/// The inverse of <see cref="RopeAnalysis.CacheFrequencies"/>: cos/sin caches [rows, d/2] with
/// cache[p, i] = (cos, sin)(p f_i) x multiplier (Su et al. 2021, RoFormer, eq. 34; the multiplier is YaRN's attention
/// temperature or LongRoPE's magnitude scaling, 1 otherwise), written in one place with two documented roundings.
/// </summary>
public static class RopeCacheTables
{
    /// <summary>
    /// Each step rounded to float32 as an exported graph computes it (angle = float(p) * f_i in float32, cos in double
    /// rounded to float, then times the float multiplier), so folding an exported RoPE chain into caches stays exact,
    /// also after a RoPE pass scaled the frequencies or inserted a multiplier. Stored as float16 when
    /// <paramref name="elem"/> is float16, else float32.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) Float32Chain(float[] invFreq, int rows, ElementType elem, double multiplier = 1.0)
    {
        int h = invFreq.Length;
        var c = new float[(long)rows * h];
        var s = new float[c.Length];
        for (int p = 0; p < rows; p++)
            for (int i = 0; i < h; i++)
            {
                float angle = (float)p * invFreq[i];
                float mult = (float)multiplier;
                c[p * h + i] = multiplier == 1.0 ? (float)Math.Cos(angle) : (float)Math.Cos(angle) * mult;
                s[p * h + i] = multiplier == 1.0 ? (float)Math.Sin(angle) : (float)Math.Sin(angle) * mult;
            }
        if (elem == ElementType.Float16)
            return (Tensor.FromHalves(c.Select(x => (Half)x).ToArray(), rows, h), Tensor.FromHalves(s.Select(x => (Half)x).ToArray(), rows, h));
        return (Tensor.FromFloats(c, rows, h), Tensor.FromFloats(s, rows, h));
    }

    /// <summary>
    /// Computed in double (angle p f_i, cos, sin and the multiplier) and rounded once to <paramref name="elem"/>
    /// (float32 or float16): what a RoPE scaling pass writes when it recomputes a model's own caches.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) Double(double[] invFreq, int rows, ElementType elem, double multiplier = 1.0)
    {
        int half = invFreq.Length;
        var cos = new double[rows * half];
        var sin = new double[rows * half];
        for (int pos = 0; pos < rows; pos++)
            for (int i = 0; i < half; i++)
            {
                double a = pos * invFreq[i];
                cos[pos * half + i] = Math.Cos(a) * multiplier;
                sin[pos * half + i] = Math.Sin(a) * multiplier;
            }
        return (Table(elem, cos, rows, half), Table(elem, sin, rows, half));
    }

    private static Tensor Table(ElementType et, double[] v, int rows, int half) => et switch
    {
        ElementType.Float16 => Tensor.FromHalves(v.Select(x => (Half)x).ToArray(), rows, half),
        ElementType.Float => Tensor.FromFloats(v.Select(x => (float)x).ToArray(), rows, half),
        _ => throw new NotSupportedException($"cos/sin caches of type {et.ShortName()} are not supported (float or float16)"),
    };
}

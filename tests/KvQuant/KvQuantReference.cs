namespace LongCtx.Tests.KvQuant;

/// <summary>
/// The C# oracle of ORT's quantized KV cache (ORT 1.31 CPU GroupQueryAttention, MLAS qkv_quant): symmetric, no zero
/// point; q = clamp(round(x / scale), -2^(b-1), 2^(b-1)-1); int8 stored as int8, int4 as two nibbles q + 8
/// (offset binary, 0..15) per uint8 (channel 2j in the low nibble, 2j+1 in the high one); x' = q * scale. Scales: one per tensor, or one per
/// KV head and channel ([Hkv, 1, D]).
/// </summary>
internal static class KvQuantReference
{
    /// <summary>Quantizes one cache [Hkv, T, D] (row-major) to int codes.</summary>
    public static int[] Quantize(float[] x, int hkv, int t, int d, float[] scale, int bits)
    {
        int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
        var q = new int[x.Length];
        for (int h = 0; h < hkv; h++)
            for (int i = 0; i < t; i++)
                for (int j = 0; j < d; j++)
                {
                    int at = (h * t + i) * d + j;
                    float s = scale.Length == 1 ? scale[0] : scale[h * d + j];
                    q[at] = Math.Clamp((int)MathF.Round(x[at] / s, MidpointRounding.ToEven), lo, hi);
                }
        return q;
    }

    public static float[] Dequantize(int[] q, int hkv, int t, int d, float[] scale)
    {
        var x = new float[q.Length];
        for (int h = 0; h < hkv; h++)
            for (int i = 0; i < t; i++)
                for (int j = 0; j < d; j++)
                {
                    int at = (h * t + i) * d + j;
                    x[at] = q[at] * (scale.Length == 1 ? scale[0] : scale[h * d + j]);
                }
        return x;
    }

    /// <summary>The stored bytes of int codes: int8 as is, int4 two per byte as q + 8 (low nibble first).</summary>
    public static byte[] Pack(int[] q, int bits)
    {
        if (bits == 8) return Array.ConvertAll(q, v => unchecked((byte)(sbyte)v));
        var b = new byte[q.Length / 2];
        for (int i = 0; i < b.Length; i++) b[i] = (byte)((q[2 * i] + 8) | ((q[2 * i + 1] + 8) << 4));
        return b;
    }

    public static int[] Unpack(byte[] b, int bits)
    {
        if (bits == 8) return Array.ConvertAll(b, v => (int)unchecked((sbyte)v));
        var q = new int[b.Length * 2];
        for (int i = 0; i < b.Length; i++)
        {
            q[2 * i] = (b[i] & 0xF) - 8;
            q[2 * i + 1] = (b[i] >> 4) - 8;
        }
        return q;
    }

    /// <summary>Textbook causal GQA in double: q [S, Hq*D] at positions P..P+S-1, k/v caches [Hkv, P+S, D] (dequantized).</summary>
    public static float[] Attention(float[] q, float[] k, float[] v, int hq, int hkv, int d, int p, int s, float scale)
    {
        int total = p + s, group = hq / hkv;
        var output = new float[s * hq * d];
        for (int h = 0; h < hq; h++)
            for (int i = 0; i < s; i++)
            {
                int kvh = h / group, n = p + i + 1;
                var w = new double[n];
                double max = double.NegativeInfinity;
                for (int t = 0; t < n; t++)
                {
                    double dot = 0;
                    for (int j = 0; j < d; j++) dot += (double)q[(i * hq + h) * d + j] * k[(kvh * total + t) * d + j];
                    w[t] = dot * scale;
                    max = Math.Max(max, w[t]);
                }
                double sum = 0;
                for (int t = 0; t < n; t++) sum += w[t] = Math.Exp(w[t] - max);
                for (int j = 0; j < d; j++)
                {
                    double acc = 0;
                    for (int t = 0; t < n; t++) acc += w[t] * v[(kvh * total + t) * d + j];
                    output[(i * hq + h) * d + j] = (float)(acc / sum);
                }
            }
        return output;
    }
}

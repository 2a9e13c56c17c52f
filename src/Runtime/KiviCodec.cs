namespace LongCtx.Runtime;

/// <summary>
/// KIVI quantization in C# (Liu et al. 2024, arXiv:2402.02750, section 3), the same float operations as the native
/// kernels (custom-ops/kernels/kivi/kivi.cc, longctx/kivi.h) so the codes match them bit for bit:
/// <code>
///   zero = min(x), scale = (max(x) - min(x)) / (2^b - 1), inv = scale > 0 ? 1 / scale : 0
///   q = clamp(round_half_even((x - zero) * inv), 0, 2^b - 1)        y = q * scale + zero
/// </code>
/// Keys per channel (a group = G tokens of one channel; params [T/G, 2, D]), values per token (a group = G channels
/// of one token; params [T, 2, D/G]); codes [T, D*b/8], channel c in byte c/(8/b) at bit b*(c%(8/b)).
/// The KIVI KV manager folds its residual with it; tests use it as the reference of the native path.
/// </summary>
public static class KiviCodec
{
    private static (float Scale, float Zero, float Inv) Range(float lo, float hi, int bits)
    {
        float s = (hi - lo) / ((1 << bits) - 1);
        return (s, lo, s > 0f ? 1f / s : 0f);
    }

    private static int Code(float x, float zero, float inv, int bits)
    {
        float v = (x - zero) * inv;
        float qmax = (1 << bits) - 1;
        v = v < 0f ? 0f : (v > qmax ? qmax : v);
        return (int)MathF.Round(v, MidpointRounding.ToEven);
    }

    private static void Put(Span<byte> codes, int j, int bits, int code)
    {
        int per = 8 / bits;
        codes[j / per] |= (byte)(code << (bits * (j % per)));
    }

    private static int Get(ReadOnlySpan<byte> codes, int j, int bits)
    {
        int per = 8 / bits;
        return (codes[j / per] >> (bits * (j % per))) & ((1 << bits) - 1);
    }

    private static void Check(int bits, int group, int tokens, int d, bool keys)
    {
        if (bits is not (2 or 4)) throw new ArgumentException($"KIVI stores 2 or 4 bits, not {bits}");
        if (group <= 0 || d % 8 != 0 || (keys ? tokens % group != 0 : d % group != 0))
            throw new ArgumentException($"KIVI {(keys ? "keys" : "values")}: {tokens} tokens x head_dim {d} do not split into groups of {group}");
    }

    /// <summary>Quantizes keys x [T, D] (T a multiple of G) per channel: codes [T, D*b/8] (overwritten), params [T/G, 2, D].</summary>
    public static void QuantizeKeys(ReadOnlySpan<float> x, int tokens, int d, int bits, int group, Span<byte> codes, Span<float> qparams)
    {
        Check(bits, group, tokens, d, true);
        int rb = d * bits / 8;
        codes[..(tokens * rb)].Clear();
        for (int g = 0; g < tokens / group; g++)
        {
            var p = qparams.Slice(g * 2 * d, 2 * d);
            for (int j = 0; j < d; j++)
            {
                float lo = x[g * group * d + j], hi = lo;
                for (int r = 1; r < group; r++) { float v = x[(g * group + r) * d + j]; lo = MathF.Min(lo, v); hi = MathF.Max(hi, v); }
                var (s, z, inv) = Range(lo, hi, bits);
                p[j] = s; p[d + j] = z;
                for (int r = 0; r < group; r++) Put(codes.Slice((g * group + r) * rb, rb), j, bits, Code(x[(g * group + r) * d + j], z, inv, bits));
            }
        }
    }

    /// <summary>Quantizes values x [T, D] per token: codes [T, D*b/8] (overwritten), params [T, 2, D/G].</summary>
    public static void QuantizeValues(ReadOnlySpan<float> x, int tokens, int d, int bits, int group, Span<byte> codes, Span<float> qparams)
    {
        Check(bits, group, tokens, d, false);
        int rb = d * bits / 8, ng = d / group;
        codes[..(tokens * rb)].Clear();
        for (int t = 0; t < tokens; t++)
            for (int g = 0; g < ng; g++)
            {
                var row = x.Slice(t * d + g * group, group);
                float lo = row[0], hi = row[0];
                foreach (float v in row) { lo = MathF.Min(lo, v); hi = MathF.Max(hi, v); }
                var (s, z, inv) = Range(lo, hi, bits);
                qparams[t * 2 * ng + g] = s; qparams[t * 2 * ng + ng + g] = z;
                for (int j = 0; j < group; j++) Put(codes.Slice(t * rb, rb), g * group + j, bits, Code(row[j], z, inv, bits));
            }
    }

    /// <summary>y [T, D] = dequantized keys.</summary>
    public static void DequantizeKeys(ReadOnlySpan<byte> codes, ReadOnlySpan<float> qparams, int tokens, int d, int bits, int group, Span<float> y)
    {
        Check(bits, group, tokens, d, true);
        int rb = d * bits / 8;
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < d; j++)
                y[t * d + j] = Get(codes.Slice(t * rb, rb), j, bits) * qparams[t / group * 2 * d + j] + qparams[t / group * 2 * d + d + j];
    }

    /// <summary>y [T, D] = dequantized values.</summary>
    public static void DequantizeValues(ReadOnlySpan<byte> codes, ReadOnlySpan<float> qparams, int tokens, int d, int bits, int group, Span<float> y)
    {
        Check(bits, group, tokens, d, false);
        int rb = d * bits / 8, ng = d / group;
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < d; j++)
                y[t * d + j] = Get(codes.Slice(t * rb, rb), j, bits) * qparams[t * 2 * ng + j / group] + qparams[t * 2 * ng + ng + j / group];
    }
}

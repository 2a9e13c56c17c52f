using LongCtx.Contract;

namespace LongCtx.Runtime.Eviction;

/// <summary>
/// The attention mass cached keys receive, recomputed from exposed queries (pass kv-evict) and the cache itself:
/// for an observing query row q_i at cache index p_i and every query head h of KV head g,
/// <code>  score[g][j] += softmax_{j' &lt;= p_i}(scale · rope(q_{i,h}, p_i) · k_{g,j'})[j]   for j &lt;= p_i  </code>
/// exactly the probabilities the attention op used (rope as the op applies it: the op's cos/sin magnitude times the
/// rotation by p_i · θ of each pair, halves or interleaved). Also re-rotates cached keys: moving every key of a layer
/// Δ positions back keeps the RoPE relative distance to later queries (the op rotates a new query by its cache index)
/// after Δ tokens were evicted before it (<see cref="ShiftKeys"/>). Pure functions of their arguments.
/// </summary>
public static class KeyScorer
{
    /// <summary>Rotates the first rotary_dim channels of one head row in place by position <paramref name="pos"/>, with the op's magnitude.</summary>
    public static void RotateQuery(Span<float> row, double pos, KvEvictLayer layer)
    {
        if (layer.InvFreq is not { } inv) return;
        int half = inv.Count;
        for (int i = 0; i < half; i++)
        {
            double a = pos * inv[i], c = Math.Cos(a) * layer.RopeFactor, s = Math.Sin(a) * layer.RopeFactor;
            int i0 = layer.Interleaved ? 2 * i : i, i1 = layer.Interleaved ? 2 * i + 1 : i + half;
            float x = row[i0], y = row[i1];
            row[i0] = (float)(x * c - y * s);
            row[i1] = (float)(x * s + y * c);
        }
    }

    /// <summary>Rotates <paramref name="rows"/> cached key rows (D floats each) back by <paramref name="delta"/> positions (no magnitude: keys carry it).</summary>
    public static void ShiftKeys(Span<float> rows, int count, int headDim, int delta, KvEvictLayer layer)
    {
        if (layer.InvFreq is not { } inv || delta == 0) return;
        int half = inv.Count;
        Span<double> cs = stackalloc double[half], sn = stackalloc double[half];
        for (int i = 0; i < half; i++) { cs[i] = Math.Cos(delta * inv[i]); sn[i] = Math.Sin(delta * inv[i]); }
        for (int r = 0; r < count; r++)
        {
            var row = rows.Slice(r * headDim, headDim);
            for (int i = 0; i < half; i++)
            {
                int i0 = layer.Interleaved ? 2 * i : i, i1 = layer.Interleaved ? 2 * i + 1 : i + half;
                float x = row[i0], y = row[i1];
                row[i0] = (float)(x * cs[i] + y * sn[i]);   // R(-Δθ): x cos + y sin
                row[i1] = (float)(y * cs[i] - x * sn[i]);   //         y cos - x sin
            }
        }
    }

    /// <summary>
    /// Adds into <paramref name="scores"/> ([Hkv][>= length]) the probabilities query rows give the keys of one layer.
    /// <paramref name="queries"/>: rows of H*D floats (un-rotated, as fed to the op) at cache indices <paramref name="positions"/>;
    /// <paramref name="keys"/>: the layer's key buffer [Hkv, bufferLength, D] (rotated keys), <paramref name="length"/> valid rows.
    /// <paramref name="first"/>: per KV head, the first row the head holds (adakv masks the rows before it); null: row 0.
    /// <paramref name="rowWeights"/> (optional, [row][query head]): each row's probabilities are added times its weight (1 when null).
    /// </summary>
    public static void Accumulate(IReadOnlyList<float[]> queries, IReadOnlyList<int> positions, ReadOnlySpan<float> keys, int bufferLength,
        int length, KvEvictLayer layer, float[][] scores, IReadOnlyList<int>? first = null, IReadOnlyList<double[]>? rowWeights = null)
    {
        int h = layer.Heads, hkv = layer.KvHeads, d = layer.HeadDim, group = h / hkv;
        var q = new float[d];
        var logits = new float[length];
        for (int r = 0; r < queries.Count; r++)
        {
            int p = positions[r], visible = Math.Min(p + 1, length);
            for (int head = 0; head < h; head++)
            {
                queries[r].AsSpan(head * d, d).CopyTo(q);
                RotateQuery(q, p, layer);
                int g = head / group, from = first?[g] ?? 0;
                var kh = keys.Slice(g * bufferLength * d, length * d);
                float max = float.NegativeInfinity;
                for (int j = from; j < visible; j++)
                {
                    float dot = Dot(q, kh.Slice(j * d, d));
                    logits[j] = (float)(dot * layer.Scale);
                    if (logits[j] > max) max = logits[j];
                }
                double sum = 0;
                for (int j = from; j < visible; j++) { logits[j] = MathF.Exp(logits[j] - max); sum += logits[j]; }
                float inv = (float)((rowWeights?[r][head] ?? 1) / sum);
                var acc = scores[g];
                for (int j = from; j < visible; j++) acc[j] += logits[j] * inv;
            }
        }
    }

    private static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int n = a.Length, i = 0, w = System.Numerics.Vector<float>.Count;
        var acc = System.Numerics.Vector<float>.Zero;
        for (; i <= n - w; i += w) acc += new System.Numerics.Vector<float>(a[i..]) * new System.Numerics.Vector<float>(b[i..]);
        float s = System.Numerics.Vector.Sum(acc);
        for (; i < n; i++) s += a[i] * b[i];
        return s;
    }
}

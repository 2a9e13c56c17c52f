namespace LongCtx.Runtime.Eviction;

/// <summary>
/// Which cached tokens each method keeps, from per-key scores (pure: indices in, indices out, ascending, so a
/// compaction can move rows forward in place).
/// </summary>
public static class EvictionSelection
{
    /// <summary>
    /// SnapKV (Li et al. 2024, arXiv:2404.14469, Algorithm 1): of <paramref name="length"/> keys, the last
    /// <paramref name="window"/> (the observation window) are kept; the prefix is ranked by the window's votes max-pooled
    /// with kernel <paramref name="pool"/> (stride 1, same padding: clustered neighbours of a hit survive with it) and its
    /// top <paramref name="keep"/> - window kept. keep &gt;= length keeps everything.
    /// </summary>
    public static int[] SnapKv(ReadOnlySpan<float> votes, int length, int window, int keep, int pool)
    {
        if (keep >= length) return Enumerable.Range(0, length).ToArray();
        window = Math.Min(window, keep);
        int prefix = length - window, select = keep - window;
        var pooled = new float[prefix];
        int half = pool / 2;
        for (int j = 0; j < prefix; j++)
        {
            float m = float.NegativeInfinity;
            for (int t = Math.Max(0, j - half); t <= Math.Min(prefix - 1, j + half); t++) m = Math.Max(m, votes[t]);
            pooled[j] = m;
        }
        return [.. Top(pooled, select), .. Enumerable.Range(prefix, window)];
    }

    /// <summary>
    /// H2O (Zhang et al. 2023, arXiv:2306.14048): the <paramref name="recent"/> most recent keys plus the
    /// <paramref name="heavy"/> heavy hitters (largest accumulated attention mass) among the rest.
    /// </summary>
    public static int[] H2o(ReadOnlySpan<float> accumulated, int length, int heavy, int recent)
    {
        if (heavy + recent >= length) return Enumerable.Range(0, length).ToArray();
        int older = length - recent;
        return [.. Top(accumulated[..older], heavy), .. Enumerable.Range(older, recent)];
    }

    /// <summary>
    /// PyramidKV (Cai et al. 2024, arXiv:2406.02069, and its reference code): the selected part of each layer's budget
    /// falls linearly with depth, from max = 2 (mean - window) - min at layer 0 to min = (mean - window) / beta at the
    /// top, the window kept on top of it; the layers' mean stays <paramref name="mean"/>.
    /// </summary>
    public static int[] PyramidBudgets(int mean, int window, int layers, double beta)
    {
        int sel = Math.Max(0, mean - window);
        if (layers == 1) return [mean];
        double min = sel / beta, max = 2.0 * sel - min, step = (max - min) / (layers - 1);
        return Enumerable.Range(0, layers).Select(l => window + (int)Math.Round(max - l * step)).ToArray();
    }

    /// <summary>The indices of the <paramref name="k"/> largest scores, ascending (ties: the earlier index).</summary>
    public static int[] Top(ReadOnlySpan<float> scores, int k)
    {
        k = Math.Clamp(k, 0, scores.Length);
        var idx = Enumerable.Range(0, scores.Length).ToArray();
        var keys = scores.ToArray();
        Array.Sort(idx, (a, b) => keys[b] != keys[a] ? keys[b].CompareTo(keys[a]) : a.CompareTo(b));
        var top = idx[..k];
        Array.Sort(top);
        return top;
    }
}

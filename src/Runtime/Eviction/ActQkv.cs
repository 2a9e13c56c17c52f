using LongCtx.Contract;

namespace LongCtx.Runtime.Eviction;

/// <summary>
/// ActQKV (Xiao et al. 2025, "Activation-aware Probe-Query: Effective Key-Value Retrieval for Long-Context LLMs
/// Inference", arXiv:2502.13542) as a <c>--kv-evict actqkv</c> policy: a probe query built from the observation
/// window by activation bias retrieves the keys, and each layer keeps a dynamic number of them.
/// <list type="number">
/// <item><b>Activation bias.</b> Per query head h, over the window's W rows q_i (rotated at their own positions p_i):
/// μ_c = mean_i q_ic and the token's bias b_i = Σ_c |q_ic − μ_c|: how far its activations deviate from the window's,
/// channel by channel (rows with outlier channels, the paper's anchor tokens, score high; deliberately not divided by
/// each channel's spread, which would make a lone outlier count no more than noise on a quiet channel).</item>
/// <item><b>Probe query.</b> q̂_h = Σ_i w_i R(p_i) q_ih with w_i = b_i / Σ b (uniform when every row is the same),
/// one probe per head, expressed as an un-rotated row at the last position P (RoPE is linear, so
/// R(P)⁻¹ Σ w_i R(p_i) q_i = Σ w_i R(p_i − P) q_i).</item>
/// <item><b>Retrieval.</b> score_j = Σ over the heads h of j's KV group of Σ_i w_ih softmax_j(scale · q_ih · k_j)
/// (<see cref="RowWeights"/>, <see cref="KeyScorer"/>: exact softmax against the cache itself): the weights applied
/// to the rows' attention rather than to the queries, since on recall-public the one averaged probe q̂ (still
/// <see cref="Probe"/>) retrieved worse than the rows it averages (1024 tokens, 10 %, first 30 prompts: 12/30 vs 19/30).</item>
/// <item><b>Dynamic cut-off.</b> Per layer, the prefix keys (the window is always kept) sorted by score: each KV head
/// needs the fewest keys whose share of its prefix mass reaches <c>mass</c>; the layer keeps the largest of its heads'
/// counts (the cache is compacted per layer with one length for all heads), at most budget − window. A peaked layer
/// (information concentrated on few keys) keeps few, a flat layer many.</item>
/// </list>
/// Simplified from the paper (which we follow from its abstract and description only): the paper builds probes in every
/// sliding window during prefill and retrieves from an offloaded KV store at each decode step; here the probe is built
/// once per prompt from the last window (as SnapKV's observation window) and the cache is compacted in place. The paper's
/// information density across layers is taken as the cumulative-mass cut-off above (no learned or calibrated
/// per-layer constants), and the L1 deviation from the window mean is our reading of "activation bias".
/// Pure functions of their arguments.
/// </summary>
public static class ActQkv
{
    /// <summary>
    /// Per window row, its activation-bias weight w_i (sums to 1) for query head <paramref name="head"/> of rows of
    /// <paramref name="headDim"/> channels (H*D floats each); the rows are taken as given (rotate them first to compare
    /// them in the op's space).
    /// </summary>
    public static double[] Weights(IReadOnlyList<float[]> rows, int head, int headDim)
    {
        int w = rows.Count;
        var bias = new double[w];
        for (int c = 0; c < headDim; c++)
        {
            int at = head * headDim + c;
            double mean = 0;
            for (int i = 0; i < w; i++) mean += rows[i][at];
            mean /= w;
            for (int i = 0; i < w; i++) bias[i] += Math.Abs(rows[i][at] - mean);
        }
        double sum = bias.Sum();
        return sum > 0 ? bias.Select(b => b / sum).ToArray() : Enumerable.Repeat(1.0 / w, w).ToArray();
    }

    /// <summary>
    /// The probe query of a layer from its window <paramref name="rows"/> (un-rotated, as fed to the op) at cache indices
    /// <paramref name="positions"/>: one row of H*D floats, un-rotated, to be scored at the returned position (the last row's).
    /// </summary>
    public static (float[] Probe, int Position) Probe(IReadOnlyList<float[]> rows, IReadOnlyList<int> positions, KvEvictLayer layer)
    {
        int h = layer.Heads, d = layer.HeadDim, last = positions[^1];
        var rel = Relative(rows, positions, layer);
        var probe = new float[h * d];
        for (int head = 0; head < h; head++)
        {
            var w = Weights(rel, head, d);
            for (int i = 0; i < rel.Count; i++)
                for (int c = head * d; c < (head + 1) * d; c++) probe[c] += (float)(w[i] * rel[i][c]);
        }
        return (probe, last);
    }

    /// <summary>
    /// The activation-bias weights of the window's rows as the scorer takes them ([row][query head], each head's summing
    /// to 1; <see cref="Weights"/> over the rows rotated to the last position): retrieval sums each row's attention times
    /// its weight, Σ_i w_i softmax(q_i · K), rather than the attention of the one averaged probe q̂ (measured on
    /// recall-public at 1024 tokens, 10 %: the averaged probe's softmax missed what the rows it averages attend to).
    /// </summary>
    public static double[][] RowWeights(IReadOnlyList<float[]> rows, IReadOnlyList<int> positions, KvEvictLayer layer)
    {
        var rel = Relative(rows, positions, layer);
        var perHead = Enumerable.Range(0, layer.Heads).Select(head => Weights(rel, head, layer.HeadDim)).ToArray();
        return Enumerable.Range(0, rows.Count).Select(i => perHead.Select(w => w[i]).ToArray()).ToArray();
    }

    /// <summary>Each row relative to the last position (its own rotation, the op's magnitude divided out once: the scorer applies it).</summary>
    private static List<float[]> Relative(IReadOnlyList<float[]> rows, IReadOnlyList<int> positions, KvEvictLayer layer)
    {
        int h = layer.Heads, d = layer.HeadDim, last = positions[^1];
        return rows.Select((r, i) =>
        {
            var x = (float[])r.Clone();
            for (int head = 0; head < h; head++) KeyScorer.RotateQuery(x.AsSpan(head * d, d), positions[i] - last, layer);
            if (layer.InvFreq is not null)
                for (int c = 0; c < x.Length; c++) if (c % d < layer.RotaryDim) x[c] = (float)(x[c] / layer.RopeFactor);
            return x;
        }).ToList();
    }

    /// <summary>
    /// The dynamic cut-off: per KV head, the ascending rows to keep of <paramref name="length"/>, the last
    /// <paramref name="window"/> always, of the prefix the top k by <paramref name="scores"/> where k is the layer's
    /// largest per-head count of keys whose share of the head's prefix mass reaches <paramref name="mass"/>, at most
    /// <paramref name="budget"/> − window. budget &gt;= length keeps everything.
    /// </summary>
    public static int[][] CutOff(float[][] scores, int length, int window, int budget, double mass)
    {
        if (budget >= length) return scores.Select(_ => Enumerable.Range(0, length).ToArray()).ToArray();
        window = Math.Min(window, budget);
        int prefix = length - window, k = 0;
        foreach (var s in scores) k = Math.Max(k, KeysForMass(s.AsSpan(0, prefix), mass));
        k = Math.Min(k, budget - window);
        return scores.Select(s => (int[])[.. EvictionSelection.Top(s.AsSpan(0, prefix), k), .. Enumerable.Range(prefix, window)]).ToArray();
    }

    /// <summary>The fewest of <paramref name="scores"/> (largest first) whose sum reaches <paramref name="mass"/> of the total.</summary>
    public static int KeysForMass(ReadOnlySpan<float> scores, double mass)
    {
        var sorted = scores.ToArray();
        Array.Sort(sorted, (a, b) => b.CompareTo(a));
        double total = 0;
        foreach (var v in sorted) total += v;
        if (!(total > 0)) return sorted.Length;
        double acc = 0;
        for (int i = 0; i < sorted.Length; i++)
        {
            acc += sorted[i];
            if (acc >= mass * total * (1 - 1e-9)) return i + 1;
        }
        return sorted.Length;
    }
}

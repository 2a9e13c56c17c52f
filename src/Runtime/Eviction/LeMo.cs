namespace LongCtx.Runtime.Eviction;

/// <summary>
/// LeMo-style token elimination at prefill (after Wang et al. 2025, "LeMo: Enabling LEss Token Involvement for MOre
/// Context Fine-tuning", arXiv:2501.09767: "Information-driven Token Elimination" drops, per layer and per input, the
/// tokens whose informativeness is low). Here a token's informativeness in a layer is the attention it receives from
/// the observing query rows (all query heads, all KV heads: a token leaves the layer whole, as in LeMo, not per head):
/// <code>
///   info_j  = Σ_{rows i, heads h} softmax_j(q_{i,h} · k_{g(h),j})            (j in the prefix, before the window)
///   keep    = top_{budget − window}({ j : info_j ≥ tau · mean_prefix(info) }) ∪ window
/// </code>
/// so a layer whose attention is concentrated keeps fewer than the budget (LeMo's contextual sparsity: the count varies
/// with the input and the layer), and none keeps more. Pure: scores in, ascending rows out.
/// </summary>
public static class LeMo
{
    /// <summary>The rows of <paramref name="length"/> a layer keeps from its per-KV-head votes (<paramref name="votes"/>[g]).</summary>
    public static int[] Select(IReadOnlyList<float[]> votes, int length, int window, int keep, double tau)
    {
        if (keep >= length) return Enumerable.Range(0, length).ToArray();
        window = Math.Min(window, keep);
        int prefix = length - window;
        var info = new float[prefix];
        foreach (var v in votes)
            for (int j = 0; j < prefix; j++) info[j] += v[j];
        double mean = prefix == 0 ? 0 : info.Average(x => (double)x);
        var score = info.Select(x => x >= tau * mean ? x : float.NegativeInfinity).ToArray();
        int informative = score.Count(float.IsFinite);
        return [.. EvictionSelection.Top(score, Math.Min(keep - window, informative)), .. Enumerable.Range(prefix, window)];
    }
}

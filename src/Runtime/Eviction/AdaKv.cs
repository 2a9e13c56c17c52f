using LongCtx.Contract;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime.Eviction;

/// <summary>
/// AdaKV (Feng et al. 2024, "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation", arXiv:2407.11550):
/// inside one layer the heads share the budget. With S = budget - window selected keys per KV head on average, the
/// layer keeps Hkv · S prefix keys in all: each head first keeps its own top ⌊floor · S⌋ (the paper's
/// alpha-safeguard, so no head is starved), and the rest of the layer's Hkv · S slots go to the highest remaining
/// scores over ALL heads jointly (a head whose votes are spread out takes the slots a concentrated head does not need);
/// every head keeps the observation window on top. Scores are SnapKV's (window votes, max-pooled), comparable across
/// heads since each is a sum of softmax probabilities.
/// <code>
///   forced_g  = top_{⌊floor·S⌋}(pooled_g)                  per head
///   joint     = top_{Hkv·S − Σ|forced_g|}({(g, j) : j ∉ forced_g} by pooled_g[j])
///   keep_g    = forced_g ∪ {j : (g, j) ∈ joint} ∪ window     (ascending; lengths differ per head)
/// </code>
/// Pure: scores in, per-head ascending row indices out (ties: the lower head, then the earlier row).
/// </summary>
public static class AdaKv
{
    /// <summary>
    /// Per KV head, the rows of <paramref name="length"/> to keep, from each head's votes over the cache
    /// (<paramref name="votes"/>[g], at least <paramref name="length"/> long) for a per-head mean budget
    /// <paramref name="keep"/> (window included) and the floor fraction <paramref name="floor"/> in [0, 1].
    /// Rows before <paramref name="start"/>[g] are not in head g's cache (an earlier compaction masked them) and are never
    /// kept; null: every row is. keep &gt;= the longest head keeps everything present.
    /// </summary>
    public static int[][] Select(IReadOnlyList<float[]> votes, int length, int window, int keep, int pool, double floor, IReadOnlyList<int>? start = null)
    {
        int heads = votes.Count;
        int First(int g) => start?[g] ?? 0;
        if (Enumerable.Range(0, heads).All(g => keep >= length - First(g)))
            return Enumerable.Range(0, heads).Select(g => Enumerable.Range(First(g), length - First(g)).ToArray()).ToArray();
        window = Math.Min(window, keep);
        int prefix = length - window, select = keep - window, forcedEach = (int)Math.Floor(floor * select);
        var pooled = new float[heads][];
        var kept = new bool[heads][];
        int total = heads * select;
        for (int g = 0; g < heads; g++)
        {
            pooled[g] = Pool(votes[g], First(g), prefix, pool);
            kept[g] = new bool[prefix];
            foreach (int j in EvictionSelection.Top(pooled[g], Math.Min(forcedEach, Math.Max(0, prefix - First(g))))) { kept[g][j] = true; total--; }
        }
        // the joint top over what the floor left: (head, row) pairs by score, ties to the lower head then row
        var rest = new List<(float Score, int Head, int Row)>();
        for (int g = 0; g < heads; g++)
            for (int j = First(g); j < prefix; j++)
                if (!kept[g][j]) rest.Add((pooled[g][j], g, j));
        rest.Sort((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Head != b.Head ? a.Head.CompareTo(b.Head) : a.Row.CompareTo(b.Row));
        for (int i = 0; i < Math.Min(total, rest.Count); i++) kept[rest[i].Head][rest[i].Row] = true;
        return Enumerable.Range(0, heads).Select(g =>
            Enumerable.Range(0, prefix).Where(j => kept[g][j]).Concat(Enumerable.Range(prefix, window)).ToArray()).ToArray();
    }

    /// <summary>Max-pool with kernel <paramref name="pool"/> (stride 1, same padding) over rows [first, prefix); rows before first score -inf.</summary>
    private static float[] Pool(ReadOnlySpan<float> votes, int first, int prefix, int pool)
    {
        var pooled = new float[prefix];
        int half = pool / 2;
        for (int j = 0; j < prefix; j++)
        {
            float m = float.NegativeInfinity;
            if (j >= first)
                for (int t = Math.Max(first, j - half); t <= Math.Min(prefix - 1, j + half); t++) m = Math.Max(m, votes[t]);
            pooled[j] = m;
        }
        return pooled;
    }

    /// <summary>
    /// The attention_bias inputs of a step of <paramref name="newTokens"/> tokens ending at <paramref name="total"/>
    /// (the graph's total_sequence_length): per layer [1, H, S, total], -inf on the leading <paramref name="gap"/>[l][g]
    /// rows of every query head of KV head g, 0 elsewhere (slots past a layer's own seqlens_k are not read). Layers with
    /// no gap share one zero [1, 1, S, total] tensor (a prefill before any compaction costs S · total once).
    /// </summary>
    public static void AddBiasInputs(IReadOnlyList<KvEvictLayer> layers, int[][] gap, TensorElementType type, int newTokens, int total,
        List<string> names, List<OrtValue> values, List<OrtValue> owned)
    {
        OrtValue? zero = null;
        for (int l = 0; l < layers.Count; l++)
        {
            if (layers[l].Bias is not { } input) continue;
            OrtValue v;
            if (gap[l].All(x => x == 0))
            {
                if (zero is null) { zero = Tensor(type, [1, 1, newTokens, total], _ => false); owned.Add(zero); }
                v = zero;
            }
            else
            {
                int group = layers[l].Heads / layers[l].KvHeads, plane = newTokens * total;
                var g = gap[l];
                v = Tensor(type, [1, layers[l].Heads, newTokens, total], i => i % total < g[i / plane / group]);
                owned.Add(v);
            }
            names.Add(input);
            values.Add(v);
        }
    }

    /// <summary>A float32 / float16 tensor of 0 with -inf where <paramref name="masked"/> (flat index) holds.</summary>
    private static OrtValue Tensor(TensorElementType type, long[] shape, Func<int, bool> masked)
    {
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape);
        int n = checked((int)shape.Aggregate(1L, (a, b) => a * b));
        if (type == TensorElementType.Float)
        {
            var f = v.GetTensorMutableDataAsSpan<float>();
            for (int i = 0; i < n; i++) f[i] = masked(i) ? float.NegativeInfinity : 0f;
        }
        else
        {
            var h = v.GetTensorMutableDataAsSpan<Float16>();
            for (int i = 0; i < n; i++) h[i] = masked(i) ? Float16.NegativeInfinity : (Float16)0f;
        }
        return v;
    }
}

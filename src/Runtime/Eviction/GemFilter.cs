using LongCtx.Contract;

namespace LongCtx.Runtime.Eviction;

/// <summary>
/// GemFilter's runtime half (Shi et al. 2024, arXiv:2409.17422; pass token-filter): the filter model (the compiled
/// model's layers 0..r, whose "logits" are layer r's attention query) prefills the whole prompt in chunks through its
/// own KV cache; the last query row's attention over the prompt at layer r, summed over heads
/// (<see cref="KeyScorer.Accumulate"/>) and average-pooled with kernel <c>pool</c> (same padding, zeros counted as in
/// torch avg_pool1d), ranks the tokens; the top keep plus the last <c>recent</c> are returned in their original order,
/// for the full model to prefill with fresh positions. A keep at least the prompt returns the prompt unchanged.
/// </summary>
public sealed class GemFilter : IDisposable
{
    private readonly LongCtxModel _filter;

    private GemFilter(LongCtxModel filter, TokenFilterPolicy policy)
    {
        _filter = filter;
        Policy = policy;
    }

    public TokenFilterPolicy Policy { get; }

    /// <summary>Wall time of the last filter pass (prefill of the filter model plus selection).</summary>
    public TimeSpan LastFilterTime { get; private set; }

    /// <summary>KV-cache bytes of the tokens the filter model held in the last pass (its layers 0..r over the whole prompt).</summary>
    public long LastFilterKvBytesHeld { get; private set; }

    /// <summary>Loads the filter model beside <paramref name="modelDir"/>'s model.onnx.</summary>
    public static GemFilter Load(string modelDir, string name, TokenFilterPolicy policy, RuntimeOptions options)
    {
        var path = Path.Combine(modelDir, policy.File);
        if (!File.Exists(path)) throw new RuntimeException($"{name}: longctx.json runtime.token_filter names {policy.File} but {path} is missing; recompile with lcc compile --token-filter");
        var filter = LongCtxModel.Load(path, options);
        filter.IsTokenFilter = true;
        if (filter.Contract.Layers.Count != policy.Layer + 1 || filter.VocabSize != policy.Scoring.Heads * policy.Scoring.HeadDim
            || filter.Contract.KvType != Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
        {
            filter.Dispose();
            throw new RuntimeException($"{name}: {policy.File} does not match runtime.token_filter (layer {policy.Layer}, a float32 cache); recompile with lcc compile --token-filter");
        }
        return new GemFilter(filter, policy);
    }

    /// <summary>The tokens of <paramref name="prompt"/> the full model should prefill, in their original order.</summary>
    public int[] Select(IReadOnlyList<int> prompt, int chunk, CancellationToken ct = default)
    {
        int n = prompt.Count, keep = KvEvictPolicy.Tokens(Policy.Keep, n);
        if (keep + Policy.Recent > n) return prompt as int[] ?? prompt.ToArray();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var g = _filter.CreateGenerator();
        var query = g.Prefill(prompt, chunk, null, ct); // the filter's "logits": layer r's query at the last position
        var keys = g.Cache.OutputBuffers?[2 * Policy.Layer] ?? throw new RuntimeException($"{_filter.Name}: the GemFilter filter needs the shared KV buffer (--kv-cache auto or shared)");
        int buffer = (int)keys.GetTensorTypeAndShape().Shape[2];
        var perGroup = Enumerable.Range(0, Policy.Scoring.KvHeads).Select(_ => new float[n]).ToArray();
        KeyScorer.Accumulate([query], [n - 1], keys.GetTensorDataAsSpan<float>(), buffer, n, Policy.Scoring, perGroup);
        var scores = new float[n];
        foreach (var s in perGroup) for (int j = 0; j < n; j++) scores[j] += s[j];
        var pooled = AveragePool(scores, Policy.Pool);
        int older = n - Policy.Recent;
        var top = EvictionSelection.Top(pooled.AsSpan(0, older), keep);
        LastFilterKvBytesHeld = _filter.Contract.KvBytesPerToken * g.Length;
        var ids = top.Concat(Enumerable.Range(older, Policy.Recent)).Select(i => prompt[i]).ToArray();
        LastFilterTime = sw.Elapsed;
        return ids;
    }

    /// <summary>avg_pool1d(kernel k, stride 1, padding k/2, count_include_pad): each score averaged with its neighbours.</summary>
    public static float[] AveragePool(ReadOnlySpan<float> s, int k)
    {
        var r = new float[s.Length];
        int half = k / 2;
        for (int j = 0; j < s.Length; j++)
        {
            float sum = 0;
            for (int t = Math.Max(0, j - half); t <= Math.Min(s.Length - 1, j + half); t++) sum += s[t];
            r[j] = sum / k;
        }
        return r;
    }

    public void Dispose() => _filter.Dispose();
}

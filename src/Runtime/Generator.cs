using System.Runtime.CompilerServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime;

/// <summary>Sampling and stopping settings for one generation.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>0 = greedy (argmax).</summary>
    public float Temperature { get; init; }
    /// <summary>0 = no top-k filter.</summary>
    public int TopK { get; init; }
    /// <summary>1 = no nucleus filter.</summary>
    public float TopP { get; init; } = 1f;
    public int Seed { get; init; }
    /// <summary>Generation ends when one of these is sampled; the stop token is not emitted.</summary>
    public IReadOnlyCollection<int> StopTokens { get; init; } = [];
    /// <summary>Prefill chunk size in tokens (0 = whole prompt in one piece).</summary>
    public int Chunk { get; init; } = 2048;
}

/// <summary>Why the last generation ended.</summary>
public enum FinishReason { None, MaxNewTokens, StopToken, ContextFull }

/// <summary>
/// One sequence on a <see cref="LongCtxModel"/>: its own KV cache, prefill (chunked), decode and
/// sampling. Not thread-safe; create one per concurrent request (they share the model's session).
/// </summary>
public sealed class Generator : IDisposable
{
    private readonly LongCtxModel _model;
    private readonly DecoderContract _c;

    internal Generator(LongCtxModel model, KvCacheManager cache)
    {
        _model = model;
        _c = model.Contract;
        Cache = cache;
    }

    public KvCacheManager Cache { get; }

    /// <summary>Tokens already in the cache.</summary>
    public int Length => Cache.Length;

    public FinishReason LastFinishReason { get; private set; }

    /// <summary>Largest number of KV-cache bytes held at any point by this generator.</summary>
    public long PeakKvBytes { get; private set; }

    public void Reset() => Cache.Clear();

    /// <summary>
    /// Feeds <paramref name="ids"/> through the cache in chunks of <paramref name="chunk"/> tokens
    /// (0 = one piece). Models that cannot take a chunk after a past get one piece when the cache is
    /// empty and single tokens otherwise. Returns the logits at the last position.
    /// </summary>
    public float[] Prefill(IReadOnlyList<int> ids, int chunk = 0, IProgress<int>? progress = null, CancellationToken ct = default)
    {
        if (ids.Count == 0) throw new ArgumentException($"{_model.Name}: empty prompt");
        CheckVocabulary(ids);
        if (Length == 0 && _model.TokenFilter is { } filter) ids = filter.Select(ids, chunk, ct); // GemFilter: the full model sees the kept tokens only
        CheckFits(ids.Count);
        int step = chunk <= 0 ? ids.Count : chunk;
        if (Cache.MaxStep is int most) step = Math.Min(step, most); // an evicting cache takes at most this many per call
        if (!_model.SupportsChunkedPrefill) step = Length == 0 ? ids.Count : 1;
        float[] logits = [];
        var arr = ids as int[] ?? ids.ToArray();
        for (int i = 0; i < arr.Length;)
        {
            ct.ThrowIfCancellationRequested();
            int n = Math.Min(step, arr.Length - i);
            logits = Forward(arr.AsSpan(i, n), ct);
            i += n;
            progress?.Report(i);
            if (!_model.SupportsChunkedPrefill) step = 1;
        }
        Cache.EndOfPrompt();
        return logits;
    }

    /// <summary>Runs one decoder call on <paramref name="ids"/> after the cached tokens; returns last-position logits.</summary>
    public float[] Forward(ReadOnlySpan<int> ids, CancellationToken ct = default)
    {
        CheckVocabulary(ids);
        CheckFits(ids.Length);
        Cache.Reserve(ids.Length); // an evicting cache makes room first: the mask describes the cache after eviction
        int s = ids.Length, past = Length, total = past + s;

        var names = new List<string>(8 + 2 * _c.Layers.Count);
        var values = new List<OrtValue>(names.Capacity);
        var owned = new List<OrtValue>();
        try
        {
            var idsData = new long[s];
            for (int i = 0; i < s; i++) idsData[i] = ids[i];
            Add(names, values, owned, _c.InputIds, IntTensor(_c.InputIdsType, idsData, [1, s]));
            if (_c.AttentionMask is { } m)
            {
                var mask = new long[total];
                Array.Fill(mask, 1L);
                Add(names, values, owned, m, IntTensor(_c.AttentionMaskType, mask, [1, total]));
            }
            if (_c.PositionIds is { } p)
            {
                var pos = new long[s];
                int start = Cache.NextPosition;
                for (int i = 0; i < s; i++) pos[i] = start + i;
                Add(names, values, owned, p, IntTensor(_c.PositionIdsType, pos, [1, s]));
            }
            Cache.AddInputs(names, values, owned, s);
            var outNames = new List<string>(1 + Cache.OutputNames.Count) { _c.Logits };
            outNames.AddRange(Cache.OutputNames);

            using var ro = new RunOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            using var reg = ct.CanBeCanceled ? ct.Register(() => ro.Terminate = true) : default;
            IReadOnlyList<OrtValue> outputs;
            try
            {
                outputs = Cache.OutputBuffers is { } buffers ? _model.RunBound(ro, names, values, outNames, buffers)
                    : _model.UseIoBinding ? _model.RunBound(ro, names, values, outNames)
                    : _model.Run(ro, names, values, outNames);
            }
            catch (OnnxRuntimeException e)
            {
                ct.ThrowIfCancellationRequested();
                throw new RuntimeException($"{_model.Name}: decoder call failed with {s} new token(s) after {past} cached: {SessionFactory.FirstLine(e.Message)}", e);
            }
            float[] logits;
            try { logits = LastRow(outputs[0]); }
            catch { foreach (var o in outputs) o.Dispose(); throw; }
            outputs[0].Dispose();
            Cache.Accept(outputs.Skip(1).ToArray(), s);
            PeakKvBytes = Math.Max(PeakKvBytes, Cache.Bytes);
            return logits;
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }
    }

    /// <summary>Prefills <paramref name="prompt"/> and decodes; returns the generated tokens (without the stop token).</summary>
    public List<int> Generate(IReadOnlyList<int> prompt, GenerationOptions? options = null, CancellationToken ct = default, IProgress<int>? prefillProgress = null)
    {
        var result = new List<int>();
        foreach (var t in Steps(prompt, options ?? new(), ct, prefillProgress)) result.Add(t);
        return result;
    }

    /// <summary>Streams generated tokens; each decoder call runs on the thread pool.</summary>
    public async IAsyncEnumerable<int> GenerateAsync(IReadOnlyList<int> prompt, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken ct = default, IProgress<int>? prefillProgress = null)
    {
        using var e = Steps(prompt, options ?? new(), ct, prefillProgress).GetEnumerator();
        while (await Task.Run(e.MoveNext, ct).ConfigureAwait(false))
            yield return e.Current;
    }

    /// <summary>Prefill then decode, one token per MoveNext (sessions stream through it: Sessions/Conversation).</summary>
    internal IEnumerable<int> Steps(IReadOnlyList<int> prompt, GenerationOptions o, CancellationToken ct, IProgress<int>? progress)
    {
        LastFinishReason = FinishReason.None;
        o = o.Validated();
        if (_model.MaxContext is { } max && Length + prompt.Count > max)
            throw new ArgumentException($"{_model.Name}: prompt has {prompt.Count} tokens (+{Length} cached) but the model allows at most {max}");
        var logits = Prefill(prompt, o.Chunk, progress, ct);
        var rng = new Random(o.Seed);
        var stops = o.StopTokens as ISet<int> ?? o.StopTokens.ToHashSet();
        for (int i = 0; ; i++)
        {
            if (i >= o.MaxNewTokens) { LastFinishReason = FinishReason.MaxNewTokens; yield break; }
            ct.ThrowIfCancellationRequested();
            int tok = Sampler.Sample(logits, o, rng);
            if (stops.Contains(tok)) { LastFinishReason = FinishReason.StopToken; yield break; }
            yield return tok;
            if (i + 1 >= o.MaxNewTokens) { LastFinishReason = FinishReason.MaxNewTokens; yield break; }
            if (Cap is { } m && Length + 1 > m) { LastFinishReason = FinishReason.ContextFull; yield break; }
            logits = Forward([tok], ct);
        }
    }

    private void CheckVocabulary(ReadOnlySpan<int> ids)
    {
        if (_model.IsTokenFilter) return; // GemFilter's filter: its "logits" are a query, the full model checked the ids
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)_c.VocabSize)
                throw new ArgumentException($"{_model.Name}: token id {ids[i]} at position {Length + i} is outside the vocabulary [0, {_c.VocabSize})");
    }

    private void CheckVocabulary(IReadOnlyList<int> ids)
    {
        if (_model.IsTokenFilter) return;
        for (int i = 0; i < ids.Count; i++)
            if ((uint)ids[i] >= (uint)_c.VocabSize)
                throw new ArgumentException($"{_model.Name}: token id {ids[i]} at position {Length + i} is outside the vocabulary [0, {_c.VocabSize})");
    }

    /// <summary>Most tokens this generator can hold: the model's context or its cache's capacity, whichever is smaller.</summary>
    private int? Cap => Cache.Capacity is { } c ? (_model.MaxContext is { } m ? Math.Min(c, m) : c) : _model.MaxContext;

    private void CheckFits(int newTokens)
    {
        int? cap = Cap;
        if (cap is { } b && Length + newTokens > b && Cache is SharedBufferKvCache && Cache.Capacity == b && !(_model.MaxContext <= b))
            throw new ArgumentException($"{_model.Name}: {Length} cached + {newTokens} new tokens exceed the shared KV buffer of {b} tokens; raise --max-context (RuntimeOptions.MaxContext) or use --kv-cache concat");
        if (cap is { } k && Length + newTokens > k)
            throw new ArgumentException($"{_model.Name}: {Length} cached + {newTokens} new tokens exceed the model's context of {k} tokens");
    }

    private static void Add(List<string> names, List<OrtValue> values, List<OrtValue> owned, string name, OrtValue v)
    {
        names.Add(name); values.Add(v); owned.Add(v);
    }

    private static OrtValue IntTensor(TensorElementType t, long[] data, long[] shape) => t switch
    {
        TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(data, shape),
        TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(data, x => (int)x), shape),
        _ => throw new NotSupportedException($"integer input of type {t}"),
    };

    /// <summary>The logits of the last position, as float32.</summary>
    private float[] LastRow(OrtValue v)
    {
        int vocab = _c.VocabSize;
        var result = new float[vocab];
        if (_c.LogitsType == TensorElementType.Float16)
        {
            var span = v.GetTensorDataAsSpan<Float16>();
            span = span[^vocab..];
            for (int i = 0; i < vocab; i++) result[i] = (float)span[i];
        }
        else v.GetTensorDataAsSpan<float>()[^vocab..].CopyTo(result);
        return result;
    }

    public void Dispose() => Cache.Dispose();
}

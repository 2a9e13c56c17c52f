using LongCtx.Runtime;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Tests;

/// <summary>
/// The tests' one decoder runner: plain ONNX Runtime (CPU), independent of LongCtx.Runtime's generator and caches so that
/// it can judge them, with the I/O mapped by the shared contract (<see cref="DecoderContract.Discover"/> over the KV
/// name table): input_ids (int64 or int32), attention_mask of ones over past + new tokens, position_ids
/// past..past+S-1 when the model has them, and the concat cache fed back step by step (present outputs become the next
/// step's past inputs). Batch 1, no padding.
/// </summary>
internal sealed class TestDecoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly Dictionary<string, OrtValue> _cache = new(StringComparer.Ordinal); // past input name -> last present

    /// <param name="threads">intra-op threads (0: ORT chooses)</param>
    /// <param name="optimization">ORT graph optimisations; parity tests compare graphs with none applied</param>
    public TestDecoder(byte[] model, int threads = 1, GraphOptimizationLevel optimization = GraphOptimizationLevel.ORT_ENABLE_ALL)
    {
        using var so = new SessionOptions
        {
            GraphOptimizationLevel = optimization, IntraOpNumThreads = threads, InterOpNumThreads = 1,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        _session = new InferenceSession(model, so);
        Contract = DecoderContract.Discover("test decoder", _session.InputMetadata, _session.OutputMetadata);
        if (Contract.CacheKind is not (KvCacheKind.Concat or KvCacheKind.Packed)) throw new NotSupportedException($"TestDecoder drives concat and packed caches; this model has a {Contract.CacheKind} cache");
        Outputs = _session.OutputMetadata.Keys.ToArray();
    }

    public DecoderContract Contract { get; }
    public IReadOnlyList<string> Outputs { get; }

    /// <summary>Tokens in the cache.</summary>
    public int Past { get; private set; }

    /// <summary>One output as float32 (fp16 converted) with its shape.</summary>
    public sealed record Output(float[] Data, int[] Dims)
    {
        /// <summary>The last row along the last axis (for logits: the last position).</summary>
        public float[] LastRow() => Data.AsSpan(Data.Length - Dims[^1], Dims[^1]).ToArray();
    }

    /// <summary>
    /// Feeds <paramref name="tokens"/> after the cached ones and keeps the present outputs as the cache. Returns the logits,
    /// or every output (present ones included) when <paramref name="allOutputs"/>.
    /// </summary>
    public Dictionary<string, Output> Step(long[] tokens, bool allOutputs = false)
    {
        var c = Contract;
        int s = tokens.Length, total = Past + s;
        var names = new List<string>();
        var values = new List<OrtValue>();
        var owned = new List<OrtValue>();
        void Add(string name, OrtValue v, bool own = true) { names.Add(name); values.Add(v); if (own) owned.Add(v); }
        try
        {
            Add(c.InputIds, Ints(c.InputIdsType, tokens, [1, s]));
            if (c.AttentionMask is { } mask) Add(mask, Ints(c.AttentionMaskType, Enumerable.Repeat(1L, total).ToArray(), [1, total]));
            if (c.PositionIds is { } pos) Add(pos, Ints(c.PositionIdsType, Enumerable.Range(Past, s).Select(i => (long)i).ToArray(), [1, s]));
            long[] empty = c.CacheKind == KvCacheKind.Packed ? [2, 1, c.KvHeads, 0, c.HeadDim] : [1, c.KvHeads, 0, c.HeadDim];
            foreach (var (past, _) in CachePairs())
            {
                if (_cache.TryGetValue(past, out var cached)) Add(past, cached, own: false);
                else Add(past, OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, c.KvType, empty));
            }
            using var ro = new RunOptions();
            var results = _session.Run(ro, names, values, Outputs);
            var byName = Outputs.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => results[x.i], StringComparer.Ordinal);
            var returned = new Dictionary<string, Output>(StringComparer.Ordinal);
            foreach (var (name, v) in byName)
                if (allOutputs || name == c.Logits) returned[name] = ToOutput(v);
            var kept = new HashSet<OrtValue>();
            foreach (var (past, present) in CachePairs()) Keep(past, byName[present]);
            void Keep(string past, OrtValue present)
            {
                if (_cache.Remove(past, out var old)) owned.Add(old);
                _cache[past] = present;
                kept.Add(present);
            }
            foreach (var v in results) if (!kept.Contains(v)) v.Dispose();
            Past = total;
            return returned;
        }
        finally { foreach (var v in owned) v.Dispose(); }
    }

    /// <summary>(past input, present output) per cache tensor: two per layer, one for a packed layer.</summary>
    private IEnumerable<(string Past, string Present)> CachePairs() =>
        Contract.Layers.SelectMany(l => new[] { (l.PastKey, l.PresentKey), (l.PastValue, l.PresentValue) }).Distinct();

    /// <summary>Logits of the last position after feeding <paramref name="tokens"/> on top of the cache.</summary>
    public float[] Next(long[] tokens) => Step(tokens)[Contract.Logits].LastRow();

    /// <summary>Empties the cache.</summary>
    public void Reset()
    {
        foreach (var v in _cache.Values) v.Dispose();
        _cache.Clear();
        Past = 0;
    }

    /// <summary>Logits of the last prompt position from one prefill on an empty cache.</summary>
    public float[] LastLogits(long[] prompt)
    {
        Reset();
        return Next(prompt);
    }

    /// <summary>
    /// Cache consistency: the last token's logits from one prefill of all tokens vs. a prefill of the first
    /// <paramref name="prefix"/> tokens followed by single-token steps through the cache. Also returns the max |logit|
    /// and how much the last logits move from the previous position's (proof that the inputs matter).
    /// </summary>
    public (double Diff, double MaxAbs, double StepDiff) CacheConsistency(long[] tokens, int prefix)
    {
        var want = LastLogits(tokens);
        var got = LastLogits(tokens[..prefix]);
        for (int i = prefix; i < tokens.Length; i++) got = Next([tokens[i]]);
        var previous = LastLogits(tokens[..^1]);
        Reset();
        return (MaxDiff(want, got), want.Max(Math.Abs), MaxDiff(previous, want));
    }

    /// <summary>max |a - b| (NaN when either has a NaN).</summary>
    public static double MaxDiff(float[] a, float[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} vs {b.Length}");
        double m = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (float.IsNaN(a[i]) || float.IsNaN(b[i])) return double.NaN;
            m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        }
        return m;
    }

    private static OrtValue Ints(TensorElementType type, long[] data, long[] shape) => type == TensorElementType.Int32
        ? OrtValue.CreateTensorValueFromMemory(data.Select(x => (int)x).ToArray(), shape)
        : OrtValue.CreateTensorValueFromMemory(data, shape);

    private static Output ToOutput(OrtValue v)
    {
        var info = v.GetTensorTypeAndShape();
        var dims = info.Shape.Select(d => (int)d).ToArray();
        float[] data = info.ElementDataType switch
        {
            TensorElementType.Float => v.GetTensorDataAsSpan<float>().ToArray(),
            TensorElementType.Float16 => v.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray(),
            var t => throw new NotSupportedException($"output of type {t}"),
        };
        return new Output(data, dims);
    }

    public void Dispose()
    {
        Reset();
        _session.Dispose();
    }
}

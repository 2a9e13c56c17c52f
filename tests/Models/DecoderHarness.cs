using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Tests.Models;

/// <summary>
/// Runs a decoder with the optimum/genai I/O contract in ORT (CPU): input_ids, attention_mask, [position_ids],
/// past_key_values.N.key/value [B,kvH,P,D] -> logits, present.N.key/value. Batch 1, no padding.
/// </summary>
internal sealed class DecoderHarness : IDisposable
{
    private readonly InferenceSession _session;
    private readonly int _layers;
    private readonly long _kvHeads, _headDim;
    private readonly TensorElementType _kvType, _idsType;
    private readonly bool _hasPositions;
    private readonly string[] _outputs;

    public DecoderHarness(byte[] model)
    {
        using var opts = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        _session = new InferenceSession(model, opts);
        var ins = _session.InputMetadata;
        _layers = ins.Keys.Count(k => k.StartsWith("past_key_values.") && k.EndsWith(".key"));
        var pk = ins["past_key_values.0.key"];
        _kvHeads = pk.Dimensions[1];
        _headDim = pk.Dimensions[3];
        _kvType = pk.ElementDataType;
        _idsType = ins["input_ids"].ElementDataType;
        _hasPositions = ins.ContainsKey("position_ids");
        _outputs = _session.OutputMetadata.Keys.ToArray();
    }

    public IReadOnlyList<string> Outputs => _outputs;

    public sealed record Step(float[] Logits, long[] LogitsShape, Dictionary<string, OrtValue> Presents) : IDisposable
    {
        public void Dispose() { foreach (var v in Presents.Values) v.Dispose(); }
        /// <summary>Logits of the last position.</summary>
        public float[] Last()
        {
            long v = LogitsShape[^1];
            return Logits.AsSpan((int)(Logits.Length - v), (int)v).ToArray();
        }
    }

    /// <summary>Runs <paramref name="tokens"/> at positions past..past+n-1 on top of <paramref name="previous"/> (null = empty cache).</summary>
    public Step Run(long[] tokens, Step? previous)
    {
        long pastLen = previous is null ? 0 : previous.Presents["present.0.key"].GetTensorTypeAndShape().Shape[2];
        long n = tokens.Length, total = pastLen + n;
        var names = new List<string>();
        var values = new List<OrtValue>();
        var owned = new List<OrtValue>();
        void Add(string name, OrtValue v, bool own = true) { names.Add(name); values.Add(v); if (own) owned.Add(v); }
        try
        {
            Add("input_ids", _idsType == TensorElementType.Int32
                ? OrtValue.CreateTensorValueFromMemory(tokens.Select(t => (int)t).ToArray(), [1, n])
                : OrtValue.CreateTensorValueFromMemory(tokens.ToArray(), [1, n]));
            Add("attention_mask", OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, (int)total).ToArray(), [1, total]));
            if (_hasPositions) Add("position_ids", OrtValue.CreateTensorValueFromMemory(Enumerable.Range((int)pastLen, (int)n).Select(i => (long)i).ToArray(), [1, n]));
            for (int l = 0; l < _layers; l++)
                foreach (var kv in new[] { "key", "value" })
                {
                    if (previous is null) Add($"past_key_values.{l}.{kv}", OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _kvType, [1, _kvHeads, 0, _headDim]));
                    else Add($"past_key_values.{l}.{kv}", previous.Presents[$"present.{l}.{kv}"], own: false);
                }
            using var ro = new RunOptions();
            var results = _session.Run(ro, names, values, _outputs);
            var presents = new Dictionary<string, OrtValue>();
            float[] logits = [];
            long[] shape = [];
            for (int i = 0; i < _outputs.Length; i++)
            {
                if (_outputs[i] == "logits")
                {
                    var r = results[i];
                    shape = r.GetTensorTypeAndShape().Shape;
                    logits = ToFloats(r);
                    r.Dispose();
                }
                else presents[_outputs[i]] = results[i];
            }
            return new Step(logits, shape, presents);
        }
        finally { foreach (var v in owned) v.Dispose(); }
    }

    public static float[] ToFloats(OrtValue v) => v.GetTensorTypeAndShape().ElementDataType switch
    {
        TensorElementType.Float => v.GetTensorDataAsSpan<float>().ToArray(),
        TensorElementType.Float16 => v.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray(),
        var t => throw new NotSupportedException($"logits of type {t}"),
    };

    /// <summary>max |a - b|.</summary>
    public static double MaxDiff(float[] a, float[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} vs {b.Length}");
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        return m;
    }

    /// <summary>
    /// Cache consistency: logits of the last token from one prefill of all tokens vs. a prefill of the first
    /// <paramref name="prefix"/> tokens followed by single-token decode steps through the cache. Also returns the max
    /// |logit| so callers can check the model is not trivially constant.
    /// </summary>
    public (double Diff, double MaxAbs, double StepDiff) CacheConsistency(long[] tokens, int prefix)
    {
        using var full = Run(tokens, null);
        var want = full.Last();
        Step cur = Run(tokens[..prefix], null);
        for (int i = prefix; i < tokens.Length; i++)
        {
            var next = Run([tokens[i]], cur);
            cur.Dispose();
            cur = next;
        }
        var got = cur.Last();
        // how much the last logits move from one step to the previous one: proves positions/inputs matter
        using var prev = Run(tokens[..^1], null);
        double stepDiff = MaxDiff(prev.Last(), want);
        cur.Dispose();
        return (MaxDiff(want, got), want.Max(Math.Abs), stepDiff);
    }

    public void Dispose() => _session.Dispose();
}

using System.Text.Json;
using LongCtx.Contract;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime;

/// <summary>
/// <c>lcc calibrate MODEL --kv</c>: runs calibration prompts through a float model (one prefill each, concat cache) and
/// records, per layer, KV head and channel, the largest |x| of the cached keys (after RoPE, as cached: read from the
/// present outputs) and values. Quantization scales derive from it at compile time (<see cref="KvScaleFile"/>).
/// </summary>
public static class KvCalibration
{
    /// <summary>What the built-in set is, for the notes and the file's <c>data</c> field.</summary>
    public const string BuiltInName = "built-in synthetic set";

    /// <summary>The pass whose presence in longctx.json's pipeline marks a Hadamard-rotated cache.</summary>
    public const string RotatedPass = "hadamard-kv";

    /// <summary>
    /// The built-in synthetic set: <paramref name="samples"/> prompts of <paramref name="length"/> token ids drawn
    /// uniformly from the vocabulary (seeded, so a calibration is reproducible). Real prompts (--data) are better.
    /// </summary>
    public static IReadOnlyList<int[]> BuiltIn(int vocab, int samples, int length)
    {
        var rng = new Random(20241);
        return Enumerable.Range(0, samples).Select(_ => Enumerable.Range(0, length).Select(_ => rng.Next(vocab)).ToArray()).ToList();
    }

    /// <summary>Prompts from JSONL: one {"prompt": [ids]} (the eval sets' form) or {"text": "..."} (tokenized) per line.</summary>
    public static IReadOnlyList<int[]> ReadJsonl(string path, ITokenizer? tokenizer, int samples)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"calibration data {path} not found");
        var prompts = new List<int[]>();
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            if (samples > 0 && prompts.Count >= samples) break;
            try
            {
                using var doc = JsonDocument.Parse(text);
                var root = doc.RootElement;
                if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("prompt", out var p) && p.ValueKind == JsonValueKind.Array)
                    prompts.Add(p.EnumerateArray().Select(e => e.GetInt32()).ToArray());
                else if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String)
                    prompts.Add((tokenizer ?? throw new ArgumentException($"{path}:{line}: a \"text\" prompt needs a tokenizer, and the model has none; give token ids as \"prompt\": [ids]"))
                        .Encode(t.GetString()!).ToArray());
                else throw new ArgumentException($"{path}:{line}: expected {{\"prompt\": [ids]}} or {{\"text\": \"...\"}}");
            }
            catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException)
            {
                throw new ArgumentException($"{path}:{line}: not a calibration prompt ({e.Message.Split('\n')[0].TrimEnd('.')}); expected {{\"prompt\": [ids]}} or {{\"text\": \"...\"}}");
            }
        }
        if (prompts.Count == 0) throw new ArgumentException($"{path}: no calibration prompts");
        return prompts;
    }

    /// <summary>Runs every prompt (one prefill, fresh cache) and returns the per-channel absmax of the cache.</summary>
    public static KvScaleFile Run(LongCtxModel model, IReadOnlyList<int[]> prompts, KvScaleModel identity, string data,
        IProgress<int>? progress = null, CancellationToken ct = default)
    {
        var c = model.Contract;
        if (c.CacheKind != KvCacheKind.Concat)
            throw new ArgumentException($"{model.Name}: calibration reads past/present caches [B, Hkv, T, D]; this model has a {c.CacheKind} cache");
        if (c.KvType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new ArgumentException($"{model.Name}: its KV cache is already {DecoderContract.TypeName(c.KvType)}; calibrate the float model it was compiled from");
        for (int i = 0; i < prompts.Count; i++)
        {
            if (prompts[i].Length == 0) throw new ArgumentException($"{data}: calibration prompt {i} is empty");
            if (model.MaxContext is int max && prompts[i].Length > max)
                throw new ArgumentException($"{data}: calibration prompt {i} has {prompts[i].Length} tokens but {model.Name} allows at most {max}; shorten it (or compile the model for a longer context)");
        }
        int layers = c.Layers.Count, h = c.KvHeads, d = c.HeadDim;
        var absmax = new float[layers * 2][]; // layer-major K0, V0, K1, V1, ... each [Hkv * D]
        for (int i = 0; i < absmax.Length; i++) absmax[i] = new float[h * d];
        long tokens = 0;
        for (int i = 0; i < prompts.Count; i++)
        {
            ct.ThrowIfCancellationRequested();
            var observer = new AbsmaxObserver(KvCacheManager.Create(c), absmax);
            using var gen = model.CreateGenerator(observer);
            gen.Prefill(prompts[i], chunk: 0, ct: ct);
            tokens += prompts[i].Length;
            progress?.Report(i + 1);
        }
        return new KvScaleFile
        {
            Tool = "lcc calibrate",
            Model = identity,
            Data = data,
            Samples = prompts.Count,
            Tokens = tokens,
            Rotated = model.Manifest?.Pipeline.Any(p => p.Pass == RotatedPass) == true,
            Layers = Enumerable.Range(0, layers).Select(l => new KvScaleLayer(l, Rows(absmax[2 * l], h, d), Rows(absmax[2 * l + 1], h, d))).ToList(),
        };
    }

    private static float[][] Rows(float[] a, int h, int d) => Enumerable.Range(0, h).Select(i => a.AsSpan(i * d, d).ToArray()).ToArray();

    /// <summary>A concat cache that folds every step's present outputs [1, Hkv, T, D] into the running absmax.</summary>
    private sealed class AbsmaxObserver(KvCacheManager inner, float[][] absmax) : KvCacheManager(inner.Contract)
    {
        public override int Length => inner.Length;
        public override int? Capacity => inner.Capacity;
        public override long Bytes => inner.Bytes;

        public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens) =>
            inner.AddInputs(names, values, owned, newTokens);

        public override void Accept(IReadOnlyList<OrtValue> outputs, int newTokens)
        {
            int h = Contract.KvHeads, d = Contract.HeadDim;
            for (int i = 0; i < outputs.Count; i++)
            {
                var shape = outputs[i].GetTensorTypeAndShape().Shape;
                long t = shape.Length == 4 ? shape[2] : 0;
                var acc = absmax[i];
                if (Contract.KvType == TensorElementType.Float16)
                {
                    var x = outputs[i].GetTensorDataAsSpan<Float16>();
                    for (int hh = 0; hh < h; hh++)
                        for (long r = 0; r < t; r++)
                            for (int j = 0; j < d; j++)
                                acc[hh * d + j] = MathF.Max(acc[hh * d + j], MathF.Abs((float)x[(int)((hh * t + r) * d + j)]));
                }
                else
                {
                    var x = outputs[i].GetTensorDataAsSpan<float>();
                    for (int hh = 0; hh < h; hh++)
                        for (long r = 0; r < t; r++)
                        {
                            var row = x.Slice((int)((hh * t + r) * d), d);
                            for (int j = 0; j < d; j++) acc[hh * d + j] = MathF.Max(acc[hh * d + j], MathF.Abs(row[j]));
                        }
                }
            }
            inner.Accept(outputs, newTokens);
        }

        public override void Clear() => inner.Clear();
        protected override void Dispose(bool disposing) => inner.Dispose();
    }
}

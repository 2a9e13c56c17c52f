using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime.KvStore;

/// <summary>
/// Minimal bridge between a live cache and a <see cref="KvSnapshot"/>, written against the public step protocol of
/// <see cref="KvCacheManager"/> so no cache class changes: export reads the past tensors a step would feed
/// (<see cref="KvCacheManager.AddInputs"/> with 0 new tokens); import hands a concat cache the tensors of a T-token step
/// (<see cref="KvCacheManager.Accept"/>), exactly as a prefill of T tokens would. Host memory only; fp32 and fp16 caches.
/// </summary>
public static class KvCacheSnapshots
{
    /// <summary>
    /// Copies the cache into a snapshot. <paramref name="tokens"/> are the ids the cache holds (the caller fed them); the
    /// concat cache and the shared buffer export; static and evicting caches are refused.
    /// </summary>
    public static KvSnapshot ExportSnapshot(this KvCacheManager cache, string modelHash, IReadOnlyList<int> tokens)
    {
        var c = cache.Contract;
        if (cache is not (ConcatKvCache or SharedBufferKvCache))
            throw new NotSupportedException($"KV export: a {cache.GetType().Name} cannot be saved (only the concat cache and the shared buffer); use --kv-cache concat");
        if (tokens.Count != cache.Length)
            throw new ArgumentException($"KV export: {tokens.Count} token ids given for a cache of {cache.Length} tokens");
        int t = cache.Length, d = c.HeadDim, h = c.KvHeads, layers = c.Layers.Count;
        var keys = new float[layers][];
        var values = new float[layers][];
        var names = new List<string>();
        var held = new List<OrtValue>();
        var owned = new List<OrtValue>();
        try
        {
            cache.AddInputs(names, held, owned, 0);
            for (int i = 0; i < 2 * layers; i++)
            {
                var v = held[i];
                var shape = v.GetTensorTypeAndShape().Shape;
                if (shape.Length != 4 || shape[1] != h || shape[3] != d || shape[2] < t)
                    throw new RuntimeException($"KV export: cache tensor {names[i]} has shape [{string.Join(",", shape)}]; expected [1,{h},>={t},{d}]");
                int rows = (int)shape[2];
                var dst = new float[(long)h * t * d];
                for (int head = 0; head < h; head++)
                    CopyRows(v, c.KvType, (long)head * rows * d, dst.AsSpan(head * t * d, t * d));
                (i % 2 == 0 ? keys : values)[i / 2] = dst;
            }
        }
        finally { foreach (var o in owned) o.Dispose(); }
        var snap = new KvSnapshot(modelHash, layers, h, d, tokens.ToArray(), cache.NextPosition, keys, values);
        snap.Validate();
        return snap;
    }

    /// <summary>
    /// Replaces the content of an empty-or-not concat cache with the snapshot (the cache is cleared first; on error it is
    /// left empty). The snapshot must match the cache's contract and keep every token (no eviction gap).
    /// </summary>
    public static void ImportSnapshot(this KvCacheManager cache, KvSnapshot s)
    {
        var c = cache.Contract;
        s.Validate();
        if (cache is not ConcatKvCache)
            throw new NotSupportedException($"KV import: a {cache.GetType().Name} cannot be filled from a snapshot (only the concat cache); use --kv-cache concat");
        if (s.Layers != c.Layers.Count || s.KvHeads != c.KvHeads || s.HeadDim != c.HeadDim)
            throw new ArgumentException($"KV import: the snapshot has {s.Layers} layers x {s.KvHeads} kv heads x {s.HeadDim} channels, the model {c.Layers.Count} x {c.KvHeads} x {c.HeadDim}");
        if (s.NextPosition != s.Length)
            throw new ArgumentException($"KV import: the snapshot holds {s.Length} tokens but continues at position {s.NextPosition} (an evicted cache); a concat cache needs them equal");
        cache.Clear();
        if (s.Length == 0) return;
        var tensors = new List<OrtValue>(2 * s.Layers);
        try
        {
            for (int l = 0; l < s.Layers; l++)
                foreach (var src in new[] { s.Keys[l], s.Values[l] })
                    tensors.Add(Tensor(c.KvType, src, [1, s.KvHeads, s.Length, s.HeadDim]));
        }
        catch
        {
            foreach (var v in tensors) v.Dispose();
            throw;
        }
        cache.Accept(tensors, s.Length); // takes ownership (disposes them itself when it refuses)
    }

    /// <summary>
    /// The API of <c>lcc run --load-kv</c>: a generator on a concat cache filled from the KV file at <paramref name="path"/>
    /// (checked whole, and against this model's hash, before the cache is touched); <paramref name="tokens"/> are the ids it holds.
    /// </summary>
    public static Generator LoadKv(this LongCtxModel model, string path, out int[] tokens)
    {
        var snap = KvStoreFile.Load(path, KvModelHash.Of(model));
        var g = model.CreateGenerator(KvCacheManager.Create(model.Contract));
        try { g.Cache.ImportSnapshot(snap); }
        catch { g.Dispose(); throw; }
        tokens = snap.Tokens;
        return g;
    }

    /// <summary>The API of <c>lcc run --save-kv</c>: stores <paramref name="generator"/>'s cache, holding <paramref name="tokens"/>, atomically.</summary>
    public static void SaveKv(this LongCtxModel model, Generator generator, string path, IReadOnlyList<int> tokens, IKvCodec codec) =>
        KvStoreFile.Save(path, generator.Cache.ExportSnapshot(KvModelHash.Of(model), tokens), codec);

    private static void CopyRows(OrtValue v, TensorElementType type, long offset, Span<float> dst)
    {
        switch (type)
        {
            case TensorElementType.Float:
                v.GetTensorDataAsSpan<float>().Slice(checked((int)offset), dst.Length).CopyTo(dst);
                break;
            case TensorElementType.Float16:
                var src = v.GetTensorDataAsSpan<Float16>().Slice(checked((int)offset), dst.Length);
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)src[i];
                break;
            default:
                throw new NotSupportedException($"KV export: cache element type {type}; fp32 and fp16 are supported");
        }
    }

    private static OrtValue Tensor(TensorElementType type, float[] data, long[] shape)
    {
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape);
        switch (type)
        {
            case TensorElementType.Float:
                data.CopyTo(v.GetTensorMutableDataAsSpan<float>());
                break;
            case TensorElementType.Float16:
                var dst = v.GetTensorMutableDataAsSpan<Float16>();
                for (int i = 0; i < data.Length; i++) dst[i] = (Float16)data[i];
                break;
            default:
                v.Dispose();
                throw new NotSupportedException($"KV import: cache element type {type}; fp32 and fp16 are supported");
        }
        return v;
    }
}

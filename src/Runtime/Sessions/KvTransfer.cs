using System.Runtime.InteropServices;
using LongCtx.Runtime.KvStore;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime.Sessions;

/// <summary>
/// Copies rows of a KV cache to and from host fp32 arrays (<see cref="KvSnapshot"/>), whatever the cache kind: concat
/// [1, Hkv, T, D], shared buffer and streaming [1, Hkv, capacity, D], static [1, capacity, Hkv*D] (the contract's
/// KvHeads = 1, HeadDim = Hkv*D). fp16 caches convert on the way (fp16 -> fp32 -> fp16 is exact). Row t of head h sits at
/// element (h * rowsPerHead + t) * HeadDim of a tensor; <see cref="KvCacheManager.HostTensor"/> gives rowsPerHead.
/// </summary>
public static class KvTransfer
{
    /// <summary>Rows [<paramref name="from"/>, <paramref name="from"/> + tokens.Length) of every layer as a snapshot.</summary>
    public static KvSnapshot Export(KvCacheManager cache, string modelHash, int from, int[] tokens, int nextPosition)
    {
        RequireSnapshots(cache);
        var c = cache.Contract;
        int count = tokens.Length;
        if (from < 0 || from + count > cache.Length)
            throw new ArgumentOutOfRangeException(nameof(from), $"KV rows [{from}, {from + count}) are outside the {cache.Length} cached tokens");
        int layers = c.Layers.Count, h = c.KvHeads, d = c.HeadDim;
        var keys = new float[layers][];
        var values = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            keys[l] = new float[(long)h * count * d];
            values[l] = new float[keys[l].Length];
            if (count == 0) continue;
            Copy(cache, 2 * l, from, count, keys[l], toCache: false);
            Copy(cache, 2 * l + 1, from, count, values[l], toCache: false);
        }
        return new KvSnapshot(modelHash, layers, h, d, tokens, nextPosition, keys, values);
    }

    /// <summary>
    /// Replaces what <paramref name="cache"/> holds with <paramref name="pieces"/> laid end to end (one snapshot, or
    /// consecutive prefix-cache blocks); the next token goes at <paramref name="nextPosition"/>. Shapes are checked first:
    /// a snapshot that does not fit leaves the cache untouched.
    /// </summary>
    public static void Import(KvCacheManager cache, IReadOnlyList<KvSnapshot> pieces, int nextPosition)
    {
        RequireSnapshots(cache);
        int total = 0;
        foreach (var p in pieces)
        {
            Check(cache.Contract, p);
            total = checked(total + p.Length);
        }
        cache.PrepareImport(total, nextPosition);
        int at = 0;
        foreach (var p in pieces)
        {
            if (p.Length > 0)
                for (int l = 0; l < p.Layers; l++)
                {
                    Copy(cache, 2 * l, at, p.Length, p.Keys[l], toCache: true);
                    Copy(cache, 2 * l + 1, at, p.Length, p.Values[l], toCache: true);
                }
            at += p.Length;
        }
    }

    /// <summary>Throws a one-line error for a cache whose tensors cannot be copied to and from the host.</summary>
    public static void RequireSnapshots(KvCacheManager cache)
    {
        if (!cache.SupportsSnapshots)
            throw new RuntimeException($"a {cache.GetType().Name} cannot be copied to or from a KV snapshot (session fork, truncate, snapshot, restore); use a concat, static, shared-buffer (host memory) or streaming cache");
    }

    /// <summary>Throws when <paramref name="snapshot"/> is malformed or shaped for another model's cache.</summary>
    public static void Check(DecoderContract c, KvSnapshot snapshot)
    {
        snapshot.Validate();
        if (snapshot.Layers != c.Layers.Count || snapshot.KvHeads != c.KvHeads || snapshot.HeadDim != c.HeadDim)
            throw new RuntimeException($"KV snapshot has {snapshot.Layers} layers x {snapshot.KvHeads} kv heads x {snapshot.HeadDim} dims; the model's cache has {c.Layers.Count} x {c.KvHeads} x {c.HeadDim}");
    }

    /// <summary>Copies <paramref name="count"/> rows starting at cache row <paramref name="row"/> between tensor <paramref name="index"/> and <paramref name="host"/> [H, count, D].</summary>
    private static void Copy(KvCacheManager cache, int index, int row, int count, float[] host, bool toCache)
    {
        var c = cache.Contract;
        var (tensor, rows) = cache.HostTensor(index) ?? throw new RuntimeException("the KV cache holds no tensors to copy");
        if (tensor.GetTensorMemoryInfo().Name != OrtMemoryInfo.DefaultInstance.Name)
            throw new RuntimeException("the KV cache is in device memory; KV snapshots need host memory (--ep cpu or --io-binding off)");
        int h = c.KvHeads, d = c.HeadDim;
        var raw = tensor.GetTensorMutableRawData();
        for (int head = 0; head < h; head++)
        {
            long src = ((long)head * rows + row) * d;
            var hostRows = host.AsSpan((int)((long)head * count * d), count * d);
            if (c.KvType == TensorElementType.Float)
            {
                var t = MemoryMarshal.Cast<byte, float>(raw).Slice((int)src, count * d);
                if (toCache) hostRows.CopyTo(t); else t.CopyTo(hostRows);
            }
            else if (c.KvType == TensorElementType.Float16)
            {
                var t = MemoryMarshal.Cast<byte, Half>(raw).Slice((int)src, count * d);
                if (toCache) for (int i = 0; i < t.Length; i++) t[i] = (Half)hostRows[i];
                else for (int i = 0; i < t.Length; i++) hostRows[i] = (float)t[i];
            }
            else throw new RuntimeException($"KV snapshots support float32 and float16 caches, not {c.KvType}");
        }
    }
}

using System.Text;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Capabilities;
using LongCtx.Compiler.IR;
using LongCtx.Contract;

namespace LongCtx.Compiler.Inspect;

/// <summary>KV-cache bytes at one context length: the cache tensors plus the static scales.</summary>
public sealed record KvFootprintAt(long Tokens, long Bytes, long Fp32Bytes);

/// <summary>
/// What <c>lcc inspect</c> says about a quantized KV cache (longctx.json <c>runtime.kv_quant</c>): bytes per token as
/// stored (2 x layers x KV heads x stored_head_dim bytes: int8 one byte per channel, int4 half), the static k/v scales
/// (bytes per model, not per token), and the totals at 32k / 128k / 1M tokens beside the float32 cache of the same graph.
/// </summary>
public sealed record KvCacheFootprint(string Mode, string Granularity, bool Rotated, int Layers, int KvHeads, int HeadDim,
    long BytesPerToken, long ScaleBytes, long Fp32BytesPerToken, IReadOnlyList<KvFootprintAt> At)
{
    public static readonly long[] Lengths = [32 * 1024, 128 * 1024, 1024 * 1024];

    /// <summary>The footprint of <paramref name="m"/>'s cache as <paramref name="q"/> records it; null when the graph has no concat cache.</summary>
    public static KvCacheFootprint? Of(Model m, KvQuantization q)
    {
        var (layers, problem) = RuntimeCapabilityAnalysis.Layers(m.Graph);
        if (problem is not null || layers.Count == 0 || layers[0].PastKey.Type?.Shape is not { Rank: 4 } s || s[1].Value is not long h) return null;
        long perToken = 2L * layers.Count * h * q.StoredHeadDim;
        long fp32 = 2L * layers.Count * h * q.HeadDim * sizeof(float);
        return new KvCacheFootprint(q.Mode, q.Granularity, q.Rotated, layers.Count, (int)h, q.HeadDim, perToken, q.ScaleBytes, fp32,
            Lengths.Select(t => new KvFootprintAt(t, perToken * t + q.ScaleBytes, fp32 * t)).ToList());
    }

    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append($"kv cache  {Mode} per {Granularity}{(Rotated ? ", Hadamard-rotated" : "")}: {BytesPerToken:N0} bytes/token ({Layers} layers x 2 x {KvHeads} KV heads x {HeadDim} channels)")
          .Append($" + {Units.Bytes(ScaleBytes)} of static scales; float32: {Fp32BytesPerToken:N0} bytes/token ({(double)BytesPerToken / Fp32BytesPerToken:0.###}x)\n");
        foreach (var a in At)
            sb.Append($"  at {Units.Tokens(a.Tokens),-6} {Units.Bytes(a.Bytes),12}  (float32 {Units.Bytes(a.Fp32Bytes)}, {(double)a.Bytes / a.Fp32Bytes:0.###}x, scales included)\n");
        return sb.ToString();
    }
}

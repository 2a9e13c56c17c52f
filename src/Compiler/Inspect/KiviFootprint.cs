using System.Text;
using LongCtx.Compiler.Analysis;
using LongCtx.Contract;

namespace LongCtx.Compiler.Inspect;

/// <summary>
/// What <c>lcc inspect</c> says about a KIVI cache (longctx.json <c>runtime.kivi</c>, <see cref="KiviLayout"/>): bytes per
/// token of the quantized store (codes + key scale/zero per G tokens + value scale/zero per token, amortised), and the
/// whole cache at 32k / 128k / 1M tokens with the fp32 residual of R..R+G-1 tokens included, beside the fp32 cache.
/// </summary>
public sealed record KiviFootprint(int Bits, int Group, int Residual, int Layers, int KvHeads, int HeadDim,
    double QuantizedBytesPerToken, long Fp32BytesPerToken, IReadOnlyList<KvFootprintAt> At)
{
    public static KiviFootprint Of(KiviLayout k)
    {
        long fp32 = 2L * k.Layers * k.KvHeads * k.HeadDim * sizeof(float);
        return new KiviFootprint(k.Bits, k.Group, k.Residual, k.Layers, k.KvHeads, k.HeadDim, k.QuantizedBytesPerToken, fp32,
            KvCacheFootprint.Lengths.Select(t => new KvFootprintAt(t, k.Bytes(t), fp32 * t)).ToList());
    }

    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append($"kv cache  KIVI {Bits}-bit (keys per channel, values per token, group {Group}, fp32 residual {Residual}..{Residual + Group - 1} tokens): ")
          .Append($"{QuantizedBytesPerToken:N1} bytes/token quantized, scales and zeros included ({Layers} layers x 2 x {KvHeads} KV heads x {HeadDim} channels); ")
          .Append($"float32: {Fp32BytesPerToken:N0} bytes/token ({QuantizedBytesPerToken / Fp32BytesPerToken:0.###}x)\n");
        foreach (var a in At)
            sb.Append($"  at {Units.Tokens(a.Tokens),-6} {Units.Bytes(a.Bytes),12}  (float32 {Units.Bytes(a.Fp32Bytes)}, {(double)a.Bytes / a.Fp32Bytes:0.###}x, residual and scales included)\n");
        return sb.ToString();
    }
}

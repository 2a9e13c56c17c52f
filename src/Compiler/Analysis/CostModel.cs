using System.Globalization;
using System.Text;

namespace LongCtx.Compiler.Analysis;

/// <summary>A KV-cache storage precision.</summary>
public sealed record KvPrecision(string Name, int Bits)
{
    public static readonly IReadOnlyList<KvPrecision> All = [new("fp32", 32), new("fp16", 16), new("int8", 8), new("int4", 4)];
}

/// <summary>What the user asked the cost model about.</summary>
public sealed record CostOptions(long Context = 32768, long? MemoryBytes = null, double? BandwidthBytesPerSecond = null)
{
    /// <summary>Context lengths of the KV-size table: 4k, 32k, 128k, 1M tokens (k = 1024).</summary>
    public static readonly IReadOnlyList<long> TableContexts = [4L << 10, 32L << 10, 128L << 10, 1L << 20];
}

public sealed record KvSizeRow(string Precision, long BytesPerToken, IReadOnlyDictionary<string, long> BytesAtContext);
public sealed record ConcurrencyRow(string Precision, long BytesPerSequence, long Sequences);

/// <summary>The numbers <c>lcc inspect</c> prints; null where an input (heads, memory, bandwidth) is unknown.</summary>
public sealed record CostReport(
    long Context, string ModelKvPrecision,
    IReadOnlyList<KvSizeRow> KvSizes,
    long? MemoryBytes, long WeightBytes, IReadOnlyList<ConcurrencyRow>? Concurrency, string? ConcurrencyNote,
    double PrefillLinearFlops, double? PrefillAttentionFlops, double? PrefillFlops, string? PrefillNote,
    long DecodeWeightBytes, long DecodeKvBytes, long DecodeBytesPerToken,
    double? BandwidthBytesPerSecond, double? DecodeSecondsPerTokenLowerBound, double? DecodeTokensPerSecondUpperBound)
{
    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append($"cost model (Fu 2024, \"Challenges in Deploying Long-Context Transformers\"; batch 1, context {Units.Tokens(Context)} = {Context:N0} tokens)\n");
        sb.Append($"  KV cache           {"per token",12}");
        foreach (var c in KvSizes[0].BytesAtContext.Keys) sb.Append($" {("@" + c),12}");
        sb.Append('\n');
        foreach (var r in KvSizes)
        {
            sb.Append($"  {r.Precision + (r.Precision == ModelKvPrecision ? " (model)" : ""),-18} {Units.Bytes(r.BytesPerToken),12}");
            foreach (var v in r.BytesAtContext.Values) sb.Append($" {Units.Bytes(v),12}");
            sb.Append('\n');
        }
        if (Concurrency is not null)
        {
            sb.Append($"  concurrent sequences of {Units.Tokens(Context)} in {Units.Bytes(MemoryBytes!.Value)} after {Units.Bytes(WeightBytes)} of weights:");
            foreach (var r in Concurrency) sb.Append($" {r.Precision} {r.Sequences:N0}");
            sb.Append('\n');
        }
        if (ConcurrencyNote is not null) sb.Append($"  {ConcurrencyNote}\n");
        sb.Append($"  prefill {Units.Tokens(Context)}: {(PrefillFlops is double p ? Units.Flops(p) : "?")} = linear {Units.Flops(PrefillLinearFlops)} + attention {(PrefillAttentionFlops is double a ? Units.Flops(a) : "?")}\n");
        if (PrefillNote is not null) sb.Append($"  {PrefillNote}\n");
        sb.Append($"  decode @ {Units.Tokens(Context)}: {Units.Bytes(DecodeBytesPerToken)} read per token = weights {Units.Bytes(DecodeWeightBytes)} + KV {Units.Bytes(DecodeKvBytes)} ({ModelKvPrecision})");
        if (DecodeSecondsPerTokenLowerBound is double t)
            sb.Append($"; at {Units.Rate(BandwidthBytesPerSecond!.Value)} >= {Units.Seconds(t)}/token (<= {DecodeTokensPerSecondUpperBound:0.#} tokens/s)");
        else sb.Append("; give --bandwidth for a time bound");
        sb.Append('\n');
        return sb.ToString();
    }
}

/// <summary>
/// The theoretical peak-performance model of Yao Fu, "Challenges in Deploying Long-Context Transformers: A Theoretical
/// Peak Performance Analysis" (arXiv:2405.08944, 2024): every extra cost of a long context traces back to the KV cache.
/// <list type="bullet">
/// <item>KV bytes per token = 2 (K and V) x layers x kv_heads x head_dim x bytes(precision).</item>
/// <item>KV bytes of one sequence = per-token bytes x context (linear in length).</item>
/// <item>Concurrency (HBM size bound) = floor((memory - weight bytes) / KV bytes of one sequence).</item>
/// <item>Prefill FLOPs (compute bound) = 2 x N x L for the weight matmuls (one multiply-add = 2 FLOPs per weight per
///   token; N excludes the embedding table, which is a lookup) + attention 2 x layers x heads x head_dim x L^2: QK^T
///   and PV are each 2 x L^2 x head_dim FLOPs per head, and causal attention computes only the lower triangle (x 1/2).</item>
/// <item>Decode bytes per token (memory-bandwidth bound) = weight bytes (embedding excluded) + KV bytes of the
///   context; time per token >= bytes / bandwidth.</item>
/// </list>
/// Batch 1 throughout; activations, the embedding row and the logits are ignored (small next to weights and KV).
/// </summary>
public static class CostModel
{
    public static long KvBytesPerToken(ArchitectureCard card, int bits) => 2L * card.Layers * card.KvWidth * bits / 8;

    public static CostReport Compute(ArchitectureCard card, CostOptions o)
    {
        if (o.Context <= 0) throw new ArgumentException($"context must be positive, got {o.Context}");
        var contexts = CostOptions.TableContexts.Contains(o.Context) ? CostOptions.TableContexts : CostOptions.TableContexts.Append(o.Context).Order().ToList();
        var modelKv = card.KvDtype switch { "float32" => "fp32", "float16" or "bfloat16" => "fp16", "int8" or "uint8" => "int8", "int4" or "uint4" => "int4", var s => s };
        var rows = KvPrecision.All.Select(p =>
        {
            long per = KvBytesPerToken(card, p.Bits);
            return new KvSizeRow(p.Name, per, contexts.ToDictionary(Units.Tokens, c => checked(per * c)));
        }).ToList();

        long weightBytes = card.ParameterBytes;
        List<ConcurrencyRow>? conc = null;
        string? concNote = null;
        if (o.MemoryBytes is long mem)
        {
            long free = mem - weightBytes;
            if (free < 0) concNote = $"weights ({Units.Bytes(weightBytes)}) do not fit in {Units.Bytes(mem)}: no sequence fits";
            conc = KvPrecision.All.Select(p =>
            {
                long perSeq = checked(KvBytesPerToken(card, p.Bits) * o.Context);
                return new ConcurrencyRow(p.Name, perSeq, free <= 0 || perSeq == 0 ? 0 : free / perSeq);
            }).ToList();
        }
        else concNote = "give --memory for the number of concurrent sequences";

        double L = o.Context;
        double linear = 2.0 * card.MatmulParameters * L;
        double? attention = card.Heads is int h && card.HeadDim is int d ? 2.0 * card.Layers * h * d * L * L : null;
        string? prefillNote = attention is null ? "attention FLOPs need heads and head_dim (unknown from the I/O contract; found by attention discovery or config.json)" : null;

        long kvPerTokModel = KvPrecision.All.FirstOrDefault(p => p.Name == modelKv) is { } mp ? KvBytesPerToken(card, mp.Bits) : KvBytesPerToken(card, 16);
        long decodeKv = checked(kvPerTokModel * o.Context);
        long decodeBytes = card.DecodeWeightBytes + decodeKv;
        double? t = o.BandwidthBytesPerSecond is double bw ? decodeBytes / bw : null;

        return new CostReport(o.Context, modelKv, rows, o.MemoryBytes, weightBytes, conc, concNote,
            linear, attention, attention is double a ? linear + a : null, prefillNote,
            card.DecodeWeightBytes, decodeKv, decodeBytes, o.BandwidthBytesPerSecond, t, t is double tt ? 1 / tt : null);
    }
}

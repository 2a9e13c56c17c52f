namespace LongCtx.Contract;

/// <summary>
/// longctx.json <c>runtime.kivi</c>: the KIVI cache of <c>lcc compile --kv kivi2|kivi4</c> (Liu et al. 2024,
/// arXiv:2402.02750; op longctx.KiviAttention, custom-ops/ort/kivi_attention_op.cc). Per layer the graph reads
/// <list type="bullet">
/// <item><c>past_key_values.L.key/value</c>: the fp32 residual [1, Hkv, r, D] (keys after RoPE), written back as
///   <c>present.L.key/value</c> [1, Hkv, r + S, D] (the residual plus the call's tokens);</item>
/// <item><c>kivi.L.key_codes</c> uint8 [1, Hkv, Pq, D*bits/8] and <c>kivi.L.key_params</c> float32 [1, Hkv, Pq/G, 2, D]
///   (scale, zero per channel and group of G tokens);</item>
/// <item><c>kivi.L.value_codes</c> uint8 [1, Hkv, Pq, D*bits/8] and <c>kivi.L.value_params</c> float32 [1, Hkv, Pq, 2, D/G]
///   (scale, zero per token and group of G channels).</item>
/// </list>
/// The runtime's KV manager (KiviKvCache) owns both: after each step, while the residual holds at least
/// <paramref name="Residual"/> + <paramref name="Group"/> tokens, its oldest <paramref name="Group"/> tokens are quantized
/// and appended to the store, so the residual stays in [R, R + G) once warm and Pq is a multiple of G.
/// </summary>
/// <param name="Bits">2 or 4</param>
/// <param name="Group">G: tokens per key group, channels per value group (32 in the paper)</param>
/// <param name="Residual">R: the most recent tokens kept in fp32 (128 in the paper)</param>
/// <param name="HeadDim">D</param>
/// <param name="KvHeads">Hkv</param>
/// <param name="Layers">layers with a KIVI cache</param>
public sealed record KiviLayout(int Bits, int Group, int Residual, int HeadDim, int KvHeads, int Layers)
{
    /// <summary>Graph inputs the KIVI manager feeds start with this (besides the residual's past_key_values.L.*).</summary>
    public const string IoPrefix = "kivi.";

    public static string KeyCodes(int layer) => $"{IoPrefix}{layer}.key_codes";
    public static string KeyParams(int layer) => $"{IoPrefix}{layer}.key_params";
    public static string ValueCodes(int layer) => $"{IoPrefix}{layer}.value_codes";
    public static string ValueParams(int layer) => $"{IoPrefix}{layer}.value_params";

    /// <summary>Bytes of one token's codes per head (K or V).</summary>
    public int CodeBytes => HeadDim * Bits / 8;

    /// <summary>Tokens in the quantized store and in the residual after a fold of <paramref name="tokens"/> cached tokens.</summary>
    public (long Quantized, long Residual) Split(long tokens)
    {
        long q = tokens < Residual + Group ? 0 : (tokens - Residual) / Group * Group;
        return (q, tokens - q);
    }

    /// <summary>
    /// Cache bytes (all layers, K and V) holding <paramref name="tokens"/> tokens after folding: codes, key params per
    /// G tokens, value params per token, and the fp32 residual.
    /// </summary>
    public long Bytes(long tokens)
    {
        var (q, r) = Split(tokens);
        long perHead = q * 2L * CodeBytes            // key and value codes
            + q / Group * 2L * HeadDim * sizeof(float)   // key scale + zero per channel per group
            + q * 2L * (HeadDim / Group) * sizeof(float) // value scale + zero per token per group
            + r * 2L * HeadDim * sizeof(float);          // the fp32 residual, K and V
        return perHead * KvHeads * Layers;
    }

    /// <summary>Bytes per token of the quantized store alone (params amortised, no residual).</summary>
    public double QuantizedBytesPerToken =>
        (2.0 * CodeBytes + 2.0 * HeadDim * sizeof(float) / Group + 2.0 * (HeadDim / Group) * sizeof(float)) * KvHeads * Layers;
}

namespace LongCtx.Contract;

/// <summary>
/// One attention layer as the eviction runtime needs it (written by the kv-evict pass): the graph output carrying the
/// layer's query input ([B, S, H*D] as fed to the attention op), the cache input it pairs with, and how the op rotates
/// and scales. <paramref name="InvFreq"/> is the per-pair angle step (radians per position) read off the op's cos/sin
/// cache; null when the op does not rotate (do_rotary 0: the query is already rotated, keys by absolute position).
/// <paramref name="Seqlens"/>: the layer's own seqlens_k input when layers hold different lengths (pyramidkv).
/// <paramref name="Bias"/>: the layer's attention_bias input [1, H or 1, S, total] when its heads hold different lengths
/// (adakv: 0, or -inf on the slots a head does not hold).
/// </summary>
public sealed record KvEvictLayer(int Layer, string Query, string PastKey, int Heads, int KvHeads, int HeadDim, double Scale,
    int RotaryDim, bool Interleaved, IReadOnlyList<double>? InvFreq, double RopeFactor, string? Seqlens = null, string? Bias = null);

/// <summary>
/// longctx.json <c>runtime.kv_evict</c>: which eviction the runtime applies and its options (issue 12).
/// <paramref name="Method"/> "snapkv" | "pyramidkv" | "h2o" | "actqkv" | "adakv" | "lemo". Sizes are token counts when &gt;= 1 and fractions of the
/// prompt when in (0, 1) (<see cref="Tokens"/>): <paramref name="Budget"/> is the tokens kept per KV head, the observation
/// window included (snapkv, pyramidkv: the layers' mean); h2o keeps <paramref name="Heavy"/> heavy hitters +
/// <paramref name="Recent"/> recent tokens. <paramref name="Beta"/> is PyramidKV's ratio of the bottom to the top layer.
/// <paramref name="Mass"/> (actqkv): each layer keeps the fewest keys whose share of the probe query's attention reaches
/// it, at most <paramref name="Budget"/>. <paramref name="Floor"/> (adakv): the least share of the selected budget
/// (budget - window) each KV head keeps while the layer's heads share the rest. <paramref name="Tau"/> (lemo): tokens
/// under tau x the layer's mean informativeness are dropped even under the budget.
/// </summary>
public sealed record KvEvictPolicy(string Method, double Budget, int Window, int Pool, double Beta,
    double Heavy, double Recent, IReadOnlyList<KvEvictLayer> Layers, double Mass = 0, double Floor = 0, double Tau = 0)
{
    /// <summary>The key under "runtime" in longctx.json.</summary>
    public const string Key = "kv_evict";

    /// <summary>Prefix of the graph inputs and outputs the kv-evict pass adds (the runtime's evicting cache feeds and reads them).</summary>
    public const string IoPrefix = "longctx_evict_";

    /// <summary>The policy recorded in a runtime section, or null when the model does not evict.</summary>
    public static KvEvictPolicy? From(RuntimeSection runtime, string model) =>
        RuntimeEntry.Read<KvEvictPolicy>(runtime, Key, model, "--kv-evict",
            p => p.Layers is { Count: > 0 } && p.Window >= 0 && p.Pool >= 1 && (p.Method == "h2o" ? p.Heavy + p.Recent > 0 : p.Budget > 0)
                 && (p.Method != "actqkv" || p.Mass is > 0 and <= 1) && p.Floor is >= 0 and <= 1 && p.Tau >= 0
                 && (p.Method != "adakv" || p.Layers.All(l => l.Bias is not null)),
            "method, budget, window, pool, layers");

    /// <summary>A size option as tokens for a prompt of <paramref name="prompt"/> tokens: a fraction in (0, 1) of it, else the count.</summary>
    public static int Tokens(double size, int prompt) => size < 1 ? (int)Math.Ceiling(size * prompt) : (int)size;
}

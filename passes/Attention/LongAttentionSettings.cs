using System.Globalization;
using LongCtx.Compiler;

namespace LongCtx.Passes.Attention;

/// <summary>The attention patterns of <c>longctx.LongAttention</c> (the op's <c>pattern</c> attribute).</summary>
public enum AttentionPattern { Dense, Streaming, Dca, Trishape, Vslash, Xattn, Block }

/// <summary>
/// What <c>lower-attention</c> lowers to: the pattern, its parameters (explicit or derived from the trained context) and
/// the layers it applies to. Parsed from the pass options (strings, as <c>lcc compile --attention</c> writes them):
/// <c>pattern</c> (dense | streaming | dca), <c>sink</c>, <c>window</c> (streaming), <c>chunk</c>, <c>local</c> (dca),
/// <c>layers</c> ("0-3,6"), <c>trained-context</c>, <c>context</c> (else the pipeline's target context).
/// Defaults: streaming sink = 4 (the four attention sinks of StreamingLLM, Xiao et al. 2023, arXiv:2309.17453, sec. 3.2)
/// and window = trained - sink (the cache then never holds more positions than the model was trained on); dca
/// chunk = 3/4 of the trained context and local = trained / 16 (ChunkLlama's <c>replace_with_chunkllama</c>:
/// <c>chunk_size = pretraining_length * 3 // 4</c>, <c>local_window = pretraining_length // 16</c>, HKUNLP/ChunkLlama,
/// An et al. 2024, arXiv:2402.17463).
/// </summary>
/// <param name="Said">the defaults that were derived, as a sentence for the compile output (null when all explicit)</param>
public sealed record LongAttentionSettings(AttentionPattern Pattern, int Sink, int Window, int Chunk, int Local,
    IReadOnlySet<int>? Layers, int? TrainedContext, int? Context, string? Said)
{
    /// <summary>Valid option keys per pattern (what <c>--attention PATTERN:k=v</c> accepts), in the order the help lists them.</summary>
    public static readonly IReadOnlyDictionary<string, string[]> Keys = new Dictionary<string, string[]>(StringComparer.Ordinal)
    {
        ["dense"] = ["layers"],
        ["streaming"] = ["sink", "window", "layers"],
        ["dca"] = ["chunk", "local", "layers"],
        ["trishape"] = SparsePrefill.Keys["trishape"],
        ["vslash"] = SparsePrefill.Keys["vslash"],
        ["xattn"] = SparsePrefill.Keys["xattn"],
        ["block"] = SparsePrefill.Keys["block"],
        ["auto"] = ["calib"],
    };

    /// <summary>The sparse prefill settings (trishape, vslash, xattn), else null.</summary>
    public SparsePrefill? Sparse { get; init; }

    /// <summary><c>auto</c>: each calibrated layer's own settings (<see cref="AutoAttention"/>), else null.</summary>
    public IReadOnlyDictionary<int, LongAttentionSettings>? PerLayer { get; init; }

    /// <summary><c>auto</c>, a layer whose KV heads chose differently: each KV head's settings (<see cref="PerHeadAttention"/>), else null.</summary>
    public IReadOnlyList<LongAttentionSettings>? Heads { get; init; }

    /// <summary><c>auto</c>: the calibration file and its contents.</summary>
    public (string Path, AttentionCalibrationFile File)? Calibration { get; init; }

    /// <summary>The settings layer <paramref name="layer"/> is lowered with (its own under <c>auto</c>).</summary>
    public LongAttentionSettings ForLayer(int layer) => PerLayer?.GetValueOrDefault(layer) ?? this;

    public const int DefaultSink = 4;

    public string PatternName => Pattern.ToString().ToLowerInvariant();

    /// <summary>The pattern and its parameters as one phrase ("streaming sink=4 window=252").</summary>
    public string Describe() => Pattern switch
    {
        AttentionPattern.Streaming => $"streaming sink={Sink} window={Window}",
        AttentionPattern.Dca => $"dca chunk={Chunk} local={Local}" + (TrainedContext is int t ? $" trained={t}" : ""),
        _ when Sparse is { } sp => $"{PatternName} {sp.Describe(Pattern, Sink, Window)}",
        _ => "dense",
    };

    public bool Applies(int layer) => Layers is null || Layers.Contains(layer);

    /// <summary>
    /// Reads the options; <paramref name="trained"/> is the trained context found on the model (with where it came from).
    /// Throws <see cref="CompileException"/> with one line naming the option and what to do.
    /// </summary>
    /// <param name="targetContext">the pipeline's target context (<c>--context</c>), unless the <c>context</c> option overrides it</param>
    public static LongAttentionSettings Parse(IReadOnlyDictionary<string, string> options, (int Value, string Source)? trained, string model, int? targetContext = null)
    {
        string pattern = options.TryGetValue("pattern", out var p) ? p : "dense";
        if (!Keys.TryGetValue(pattern, out var valid))
            throw new CompileException($"{model}: --attention {pattern}: unknown pattern; valid: {string.Join(", ", Keys.Keys)}");
        foreach (var k in options.Keys)
            if (k is not ("pattern" or "trained-context" or "context") && !valid.Contains(k))
                throw new CompileException($"{model}: --attention {pattern}: unknown option '{k}'; valid for {pattern}: {string.Join(", ", valid)}");
        int? Int(string k) => options.TryGetValue(k, out var s)
            ? int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v
                : throw new CompileException($"{model}: --attention {pattern}: {k}={s} is not a non-negative integer")
            : null;
        var layers = options.TryGetValue("layers", out var ls) ? ParseLayers(ls, model) : null;
        int? trainedCtx = Int("trained-context") ?? trained?.Value;
        string source = Int("trained-context") is not null ? "--trained-context" : trained?.Source ?? "";
        int? context = Int("context") ?? targetContext;
        string? said = null;
        switch (pattern)
        {
            case "streaming":
            {
                int sink = Int("sink") ?? DefaultSink;
                int? window = Int("window");
                if (window is null)
                {
                    if (trainedCtx is not int t)
                        throw new CompileException($"{model}: --attention streaming: cannot tell the trained context to derive the window from; give window=N or --trained-context N");
                    window = t - sink;
                    said = $"streaming: sink={sink}{(Int("sink") is null ? "" : " (given)")}, window={window} = {t} - {sink} (from trained context {t}, {source})";
                }
                else if (Int("sink") is null) said = $"streaming: sink={sink} (default, StreamingLLM), window={window}";
                if (window < 1) throw new CompileException($"{model}: --attention streaming: window={window} must be at least 1");
                if (trainedCtx is int tc && sink + window > tc)
                    throw new CompileException($"{model}: --attention streaming: sink {sink} + window {window} = {sink + window} exceed the trained context {tc} ({source}): keys would sit at positions the model never saw; use window <= {tc - sink}");
                return new(AttentionPattern.Streaming, sink, window.Value, 0, 0, layers, trainedCtx, context, said);
            }
            case "dca":
            {
                if (trainedCtx is not int t)
                    throw new CompileException($"{model}: --attention dca: cannot tell the trained context (needed for the defaults and the softmax scale); give --trained-context N");
                int chunk = Int("chunk") ?? t * 3 / 4;
                int local = Int("local") ?? t / 16;
                if (Int("chunk") is null || Int("local") is null)
                    said = $"dca: chunk={chunk}{(Int("chunk") is null ? $" = 3/4 x {t}" : "")}, local={local}{(Int("local") is null ? $" = {t}/16" : "")} (ChunkLlama defaults, from trained context {t}, {source})";
                if (chunk < 2) throw new CompileException($"{model}: --attention dca: chunk={chunk} must be at least 2");
                if (chunk > t)
                    throw new CompileException($"{model}: --attention dca: chunk {chunk} exceeds the trained context {t} ({source}): remapped positions must stay inside what the model was trained on; use chunk <= {t}");
                if (local < 1 || local >= chunk)
                    throw new CompileException($"{model}: --attention dca: local={local} must be in [1, chunk) = [1, {chunk})");
                return new(AttentionPattern.Dca, 0, 0, chunk, local, layers, t, context, said);
            }
            case "trishape" or "vslash" or "xattn" or "block":
                return SparsePrefill.Parse(pattern, options, Int, layers, trainedCtx, context, model);
            case "auto":
                return AutoAttention.Parse(options, trainedCtx, context, model);
            default:
                return new(AttentionPattern.Dense, 0, 0, 0, 0, layers, trainedCtx, context, null);
        }
    }

    /// <summary>"0-3,6,8-9" to {0,1,2,3,6,8,9}.</summary>
    public static IReadOnlySet<int> ParseLayers(string spec, string model)
    {
        var set = new SortedSet<int>();
        foreach (var part in spec.Split(new[] { ',', ';', ' ' }, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int dash = part.IndexOf('-');
            bool ok = dash < 0
                ? int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int a) && set.Add(a) | true
                : int.TryParse(part[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out int lo)
                  && int.TryParse(part[(dash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int hi) && lo <= hi
                  && Enumerable.Range(lo, hi - lo + 1).All(i => set.Add(i) | true);
            if (!ok) throw new CompileException($"{model}: --attention layers={spec}: '{part}' is not a layer or a range (e.g. layers=0-3,6)");
        }
        if (set.Count == 0) throw new CompileException($"{model}: --attention layers={spec}: no layer given (e.g. layers=0-3,6)");
        return set;
    }
}

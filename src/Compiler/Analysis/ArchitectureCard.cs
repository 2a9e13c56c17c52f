using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using LongCtx.Compiler.Analysis.Rope;
using LongCtx.Compiler.Config;
using LongCtx.Compiler.IR;
using LongCtx.Contract;

namespace LongCtx.Compiler.Analysis;

/// <summary>
/// What kind of decoder a model is, in the numbers the cost model needs. Fields the source could not establish are
/// null. <see cref="KvWidth"/> (kv heads x head_dim per layer) is always known for a decoder with a KV cache, even when
/// the cache is a 3-D [B, S, kvH*D] static buffer.
/// </summary>
public sealed partial record ArchitectureCard(
    int Layers, int? Hidden, int? Heads, int? KvHeads, int? HeadDim, int? Vocab,
    long Parameters, long ParameterBytes, string WeightDtype,
    double? RopeTheta, int? RotaryDim, int? TrainedContext)
{
    /// <summary>Key (= value) elements per token per layer: kv heads x head_dim.</summary>
    public int KvWidth { get; init; }
    /// <summary>Element type of the KV cache inputs.</summary>
    public string KvDtype { get; init; } = "float32";
    /// <summary>Parameters of the token-embedding table (read one row per token, so excluded from FLOPs and decode traffic).</summary>
    public long EmbeddingParameters { get; init; }
    public long EmbeddingBytes { get; init; }
    /// <summary>Rows of a cos/sin cache when the model carries one (its "original max positions").</summary>
    public int? CosCacheLength { get; init; }
    /// <summary>Length of a static (fixed-size) KV cache, when the cache inputs have a fixed sequence dimension.</summary>
    public int? StaticCacheLength { get; init; }
    /// <summary>Where each non-obvious field came from ("kv_heads: past_key_values.0.key dim 1", ...).</summary>
    public IReadOnlyList<string> Sources { get; init; } = [];

    /// <summary>
    /// The card of a model whose KV cache <c>lcc compile --kv</c> quantized: its cache inputs are int8 [.., head_dim] or
    /// uint8 [.., head_dim / 2] (two int4 per byte), so read off the I/O they would say int8 and half the head_dim. The
    /// longctx.json record knows the real head_dim and mode; the cost model then sizes fp32 and the model's row right.
    /// </summary>
    public ArchitectureCard WithKvQuantization(KvQuantization q)
    {
        if (KvHeads is not int kv || q.HeadDim <= 0) return this;
        return this with
        {
            HeadDim = q.HeadDim, KvWidth = kv * q.HeadDim, KvDtype = q.Mode,
            Sources = [.. Sources, $"head_dim, kv cache: longctx.json kv_quant ({q.Mode}, stored head_dim {q.StoredHeadDim})"],
        };
    }

    /// <summary>Weights read per decode step: all parameters except the embedding table.</summary>
    public long DecodeWeightBytes => ParameterBytes - EmbeddingBytes;
    public long MatmulParameters => Parameters - EmbeddingParameters;

    /// <summary>
    /// Derives a card from the I/O contract and constants only (no attention matching): layers = number of past-key
    /// inputs; kv heads and head_dim from the past-key shape [B, kvH, P, D] (or kvH*D from a 3-D [B, S, kvH*D] static
    /// cache); vocab from the last dim of <c>logits</c>; parameters from initializers; hidden from the embedding table
    /// gathered by <c>input_ids</c>; RoPE theta and rotary dim from an inv_freq constant or a cos/sin cache, as
    /// <see cref="RopeAnalysis"/> recovers them. Heads, hidden, theta and the
    /// trained context fall back to a HF-style <c>config.json</c> next to the model when present. Returns null with
    /// <paramref name="whyNot"/> when the model has no KV-cache inputs.
    /// </summary>
    public static ArchitectureCard? FromModelIo(Model m, out string? whyNot)
    {
        var g = m.Graph;
        var sources = new List<string>();
        var pastKeys = g.Inputs.Where(v => !v.IsInitializer)
            .Where(v => KvNames.Parse(v.Name, KvRole.Past) is { Part: KvPart.Key }).ToList();
        if (pastKeys.Count == 0)
        {
            whyNot = $"{m.DisplayName}: no KV-cache inputs ({KvNames.Describe(KvRole.Past)}), so it is not a decoder with a cache; architecture card and cost model skipped";
            return null;
        }
        var pk = pastKeys[0];
        var shape = pk.Type?.Shape;
        int? kvHeads = null, headDim = null, staticLen = null;
        int kvWidth;
        if (shape is { Rank: 4 } && shape[1].Value is long h && shape[3].Value is long d)
        {
            kvHeads = (int)h; headDim = (int)d; kvWidth = (int)(h * d);
            sources.Add($"kv_heads, head_dim: {pk.Name} {shape}");
            if (shape[2].Value is long s) staticLen = (int)s;
        }
        else if (shape is { Rank: 5 } && shape[2].Value is long ph && shape[4].Value is long pd)
        {
            // packed past_N [2, B, H, P, D] (onnxruntime.transformers GPT-2): one input holds key and value
            kvHeads = (int)ph; headDim = (int)pd; kvWidth = (int)(ph * pd);
            sources.Add($"kv_heads, head_dim: {pk.Name} {shape} (packed key/value)");
        }
        else if (shape is { Rank: 3 } && shape[2].Value is long w)
        {
            kvWidth = (int)w;
            if (shape[1].Value is long s) staticLen = (int)s;
            sources.Add($"kv width (kv_heads*head_dim): {pk.Name} {shape}");
        }
        else
        {
            whyNot = $"{m.DisplayName}: KV-cache input {pk.Name} has shape {shape?.ToString() ?? "unknown"}; expected [batch, kv_heads, past, head_dim] or [batch, max_len, kv_heads*head_dim] with known sizes";
            return null;
        }

        var wf = Weights(m, sources);
        int? vocab = wf.Vocab, hidden = wf.Hidden;
        long parameters = wf.Parameters, bytes = wf.Bytes, embParams = wf.EmbParams, embBytes = wf.EmbBytes;
        var weightDtype = wf.Dtype;

        var (theta, rotary, cosLen, ropeSource) = FindRope(m);
        if (ropeSource is not null) sources.Add(ropeSource);

        int? heads = null, trained = null;
        var cfg = ModelConfig.Beside(m.SourcePath);
        if (cfg is not null)
        {
            heads = cfg.NumAttentionHeads;
            if (heads is not null) sources.Add("heads: config.json");
            if (hidden is null && cfg.HiddenSize is int hs) { hidden = hs; sources.Add("hidden: config.json"); }
            if (theta is null && cfg.RopeTheta is double th) { theta = th; sources.Add("rope_theta: config.json"); }
            trained = cfg.TrainedContext;
            if (trained is not null) sources.Add("trained_context: config.json");
        }

        whyNot = null;
        return new ArchitectureCard(pastKeys.Count, hidden, heads, kvHeads, headDim, vocab, parameters, bytes, weightDtype, theta, rotary, trained)
        {
            KvWidth = kvWidth,
            KvDtype = pk.Type?.Element.ShortName() ?? "?",
            EmbeddingParameters = embParams,
            EmbeddingBytes = embBytes,
            CosCacheLength = cosLen,
            StaticCacheLength = staticLen,
            Sources = sources,
        };
    }

    /// <summary>Model metadata key written by canonicalize-attention when it replaces a model's RoPE tables by longer ones.</summary>
    public const string OriginalMaxPositionsKey = MetadataKeys.OriginalMaxPositions;

    private sealed record WeightFacts(int? Vocab, long Parameters, long Bytes, string Dtype, int? Hidden, long EmbParams, long EmbBytes);

    /// <summary>Vocab (last dim of logits), parameters (initializers), weight dtype, and hidden + size of the embedding table gathered by input_ids.</summary>
    private static WeightFacts Weights(Model m, List<string> sources)
    {
        var g = m.Graph;
        int? vocab = null;
        var logits = g.Outputs.FirstOrDefault(o => o.Name == "logits") ?? g.Outputs.FirstOrDefault();
        if (logits?.Type?.Shape is { Rank: > 0 } ls && ls[ls.Rank - 1].Value is long vv) { vocab = (int)vv; sources.Add($"vocab: {logits.Name} last dim"); }

        var inits = g.Initializers.Where(v => v.Const is not null).ToList();
        long parameters = inits.Sum(v => v.Const!.ElementCount), bytes = inits.Sum(v => v.Const!.ByteLength);
        var weightDtype = inits.Where(v => IsFloat(v.Const!.Element)).GroupBy(v => v.Const!.Element)
            .OrderByDescending(gr => gr.Sum(v => v.Const!.ByteLength)).Select(gr => gr.Key.ShortName()).FirstOrDefault() ?? "?";

        int? hidden = null;
        long embParams = 0, embBytes = 0;
        var ids = g.Inputs.FirstOrDefault(v => v.Name == "input_ids");
        var embed = ids?.Uses.Where(u => u.Node.OpType == "Gather" && u.Index == 1).Select(u => u.Node.Input(0)).FirstOrDefault(v => v?.Const is { Dims.Length: 2 });
        if (embed is not null)
        {
            hidden = (int)embed.Const!.Dims[1];
            embParams = embed.Const.ElementCount; embBytes = embed.Const.ByteLength;
            sources.Add($"hidden: embedding table {embed.Name} {embed.Const}");
        }
        return new WeightFacts(vocab, parameters, bytes, weightDtype, hidden, embParams, embBytes);
    }

    /// <summary>
    /// Derives a card from attention discovery: layers = number of blocks; hidden, heads, kv heads and head_dim read off
    /// the block (projection weights, reshapes, fused-op attributes); RoPE theta and rotary dim recovered by discovery
    /// (inv_freq constants or cos caches); trained context from config.json next to the model when it says so, else the
    /// cos-cache length (the "original max positions"). Vocab, parameters and the embedding table as in
    /// <see cref="FromModelIo"/>. Returns null with <paramref name="whyNot"/> when no block has a KV cache (an encoder:
    /// the KV cost model does not apply).
    /// </summary>
    public static ArchitectureCard? FromBlocks(Model m, IReadOnlyList<AttentionBlock> blocks, out string? whyNot)
    {
        if (blocks.Count == 0) { whyNot = $"{m.DisplayName}: attention discovery found no blocks"; return null; }
        var first = blocks.FirstOrDefault(b => b.PastKey is not null);
        if (first is null)
        {
            whyNot = $"{m.DisplayName}: {blocks.Count} attention blocks ({blocks[0].Form}) without a KV cache, so it is not a decoder with a cache; architecture card and cost model skipped";
            return null;
        }
        var sources = new List<string>();
        var forms = string.Join(", ", blocks.Select(b => b.Form).Distinct());
        if (blocks.Any(b => (b.NumHeads, b.KvNumHeads, b.HeadDim) != (first.NumHeads, first.KvNumHeads, first.HeadDim)))
            sources.Add("note: layers differ in heads/kv heads/head_dim; the card shows layer " + first.Layer);
        sources.Add($"layers, heads, kv_heads, head_dim: attention discovery ({blocks.Count} blocks, {forms})");
        var w = Weights(m, sources);
        // RoPE cos/sin tables are lookup tables, not weights: one row per token is read, so they stay out of the parameter count
        var tables = blocks.SelectMany(b => new[] { b.Match.CosCache, b.Match.SinCache }).OfType<Value>()
            .Where(v => v.IsInitializer && v.Const is not null).Distinct().ToList();
        long tableParams = tables.Sum(v => v.Const!.ElementCount), tableBytes = tables.Sum(v => v.Const!.ByteLength);
        if (tables.Count > 0) sources.Add($"parameters exclude {tables.Count} RoPE cos/sin tables ({tableParams:N0} elements)");
        int? hidden = w.Hidden ?? first.Hidden;
        if (w.Hidden is null) sources.Add("hidden: query projection input width");

        var rope = first.Rope;
        double? theta = rope.Present ? rope.Theta : null;
        int? rotary = rope.Present ? rope.RotaryDim : null;
        int? trained = null;
        if (rope.Present) sources.Add($"rope: attention discovery ({rope.Source})");
        var cfg = ModelConfig.Beside(m.SourcePath);
        var recorded = m.MetadataProps.FirstOrDefault(kv => kv.Key == OriginalMaxPositionsKey).Value;
        if (cfg?.TrainedContext is int tc) { trained = tc; sources.Add("trained_context: config.json"); }
        else if (recorded is not null)
        {
            trained = int.TryParse(recorded, out var rmp) ? rmp : null;
            sources.Add($"trained_context: metadata {OriginalMaxPositionsKey} = {recorded} (the cos cache was lengthened by lcc)");
        }
        else if (rope.OriginalMaxPositions is int mp) { trained = mp; sources.Add($"trained_context: cos cache length {mp}"); }
        if (theta is null && cfg?.RopeTheta is double th) { theta = th; sources.Add("rope_theta: config.json"); }

        var pk = m.Graph.Input(first.PastKey!);
        int? staticLen = first.KvLayout == "BHSD"
            ? (pk?.Type?.Shape is { Rank: 4 } s4 && s4[2].Value is long l4 ? (int)l4 : null)
            : (pk?.Type?.Shape is { Rank: 3 } s3 && s3[1].Value is long l3 ? (int)l3 : null);
        whyNot = null;
        return new ArchitectureCard(blocks.Count, hidden, first.NumHeads, first.KvNumHeads, first.HeadDim, w.Vocab, w.Parameters - tableParams, w.Bytes - tableBytes, w.Dtype, theta, rotary, trained)
        {
            KvWidth = first.KvNumHeads * first.HeadDim,
            KvDtype = pk?.Type?.Element.ShortName() ?? w.Dtype,
            EmbeddingParameters = w.EmbParams,
            EmbeddingBytes = w.EmbBytes,
            CosCacheLength = rope.OriginalMaxPositions,
            StaticCacheLength = staticLen,
            Sources = sources,
        };
    }

    private static bool IsFloat(ElementType t) => t is ElementType.Float or ElementType.Float16 or ElementType.BFloat16 or ElementType.Double;

    /// <summary>
    /// Looks for an inv_freq constant (plain RoPE frequencies, starting at 1) or a cos cache initializer (with its sin
    /// twin when named alike); theta and the rotary dim as <see cref="RopeAnalysis"/> recovers them.
    /// </summary>
    private static (double? Theta, int? Rotary, int? CosLen, string? Source) FindRope(Model m)
    {
        var candidates = m.Graph.Initializers.Select(v => (v.Name, T: v.Const!))
            .Concat(m.Graph.Nodes.Where(n => n.OpType == "Constant" && n.Attribute("value") is { Kind: AttrKind.Tensor })
                .Select(n => (n.Output().Name, T: n.Attribute("value")!.AsTensor())));
        foreach (var (name, t) in candidates)
        {
            if (!IsFloat(t.Element) || t.Dims.Length == 0) continue;
            int n = (int)t.Dims[^1];
            if (n < 2 || t.ElementCount != n || n > 4096) continue;
            var fit = RopeAnalysis.Fit(t.ToFloats(), RopePrecision.Of(t.Element, fromCache: false));
            if (!fit.IsPlain) continue;
            return (fit.Theta, fit.RotaryDim, null, $"rope: inv_freq constant {name} [{n}]");
        }
        foreach (var v in m.Graph.Initializers)
        {
            var t = v.Const!;
            if (!IsFloat(t.Element) || t.Dims.Length != 2 || t.Dims[0] < 2 || t.Dims[1] < 2 || !v.Name.Contains("cos", StringComparison.OrdinalIgnoreCase)) continue;
            var sinInit = m.Graph.Initializers.FirstOrDefault(s => s.Name == ReplaceCos(v.Name) && s.Const is { } st && st.Dims.SequenceEqual(t.Dims));
            var rope = RopeAnalysis.FromCache(t, sinInit?.Const, CacheLayout.Half, interleaved: false);
            return (rope.Theta, rope.RotaryDim, rope.OriginalMaxPositions, $"rope: cos cache {v.Name} {t}" + (sinInit is null ? "" : $" + {sinInit.Name}"));
        }
        return (null, null, null, null);
    }

    private static string ReplaceCos(string name) =>
        name.Replace("cos", "sin", StringComparison.Ordinal).Replace("Cos", "Sin", StringComparison.Ordinal).Replace("COS", "SIN", StringComparison.Ordinal);

    public string ToText()
    {
        static string N(int? v) => v?.ToString(CultureInfo.InvariantCulture) ?? "?";
        var sb = new StringBuilder();
        sb.Append("architecture\n");
        sb.Append($"  layers {Layers}   hidden {N(Hidden)}   heads {N(Heads)}   kv heads {N(KvHeads)}   head_dim {N(HeadDim)}   vocab {N(Vocab)}\n");
        sb.Append($"  parameters {Parameters:N0} ({Units.Bytes(ParameterBytes)} {WeightDtype}; embedding {EmbeddingParameters:N0})   kv cache {KvDtype}, {KvWidth} per layer per K/V\n");
        sb.Append($"  rope theta {(RopeTheta is double t ? t.ToString("G6", CultureInfo.InvariantCulture) : "?")}   rotary dim {N(RotaryDim)}"
            + (CosCacheLength is int c ? $"   cos cache {c} positions" : "")
            + $"   trained context {N(TrainedContext)}"
            + (StaticCacheLength is int s ? $"   static cache {s}" : "") + "\n");
        foreach (var src in Sources) sb.Append($"    from {src}\n");
        return sb.ToString();
    }
}

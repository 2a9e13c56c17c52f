using System.Text.Json;

namespace LongCtx.Compiler.Config;

/// <summary>
/// The <c>rope_scaling</c> object of a Hugging Face config.json (transformers <c>modeling_rope_utils</c>): the method
/// (<c>rope_type</c>, or the older <c>type</c>) and the parameters LongCtx's RoPE methods read. Absent fields are null.
/// </summary>
public sealed record RopeScalingConfig(
    string? Type, double? Factor, int? OriginalMaxPositionEmbeddings, double? LowFreqFactor, double? HighFreqFactor,
    double? BetaFast, double? BetaSlow, double? AttentionFactor, IReadOnlyList<double>? ShortFactor, IReadOnlyList<double>? LongFactor);

/// <summary>
/// The fields of a Hugging Face style <c>config.json</c> that LongCtx uses, read in ONE place (architecture card, RoPE
/// passes, LongRoPE factor files). Synonyms of other exporters are accepted, first match wins: heads
/// (<c>num_attention_heads | n_heads | n_head</c>), kv heads (<c>num_key_value_heads | n_kv_heads</c>), hidden
/// (<c>hidden_size | d_model | n_embd</c>), and the trained context (<c>trained_max_position |
/// original_max_position_embeddings | max_position_embeddings</c>: the length the model was trained at, which a
/// lengthened <c>max_position_embeddings</c> of a context-extended model does not say). Integers must be integral numbers.
/// </summary>
public sealed record ModelConfig(
    string Path,
    int? NumAttentionHeads, int? NumKeyValueHeads, int? HiddenSize, int? HeadDim, int? NumHiddenLayers, int? VocabSize,
    double? RopeTheta, double? PartialRotaryFactor, int? RotaryDim, bool? RopeInterleaved,
    int? MaxPositionEmbeddings, int? TrainedContext, RopeScalingConfig? RopeScaling)
{
    public const string FileName = LongCtx.Contract.LongCtxFiles.Config;

    /// <summary>config.json in the folder of <paramref name="modelPath"/>, or null when there is none (or it is not a JSON object).</summary>
    public static ModelConfig? Beside(string? modelPath)
    {
        if (modelPath is null) return null;
        var p = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(modelPath)) ?? ".", FileName);
        if (!File.Exists(p)) return null;
        // Must really live in the model's folder (a config.json linking elsewhere is refused, see SafeFile).
        try { return Parse(LongCtx.Contract.SafeFile.ReadText(p, LongCtx.Contract.LongCtxFiles.SmallTextCap, System.IO.Path.GetDirectoryName(p)), p); }
        catch (JsonException) { return null; }
    }

    /// <summary>Reads <paramref name="path"/>; throws <see cref="ArgumentException"/> naming the file when it is missing or not JSON.</summary>
    public static ModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"{path} not found");
        try { return Parse(LongCtx.Contract.LongCtxFiles.ReadText(path), path); }
        catch (JsonException e) { throw new ArgumentException($"{path} is not valid JSON ({e.Message})", e); }
        catch (IOException e) { throw new ArgumentException(e.Message, e); }
    }

    /// <summary>Parses config.json text. A JSON value that is not an object gives a config with every field null.</summary>
    public static ModelConfig Parse(string json, string path)
    {
        using var doc = JsonDocument.Parse(json);
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object) r = default;
        return new ModelConfig(path,
            Int(r, "num_attention_heads", "n_heads", "n_head"), Int(r, "num_key_value_heads", "n_kv_heads"),
            Int(r, "hidden_size", "d_model", "n_embd"), Int(r, "head_dim"), Int(r, "num_hidden_layers", "n_layers"), Int(r, "vocab_size"),
            Double(r, "rope_theta"), Double(r, "partial_rotary_factor"), Int(r, "rotary_dim"), Bool(r, "rope_interleaved"),
            Int(r, "max_position_embeddings"), Int(r, "trained_max_position", "original_max_position_embeddings", "max_position_embeddings"),
            Scaling(r));
    }

    /// <summary>
    /// <c>rope_scaling</c>, or, for a LongRoPE factor file, the top level when it has <c>short_factor</c>/<c>long_factor</c>.
    /// </summary>
    private static RopeScalingConfig? Scaling(JsonElement root)
    {
        JsonElement s;
        if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object) s = rs;
        else if (root.ValueKind == JsonValueKind.Object && (root.TryGetProperty("short_factor", out _) || root.TryGetProperty("long_factor", out _))) s = root;
        else return null;
        return new RopeScalingConfig(
            Str(s, "rope_type") ?? Str(s, "type"), Double(s, "factor"), Int(s, "original_max_position_embeddings"),
            Double(s, "low_freq_factor"), Double(s, "high_freq_factor"), Double(s, "beta_fast"), Double(s, "beta_slow"),
            Double(s, "attention_factor"), List(s, "short_factor"), List(s, "long_factor"));
    }

    private static int? Int(JsonElement e, params string[] keys)
    {
        if (e.ValueKind != JsonValueKind.Object) return null;
        foreach (var k in keys)
            if (e.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number)
            {
                if (v.TryGetInt32(out var i)) return i;
                double d = v.GetDouble();
                if (d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d; // 256.0 as written by Python floats
            }
        return null;
    }

    private static double? Double(JsonElement e, params string[] keys)
    {
        if (e.ValueKind != JsonValueKind.Object) return null;
        foreach (var k in keys)
            if (e.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number) return v.GetDouble();
        return null;
    }

    private static bool? Bool(JsonElement e, string key) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    private static string? Str(JsonElement e, string key) =>
        e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static double[]? List(JsonElement e, string key) =>
        e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number)
            ? v.EnumerateArray().Select(x => x.GetDouble()).ToArray() : null;
}

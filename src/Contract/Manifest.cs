using System.Text.Json;
using System.Text.Json.Serialization;

namespace LongCtx.Contract;

/// <summary>A longctx.json that cannot be read. The message is one line naming the file and what is wrong.</summary>
public sealed class ManifestException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The model file a compile read: absolute path, SHA-256 over it and its external data, total bytes.</summary>
public sealed record ManifestSource(string Path, string Sha256, long Bytes);

/// <summary>
/// What one pass did, as recorded in longctx.json ("pipeline"): the compiler's pass report, field for field. Fields a
/// newer lcc adds are kept in <see cref="Unknown"/> and written back unchanged.
/// </summary>
public sealed record PassRecord
{
    public string Pass { get; init; } = "";
    public bool Exact { get; init; }
    public IReadOnlyDictionary<string, int> Counts { get; init; } = new Dictionary<string, int>();
    public IReadOnlyList<string> Notes { get; init; } = [];
    public int Rewrites { get; init; }
    public double Milliseconds { get; init; }
    public IReadOnlyDictionary<string, string>? Options { get; init; }

    [JsonExtensionData] public Dictionary<string, JsonElement>? Unknown { get; init; }
}

/// <summary>
/// What <c>lcc compile</c> decided from the graph so that the runtime does not re-derive it by probing on load.
/// A shared past/present KV buffer and chunked prefill both need every attention to be a
/// com.microsoft.GroupQueryAttention that reads the layer's past inputs directly (its kernel writes new tokens at
/// seqlens_k and masks by sequence length, so a buffer longer than the tokens held and a chunk after a past are both
/// exact); otherwise the runtime concatenates the cache and prefills in one piece.
/// </summary>
/// <param name="SharedKvBuffer">one buffer per layer may be bound as both past input and present output</param>
/// <param name="ChunkedPrefill">a multi-token chunk may follow a non-empty past</param>
/// <param name="SharedKvBufferWhyNot">why not, when <paramref name="SharedKvBuffer"/> is false</param>
/// <param name="ChunkedPrefillWhyNot">why not, when <paramref name="ChunkedPrefill"/> is false</param>
/// <param name="GroupQueryAttention">GroupQueryAttention nodes in the main graph (the runtime only notes a
/// missing shared buffer when there are some: other models never share)</param>
public sealed record RuntimeCapabilities(
    bool SharedKvBuffer, bool ChunkedPrefill, string? SharedKvBufferWhyNot, string? ChunkedPrefillWhyNot, int GroupQueryAttention);

/// <summary>
/// How the runtime manages the KV cache when the graph asks for more than keeping every token (lower-attention,
/// <c>--attention streaming</c>): <paramref name="Policy"/> "streaming" keeps <paramref name="Sink"/> first tokens and
/// the <paramref name="Window"/> most recent (StreamingLLM); <paramref name="MaxPositions"/> is the number of RoPE rows
/// the attention can index by cache position (null: no rotary), which bounds the cache buffer.
/// </summary>
public sealed record KvPolicy(string Policy, int Sink, int Window, int? MaxPositions);

/// <summary>
/// The quantized KV cache <c>lcc compile --kv</c> lowered the attention to (ORT 1.31 CPU GroupQueryAttention:
/// k/v_quant_type, kv_cache_bit_width, static k_scale / v_scale initializers; symmetric, no zero point). The runtime
/// allocates, binds and feeds past/present of <paramref name="ElementType"/> [1, Hkv, T, <paramref name="StoredHeadDim"/>]
/// (shared buffer included) and refuses a cache of another type.
/// </summary>
/// <param name="Mode">"int8" or "int4" (int4: two signed nibbles per uint8, channel 2j in the low nibble)</param>
/// <param name="Granularity">"tensor" (one scale per layer and K/V) or "channel" (one per KV head and channel)</param>
/// <param name="ElementType">the cache tensors' ONNX element type: "int8" or "uint8"</param>
/// <param name="HeadDim">channels per head</param>
/// <param name="StoredHeadDim">bytes per head and token in the cache (HeadDim, or HeadDim / 2 for int4)</param>
/// <param name="Rotated">keys and queries rotated by a per-head Hadamard matrix after RoPE, values through v_proj/o_proj</param>
/// <param name="Scales">where the scales came from (a scale file, or the built-in calibration set)</param>
/// <param name="ScaleBytes">bytes of k_scale and v_scale over all layers (constant, not per token)</param>
public sealed record KvQuantization(string Mode, string Granularity, string ElementType, int HeadDim, int StoredHeadDim, bool Rotated,
    string? Scales, long ScaleBytes);

/// <summary>
/// The "runtime" section of longctx.json: values the passes hand to the runtime plus the compile-time
/// <see cref="Capabilities"/>. Sections a pass owns (e.g. "rope") and keys this version does not know are kept in
/// <see cref="Other"/> and written back unchanged.
/// </summary>
public sealed record RuntimeSection
{
    /// <summary>Most tokens (prompt + generated) the compiled model serves (e.g. the length of its RoPE tables).</summary>
    public int? MaxContext { get; init; }
    /// <summary>Read as the context limit when <see cref="MaxContext"/> is absent (files written by hand or by older tools).</summary>
    public int? MaxPositionEmbeddings { get; init; }
    /// <summary>Null in files written before lcc recorded them: the runtime then probes as for a bare .onnx.</summary>
    public RuntimeCapabilities? Capabilities { get; init; }
    /// <summary>Operator domains the compiled graph imports, with versions ("" = ai.onnx): the runtime registers the
    /// custom-op library from this without opening the model. Recorded together with <see cref="Capabilities"/>.</summary>
    public IReadOnlyDictionary<string, long>? Opsets { get; init; }
    /// <summary>The KV-cache policy the attention needs (null: keep every token).</summary>
    public KvPolicy? Kv { get; init; }
    /// <summary>The quantized KV cache layout (null: the cache has the model's float type).</summary>
    public KvQuantization? KvQuant { get; init; }
    /// <summary>The KIVI cache layout (null: no KIVI cache).</summary>
    public KiviLayout? Kivi { get; init; }

    [JsonExtensionData] public Dictionary<string, JsonElement>? Other { get; init; }

    /// <summary>Whether the section says nothing at all.</summary>
    [JsonIgnore] public bool IsEmpty => MaxContext is null && MaxPositionEmbeddings is null && Capabilities is null && Opsets is null && Kv is null && KvQuant is null && Kivi is null && (Other is null || Other.Count == 0);

    /// <summary>
    /// The typed section from the loose values passes record (name -> number, string, list, dictionary): known keys
    /// become properties, the rest stay as JSON in <see cref="Other"/>.
    /// </summary>
    public static RuntimeSection FromValues(IReadOnlyDictionary<string, object?> values)
    {
        var element = JsonSerializer.SerializeToElement(values, LongCtxManifest.JsonOptions);
        return element.Deserialize<RuntimeSection>(LongCtxManifest.JsonOptions) ?? new RuntimeSection();
    }
}

/// <summary>
/// longctx.json, written next to a compiled model by <c>lcc compile</c> and read by <c>lcc inspect</c> and the runtime.
/// One reader (<see cref="Read"/>) and one writer (<see cref="Write"/>): snake_case keys, indented, nulls omitted.
/// Unknown top-level keys (a newer lcc, a hand edit) load into <see cref="Unknown"/> and are written back; missing
/// ones (an older lcc) take their defaults.
/// </summary>
public sealed record LongCtxManifest
{
    public const string CurrentFormat = "longctx/1";

    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string Format { get; init; } = CurrentFormat;
    /// <summary>"lcc 0.1.0".</summary>
    public string? Tool { get; init; }
    public ManifestSource? Source { get; init; }
    public IReadOnlyList<PassRecord> Pipeline { get; init; } = [];
    public RuntimeSection Runtime { get; init; } = new();
    /// <summary>Extra sections a caller of the compiler adds (method options, CLI arguments).</summary>
    public IReadOnlyDictionary<string, JsonElement>? Extra { get; init; }
    /// <summary>Sidecar files copied from the source folder (<see cref="LongCtxFiles.Sidecars"/>).</summary>
    public IReadOnlyList<string>? Copied { get; init; }

    [JsonExtensionData] public Dictionary<string, JsonElement>? Unknown { get; init; }

    /// <summary>The file's text: indented JSON and a final newline.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions) + "\n";

    public void Write(string path) => File.WriteAllText(path, ToJson());

    /// <summary>Parses longctx.json text; <paramref name="where"/> names the file in errors.</summary>
    public static LongCtxManifest Parse(string json, string where)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ManifestException($"{where}: not a longctx manifest (the top level is a JSON {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}, not an object); delete it or recompile with lcc compile");
            if (doc.RootElement.TryGetProperty("runtime", out var rt) && rt.ValueKind != JsonValueKind.Object)
                throw new ManifestException($"{where}: \"runtime\" is a JSON {rt.ValueKind.ToString().ToLowerInvariant()}, not an object; fix it or recompile with lcc compile");
            LongCtxManifest m;
            try { m = doc.RootElement.Deserialize<LongCtxManifest>(JsonOptions) ?? new LongCtxManifest(); }
            catch (JsonException e) when (e.Path is { Length: > 1 } path)
            {
                throw new ManifestException($"{where}: field {path.TrimStart('$', '.')} has the wrong type ({FirstLine(e.Message).Split(" Path:")[0]}); fix it or recompile with lcc compile", e);
            }
            return ManifestChecks.Checked(m, where);
        }
        catch (JsonException e)
        {
            throw new ManifestException($"{where}: not valid JSON ({FirstLine(e.Message)}); fix it or recompile with lcc compile", e);
        }
    }

    /// <summary>Reads a longctx.json file.</summary>
    public static LongCtxManifest Read(string path) => Parse(LongCtxFiles.ReadText(path), path);

    /// <summary>The longctx.json in <paramref name="folder"/>, or null when there is none (a bare model).</summary>
    public static LongCtxManifest? TryReadFolder(string folder)
    {
        var p = System.IO.Path.Combine(folder, LongCtxFiles.Manifest);
        return File.Exists(p) ? Parse(SafeFile.ReadText(p, LongCtxFiles.SmallTextCap, folder), p) : null;
    }

    private static string FirstLine(string s) => s.Split('\n')[0].TrimEnd('\r', '.');
}

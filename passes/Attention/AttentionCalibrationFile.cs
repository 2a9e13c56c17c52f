using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using LongCtx.Compiler;

namespace LongCtx.Passes.Attention;

/// <summary>One layer's calibrated sparse prefill pattern: the pattern, its <c>--attention</c> options, and what calibration
/// measured at the calibration length (density = share of causal query-key pairs attended; error = relative L2 of the
/// layer's attention output against dense attention), per KV head too. <c>Heads</c> (version 2): each KV head's own choice;
/// the layer's pattern and options are then the op's layer-level pattern (the most common sparse one among its heads).
/// Null in version 1 files: every head runs the layer's pattern.</summary>
public sealed record CalibratedLayer(int Layer, string Pattern, IReadOnlyDictionary<string, string> Options, double Density, double Error,
    IReadOnlyList<double> HeadDensity, IReadOnlyList<double> HeadError, IReadOnlyList<CalibratedHead>? Heads = null)
{
    /// <summary>Whether the heads differ (else the layer lowers exactly as its pattern does, with no per-head attributes).</summary>
    public bool IsPerHead => Heads is { Count: > 0 } h && h.Select(AttentionCalibrationFile.Spec).Distinct(StringComparer.Ordinal).Count() > 1;
}

/// <summary>One KV head's calibrated choice (<c>dense</c>, or a sparse pattern with its <c>--attention</c> options) and what
/// it measured at the calibration length.</summary>
public sealed record CalibratedHead(int KvHead, string Pattern, IReadOnlyDictionary<string, string> Options, double Density, double Error);

/// <summary>
/// The versioned calibration file <c>lcc calibrate MODEL --attention</c> writes and <c>lcc compile --attention auto --calib
/// FILE</c> reads (issue 10 item 2): the model it was measured on (name, SHA-256 of model.onnx, layers, query and KV heads),
/// how (data, samples, length, density budget, seed), and per layer and KV head the chosen pattern and budget (version 2; the
/// kernel takes per-KV-head attributes, custom-ops/ort/long_attention_heads.h). Version 1 files (one pattern per layer) are
/// still read: every head of a layer runs its pattern.
/// </summary>
public sealed record AttentionCalibrationFile(int Version, string Model, string ModelSha256, int Layers, int Heads, int KvHeads,
    string Data, int Samples, int Length, double DensityBudget, int Seed, IReadOnlyList<CalibratedLayer> PerLayer)
{
    public const int CurrentVersion = 2;

    /// <summary>Versions this lcc reads (1: per layer; 2: per layer and KV head).</summary>
    public static readonly IReadOnlyList<int> ReadableVersions = [1, 2];

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json) + "\n");

    /// <summary>Reads a calibration file; every problem is one <see cref="CompileException"/> line naming the file.</summary>
    public static AttentionCalibrationFile Load(string path)
    {
        if (!File.Exists(path)) throw new CompileException($"{path}: calibration file not found; write one with lcc calibrate MODEL --attention -o {path}");
        AttentionCalibrationFile? f;
        try { f = JsonSerializer.Deserialize<AttentionCalibrationFile>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw new CompileException($"{path}: not an attention calibration file ({e.Message.Split('\n')[0]}); write one with lcc calibrate MODEL --attention"); }
        if (f is null || f.PerLayer is null || f.Layers <= 0)
            throw new CompileException($"{path}: not an attention calibration file (no layers); write one with lcc calibrate MODEL --attention");
        if (!ReadableVersions.Contains(f.Version))
            throw new CompileException($"{path}: calibration file version {f.Version}, this lcc reads versions {string.Join(" and ", ReadableVersions)}; recalibrate with lcc calibrate MODEL --attention");
        foreach (var l in f.PerLayer)
            if (l.Heads is { } heads && (heads.Count != f.KvHeads || heads.Select((h, i) => h.KvHead != i).Any(b => b)))
                throw new CompileException($"{path}: layer {l.Layer} has {heads.Count} head choices (KV heads {string.Join(",", heads.Select(h => h.KvHead))}) "
                    + $"but the file's model has {f.KvHeads} KV heads (0-{f.KvHeads - 1}); recalibrate with lcc calibrate MODEL --attention");
        return f;
    }

    /// <summary>Throws one line naming both models when the file was calibrated on a model of another shape.</summary>
    public void CheckModel(string path, string model, int layers, int heads, int kvHeads)
    {
        if (layers != Layers || heads != Heads || kvHeads != KvHeads)
            throw new CompileException($"{path}: calibrated for {Model} ({Layers} layers, {Heads} heads, {KvHeads} KV heads) but {model} has {layers} layers, "
                + $"{heads} heads, {kvHeads} KV heads; recalibrate with lcc calibrate {model} --attention");
    }

    /// <summary>The layer's options as <c>--attention</c> writes them (<c>vslash:vertical=30,slash=800</c>).</summary>
    public static string Spec(CalibratedLayer l) => Spec(l.Pattern, l.Options);

    /// <summary>A head's choice as <c>--attention</c> writes it.</summary>
    public static string Spec(CalibratedHead h) => Spec(h.Pattern, h.Options);

    public static string Spec(string pattern, IReadOnlyDictionary<string, string> options) =>
        options.Count == 0 ? pattern : pattern + ":" + string.Join(",", options.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}"));

    public static string Format(double d) => d.ToString("0.###", CultureInfo.InvariantCulture);
}

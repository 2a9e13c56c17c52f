using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using LongCtx.Compiler;

namespace LongCtx.Passes.Attention;

/// <summary>One layer's calibrated sparse prefill pattern: the pattern, its <c>--attention</c> options, and what calibration
/// measured at the calibration length (density = share of causal query-key pairs attended; error = relative L2 of the
/// layer's attention output against dense attention), per KV head too.</summary>
public sealed record CalibratedLayer(int Layer, string Pattern, IReadOnlyDictionary<string, string> Options, double Density, double Error,
    IReadOnlyList<double> HeadDensity, IReadOnlyList<double> HeadError);

/// <summary>
/// The versioned calibration file <c>lcc calibrate MODEL --attention</c> writes and <c>lcc compile --attention auto --calib
/// FILE</c> reads (issue 10 item 2): the model it was measured on (name, SHA-256 of model.onnx, layers, query and KV heads),
/// how (data, samples, length, density budget, seed), and per layer the chosen pattern. The kernel's sparse attributes are per
/// layer, so the choice is per layer (the least error summed over its KV heads); the per-head measurements are recorded.
/// </summary>
public sealed record AttentionCalibrationFile(int Version, string Model, string ModelSha256, int Layers, int Heads, int KvHeads,
    string Data, int Samples, int Length, double DensityBudget, int Seed, IReadOnlyList<CalibratedLayer> PerLayer)
{
    public const int CurrentVersion = 1;

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
        if (f.Version != CurrentVersion)
            throw new CompileException($"{path}: calibration file version {f.Version}, this lcc reads version {CurrentVersion}; recalibrate with lcc calibrate MODEL --attention");
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
    public static string Spec(CalibratedLayer l) =>
        l.Options.Count == 0 ? l.Pattern : l.Pattern + ":" + string.Join(",", l.Options.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}"));

    public static string Format(double d) => d.ToString("0.###", CultureInfo.InvariantCulture);
}

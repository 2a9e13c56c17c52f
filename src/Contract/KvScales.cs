using System.Text.Json;

namespace LongCtx.Contract;

/// <summary>A KV scale file that cannot be read or does not fit the model. One line naming the file(s) and what to do.</summary>
public sealed class KvScaleException(string message) : InvalidOperationException(message);

/// <summary>The model a scale file was calibrated on: its cache geometry and the SHA-256 of its model file.</summary>
/// <param name="Path">the model file calibrated</param>
/// <param name="Sha256">SHA-256 over the model file (the compile input's hash for a compiled folder)</param>
public sealed record KvScaleModel(string Path, string Sha256, int Layers, int KvHeads, int HeadDim);

/// <summary>One layer's absmax of cached keys (after RoPE, as cached) and values, per KV head and channel: [Hkv][D].</summary>
public sealed record KvScaleLayer(int Layer, float[][] Key, float[][] Value);

/// <summary>
/// The output of <c>lcc calibrate MODEL --kv</c>, input of <c>lcc compile --kv ... --calib FILE</c>: per layer, KV head
/// and channel the largest |x| seen in the cache over the calibration prompts. Scales derive from it at compile time
/// (absmax / qmax, per channel or the max per tensor), so one file serves int8 and int4, tensor and channel.
/// Versioned by <see cref="Format"/>; written indented, snake_case.
/// </summary>
public sealed record KvScaleFile
{
    public const string CurrentFormat = "longctx-kv-scales/1";

    public string Format { get; init; } = CurrentFormat;
    public string? Tool { get; init; }
    public required KvScaleModel Model { get; init; }
    /// <summary>What was run: a JSONL path, or "built-in synthetic set".</summary>
    public required string Data { get; init; }
    public int Samples { get; init; }
    public long Tokens { get; init; }
    /// <summary>Whether the calibrated cache was Hadamard-rotated (a model compiled with the hadamard-kv pass): the
    /// absmax of rotated keys/values is another range, so scales serve only the same kind of model.</summary>
    public bool Rotated { get; init; }
    public required IReadOnlyList<KvScaleLayer> Layers { get; init; }

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, LongCtxManifest.JsonOptions) + "\n");

    /// <summary>Reads and checks a scale file: format, and that every layer holds [KvHeads][HeadDim] finite values.</summary>
    public static KvScaleFile Read(string path)
    {
        if (!File.Exists(path)) throw new KvScaleException($"{path}: no such scale file; make one with lcc calibrate MODEL --kv -o {path}");
        KvScaleFile? f;
        try { f = JsonSerializer.Deserialize<KvScaleFile>(LongCtxFiles.ReadText(path), LongCtxManifest.JsonOptions); }
        catch (JsonException e) { throw new KvScaleException($"{path}: not a KV scale file ({e.Message.Split('\n')[0].TrimEnd('.')}); make one with lcc calibrate MODEL --kv"); }
        if (f is null || f.Format != CurrentFormat)
            throw new KvScaleException($"{path}: format '{f?.Format}' is not {CurrentFormat}; recalibrate with lcc calibrate MODEL --kv");
        var m = f.Model;
        if (f.Layers.Count != m.Layers)
            throw new KvScaleException($"{path}: declares {m.Layers} layers but holds {f.Layers.Count}; recalibrate with lcc calibrate MODEL --kv");
        for (int l = 0; l < f.Layers.Count; l++)
        {
            var layer = f.Layers[l];
            foreach (var (what, rows) in new[] { ("key", layer.Key), ("value", layer.Value) })
                if (layer.Layer != l || rows.Length != m.KvHeads || rows.Any(r => r.Length != m.HeadDim || r.Any(x => !float.IsFinite(x) || x < 0)))
                    throw new KvScaleException($"{path}: layer {l} {what} absmax is not {m.KvHeads} heads x {m.HeadDim} finite non-negative values; recalibrate with lcc calibrate MODEL --kv");
        }
        return f;
    }

    /// <summary>Throws naming both when the file's cache geometry is not <paramref name="model"/>'s.</summary>
    public void CheckFits(string path, string modelName, int layers, int kvHeads, int headDim)
    {
        var m = Model;
        if (m.Layers != layers || m.KvHeads != kvHeads || m.HeadDim != headDim)
            throw new KvScaleException($"scale file {path} is for {m.Path} ({m.Layers} layers, {m.KvHeads} KV heads, head_dim {m.HeadDim}), " +
                $"not {modelName} ({layers} layers, {kvHeads} KV heads, head_dim {headDim}); calibrate this model with lcc calibrate {modelName} --kv");
    }
}

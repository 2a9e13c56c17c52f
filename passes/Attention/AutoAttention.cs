using LongCtx.Compiler;

namespace LongCtx.Passes.Attention;

/// <summary>
/// <c>--attention auto</c> with <c>calib=FILE</c> (issue 10 item 2): every layer is lowered with the sparse prefill pattern
/// its calibration chose (<see cref="AttentionCalibrationFile"/>); each layer's options are parsed exactly as
/// <c>--attention PATTERN:k=v</c> would be (<see cref="LongAttentionSettings.Parse"/>), so a calibrated layer equals that
/// layer compiled with its pattern by hand. A layer whose KV heads chose differently (calibration file version 2) is
/// lowered with per-head attributes (<see cref="PerHeadAttention"/>). The model's layer and head counts are checked against
/// the file by <see cref="LowerToLongAttention"/> before anything changes.
/// </summary>
internal static class AutoAttention
{
    public static LongAttentionSettings Parse(IReadOnlyDictionary<string, string> options, int? trained, int? context, string model)
    {
        if (!options.TryGetValue("calib", out var path))
            throw new CompileException($"{model}: --attention auto needs a calibration file: give --calib FILE (lcc calibrate MODEL --attention writes one)");
        var file = AttentionCalibrationFile.Load(path);
        var perLayer = new SortedDictionary<int, LongAttentionSettings>();
        foreach (var l in file.PerLayer)
        {
            LongAttentionSettings One(string pattern, IReadOnlyDictionary<string, string> choice)
            {
                var opts = new Dictionary<string, string>(choice, StringComparer.Ordinal) { ["pattern"] = pattern, ["layers"] = l.Layer.ToString(System.Globalization.CultureInfo.InvariantCulture) };
                if (trained is int t) opts["trained-context"] = t.ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (context is int c) opts["context"] = c.ToString(System.Globalization.CultureInfo.InvariantCulture);
                return LongAttentionSettings.Parse(opts, null, model, context) with { Said = null };
            }
            try { perLayer[l.Layer] = One(l.Pattern, l.Options); }
            catch (CompileException e) { throw new CompileException($"{path}: layer {l.Layer}: {e.Message}"); }
            if (l.IsPerHead) perLayer[l.Layer] = perLayer[l.Layer] with { Heads = PerHeadAttention.Parse(l, path, One) };
        }
        string said = $"auto: per-layer patterns from {path} (calibrated on {file.Model}, {file.Data}, density budget {AttentionCalibrationFile.Format(file.DensityBudget)}): "
            + string.Join("; ", file.PerLayer.Select(l => $"layer {l.Layer} " + (l.IsPerHead
                ? "per KV head [" + string.Join(" | ", l.Heads!.Select(AttentionCalibrationFile.Spec)) + "]" : AttentionCalibrationFile.Spec(l))));
        return new LongAttentionSettings(AttentionPattern.Dense, 0, 0, 0, 0, new SortedSet<int>(perLayer.Keys), trained, context, said)
        {
            PerLayer = perLayer, Calibration = (path, file),
        };
    }

    /// <summary>longctx.json <c>runtime.attention</c> for auto: the file, and per layer its options, expected density at
    /// <c>density_at</c> and the calibrated density and error.</summary>
    public static void Record(Dictionary<string, object?> attention, LongAttentionSettings s)
    {
        if (s.Calibration is not var (path, file) || s.PerLayer is null) return;
        attention["pattern"] = "auto";
        attention["calibration"] = new Dictionary<string, object?>
        {
            ["file"] = Path.GetFullPath(path), ["model"] = file.Model, ["model_sha256"] = file.ModelSha256, ["data"] = file.Data,
            ["samples"] = file.Samples, ["length"] = file.Length, ["density_budget"] = file.DensityBudget, ["seed"] = file.Seed,
        };
        int length = s.Context ?? SparsePrefillRecord.DefaultDensityLength;
        attention["density_at"] = length;
        if (attention["layers"] is not IEnumerable<Dictionary<string, object?>> rows) return;
        foreach (var row in rows)
        {
            if (row["layer"] is not int layer || !s.PerLayer.TryGetValue(layer, out var ls) || ls.Sparse is not { } sp
                || row.GetValueOrDefault("pattern") as string != ls.PatternName) continue;
            var cal = file.PerLayer.First(l => l.Layer == layer);
            row["options"] = $"{sp.Describe(ls.Pattern, ls.Sink, ls.Window)} density_at={length}";
            row["density"] = sp.ExpectedDensity(ls.Pattern, ls.Sink, ls.Window, length) is double d ? AttentionCalibrationFile.Format(d) : "dynamic";
            row["calibrated_density"] = Math.Round(cal.Density, 4);
            row["calibrated_error"] = Math.Round(cal.Error, 5);
            row["head_density"] = cal.HeadDensity.Select(x => Math.Round(x, 4)).ToList();
            if (ls.Heads is { } heads)
            {
                row["options"] = $"per KV head, density_at={length}";
                PerHeadAttention.Record(row, heads, cal.Heads!, length);
            }
        }
    }
}

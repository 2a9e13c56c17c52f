using System.Globalization;
using LongCtx.Compiler.Passes;

namespace LongCtx.Passes.Eviction;

/// <summary>
/// Options of <c>--token-filter gemfilter:layer=R,keep=K[,recent=8,pool=5]</c> (pass <c>token-filter</c>; GemFilter, Shi et
/// al. 2024, arXiv:2409.17422): <c>layer</c> is the 0-based filter layer (required by the pass; <c>lcc compile</c> chooses
/// it by a sweep when <c>calibration=FILE.jsonl</c> is given instead), <c>keep</c> a token count or a fraction of the
/// prompt (<c>1/8</c>, <c>12.5%</c>, <c>0.125</c>), <c>recent</c> the last tokens always kept, <c>pool</c> the average-pool
/// kernel over the scores.
/// </summary>
public sealed record GemFilterSettings(int? Layer, double Keep, int Recent, int Pool, string? Calibration)
{
    public static IReadOnlyList<(string Key, string Default, string Help)> Options { get; } =
    [
        ("layer", "", "filter layer R (0-based); omitted: chosen by a sweep over calibration="),
        ("keep", "1/8", "tokens kept: a count or a fraction of the prompt"),
        ("recent", "8", "last tokens always kept"),
        ("pool", "5", "average-pool kernel over the scores"),
        ("calibration", "", "needle JSONL for the layer sweep when layer= is not given"),
    ];

    public static IReadOnlyDictionary<string, string> FromSpec(string spec)
        => MethodSpec.Parse(spec, "--token-filter", m => m == "gemfilter" ? Options : null, ["gemfilter"], "gemfilter:layer=1,keep=1/8");

    public static GemFilterSettings Parse(IReadOnlyDictionary<string, string> o)
    {
        int? layer = null;
        if (o.GetValueOrDefault("layer") is { Length: > 0 } ls)
            layer = int.TryParse(ls, NumberStyles.Integer, CultureInfo.InvariantCulture, out int l) && l >= 0 ? l
                : throw new ArgumentException($"--token-filter gemfilter: layer={ls} is not a layer index >= 0");
        string ks = o.GetValueOrDefault("keep") ?? "1/8";
        double keep = ParseSize(ks);
        if (!(keep > 0 && (keep < 1 || keep == Math.Floor(keep))))
            throw new ArgumentException($"--token-filter gemfilter: keep={ks} is neither a token count (>= 1) nor a fraction of the prompt (1/8, 12.5%, 0.125)");
        int Int(string k, string d, int min) => int.TryParse(o.GetValueOrDefault(k) ?? d, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min ? v
            : throw new ArgumentException($"--token-filter gemfilter: {k}={o.GetValueOrDefault(k)} is not an integer >= {min}");
        return new GemFilterSettings(layer, keep, Int("recent", "8", 0), Int("pool", "5", 1), o.GetValueOrDefault("calibration"));
    }

    private static double ParseSize(string s)
    {
        var inv = CultureInfo.InvariantCulture;
        if (s.Split('/') is [var a, var b])
            return double.TryParse(a, NumberStyles.Float, inv, out var x) && double.TryParse(b, NumberStyles.Float, inv, out var y) && y > 0 ? x / y : -1;
        bool pct = s.EndsWith('%');
        return double.TryParse(pct ? s[..^1] : s, NumberStyles.Float, inv, out var v) ? (pct ? v / 100 : v) : -1;
    }

    public static PipelineStep Step(IReadOnlyDictionary<string, string> options) => new("token-filter", options);
}

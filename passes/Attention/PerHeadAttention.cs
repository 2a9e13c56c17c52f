using System.Globalization;
using LongCtx.Compiler;
using LongCtx.Compiler.IR;

namespace LongCtx.Passes.Attention;

/// <summary>
/// Per-KV-head sparse prefill (issue 10 item 2, "per layer and head picks the pattern and budget"): a calibrated layer whose
/// KV heads chose different patterns or budgets (<see cref="CalibratedLayer.IsPerHead"/>) is lowered to one
/// <c>longctx.LongAttention</c> with its layer-level sparse pattern plus the per-head override attributes of
/// custom-ops/ort/long_attention_heads.h: <c>head_pattern</c> (longctx_la_pattern ids: 0 dense, 3 trishape, 4 vslash,
/// 5 xattn, 6 block), <c>head_min_len</c>, and the budgets the heads' patterns use (<c>head_vertical</c>, <c>head_slash</c>;
/// <c>head_threshold</c>; <c>head_sink</c>, <c>head_window</c>, <c>head_last</c>). Per KV head, not per query head: the
/// kernel's unit of work is a KV head with its G query heads, each K/V tile loaded once for the group, and the vslash / xattn
/// estimators already build one index per KV head. A layer whose heads all agree lowers exactly as that pattern per layer.
/// Expected density per head is <see cref="SparsePrefill.ExpectedDensity"/> (1 for dense heads, "dynamic" for xattn); the
/// layer's is the mean over its heads when every head has one.
/// </summary>
public static class PerHeadAttention
{
    /// <summary>The kernel's pattern ids (longctx_la_pattern) of the patterns a head may take.</summary>
    public static long Id(AttentionPattern p) => p switch
    {
        AttentionPattern.Dense => 0, AttentionPattern.Trishape => 3, AttentionPattern.Vslash => 4, AttentionPattern.Xattn => 5, AttentionPattern.Block => 6,
        _ => throw new ArgumentOutOfRangeException(nameof(p), p, "not a per-head pattern"),
    };

    /// <summary>The layer-level pattern of a per-head layer: its most common sparse head choice (ties: the lowest KV head).</summary>
    public static CalibratedHead LayerChoice(IReadOnlyList<CalibratedHead> heads) =>
        heads.Where(h => h.Pattern != "dense").GroupBy(h => h.Pattern, StringComparer.Ordinal)
            .OrderByDescending(g => g.Count()).ThenBy(g => g.Min(h => h.KvHead)).Select(g => g.First()).FirstOrDefault() ?? heads[0];

    /// <summary>Each head's settings, parsed as <c>--attention PATTERN:k=v</c> would be (<paramref name="parse"/>).</summary>
    public static IReadOnlyList<LongAttentionSettings> Parse(CalibratedLayer l, string path, Func<string, IReadOnlyDictionary<string, string>, LongAttentionSettings> parse) =>
        l.Heads!.Select(h =>
        {
            try { return parse(h.Pattern, h.Options); }
            catch (CompileException e) { throw new CompileException($"{path}: layer {l.Layer} KV head {h.KvHead}: {e.Message}"); }
        }).ToList();

    /// <summary>The per-head attributes (after the layer pattern's own).</summary>
    public static IEnumerable<Attr> Attrs(IReadOnlyList<LongAttentionSettings> heads)
    {
        bool Any(AttentionPattern p) => heads.Any(h => h.Pattern == p);
        long Of(LongAttentionSettings h, AttentionPattern p, Func<LongAttentionSettings, long> value, long other) => h.Pattern == p ? value(h) : other;
        yield return Attr.Ints("head_pattern", heads.Select(h => Id(h.Pattern)));
        yield return Attr.Ints("head_min_len", heads.Select(h => (long)(h.Sparse?.MinLen ?? 0)));
        if (Any(AttentionPattern.Vslash))
        {
            yield return Attr.Ints("head_vertical", heads.Select(h => Of(h, AttentionPattern.Vslash, x => x.Sparse!.Vertical, 0)));
            yield return Attr.Ints("head_slash", heads.Select(h => Of(h, AttentionPattern.Vslash, x => x.Sparse!.Slash, 0)));
        }
        if (Any(AttentionPattern.Xattn))
            yield return Attr.Floats("head_threshold", heads.Select(h => h.Pattern == AttentionPattern.Xattn ? (float)h.Sparse!.Threshold : 1f));
        if (Any(AttentionPattern.Trishape))
        {
            yield return Attr.Ints("head_sink", heads.Select(h => Of(h, AttentionPattern.Trishape, x => x.Sink, 0)));
            yield return Attr.Ints("head_window", heads.Select(h => Of(h, AttentionPattern.Trishape, x => x.Window, 1)));
            yield return Attr.Ints("head_last", heads.Select(h => Of(h, AttentionPattern.Trishape, x => x.Sparse!.Last, 0)));
        }
    }

    /// <summary>A head's expected density at <paramref name="length"/> tokens (null: data-dependent, xattn).</summary>
    public static double? Density(LongAttentionSettings h, int length) =>
        h.Sparse is { } sp ? sp.ExpectedDensity(h.Pattern, h.Sink, h.Window, length) : 1.0;

    /// <summary>A head's pattern and budget in a few characters, for <c>lcc inspect</c> ("vslash 30/800", "tri 100+800").</summary>
    public static string Short(LongAttentionSettings h) => h.Pattern switch
    {
        AttentionPattern.Vslash => $"vslash {h.Sparse!.Vertical}/{h.Sparse.Slash}",
        AttentionPattern.Xattn => $"xattn {h.Sparse!.Threshold.ToString(CultureInfo.InvariantCulture)}",
        AttentionPattern.Trishape => $"trishape {h.Sink}+{h.Window}",
        AttentionPattern.Block => $"block {h.Sparse!.LocalBlocks}/{h.Sparse.VertStride}",
        _ => "dense",
    };

    /// <summary>longctx.json: the layer row's <c>heads</c> (per KV head: pattern, budget, expected and calibrated density,
    /// calibrated error) and the layer's expected density (the heads' mean, "dynamic" when a head is xattn).</summary>
    public static void Record(Dictionary<string, object?> row, IReadOnlyList<LongAttentionSettings> heads, IReadOnlyList<CalibratedHead> calibrated, int length)
    {
        var density = heads.Select(h => Density(h, length)).ToList();
        row["density"] = density.All(d => d is not null) ? AttentionCalibrationFile.Format(density.Average(d => d!.Value)) : "dynamic";
        row["heads"] = heads.Select((h, i) => new Dictionary<string, object?>
        {
            ["kv_head"] = i,
            ["pattern"] = h.PatternName,
            ["budget"] = Short(h),
            ["density"] = density[i] is double d ? AttentionCalibrationFile.Format(d) : "dynamic",
            ["calibrated_density"] = Math.Round(calibrated[i].Density, 4),
            ["calibrated_error"] = Math.Round(calibrated[i].Error, 5),
        }).ToList();
    }
}

using System.Globalization;

namespace LongCtx.Passes.Attention;

/// <summary>
/// longctx.json <c>runtime.attention</c> for a sparse prefill pattern (<see cref="SparsePrefill"/>): the pattern's
/// parameters, the length the expected density is given at (<c>density_at</c>: the target context, else 32768), and per
/// lowered layer its <c>density</c> (share of causal query-key pairs attended; "dynamic" for xattn), which
/// <c>lcc inspect</c> prints.
/// </summary>
internal static class SparsePrefillRecord
{
    public const int DefaultDensityLength = 32768;

    public static void Add(Dictionary<string, object?> attention, LongAttentionSettings s, SparsePrefill sp)
    {
        if (s.Pattern == AttentionPattern.Trishape) { attention["sink"] = s.Sink; attention["window"] = s.Window; attention["last"] = sp.Last; }
        if (s.Pattern == AttentionPattern.Vslash) { attention["vertical"] = sp.Vertical; attention["slash"] = sp.Slash; }
        if (s.Pattern == AttentionPattern.Xattn) { attention["threshold"] = sp.Threshold; attention["stride"] = sp.Stride; }
        attention["min_len"] = sp.MinLen;
        int length = s.Context ?? DefaultDensityLength;
        attention["density_at"] = length;
        string density = sp.ExpectedDensity(s.Pattern, s.Sink, s.Window, length) is double d
            ? d.ToString("0.###", CultureInfo.InvariantCulture) : "dynamic";
        if (attention["layers"] is not IEnumerable<Dictionary<string, object?>> rows) return;
        foreach (var row in rows)
            if (row.GetValueOrDefault("pattern") is string p && p == s.PatternName) row["density"] = density;
    }
}

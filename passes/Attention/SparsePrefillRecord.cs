using System.Globalization;
using LongCtx.Compiler.Passes;

namespace LongCtx.Passes.Attention;

/// <summary>
/// longctx.json <c>runtime.attention</c> for a sparse prefill pattern (<see cref="SparsePrefill"/>): the pattern's
/// parameters, the length the expected density is given at (<c>density_at</c>: the target context, else 32768), and per
/// lowered layer its <c>density</c> (share of causal query-key pairs attended; "dynamic" for xattn), which
/// <c>lcc inspect</c> prints. For <c>block</c> the compile report names the op of every layer: always longctx.LongAttention,
/// because com.microsoft.SparseAttention, which takes the same layout as CSR block indices, keeps its KV cache in one
/// shared past/present buffer of max_cache_len rows and reads key_total_sequence_lengths, where the compiled model keeps
/// GroupQueryAttention's concatenated cache and seqlens_k; lowering to it would change the runtime's cache contract.
/// </summary>
internal static class SparsePrefillRecord
{
    public const int DefaultDensityLength = 32768;

    public static void Add(Dictionary<string, object?> attention, LongAttentionSettings s, SparsePrefill sp, PassContext ctx)
    {
        if (s.Pattern == AttentionPattern.Trishape) { attention["sink"] = s.Sink; attention["window"] = s.Window; attention["last"] = sp.Last; }
        if (s.Pattern == AttentionPattern.Vslash) { attention["vertical"] = sp.Vertical; attention["slash"] = sp.Slash; }
        if (s.Pattern == AttentionPattern.Xattn) { attention["threshold"] = sp.Threshold; attention["stride"] = sp.Stride; }
        if (s.Pattern == AttentionPattern.Block) { attention["local"] = sp.LocalBlocks; attention["vert_stride"] = sp.VertStride; }
        attention["min_len"] = sp.MinLen;
        int length = s.Context ?? DefaultDensityLength;
        attention["density_at"] = length;
        string density = sp.ExpectedDensity(s.Pattern, s.Sink, s.Window, length) is double d
            ? d.ToString("0.###", CultureInfo.InvariantCulture) : "dynamic";
        if (attention["layers"] is not IEnumerable<Dictionary<string, object?>> rows) return;
        var lowered = new List<string>();
        foreach (var row in rows)
            if (row.GetValueOrDefault("pattern") is string p && p == s.PatternName)
            {
                row["density"] = density;
                lowered.Add(row["layer"]?.ToString() ?? "?");
            }
        if (s.Pattern == AttentionPattern.Block && lowered.Count > 0)
            ctx.Note($"block: layers {string.Join(",", lowered)} run longctx.LongAttention, none com.microsoft.SparseAttention "
                + "(it needs a shared past/present buffer and key_total_sequence_lengths; this model keeps GroupQueryAttention's cache contract)");
    }
}

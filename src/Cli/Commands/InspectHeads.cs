using System.Text.Json;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc inspect</c>: the per-KV-head part of an attention layer's line (longctx.json <c>heads</c>, written for a
/// layer calibrated per head, passes/Attention/PerHeadAttention.cs): each head's pattern, budget and expected density.</summary>
internal static class InspectHeads
{
    /// <summary>"  heads [0 vslash 30/800 d=0.062 | 1 dense d=1]", or "" for a layer without per-head choices.</summary>
    public static string Of(JsonElement row)
    {
        if (!row.TryGetProperty("heads", out var heads) || heads.ValueKind != JsonValueKind.Array) return "";
        return "  heads [" + string.Join(" | ", heads.EnumerateArray().Select(h =>
            $"{h.GetProperty("kv_head")} {h.GetProperty("budget").GetString()} d={h.GetProperty("density")}")) + "]";
    }
}

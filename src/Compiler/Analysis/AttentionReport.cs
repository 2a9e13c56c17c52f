using System.Globalization;
using System.Text;

namespace LongCtx.Compiler.Analysis;

/// <summary>The attention section of <c>lcc inspect</c>: one row per recognised block, then where matching stopped for the rest.</summary>
public static class AttentionReport
{
    public static string ToText(DiscoveryResult r)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append($"attention {r.Blocks.Count} blocks recognised, {r.Unrecognised.Count} not recognised\n");
        if (r.Blocks.Count > 0)
        {
            sb.Append($"  {"layer",-5} {"form",-22} {"heads",5} {"kv",3} {"hdim",4} {"causal",6} {"scale",8}  {"rope",-26} cache\n");
            foreach (var b in r.Blocks)
            {
                string rope = !b.Rope.Present ? "none"
                    : string.Create(inv, $"theta {b.Rope.Theta?.ToString("G6", inv) ?? "?"} dim {b.Rope.RotaryDim}{(b.Rope.Interleaved ? " interleaved" : "")}{(b.Rope.OriginalMaxPositions is int mp ? $" max {mp}" : "")}");
                string cache = b.PastKey is null && b.PresentKey is null ? "none"
                    : b.PastKey == b.PastValue && b.PresentKey == b.PresentValue ? $"{b.PastKey ?? "-"} -> {b.PresentKey ?? "-"} ({b.KvLayout})" // packed: one tensor
                    : $"{b.PastKey ?? "-"}, {b.PastValue ?? "-"} -> {b.PresentKey ?? "-"}, {b.PresentValue ?? "-"} ({b.KvLayout})";
                sb.Append(string.Create(inv, $"  {b.Layer,-5} {b.Form,-22} {b.NumHeads,5} {b.KvNumHeads,3} {b.HeadDim,4} {(b.Causal ? "yes" : "no"),6} {b.Scale,8:0.######}  {rope,-26} {cache}\n"));
            }
        }
        foreach (var u in r.Unrecognised) sb.Append("  not recognised: ").Append(u).Append('\n');
        return sb.ToString();
    }
}

using System.Globalization;
using System.Text;
using LongCtx.Runtime.Eval;

namespace LongCtx.Cli.Commands;

/// <summary>The per-turn table of <c>lcc eval --multi-turn N</c>: accuracy and time to first token, reuse vs recompute.</summary>
internal static class MultiTurnReport
{
    public static string Table(MultiTurnResult r, string uptime)
    {
        var sb = new StringBuilder();
        sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"{r.Model}  {r.File}  multi-turn {r.Turns}: {r.Conversations} conversations ({r.Skipped} skipped: fewer than {r.Turns} keys)  chunk={r.Chunk}  {r.Seconds:F1}s"));
        sb.AppendLine($"{"turn",4}  {"context",7}  {"acc reuse",9}  {"acc recompute",13}  {"agree",5}  {"TTFT reuse ms",13}  {"TTFT recompute ms",17}  {"reuse/recompute",15}  {"TTFT prefix-cache ms",20}");
        foreach (var t in r.PerTurn)
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{t.Turn,4}  {t.ContextTokens,7}  {t.AccuracyReuse,9:F3}  {Opt(t.AccuracyRecompute, "F3"),13}  {(t.Agree is { } a ? $"{a}/{t.N}" : "-"),5}  {t.TtftReuseMs,13:F1}  {Opt(t.TtftRecomputeMs, "F1"),17}  {Opt(t.Ratio, "F3"),15}  {Opt(t.TtftPrefixCacheMs, "F1"),20}"));
        var later = r.PerTurn.Skip(1).Where(t => t.TtftRecomputeMs > 0).ToList();
        if (later.Count > 0)
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"turns 2..{r.Turns}: TTFT reuse {later.Sum(t => t.TtftReuseMs):F1} ms vs recompute {later.Sum(t => t.TtftRecomputeMs!.Value):F1} ms = {later.Sum(t => t.TtftReuseMs) / later.Sum(t => t.TtftRecomputeMs!.Value):F4}x (goal <= 0.1x)"));
        if (r.PrefixCache is { } pc) sb.AppendLine(pc.ToString());
        sb.AppendLine($"(means over conversations; turns interleaved per conversation; uptime: {uptime})");
        return sb.ToString();
    }

    private static string Opt(double? v, string format) => v is { } x ? x.ToString(format, CultureInfo.InvariantCulture) : "-";

    /// <summary>The load line of /proc/loadavg (the box is shared: timings are only comparable within one run).</summary>
    public static string Uptime() => File.Exists("/proc/loadavg") ? "load " + string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}

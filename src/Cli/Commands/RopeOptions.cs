using System.CommandLine;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using LongCtx.Passes.Rope;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc compile --context N --rope METHOD[:k=v,...] [--trained-context N] [--force-rope]</c>: parses the RoPE
/// context-extension options into a pipeline step (pass <c>rope-METHOD</c>) appended to the compile pipeline.
/// </summary>
internal static class RopeOptions
{
    /// <summary>The method names, from the one table (<see cref="RopeMethods"/>).</summary>
    public static IReadOnlyList<string> Methods { get; } = RopeMethods.Names.ToArray();

    public static Option<int?> Context { get; } = new("--context") { Description = "target context length: RoPE scaling uses s = context / trained context, and canonical cos/sin caches cover it" };
    public static Option<string?> Rope { get; } = new("--rope")
    {
        Description = "RoPE scaling METHOD[:k=v,...]; METHOD: " + string.Join(", ", RopeMethods.All.Select(m => $"{m.Name} ({string.Join(", ", m.Parameters)})"))
            + "; formulas and sources: lcc compile --list-passes",
    };
    public static Option<int?> TrainedContext { get; } = new("--trained-context") { Description = "context the model was trained at (default: cos-cache length or config.json)" };
    public static Option<bool> ForceRope { get; } = new("--force-rope") { Description = "apply --rope even when --context is not larger than the trained context" };

    public static void AddTo(Command cmd)
    {
        cmd.Add(Context);
        cmd.Add(Rope);
        cmd.Add(TrainedContext);
        cmd.Add(ForceRope);
    }

    /// <summary>The pipeline steps the options ask for (none without --rope).</summary>
    public static IReadOnlyList<PipelineStep> Steps(ParseResult pr, bool attention = false) =>
        Parse(pr.GetValue(Rope), pr.GetValue(Context), pr.GetValue(TrainedContext), pr.GetValue(ForceRope), attention);

    /// <param name="attention">--attention is given too: it also reads --trained-context (and --context)</param>
    public static IReadOnlyList<PipelineStep> Parse(string? rope, int? context, int? trainedContext, bool force, bool attention = false)
    {
        if (rope is null)
        {
            if (force || (trainedContext is not null && !attention)) throw new ArgumentException("--trained-context and --force-rope need --rope METHOD" + (attention ? "" : " (or --attention for --trained-context)"));
            return [];
        }
        int colon = rope.IndexOf(':');
        string method = (colon < 0 ? rope : rope[..colon]).Trim().ToLowerInvariant();
        var row = RopeMethods.Get(method);
        if (context is not int c) throw new ArgumentException($"--rope {method} needs --context N (the target context length)");
        if (c <= 0) throw new ArgumentException($"--context {c}: must be positive");
        var opts = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (colon >= 0)
            foreach (var kv in rope[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int eq = kv.IndexOf('=');
                if (eq <= 0) throw new ArgumentException($"--rope {rope}: option '{kv}' is not k=v");
                opts[RopeOptionRules.Normalize(kv[..eq])] = kv[(eq + 1)..].Trim();
            }
        opts["context"] = c.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (trainedContext is int t) opts["trained-context"] = t.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (force) opts["force"] = "true";
        row.CheckOptions(opts.Keys);
        RopeOptionRules.Check(row, opts);
        Pipelines.Create(row.PassName); // fails early on a missing registration
        return [new PipelineStep(row.PassName, opts)];
    }
}

using System.CommandLine;
using LongCtx.Compiler.Passes;
using LongCtx.Passes.Attention;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc compile --attention dense | streaming[:sink=4,window=N] | dca[:chunk=N,local=M] | trishape[:sink,window,last,min_len]
/// | vslash[:vertical,slash,min_len] | xattn[:threshold,stride,min_len] | block[:local,vert_stride,min_len]</c> (each with an optional
/// <c>layers=0-3,6</c>): parses the pattern into the <c>lower-attention</c> pipeline step. Defaults are derived by the
/// pass from the trained context and printed as a note; <c>--trained-context</c> is passed along (<c>--context</c> reaches
/// the pass as the pipeline's target context).
/// </summary>
internal static class AttentionOptions
{
    public static Option<string?> Attention { get; } = new("--attention")
    {
        Description = "lower attention to longctx.LongAttention: dense | streaming:sink=4,window=N | dca:chunk=N,local=M | sparse prefill "
            + "trishape:sink=64,window=1024,last=64 | vslash:vertical=1000,slash=4096 | xattn:threshold=0.9,stride=8 | block:local=16,vert_stride=8 | auto (per layer from --calib FILE) (sparse ones take min_len=8192, trishape and block 2048: "
            + "shorter prompts and decode run dense) (optional layers=0-3,6; defaults derived from the trained context)",
    };

    public static Option<FileInfo?> Calib { get; } = new("--calib")
    {
        Description = "calibration file: with --attention auto, from lcc calibrate MODEL --attention (per layer the sparse prefill pattern); with --kv, the scale file from lcc calibrate MODEL --kv. Without it, both calibrate on a built-in synthetic set first and say so",
    };

    public static void AddTo(Command cmd)
    {
        cmd.Add(Attention);
        cmd.Add(Calib);
    }

    public static PipelineStep? Step(ParseResult pr)
    {
        var step = Parse(pr.GetValue(Attention), pr.GetValue(RopeOptions.TrainedContext));
        if (pr.GetValue(Calib) is not { } calib) return step;
        if (step is null && pr.GetValue(KvOptions.Kv) is not null) return step; // --kv's scale file (--kv refuses --attention)
        if (step?.Options?["pattern"] != "auto") throw new ArgumentException($"--calib {calib.Name}: only --attention auto reads a calibration file (--attention auto --calib {calib.Name})");
        return step with { Options = new SortedDictionary<string, string>(step.Options.ToDictionary(), StringComparer.Ordinal) { ["calib"] = calib.FullName } };
    }

    public static PipelineStep? Parse(string? spec, int? trainedContext)
    {
        if (spec is null) return null;
        int colon = spec.IndexOf(':');
        string pattern = (colon < 0 ? spec : spec[..colon]).Trim().ToLowerInvariant();
        if (!LongAttentionSettings.Keys.TryGetValue(pattern, out var valid))
            throw new ArgumentException($"--attention {pattern}: unknown pattern; valid: {string.Join(", ", LongAttentionSettings.Keys.Keys)}"
                + (pattern.Contains(',') || pattern.Contains('=') ? " (options follow a colon: PATTERN:k=v,..., e.g. dense:layers=0-3)" : ""));
        var opts = new SortedDictionary<string, string>(StringComparer.Ordinal) { ["pattern"] = pattern };
        string? last = null;
        if (colon >= 0)
            foreach (var kv in spec[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int eq = kv.IndexOf('=');
                if (eq < 0 && last == "layers") { opts["layers"] += "," + kv; continue; } // layers=0-3,6: the list goes on
                if (eq <= 0) throw new ArgumentException($"--attention {spec}: option '{kv}' is not k=v; valid for {pattern}: {string.Join(", ", valid)}");
                string key = kv[..eq].Trim().ToLowerInvariant();
                if (!valid.Contains(key)) throw new ArgumentException($"--attention {pattern}: unknown option '{key}'; valid for {pattern}: {string.Join(", ", valid)}");
                opts[key] = kv[(eq + 1)..].Trim();
                last = key;
            }
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        if (trainedContext is int t) opts["trained-context"] = t.ToString(inv);
        return new PipelineStep("lower-attention", opts);
    }
}

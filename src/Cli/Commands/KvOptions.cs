using System.CommandLine;
using LongCtx.Compiler;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using LongCtx.Runtime;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc compile --kv int8 | int4 | int4:rotate [--kv-granularity tensor|channel] [--calib SCALES]</c>: the quantize-kv
/// pipeline step (with hadamard-kv before it for :rotate). Without --calib the pipeline is first compiled without --kv
/// into a temporary folder, that float model is calibrated on the built-in synthetic set (said so), and the scales are
/// used: keys are calibrated as the compiled model caches them (after any RoPE scaling).
/// </summary>
internal static class KvOptions
{
    public static Option<string?> Kv { get; } = new("--kv")
    {
        Description = "quantize the KV cache: int8 | int4 | int4:rotate (ORT's GroupQueryAttention; :rotate = Hadamard-rotated keys/values) | kivi2 | kivi4 (KIVI on longctx.KiviAttention: keys per channel, values per token, an fp32 residual window)",
    };
    public static Option<int> KiviResidual { get; } = new("--kv-residual")
    {
        Description = "--kv kivi*: the most recent tokens kept in fp32 (R; tokens leave the window in groups of --kv-group once it holds R + G)",
        DefaultValueFactory = _ => 128,
    };
    public static Option<int> KiviGroup { get; } = new("--kv-group")
    {
        Description = "--kv kivi*: group size G (tokens per key scale/zero, channels per value scale/zero); must divide head_dim",
        DefaultValueFactory = _ => 32,
    };
    public static Option<string> Granularity { get; } = new("--kv-granularity")
    {
        Description = "KV scale granularity: channel (one per KV head and channel; default) | tensor (one per layer and K/V)",
        DefaultValueFactory = _ => "channel",
    };
    /// <summary>--calib is one option shared with --attention auto (the two do not combine): here, the scale file of lcc calibrate MODEL --kv.</summary>
    public static Option<FileInfo?> Calib => AttentionOptions.Calib;

    public static void AddTo(Command cmd) { cmd.Add(Kv); cmd.Add(Granularity); cmd.Add(KiviResidual); cmd.Add(KiviGroup); }

    /// <summary>The parsed --kv: bits, granularity, rotation.</summary>
    public sealed record Spec(string Mode, string Granularity, bool Rotate);

    public static Spec? Parse(ParseResult pr) => Parse(pr.GetValue(Kv), pr.GetValue(Granularity) ?? "channel");

    public static Spec? Parse(string? kv, string granularity)
    {
        if (kv is null) return null;
        var parts = kv.Trim().ToLowerInvariant().Split(':', 2);
        string mode = parts[0];
        if (mode is "kivi2" or "kivi4" && parts.Length == 1) return new Spec(mode, "kivi", false);
        if (mode is not ("int8" or "int4")) throw new ArgumentException($"--kv {kv}: unknown mode; valid: int8, int4, int4:rotate, kivi2, kivi4");
        bool rotate = parts.Length == 2 && (parts[1] == "rotate" ? true : throw new ArgumentException($"--kv {kv}: unknown option '{parts[1]}'; valid: {mode}:rotate"));
        string g = granularity.Trim().ToLowerInvariant();
        if (g is not ("tensor" or "channel")) throw new ArgumentException($"--kv-granularity {granularity}: unknown; valid: tensor, channel");
        return new Spec(mode, g, rotate);
    }

    /// <summary>The parsed spec is KIVI (no scale file: each group's own range).</summary>
    public static bool IsKivi(Spec spec) => spec.Granularity == "kivi";

    /// <summary>--kv-residual or --kv-group when given on the command line (they apply to --kv kivi* only), else null.</summary>
    public static string? KiviOnlyOptionGiven(ParseResult pr) =>
        pr.GetResult(KiviResidual) is { Implicit: false } ? "--kv-residual" : pr.GetResult(KiviGroup) is { Implicit: false } ? "--kv-group" : null;

    /// <summary>The step --kv kivi2|kivi4 appends: pass kivi-kv with bits, --kv-group, --kv-residual.</summary>
    public static PipelineStep KiviStep(Spec spec, ParseResult pr) => new("kivi-kv", new SortedDictionary<string, string>(StringComparer.Ordinal)
    {
        ["bits"] = spec.Mode[^1..], ["group"] = pr.GetValue(KiviGroup).ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["residual"] = pr.GetValue(KiviResidual).ToString(System.Globalization.CultureInfo.InvariantCulture),
    });

    /// <summary>The steps --kv appends (after the rest of the pipeline) given the scale file.</summary>
    public static IReadOnlyList<PipelineStep> Steps(Spec spec, string scales, string source)
    {
        var q = new PipelineStep("quantize-kv", new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["mode"] = spec.Mode, ["granularity"] = spec.Granularity, ["scales"] = scales, ["scales-source"] = source,
            ["rotated"] = spec.Rotate ? "true" : "false",
        });
        return spec.Rotate ? [new PipelineStep("hadamard-kv"), q] : [q];
    }

    /// <summary>
    /// The scale file to use: --calib as given, or a calibration of the pipeline without --kv (and with the rotation when
    /// asked, so the scales see rotated keys) compiled into <paramref name="scratch"/>.
    /// </summary>
    public static (string Path, string Source) Scales(Spec spec, FileInfo? calib, string input, IReadOnlyList<PipelineStep> steps,
        CompileOptions options, string scratch, CancellationToken ct)
    {
        if (calib is not null)
            return File.Exists(calib.FullName) ? (calib.FullName, calib.FullName) : throw new FileNotFoundException($"--calib {calib.FullName}: no such scale file; make one with lcc calibrate MODEL --kv -o {calib.Name}");
        string folder = Path.Combine(scratch, "float");
        IReadOnlyList<PipelineStep> pre = spec.Rotate ? [.. steps, new PipelineStep("hadamard-kv")] : steps;
        CompileJob.Run(input, folder, Pipelines.Instantiate(pre), options with { Passes = options.Passes with { Log = null, Trace = false, StepLimit = null } }, ct);
        var file = CalibrateCommand.Calibrate(folder, null, CalibrateCommand.DefaultSamples, CalibrateCommand.DefaultLength,
            RuntimeOptions.Default with { Log = _ => { } }, Console.Error.WriteLine, ct);
        string path = Path.Combine(scratch, "kv-scales.json");
        file.Write(path);
        return (path, "calibrated by lcc compile on the built-in set (no --calib)");
    }
}

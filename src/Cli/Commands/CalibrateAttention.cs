using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using LongCtx.Cli.Calibration;
using LongCtx.Compiler;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using LongCtx.Passes.Attention;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc calibrate MODEL --attention [--data F.jsonl] [--samples N] [--length L] [--density D] [--seed S] [--per-layer] [-o FILE]</c>
/// (issue 10 item 2): captures each layer's q/k/v on a few prompts (<see cref="AttentionCapture"/>), scores the candidate
/// sparse prefill patterns against dense attention (<see cref="AttentionCalibration"/>), chooses per layer and KV head within
/// the model's density budget (<see cref="PerHeadChoice"/>; <c>--per-layer</c>: one pattern per layer, for comparison) and
/// writes the choice as an <see cref="AttentionCalibrationFile"/> for <c>lcc compile --attention auto --calib FILE</c>. Without --data it
/// runs a built-in synthetic set (seeded random tokens with a copied span, the recall shape) and says so.
/// </summary>
internal static class CalibrateAttention
{
    public const int DefaultSamples = 2, DefaultLength = 4096, DefaultSeed = 0;
    public const double DefaultDensity = 0.3;
    public const string BuiltInName = "built-in synthetic set";

    public static Option<bool> Attention { get; } = new("--attention") { Description = "calibrate the sparse prefill pattern of every layer for lcc compile --attention auto --calib FILE" };
    public static Option<FileInfo?> Data { get; } = new("--data") { Description = "JSONL prompts, {\"prompt\": [ids]} per line (e.g. recall-public/eval_8192.jsonl; default: a built-in synthetic set, said so)" };
    public static Option<int> Samples { get; } = new("--samples") { Description = $"prompts to run (the first N of --data; default {DefaultSamples})", DefaultValueFactory = _ => DefaultSamples };
    public static Option<int?> Length { get; } = new("--length") { Description = $"tokens per prompt (--data prompts are cut to it; built-in prompts default to {DefaultLength}); the density budget is measured at this length" };
    public static Option<double> Density { get; } = new("--density") { Description = $"the FLOP budget: the mean share of causal query-key pairs attended over every layer and KV head, in (0, 1] (with --per-layer: the most one layer may attend; default {DefaultDensity})", DefaultValueFactory = _ => DefaultDensity };
    public static Option<int> Seed { get; } = new("--seed") { Description = "seed of the built-in synthetic prompts (default 0)", DefaultValueFactory = _ => DefaultSeed };
    public static Option<bool> PerLayer { get; } = new("--per-layer") { Description = "choose one pattern per layer (each layer within --density) instead of per layer and KV head within the model's --density; for comparison" };
    public static Option<FileInfo> Output { get; } = new("--output", "-o") { Description = "calibration file to write (default attention-calib.json)", DefaultValueFactory = _ => new FileInfo("attention-calib.json") };

    public static void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { Attention, Data, Samples, Length, Density, Seed, PerLayer, Output }) cmd.Add(o);
    }

    /// <summary>The command's action: calibrate MODEL, write the file, print one line per layer.</summary>
    public static int Run(ParseResult pr, string model, CancellationToken ct)
    {
        var file = Calibrate(model, pr.GetValue(Data)?.FullName, pr.GetValue(Samples), pr.GetValue(Length), pr.GetValue(Density), pr.GetValue(Seed),
            LongCtxModel.DefaultCustomOpsLibrary(), Console.Error.WriteLine, ct, pr.GetValue(PerLayer));
        var path = pr.GetValue(Output)!.FullName;
        file.Save(path);
        foreach (var l in file.PerLayer)
            Console.WriteLine($"  layer {l.Layer,-3} {(l.IsPerHead ? "per KV head" : AttentionCalibrationFile.Spec(l)),-36} density {l.Density:0.###}  error {l.Error:0.#####}  "
                + (l.IsPerHead ? "[" + string.Join(" | ", l.Heads!.Select(h => $"{AttentionCalibrationFile.Spec(h)} {h.Density.ToString("0.##", CultureInfo.InvariantCulture)}")) + "]"
                    : $"(per KV head density {string.Join(" ", l.HeadDensity.Select(d => d.ToString("0.##", CultureInfo.InvariantCulture)))})"));
        Console.WriteLine($"wrote {path}: {file.Layers} layers of {file.Model}, {file.Samples} prompts of {file.Length} tokens ({file.Data}), density budget {AttentionCalibrationFile.Format(file.DensityBudget)}");
        return Cli.Ok;
    }

    /// <summary>Captures, scores and chooses; also what <c>lcc compile --attention auto</c> runs without --calib.</summary>
    public static AttentionCalibrationFile Calibrate(string model, string? data, int samples, int? length, double density, int seed,
        string library, Action<string> log, CancellationToken ct, bool perLayer = false)
    {
        if (samples <= 0) throw new ArgumentException($"--samples {samples}: must be a positive number of prompts");
        if (!(density > 0 && density <= 1)) throw new ArgumentException($"--density {density.ToString(CultureInfo.InvariantCulture)}: must be in (0, 1], e.g. 0.3");
        if (length is <= 64) throw new ArgumentException($"--length {length}: sparse prefill needs prompts of more than 64 tokens (e.g. 4096)");
        using var capture = new AttentionCapture(model, library);
        IReadOnlyList<int[]> prompts;
        string what;
        if (data is null)
        {
            int len = Math.Min(length ?? DefaultLength, capture.MaxPositions ?? int.MaxValue);
            prompts = BuiltIn(samples, len, seed, capture.VocabSize);
            what = $"{BuiltInName} (seed {seed}: {samples} prompts of {len} random token ids with a copied span)";
            log($"lcc: calibrating attention on the {what}: no --data given; real prompts (--data F.jsonl) pick better patterns");
        }
        else
        {
            int cut = Math.Min(length ?? int.MaxValue, capture.MaxPositions ?? int.MaxValue);
            prompts = NeedleEval.Read(data, samples).Select(i => i.Prompt.Length > cut ? i.Prompt[..cut] : i.Prompt).ToList();
            if (prompts.Count == 0) throw new ArgumentException($"{data}: no prompts");
            what = $"{Path.GetFileName(data)} (first {prompts.Count} prompts{(prompts.Any(p => p.Length == cut) ? $", cut to {cut} tokens" : "")})";
        }
        var sw = Stopwatch.StartNew();
        var inputs = prompts.Select(p => { ct.ThrowIfCancellationRequested(); return capture.Run(p); }).ToList();
        var scores = AttentionCalibration.Score(inputs, AttentionCalibration.DefaultCandidates, library, ct);
        var layers = new List<CalibratedLayer>();
        if (perLayer)
        {
            foreach (var (perCandidate, l) in scores.Select((s, l) => (s, l)))
            {
                var (best, note) = AttentionCalibration.Choose(perCandidate, density);
                if (note is not null) log($"lcc: layer {l}: {note}");
                var heads = best.HeadDensity.Select((d, h) => new CalibratedHead(h, best.Candidate.Pattern, best.Candidate.Options, d, best.HeadError[h])).ToList();
                layers.Add(new CalibratedLayer(inputs[0][l].Layer, best.Candidate.Pattern, best.Candidate.Options, best.Density, best.Error, best.HeadDensity, best.HeadError, heads));
            }
        }
        else
        {
            var (heads, note) = PerHeadChoice.Choose(scores, density);
            if (note is not null) log($"lcc: {note}");
            layers.AddRange(heads.Select((h, l) => PerHeadChoice.ToLayer(inputs[0][l].Layer, h)));
        }
        log($"lcc: scored {AttentionCalibration.DefaultCandidates.Count} candidates on {layers.Count} layers in {sw.Elapsed.TotalSeconds:0.0} s; "
            + (perLayer ? "one pattern per layer" : $"chose per layer and KV head: mean density {layers.Average(l => l.Density).ToString("0.###", CultureInfo.InvariantCulture)} (budget {density.ToString("0.###", CultureInfo.InvariantCulture)})"));
        var m = capture.Model;
        return new AttentionCalibrationFile(AttentionCalibrationFile.CurrentVersion, m.Name, m.Sha256, m.Layers, m.Heads, m.KvHeads, what, prompts.Count,
            prompts.Max(p => p.Length), density, seed, layers);
    }

    /// <summary>
    /// <c>lcc compile --attention auto</c> without <c>--calib</c>: compiles the same pipeline with dense LongAttention into a
    /// temporary folder, calibrates it on the built-in set (at the target context, at most the default length), writes OUTDIR-attention-calib.json beside the output and returns
    /// the steps with <c>calib</c> set; says so. Other pipelines are returned unchanged.
    /// </summary>
    public static IReadOnlyList<PipelineStep> ForAuto(IReadOnlyList<PipelineStep> steps, string input, string outDir, CompileOptions options, CancellationToken ct)
    {
        int at = steps.ToList().FindIndex(s => s.Pass == "lower-attention" && s.Options?.GetValueOrDefault("pattern") == "auto");
        if (at < 0 || steps[at].Options!.ContainsKey("calib")) return steps;
        var tmp = Directory.CreateTempSubdirectory("lcc-auto-calib-");
        try
        {
            var dense = steps.ToList();
            dense[at] = new PipelineStep("lower-attention", steps[at].Options!.Where(kv => kv.Key != "pattern").Append(new("pattern", "dense")).ToDictionary());
            string denseDir = Path.Combine(tmp.FullName, "dense");
            CompileJob.Run(input, denseDir, Pipelines.Instantiate(dense), options with { Passes = options.Passes with { Log = null } }, ct);
            Console.WriteLine("note: --attention auto without --calib: calibrating on the " + BuiltInName + " (give --calib FILE from lcc calibrate MODEL --attention --data F.jsonl for real prompts)");
            int length = Math.Min(options.Passes.TargetContext ?? DefaultLength, DefaultLength);
            var file = Calibrate(denseDir, null, DefaultSamples, length, DefaultDensity, DefaultSeed, LongCtxModel.DefaultCustomOpsLibrary(), s => Console.WriteLine("note: " + s.Replace("lcc: ", "")), ct);
            file = file with { Model = Path.GetFileName(input) };
            string path = Path.TrimEndingDirectorySeparator(outDir) + "-attention-calib.json";
            file.Save(path);
            Console.WriteLine($"note: wrote {path}");
            var withCalib = steps.ToList();
            withCalib[at] = steps[at] with { Options = new SortedDictionary<string, string>(steps[at].Options!.ToDictionary(), StringComparer.Ordinal) { ["calib"] = path } };
            return withCalib;
        }
        finally { tmp.Delete(true); }
    }

    /// <summary>Seeded synthetic prompts: BOS, random ids in [8, vocab), and the span at a random point copied at the end, so
    /// some heads retrieve far back (the shape of recall-public's prompts) while the rest see local text.</summary>
    public static IReadOnlyList<int[]> BuiltIn(int samples, int length, int seed, int vocab)
    {
        int lo = vocab > 16 ? 8 : 1; // recall-public's ids below 8 are control tokens
        var rng = new Random(seed);
        return Enumerable.Range(0, samples).Select(_ =>
        {
            var p = new int[length];
            p[0] = 1;
            for (int i = 1; i < length; i++) p[i] = rng.Next(lo, vocab);
            int span = Math.Min(64, length / 4), from = rng.Next(1, length - 2 * span);
            Array.Copy(p, from, p, length - span, span);
            return p;
        }).ToList();
    }
}

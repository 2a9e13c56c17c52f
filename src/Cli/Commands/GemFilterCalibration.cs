using System.Globalization;
using LongCtx.Compiler;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using LongCtx.Passes.Eviction;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;

namespace LongCtx.Cli.Commands;

/// <summary>
/// GemFilter's filter layer chosen by a sweep (issue 12; the paper picks r by where retrieval emerges, layer 13 of 32 for
/// LLaMA 3.1 8B): for each attention layer r the model is compiled with <c>gemfilter:layer=r</c> (same keep, recent,
/// pool) into a temporary folder, and next-token accuracy on the first <see cref="Prompts"/> prompts of the
/// calibration needle file (question included: the filter sees the whole prompt) is measured; the earliest layer with
/// the best accuracy wins (an earlier layer is a cheaper filter pass). Each layer's accuracy is printed.
/// </summary>
internal static class GemFilterCalibration
{
    /// <summary>Calibration prompts per layer.</summary>
    public const int Prompts = 16;

    public static IReadOnlyDictionary<string, string> ChooseLayer(string model, IReadOnlyList<PipelineStep> steps,
        IReadOnlyDictionary<string, string> filter, string calibration, int? context, CancellationToken ct)
    {
        if (!File.Exists(calibration)) throw new ArgumentException($"--token-filter gemfilter: calibration file {calibration} not found; give a needle JSONL ({{\"prompt\": [ids], \"expected\": id}} per line)");
        var items = NeedleEval.Read(calibration, Prompts);
        if (items.Count == 0) throw new ArgumentException($"--token-filter gemfilter: calibration file {calibration} has no prompts");
        var found = AttentionDiscovery.Discover(OnnxReader.Load(model));
        int depth = found.Blocks.Count + found.Unrecognised.Count;
        var tmp = Directory.CreateTempSubdirectory("lcc-gemfilter-sweep-").FullName;
        try
        {
            int best = -1;
            double bestAcc = -1;
            for (int r = 0; r < depth; r++)
            {
                ct.ThrowIfCancellationRequested();
                var opts = new SortedDictionary<string, string>(filter.ToDictionary(), StringComparer.Ordinal) { ["layer"] = r.ToString(CultureInfo.InvariantCulture) };
                opts.Remove("calibration");
                var dir = Path.Combine(tmp, r.ToString(CultureInfo.InvariantCulture));
                var compile = new CompileOptions
                {
                    Passes = new PassManagerOptions { TargetContext = context },
                    Companions = [new CompanionModel(GemFilterPass.FilterFile, m => GemFilterModel.Build(m, r))],
                };
                CompileJob.Run(model, dir, Pipelines.Instantiate(Pipelines.WithEviction(steps, null, GemFilterSettings.Step(opts))), compile, ct);
                double acc;
                using (var m = LongCtxModel.Load(dir, new RuntimeOptions { ExecutionProvider = ExecutionProviderKind.Cpu, Log = _ => { } }))
                    acc = NeedleEval.Run(m, calibration, items, 2048, null, ct).Accuracy;
                Console.WriteLine($"  gemfilter sweep: layer {r}: accuracy {acc:F3} on {items.Count} prompts of {Path.GetFileName(calibration)}");
                if (acc > bestAcc) { best = r; bestAcc = acc; }
            }
            Console.WriteLine($"  gemfilter sweep: layer {best} (the earliest with the best accuracy, {bestAcc:F3})");
            var chosen = new SortedDictionary<string, string>(filter.ToDictionary(), StringComparer.Ordinal) { ["layer"] = best.ToString(CultureInfo.InvariantCulture) };
            chosen.Remove("calibration");
            return chosen;
        }
        finally { Directory.Delete(tmp, true); }
    }
}

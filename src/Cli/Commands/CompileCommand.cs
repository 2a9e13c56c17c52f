using System.CommandLine;
using LongCtx.Compiler;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using LongCtx.Passes.Eviction;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc compile MODEL -o OUTDIR</c>: run the pipeline and write model.onnx (+ data) and longctx.json.</summary>
internal static class CompileCommand
{
    public static Command Create()
    {
        var model = new Argument<FileInfo>("model") { Description = "ONNX model to compile", Arity = ArgumentArity.ZeroOrOne };
        var output = new Option<DirectoryInfo>("--output", "-o") { Description = "output folder (must be new or empty unless --force)" };
        var force = new Option<bool>("--force") { Description = "replace a non-empty output folder" };
        var listPasses = new Option<bool>("--list-passes") { Description = "print the pipeline and the known passes, then exit" };
        var verify = new Option<bool>("--verify") { Description = "verify IR invariants after every pass (on by default; --verify false to skip)", DefaultValueFactory = _ => true };
        var trace = new Option<bool>("--trace") { Description = "print every rule application and the mutations it made" };
        var stepLimit = new Option<int?>("--step-limit") { Description = "stop after N steps: whole rule applications (or single mutations of passes without rules), to bisect a miscompile" };
        var explain = new Option<bool>("--explain") { Description = "for every rule that matched nothing, print its furthest failure (reason and node)" };
        var threshold = new Option<long>("--external-threshold") { Description = "initializers of at least this many bytes go to model.onnx.data", DefaultValueFactory = _ => 1024 };
        var cmd = new Command("compile", "Compile a model: run the pass pipeline, verify, write OUTDIR/model.onnx (+ .data) and OUTDIR/longctx.json")
        { model, output, force, listPasses, verify, trace, stepLimit, explain, threshold };
        RopeOptions.AddTo(cmd);
        AttentionOptions.AddTo(cmd);
        EvictOptions.AddTo(cmd);
        TokenFilterOptions.AddTo(cmd);
        KvOptions.AddTo(cmd);
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() =>
        {
            var attention = AttentionOptions.Step(pr);
            var filter = TokenFilterOptions.Options(pr);
            IReadOnlyList<PipelineStep> steps = Pipelines.WithEviction(Pipelines.WithMethods(RopeOptions.Steps(pr, attention is not null), attention), EvictOptions.Step(pr), TokenFilterOptions.Step(filter));
            if (pr.GetValue(listPasses))
            {
                Console.WriteLine("pipeline:");
                int i = 1;
                foreach (var s in steps)
                {
                    var p = Pipelines.Create(s.Pass);
                    Console.WriteLine($"  {i++}. {s,-28} {(p.IsExact ? "exact" : "approximate"),-12} {p.Description}");
                }
                Console.WriteLine("known passes: " + string.Join(", ", Pipelines.Names));
                Console.WriteLine("rope methods (--rope METHOD[:k=v,...], pass rope-METHOD):");
                Console.Write(LongCtx.Passes.Rope.RopeMethods.Describe());
                return Cli.Ok;
            }
            var input = pr.GetValue(model) ?? throw new ArgumentException("give a model to compile (lcc compile MODEL -o OUTDIR)");
            var outDir = pr.GetValue(output) ?? throw new ArgumentException("give an output folder with -o OUTDIR");
            if (filter is not null && GemFilterSettings.Parse(filter).Layer is null && filter.GetValueOrDefault("calibration") is { } calibration)
            {
                // GemFilter without layer=: a sweep over the filter layers on the calibration prompts picks it first
                var baseSteps = Pipelines.WithEviction(Pipelines.WithMethods(RopeOptions.Steps(pr, attention is not null), attention), EvictOptions.Step(pr));
                filter = GemFilterCalibration.ChooseLayer(input.FullName, baseSteps, filter, calibration, pr.GetValue(RopeOptions.Context), ct);
                steps = Pipelines.WithEviction(baseSteps, null, TokenFilterOptions.Step(filter));
            }
            var opts = new CompileOptions
            {
                Force = pr.GetValue(force),
                Passes = new PassManagerOptions { Verify = pr.GetValue(verify), Trace = pr.GetValue(trace), StepLimit = pr.GetValue(stepLimit), Explain = pr.GetValue(explain), TargetContext = pr.GetValue(RopeOptions.Context), Log = s => Console.Error.WriteLine(s) },
                Save = new() { ExternalDataThreshold = pr.GetValue(threshold) },
                Companions = TokenFilterOptions.Companions(filter),
            };
            steps = CalibrateAttention.ForAuto(steps, input.FullName, outDir.FullName, opts, ct);
            string? scratch = null;
            if (KvOptions.Parse(pr) is { } kivi && KvOptions.IsKivi(kivi))
            {
                if (attention is not null) throw new ArgumentException($"--kv {kivi.Mode} runs its own attention op (longctx.KiviAttention); it does not combine with --attention (longctx.LongAttention); give one of them");
                if (pr.GetValue(EvictOptions.KvEvict) is not null || pr.GetValue(TokenFilterOptions.TokenFilter) is not null)
                    throw new ArgumentException($"--kv {kivi.Mode} does not combine with --kv-evict / --token-filter: eviction compacts an fp32 cache; give one of them");
                steps = [.. steps, KvOptions.KiviStep(kivi, pr)];
            }
            else if (KvOptions.KiviOnlyOptionGiven(pr) is { } stray)
                throw new ArgumentException($"{stray} applies to --kv kivi2|kivi4 only; add --kv kivi2 or --kv kivi4, or drop {stray}");
            else if (KvOptions.Parse(pr) is { } kv)
            {
                if (attention is not null) throw new ArgumentException("--kv quantizes ORT's GroupQueryAttention cache; it does not combine with --attention (longctx.LongAttention)");
                if (pr.GetValue(EvictOptions.KvEvict) is not null || pr.GetValue(TokenFilterOptions.TokenFilter) is not null)
                    throw new ArgumentException("--kv does not combine with --kv-evict / --token-filter yet: eviction compacts an fp32 cache; give one of them");
                scratch = Directory.CreateTempSubdirectory("lcc-kv-").FullName;
                var (scales, source) = KvOptions.Scales(kv, pr.GetValue(KvOptions.Calib), input.FullName, steps, opts, scratch, ct);
                steps = [.. steps, .. KvOptions.Steps(kv, scales, source)];
            }
            CompileResult r;
            try { r = CompileJob.Run(input.FullName, outDir.FullName, Pipelines.Instantiate(steps), opts, ct); }
            finally { if (scratch is not null) Directory.Delete(scratch, true); }
            foreach (var p in r.Pipeline.Passes)
            {
                string counts = p.Counts.Count == 0 ? "no change" : string.Join(", ", p.Counts.Select(kv => $"{kv.Value} {kv.Key}"));
                Console.WriteLine($"  {p.Pass,-22} {counts}  ({p.Milliseconds:0} ms)");
                foreach (var n in p.Notes) Console.WriteLine($"    note: {n}");
                foreach (var e in p.Explain ?? []) Console.WriteLine($"    explain: {e}");
            }
            if (pr.GetValue(trace)) foreach (var t in r.Pipeline.Trace) Console.WriteLine("    trace: " + t);
            if (r.Pipeline.StoppedAtStepLimit) Console.WriteLine($"  stopped at step limit {pr.GetValue(stepLimit)}");
            Console.WriteLine($"wrote {r.ModelPath} ({r.Saved.ModelBytes:N0} bytes)" + (r.Saved.DataPath is null ? "" : $" + {Path.GetFileName(r.Saved.DataPath)} ({r.Saved.DataBytes:N0} bytes, {r.Saved.ExternalTensors} tensors)"));
            Console.WriteLine($"wrote {Path.Combine(r.OutputDir, LongCtx.Contract.LongCtxFiles.Manifest)}");
            return Cli.Ok;
        })));
        return cmd;
    }
}

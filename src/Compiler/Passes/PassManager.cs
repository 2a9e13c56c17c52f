using System.Diagnostics;
using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Passes;

public sealed record PassManagerOptions
{
    /// <summary>Verify IR invariants after every pass (always on in tests and Debug builds).</summary>
    public bool Verify { get; init; } = true;
    /// <summary>Stop after this many logical steps in total (whole rule applications; bisecting a miscompile).</summary>
    public int? StepLimit { get; init; }
    /// <summary>Record every rule application and mutation.</summary>
    public bool Trace { get; init; }
    /// <summary>Report, per rule that matched nothing, its furthest failure (<see cref="PassReport.Explain"/>).</summary>
    public bool Explain { get; init; }
    public Action<string>? Log { get; init; }
    /// <summary>
    /// The context length the model is compiled for (<c>lcc compile --context N</c>), null when not given: RoPE
    /// scaling passes scale to it and canonicalize-attention makes its cos/sin caches cover it. Every pass reads it
    /// from <see cref="PassContext.TargetContext"/>.
    /// </summary>
    public int? TargetContext { get; init; }
}

public sealed record PipelineResult(IReadOnlyList<PassReport> Passes, IReadOnlyList<string> Trace, bool StoppedAtStepLimit, Dictionary<string, object?> RuntimeConfig);

/// <summary>Runs a pipeline (a list of passes), verifying the IR after each one.</summary>
public static class PassManager
{
    public static PipelineResult Run(Model model, IEnumerable<(IPass Pass, IReadOnlyDictionary<string, string> Options)> pipeline, PassManagerOptions? options = null, CancellationToken ct = default)
    {
        options ??= new PassManagerOptions();
        var rewriter = new Rewriter(model) { Tracing = options.Trace };
        var reports = new List<PassReport>();
        var runtime = new Dictionary<string, object?>();
        bool stopped = false;
        if (options.Verify) Verifier.Verify(model, "loading");
        foreach (var (pass, opts) in pipeline)
        {
            ct.ThrowIfCancellationRequested();
            var ctx = new PassContext(rewriter, opts, options.Log, ct) { TargetContext = options.TargetContext };
            int before = rewriter.Steps;
            var sw = Stopwatch.StartNew();
            try
            {
                using (options.StepLimit is int lim ? rewriter.LimitSteps(lim) : null)
                    pass.Run(model, ctx);
            }
            catch (StepLimitReachedException)
            {
                stopped = true;
                ctx.Note($"stopped at step limit {options.StepLimit}");
            }
            sw.Stop();
            if (options.Verify) Verifier.Verify(model, $"pass '{pass.Name}'");
            foreach (var kv in ctx.RuntimeConfig) runtime[kv.Key] = kv.Value;
            reports.Add(new PassReport(pass.Name, pass.IsExact, new SortedDictionary<string, int>(ctx.Counts.ToDictionary(), StringComparer.Ordinal), ctx.Notes.ToList(), rewriter.Steps - before, sw.Elapsed.TotalMilliseconds, opts,
                options.Explain ? ctx.Explanations.ToList() : null));
            if (stopped) break;
        }
        return new PipelineResult(reports, rewriter.Trace.ToList(), stopped, runtime);
    }
}

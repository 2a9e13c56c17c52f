using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Passes;

/// <summary>A graph transformation. Stateless: everything it needs comes in the <see cref="PassContext"/>.</summary>
public interface IPass
{
    /// <summary>Short name used in pipelines, reports and <c>lcc compile --list-passes</c>.</summary>
    string Name { get; }
    /// <summary>One line: what the pass does and its source.</summary>
    string Description { get; }
    /// <summary>Exact passes must preserve outputs bit-for-bit (up to float reassociation); approximate ones say so.</summary>
    bool IsExact { get; }
    void Run(Model model, PassContext ctx);
}

/// <summary>Raised when the rewrite budget of <c>--step-limit</c> is spent; the pipeline stops there.</summary>
public sealed class StepLimitReachedException(int limit) : Exception($"step limit {limit} reached");

/// <summary>Per-run state of one pass: the rewriter, counters, notes, options, cancellation.</summary>
public sealed class PassContext
{
    private readonly Dictionary<string, int> _counts = new(StringComparer.Ordinal);
    private readonly List<string> _notes = [];
    private readonly List<string> _explanations = [];

    public PassContext(Rewriter rewriter, IReadOnlyDictionary<string, string>? options = null, Action<string>? log = null, CancellationToken cancellation = default)
    {
        Rewriter = rewriter;
        Options = options ?? new Dictionary<string, string>();
        Log = log ?? (_ => { });
        Cancellation = cancellation;
    }

    public Rewriter Rewriter { get; }
    public IReadOnlyDictionary<string, string> Options { get; }
    public Action<string> Log { get; }
    public CancellationToken Cancellation { get; }
    /// <summary>The context length the whole pipeline compiles for (<see cref="PassManagerOptions.TargetContext"/>); null when not given.</summary>
    public int? TargetContext { get; init; }
    /// <summary>Values a pass hands to the runtime (written to longctx.json "runtime").</summary>
    public Dictionary<string, object?> RuntimeConfig { get; } = [];
    public IReadOnlyDictionary<string, int> Counts => _counts;
    public IReadOnlyList<string> Notes => _notes;
    /// <summary>Why rules matched nothing (printed by <c>lcc compile --explain</c>).</summary>
    public IReadOnlyList<string> Explanations => _explanations;

    /// <summary>Counts one application of <paramref name="what"/> (printed by <c>lcc compile</c>, asserted in tests).</summary>
    public void Count(string what, int n = 1) => _counts[what] = _counts.GetValueOrDefault(what) + n;
    /// <summary>A remark for the report (why something was left as it was, what was assumed).</summary>
    public void Note(string text) => _notes.Add(text);
    /// <summary>For <c>--explain</c>: why a rule of this pass matched nothing (its furthest failure, with reason and node).</summary>
    public void Explain(string text) => _explanations.Add(text);

    public string Option(string name, string dflt) => Options.TryGetValue(name, out var v) ? v : dflt;
}

/// <summary>What one pass did.</summary>
/// <param name="Explain">per rule that matched nothing, its furthest failure; only with <c>--explain</c> (null otherwise)</param>
public sealed record PassReport(string Pass, bool Exact, IReadOnlyDictionary<string, int> Counts, IReadOnlyList<string> Notes, int Rewrites, double Milliseconds, IReadOnlyDictionary<string, string> Options,
    IReadOnlyList<string>? Explain = null);

/// <summary>A pipeline step: pass name plus options. Pipelines are data (lists of steps).</summary>
public sealed record PipelineStep(string Pass, IReadOnlyDictionary<string, string>? Options = null)
{
    public override string ToString() => Options is null || Options.Count == 0 ? Pass : $"{Pass}({string.Join(",", Options.Select(kv => kv.Key + "=" + kv.Value))})";
}

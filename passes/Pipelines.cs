using LongCtx.Compiler.Passes;

namespace LongCtx.Passes;

/// <summary>Every pass LongCtx knows, by name, and the pipelines (as data) that <c>lcc compile</c> selects.</summary>
public static class Pipelines
{
    /// <summary>The exact passes by name, then one <c>rope-METHOD</c> pass per row of <see cref="Rope.RopeMethods"/>.</summary>
    private static readonly IReadOnlyDictionary<string, Func<IPass>> Registry = new Dictionary<string, Func<IPass>>(StringComparer.Ordinal)
    {
        ["dce"] = () => new DeadCodeElimination(),
        ["dedup-initializers"] = () => new InitializerDedup(),
        ["canonicalize-noise"] = () => new CanonicalizeNoise(),
        ["canonicalize-attention"] = () => new CanonicalizeAttention(),
        ["lower-attention"] = () => new Attention.LowerToLongAttention(),
        ["kv-evict"] = () => new Eviction.ExposeQueriesForEviction(),
        ["token-filter"] = () => new Eviction.GemFilterPass(),
        ["quantize-kv"] = () => new Kv.QuantizeKvCache(),
        ["hadamard-kv"] = () => new Kv.HadamardRotateKv(),
        ["kivi-kv"] = () => new Kv.LowerToKivi(),
    }.Concat(Rope.RopeMethods.All.Select(m => KeyValuePair.Create(m.PassName, (Func<IPass>)m.Create)))
     .ToDictionary(StringComparer.Ordinal);

    /// <summary>The default pipeline: exact clean-ups only. Later method options append their passes.</summary>
    public static IReadOnlyList<PipelineStep> Default { get; } =
    [
        new("dce"),                 // first: later passes should not see dead branches
        new("canonicalize-noise"),  // before canonicalize-attention: Identity / no-op Casts out of the patterns' way
        new("canonicalize-attention"), // before the second dce, which removes the replaced subgraphs
        new("dce"),
        new("dedup-initializers"),
    ];

    /// <summary>
    /// The default pipeline with method passes added. RoPE scaling runs right after the first dce, on the model's own
    /// RoPE form (inv_freq constants of torch exports, cos/sin caches of fused ops): canonicalisation then folds the
    /// scaled frequencies (and any cos/sin multiplier) into the GroupQueryAttention caches exactly. Methods computed in
    /// the graph per length (dynamic-ntk) make the canonicaliser keep those blocks, with a note.
    /// </summary>
    public static IReadOnlyList<PipelineStep> WithMethods(IReadOnlyList<PipelineStep> rope) =>
        rope.Count == 0 ? Default : [Default[0], .. rope, .. Default.Skip(1)];

    /// <summary>
    /// With an attention lowering as well: it runs after canonicalize-attention and the dce that removes the replaced
    /// subgraphs (it lowers the canonical GroupQueryAttention blocks, numbered as the layers that remain, on RoPE tables
    /// the rope pass already scaled), before dedup-initializers.
    /// </summary>
    public static IReadOnlyList<PipelineStep> WithMethods(IReadOnlyList<PipelineStep> rope, PipelineStep? attention)
    {
        var steps = WithMethods(rope);
        if (attention is null) return steps;
        int at = steps.ToList().FindIndex(s => s.Pass == "dedup-initializers");
        return [.. steps.Take(at), attention, .. steps.Skip(at)];
    }

    /// <summary>
    /// With KV eviction as well (<c>--kv-evict</c>): kv-evict runs after the attention is canonical and any lowering (it
    /// reads the final GroupQueryAttention / LongAttention blocks), before dedup-initializers.
    /// </summary>
    public static IReadOnlyList<PipelineStep> WithEviction(IReadOnlyList<PipelineStep> steps, PipelineStep? evict, PipelineStep? tokenFilter = null)
    {
        PipelineStep[] added = [.. new[] { evict, tokenFilter }.OfType<PipelineStep>()]; // token-filter after kv-evict: it refuses the combination
        if (added.Length == 0) return steps;
        int at = steps.ToList().FindIndex(s => s.Pass == "dedup-initializers");
        return [.. steps.Take(at), .. added, .. steps.Skip(at)];
    }

    public static IEnumerable<string> Names => Registry.Keys.Order(StringComparer.Ordinal);

    public static IPass Create(string name) =>
        Registry.TryGetValue(name, out var f) ? f() : throw new ArgumentException($"unknown pass '{name}'; known passes: {string.Join(", ", Names)}");

    public static IEnumerable<(IPass, IReadOnlyDictionary<string, string>)> Instantiate(IEnumerable<PipelineStep> steps) =>
        steps.Select(s => (Create(s.Pass), s.Options ?? new Dictionary<string, string>()));
}

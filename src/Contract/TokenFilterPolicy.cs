namespace LongCtx.Contract;

/// <summary>
/// longctx.json <c>runtime.token_filter</c> (issue 12, GemFilter): before the prefill of a fresh sequence the runtime runs
/// the filter model <paramref name="File"/> (the compiled model's first <paramref name="Layer"/> + 1 layers; its
/// "logits" output is layer <paramref name="Layer"/>'s attention query) over the prompt, scores the prompt tokens by the
/// last query's attention at that layer (<paramref name="Scoring"/>, summed over heads, average-pooled with kernel
/// <paramref name="Pool"/>), and prefills the full model on the top <paramref name="Keep"/> tokens (a count &gt;= 1 or a
/// fraction of the prompt) plus the last <paramref name="Recent"/>, in their original order, with fresh positions.
/// </summary>
public sealed record TokenFilterPolicy(string Method, int Layer, double Keep, int Recent, int Pool, string File, KvEvictLayer Scoring)
{
    /// <summary>The key under "runtime" in longctx.json.</summary>
    public const string Key = "token_filter";

    /// <summary>The policy recorded in a runtime section, or null when the model filters nothing.</summary>
    public static TokenFilterPolicy? From(RuntimeSection runtime, string model) =>
        RuntimeEntry.Read<TokenFilterPolicy>(runtime, Key, model, "--token-filter",
            p => p.Scoring is not null && !string.IsNullOrEmpty(p.File) && p.Keep > 0 && p.Pool >= 1 && p.Recent >= 0 && !p.File.Contains('/') && !p.File.Contains('\\'),
            "method, layer, keep, recent, pool, file, scoring");
}

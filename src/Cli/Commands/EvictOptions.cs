using System.CommandLine;
using LongCtx.Compiler.Passes;
using LongCtx.Passes.Eviction;

namespace LongCtx.Cli.Commands;

/// <summary><c>lcc compile --kv-evict snapkv|pyramidkv|h2o|actqkv|adakv|lemo[:k=v,...]</c>: the <c>kv-evict</c> pipeline step (issue 12).</summary>
internal static class EvictOptions
{
    public static Option<string?> KvEvict { get; } = new("--kv-evict")
    {
        Description = "KV-cache eviction applied by the runtime: " + string.Join(" | ", KvEvictSettings.Methods.Select(m => $"{m.Key}:{string.Join(",", m.Value.Select(o => o.Key + "=" + o.Default))}"))
            + " (sizes: tokens, or a fraction of the prompt like 10%)",
    };

    public static void AddTo(Command cmd) => cmd.Add(KvEvict);

    public static PipelineStep? Step(ParseResult pr) => pr.GetValue(KvEvict) is { } spec ? KvEvictSettings.Step(spec) : null;
}

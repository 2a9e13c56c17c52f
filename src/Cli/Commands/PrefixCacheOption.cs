using System.CommandLine;
using LongCtx.Runtime;
using LongCtx.Runtime.Sessions;

namespace LongCtx.Cli.Commands;

/// <summary><c>--prefix-cache SIZE</c> (run, eval): KV of 256-token prompt blocks reused across requests in this process.</summary>
internal sealed class PrefixCacheOption
{
    public Option<string?> Size { get; } = new("--prefix-cache")
    {
        Description = "reuse the KV of cached prompt prefixes (256-token blocks, LRU) within this memory budget, e.g. 512MiB, 2GiB; prints the hit rate",
    };

    public void AddTo(Command c) => c.Add(Size);

    /// <summary>The cache the options ask for (null without --prefix-cache); a budget below one block is said once and the cache is off.</summary>
    public PrefixCache? Build(ParseResult pr, LongCtxModel model) =>
        pr.GetValue(Size) is { } s ? new PrefixCache(model, LongCtx.Compiler.Analysis.Units.ParseBytes(s, "--prefix-cache"), log: line => Console.Error.WriteLine("lcc: " + line)) : null;

    /// <summary>The hit-rate line on stderr.</summary>
    public static void Report(PrefixCache? cache)
    {
        if (cache is { Enabled: true }) Console.Error.WriteLine("lcc: " + cache.Stats());
    }
}

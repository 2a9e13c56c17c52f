using System.CommandLine;
using LongCtx.Runtime;

namespace LongCtx.Cli.Commands;

/// <summary>Options shared by run / eval / bench: execution provider, threads, arena.</summary>
internal sealed class RuntimeCliOptions
{
    public Option<string> Ep { get; } = new("--ep") { Description = "execution provider: auto|cpu|cuda|tensorrt", DefaultValueFactory = _ => "auto" };
    public Option<int> Threads { get; } = new("--threads") { Description = "intra-op threads (0 = ONNX Runtime default)", DefaultValueFactory = _ => 0 };
    public Option<bool> NoArena { get; } = new("--no-arena") { Description = "disable the ONNX Runtime CPU memory arena" };
    public Option<string?> CustomOps { get; } = new("--custom-ops") { Description = "path of liblongctx_ops.so (default: next to lcc)" };
    public Option<string> IoBinding { get; } = new("--io-binding") { Description = "keep the KV cache in the provider's memory via IOBinding: auto (GPU providers)|on|off", DefaultValueFactory = _ => "auto" };

    public Option<string> KvCache { get; } = new("--kv-cache") { Description = "KV cache: auto (one shared past/present buffer per layer when the model's attention allows it, else concat)|concat|shared", DefaultValueFactory = _ => "auto" };
    public Option<int?> MaxContext { get; } = new("--max-context") { Description = "length in tokens of the shared KV buffer (default 4096, doubled on demand)" };

    public Option<bool> Verbose { get; } = new("--verbose", "-v") { Description = "also say which execution providers --ep auto tried and why it skipped them" };

    public void AddTo(Command c) { c.Add(Ep); c.Add(Threads); c.Add(NoArena); c.Add(CustomOps); c.Add(IoBinding); c.Add(KvCache); c.Add(MaxContext); c.Add(Verbose); }

    public RuntimeOptions Build(ParseResult pr) => new()
    {
        ExecutionProvider = RuntimeOptions.ParseProvider(pr.GetValue(Ep) ?? "auto"),
        IntraOpThreads = CheckThreads(pr.GetValue(Threads)),
        MemoryArena = !pr.GetValue(NoArena),
        CustomOpsLibrary = pr.GetValue(CustomOps),
        IoBinding = (pr.GetValue(IoBinding) ?? "auto").ToLowerInvariant() switch
        {
            "auto" => null,
            "on" or "true" => true,
            "off" or "false" => false,
            var v => throw new ArgumentException($"--io-binding {v}: use auto, on or off"),
        },
        KvCache = RuntimeOptions.ParseKvCache(pr.GetValue(KvCache) ?? "auto"),
        MaxContext = pr.GetValue(MaxContext) is { } mc ? (mc > 0 ? mc : throw new ArgumentException($"--max-context {mc}: must be a positive number of tokens")) : null,
        Log = s => Console.Error.WriteLine("lcc: " + s),
        Verbose = pr.GetValue(Verbose),
    };

    /// <summary>Loads MODEL (a .onnx or a compiled folder); missing paths are one-line errors.</summary>
    public static LongCtxModel Load(string path, RuntimeOptions o)
    {
        if (!File.Exists(path) && !Directory.Exists(path)) throw new FileNotFoundException($"model {path} not found");
        return LongCtxModel.Load(path, o);
    }

    /// <summary>Parses "1,2,3" or "1 2 3".</summary>
    public static int[] ParseIds(string s) =>
        s.Split([',', ' ', '\n', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries)
         .Select(t => int.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int v) ? v : throw new ArgumentException($"'{t}' is not a token id (a non-negative 32-bit integer)")).ToArray();

    /// <summary>Parses "256,512,1k,4k".</summary>
    public static int[] ParseLengths(string s)
    {
        var r = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t =>
        {
            var lower = t.ToLowerInvariant();
            int mul = lower.EndsWith('k') ? 1024 : 1;
            var num = mul == 1 ? lower : lower[..^1];
            if (!int.TryParse(num, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int v) || v <= 0)
                throw new ArgumentException($"--lengths: '{t}' is not a length (e.g. 512, 4k)");
            return (long)v * mul <= int.MaxValue ? v * mul : throw new ArgumentException($"--lengths: '{t}' is too large (at most {int.MaxValue} tokens)");
        }).ToArray();
        return r.Length > 0 ? r : throw new ArgumentException($"--lengths '{s}': give at least one prompt length, e.g. 256,512,1k");
    }

    /// <summary>--threads: 0 (ONNX Runtime's default) up to the machine's logical cores.</summary>
    public static int CheckThreads(int threads) =>
        threads >= 0 && threads <= Environment.ProcessorCount ? threads
        : throw new ArgumentException($"--threads {threads}: give 0 (ONNX Runtime's default) up to {Environment.ProcessorCount}, the logical cores of this machine");
}

using System.CommandLine;
using System.Diagnostics;
using LongCtx.Runtime;
using LongCtx.Runtime.KvStore;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc run --load-kv FILE</c> (start from a stored cache: the prompt continues after its tokens), <c>--save-kv FILE</c>
/// (store the cache when generation ends; with --max-new-tokens 0 that is the prompt's prefill) and <c>--kv-codec</c>.
/// </summary>
internal sealed class KvStoreCliOptions
{
    public Option<FileInfo?> LoadKv { get; } = new("--load-kv") { Description = "start from the KV cache stored in FILE (by --save-kv, same model); the prompt continues after its tokens" };
    public Option<FileInfo?> SaveKv { get; } = new("--save-kv") { Description = "store the KV cache in FILE when generation ends (written atomically; --max-new-tokens 0 stores just the prompt)" };
    public Option<string?> Codec { get; } = new("--kv-codec") { Description = "codec of --save-kv: " + KvCodecs.Help + " (default cachegen)" };

    public void AddTo(Command c) { c.Add(LoadKv); c.Add(SaveKv); c.Add(Codec); }

    /// <summary>The token ids the generator's cache starts with (empty without --load-kv).</summary>
    public int[] Cached { get; private set; } = [];

    /// <summary>A generator on a fresh cache, or on a concat cache filled from --load-kv (the file is checked whole first).</summary>
    public Generator CreateGenerator(LongCtxModel m, ParseResult pr)
    {
        if (pr.GetValue(Codec) is { } spec)
        {
            if (pr.GetValue(SaveKv) is null) throw new ArgumentException("--kv-codec chooses how --save-kv stores the cache; give --save-kv FILE too");
            KvCodecs.Get(spec); // a bad codec is reported before any work
        }
        if (pr.GetValue(LoadKv) is not { } file) return m.CreateGenerator();
        var sw = Stopwatch.StartNew();
        var g = m.LoadKv(file.FullName, out var tokens);
        Cached = tokens;
        Console.Error.WriteLine($"lcc: loaded {tokens.Length} cached tokens from {file.Name} ({KvStoreFile.ReadHeader(file.FullName).Codec}, {file.Length} bytes) in {sw.Elapsed.TotalMilliseconds:F0} ms");
        return g;
    }

    /// <summary>With --save-kv, stores the generator's cache; <paramref name="fed"/> are the ids fed after the loaded ones, in order.</summary>
    public void SaveIfAsked(LongCtxModel m, Generator g, IEnumerable<int> fed, ParseResult pr)
    {
        if (pr.GetValue(SaveKv) is not { } file) return;
        var codec = KvCodecs.Get(pr.GetValue(Codec) ?? "cachegen");
        var tokens = Cached.Concat(fed).Take(g.Length).ToArray(); // the last sampled token was never fed back
        var sw = Stopwatch.StartNew();
        m.SaveKv(g, file.FullName, tokens, codec);
        long bytes = new FileInfo(file.FullName).Length;
        Console.Error.WriteLine($"lcc: saved {tokens.Length} tokens to {file.Name} ({codec.Name}, {bytes} bytes, {(tokens.Length == 0 ? 0 : (double)bytes / tokens.Length):F1} bytes/token) in {sw.Elapsed.TotalMilliseconds:F0} ms");
    }
}

using System.CommandLine;
using System.Diagnostics;
using LongCtx.Runtime;
using LongCtx.Runtime.KvStore;
using LongCtx.Runtime.Sessions;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc run --load-kv FILE</c> (start from a stored cache: the prompt continues after its tokens), <c>--save-kv FILE</c>
/// (store the cache when generation ends; with --max-new-tokens 0 that is the prompt's prefill) and <c>--kv-codec</c>.
/// Both go through a <see cref="Conversation"/>: <see cref="Conversation.Load"/> restores the file into the model's
/// default cache kind (concat, static, shared buffer, streaming), <see cref="Conversation.Save"/> stores what it holds.
/// </summary>
internal sealed class KvStoreCliOptions
{
    public Option<FileInfo?> LoadKv { get; } = new("--load-kv") { Description = "start from the KV cache stored in FILE (by --save-kv, same model); the prompt continues after its tokens" };
    public Option<FileInfo?> SaveKv { get; } = new("--save-kv") { Description = "store the KV cache in FILE when generation ends (written atomically; --max-new-tokens 0 stores just the prompt)" };
    public Option<string?> Codec { get; } = new("--kv-codec") { Description = "codec of --save-kv: " + KvCodecs.Help + " (default cachegen)" };

    public void AddTo(Command c) { c.Add(LoadKv); c.Add(SaveKv); c.Add(Codec); }

    /// <summary>A session on a fresh cache, or restored from --load-kv (the file is checked whole first).</summary>
    public Conversation CreateConversation(LongCtxModel m, ParseResult pr, PrefixCache? prefixCache)
    {
        if (pr.GetValue(Codec) is { } spec)
        {
            if (pr.GetValue(SaveKv) is null) throw new ArgumentException("--kv-codec chooses how --save-kv stores the cache; give --save-kv FILE too");
            KvCodecs.Get(spec); // a bad codec is reported before any work
        }
        if (pr.GetValue(LoadKv) is not { } file) return Saveable(new Conversation(m, prefixCache), pr);
        if (prefixCache is not null)
            throw new ArgumentException("--prefix-cache and --load-kv both supply a cached prefix; give one of them");
        var sw = Stopwatch.StartNew();
        var conv = Conversation.Load(m, file.FullName);
        Console.Error.WriteLine($"lcc: loaded {conv.Length} cached tokens from {file.Name} ({KvStoreFile.ReadHeader(file.FullName).Codec}, {file.Length} bytes) into a {conv.Cache.GetType().Name} in {sw.Elapsed.TotalMilliseconds:F0} ms");
        return conv;
    }

    /// <summary>With --save-kv, a cache that cannot be copied to the host (an evicting cache, device buffers) is refused before any work.</summary>
    private Conversation Saveable(Conversation conv, ParseResult pr)
    {
        if (pr.GetValue(SaveKv) is null) return conv;
        try { KvTransfer.RequireSnapshots(conv.Cache); }
        catch { conv.Dispose(); throw; }
        return conv;
    }

    /// <summary>With --save-kv, stores the session's cache (the last sampled token was never fed, so it is not in it).</summary>
    public void SaveIfAsked(Conversation conv, ParseResult pr)
    {
        if (pr.GetValue(SaveKv) is not { } file) return;
        var codec = KvCodecs.Get(pr.GetValue(Codec) ?? "cachegen");
        var sw = Stopwatch.StartNew();
        conv.Save(file.FullName, codec);
        long bytes = new FileInfo(file.FullName).Length;
        Console.Error.WriteLine($"lcc: saved {conv.Length} tokens to {file.Name} ({codec.Name}, {bytes} bytes, {(conv.Length == 0 ? 0 : (double)bytes / conv.Length):F1} bytes/token) in {sw.Elapsed.TotalMilliseconds:F0} ms");
    }
}

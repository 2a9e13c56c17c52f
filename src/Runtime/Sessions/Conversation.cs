using System.Runtime.CompilerServices;
using LongCtx.Runtime.KvStore;

namespace LongCtx.Runtime.Sessions;

/// <summary>
/// A multi-turn session on a <see cref="LongCtxModel"/>: one KV cache kept between turns, so a turn costs only its own
/// tokens (SCBench, Li et al. 2024: shared context, many queries). <see cref="Append"/> feeds a turn and returns the
/// next-token logits; <see cref="Generate"/> / <see cref="GenerateAsync"/> feed a turn and decode. The last sampled
/// token of a generation is not in the cache yet (the decoder has not seen it): it is kept as pending and fed in front
/// of the next turn, so the transcript stays whole; a stop token is not kept. <see cref="Fork"/> copies the session
/// (independent caches), <see cref="Truncate"/> drops the tail, <see cref="Snapshot"/> / <see cref="Restore"/> move the
/// cache through a <see cref="KvSnapshot"/> (refused across models: <see cref="LongCtxModel.ModelHash"/>);
/// <see cref="Save"/> / <see cref="Load"/> persist it in a KV-store file (<see cref="KvStoreFile"/>, what
/// <c>lcc run --save-kv / --load-kv</c> use).
/// Works with every cache kind (concat, static, shared buffer). A streaming cache (sinks + window) may append, fork,
/// snapshot and restore; it cannot truncate once it has evicted (the dropped tokens are gone) and it never uses the
/// prefix cache (an evicted cache is not the KV of its prefix). Not thread-safe: one session per caller; sessions on
/// one model run concurrently, and a <see cref="PrefixCache"/> may be shared among them.
/// </summary>
public sealed class Conversation : IDisposable
{
    private readonly Generator _g;
    private readonly PrefixCache? _prefix;
    private readonly List<int> _held = [];       // tokens in the cache, in cache order (sinks + recent once a streaming cache evicts)
    private readonly List<int> _transcript = []; // every token of the conversation, pending included
    private int _pending;                         // tail of the transcript not fed to the cache yet

    public Conversation(LongCtxModel model, PrefixCache? prefixCache = null)
    {
        Model = model;
        _g = model.CreateGenerator();
        _prefix = prefixCache;
    }

    public LongCtxModel Model { get; }

    /// <summary>Tokens held in the cache.</summary>
    public int Length => _g.Length;

    /// <summary>Absolute position of the next token fed (exceeds <see cref="Length"/> once a streaming cache evicts).</summary>
    public int NextPosition => _g.Cache.NextPosition;

    /// <summary>Every token of the conversation, in order (from a restored snapshot on: the snapshot's tokens onward).</summary>
    public IReadOnlyList<int> Transcript => _transcript;

    /// <summary>Generated tokens the cache has not seen yet (fed before the next turn).</summary>
    public int Pending => _pending;

    /// <summary>Logits after the last <see cref="Append"/>; null after a generation, truncation or restore.</summary>
    public float[]? LastLogits { get; private set; }

    public FinishReason LastFinishReason => _g.LastFinishReason;

    /// <summary>Tokens restored from the prefix cache by the last call (0 without one).</summary>
    public int LastPrefixHit { get; private set; }

    public KvCacheManager Cache => _g.Cache;

    /// <summary>Feeds the pending tokens and <paramref name="turn"/>; returns the logits for the token after them.</summary>
    public float[] Append(IReadOnlyList<int> turn, int chunk = 2048, IProgress<int>? progress = null, CancellationToken ct = default)
    {
        var tokens = Input(turn);
        int evicted = Evicted, start = NextPosition;
        LastLogits = null;
        bool prefix = UsePrefixCache;
        LastPrefixHit = prefix ? _prefix!.Restore(_g, tokens) : 0;
        try
        {
            var logits = _g.Prefill(tokens[LastPrefixHit..], chunk, progress, ct);
            if (prefix) _prefix!.Store(_g, tokens);
            LastLogits = logits;
            return logits;
        }
        finally { Fed(tokens, [], start, evicted); }
    }

    /// <summary>Feeds the pending tokens and <paramref name="turn"/>, then decodes; returns the generated tokens.</summary>
    public List<int> Generate(IReadOnlyList<int> turn, GenerationOptions? options = null, CancellationToken ct = default)
    {
        var result = new List<int>();
        foreach (var t in Steps(turn, options, ct, null)) result.Add(t);
        return result;
    }

    /// <summary>
    /// Streams what <see cref="Generate"/> returns; each decoder call runs on the thread pool. <paramref name="progress"/>
    /// gets the prefill's fed-token count (as <see cref="Generator.GenerateAsync"/>).
    /// </summary>
    public async IAsyncEnumerable<int> GenerateAsync(IReadOnlyList<int> turn, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken ct = default, IProgress<int>? progress = null)
    {
        using var e = Steps(turn, options, ct, progress).GetEnumerator();
        while (await Task.Run(e.MoveNext, ct).ConfigureAwait(false))
            yield return e.Current;
    }

    private IEnumerable<int> Steps(IReadOnlyList<int> turn, GenerationOptions? options, CancellationToken ct, IProgress<int>? progress)
    {
        var tokens = Input(turn);
        int evicted = Evicted, start = NextPosition;
        LastLogits = null;
        bool prefix = UsePrefixCache;
        LastPrefixHit = prefix ? _prefix!.Restore(_g, tokens) : 0;
        var generated = new List<int>();
        try
        {
            foreach (var t in _g.Steps(tokens[LastPrefixHit..], options ?? new(), ct, progress))
            {
                generated.Add(t);
                yield return t;
            }
            if (prefix) _prefix!.Store(_g, tokens); // the prompt's rows stay as they were: a non-evicting cache only appends
        }
        finally { Fed(tokens, generated, start, evicted); }
    }

    /// <summary>A copy with its own cache: both continue the same prefix independently.</summary>
    public Conversation Fork()
    {
        var copy = new Conversation(Model, _prefix);
        try
        {
            if (Length > 0) KvTransfer.Import(copy._g.Cache, [Snapshot()], NextPosition);
            copy._held.AddRange(_held);
            copy._transcript.AddRange(_transcript);
            copy._pending = _pending;
            copy.LastLogits = LastLogits?.ToArray();
            return copy;
        }
        catch { copy.Dispose(); throw; }
    }

    /// <summary>Keeps the first <paramref name="tokens"/> tokens of the transcript and drops the rest (cache and pending).</summary>
    public void Truncate(int tokens)
    {
        if (tokens < 0 || tokens > _transcript.Count)
            throw new ArgumentOutOfRangeException(nameof(tokens), $"{Model.Name}: cannot truncate a session of {_transcript.Count} tokens to {tokens}");
        int cached = _transcript.Count - _pending;
        if (tokens >= cached) { _pending = tokens - cached; Trim(tokens); return; }
        if (Evicted > 0)
            throw new RuntimeException($"{Model.Name}: the streaming cache has evicted {Evicted} tokens; a session can only be truncated before it evicts (fork it earlier instead)");
        if (tokens == 0) _g.Reset();
        else KvTransfer.Import(_g.Cache, [KvTransfer.Export(_g.Cache, Model.ModelHash, 0, _held.GetRange(0, tokens).ToArray(), tokens)], tokens);
        _held.RemoveRange(tokens, _held.Count - tokens);
        _pending = 0;
        Trim(tokens);
    }

    /// <summary>A host copy of the cache (pending tokens excluded: they are not in the cache).</summary>
    public KvSnapshot Snapshot() => KvTransfer.Export(_g.Cache, Model.ModelHash, 0, _held.ToArray(), NextPosition);

    /// <summary>Replaces the session with <paramref name="snapshot"/>; one of another model is refused and nothing changes.</summary>
    public void Restore(KvSnapshot snapshot)
    {
        if (snapshot.ModelHash != Model.ModelHash)
            throw new RuntimeException($"{Model.Name}: the KV snapshot belongs to model {snapshot.ModelHash}, not this model ({Model.ModelHash}); load it into the model it was saved from");
        if (Model.MaxContext is { } max && snapshot.Length > max && Model.Streaming is null)
            throw new RuntimeException($"{Model.Name}: the KV snapshot holds {snapshot.Length} tokens, beyond the model's max context of {max}");
        // shape, length and position are checked (KvTransfer.Check, then the cache's PrepareImport) before anything changes
        KvTransfer.Import(_g.Cache, [snapshot], snapshot.NextPosition);
        Clear();
        _held.AddRange(snapshot.Tokens);
        _transcript.AddRange(snapshot.Tokens);
    }

    /// <summary>
    /// Stores <see cref="Snapshot"/> in the KV-store file <paramref name="path"/>, encoded by <paramref name="codec"/>
    /// (<see cref="KvCodecs.Get"/>: raw is exact), written atomically. Pending tokens are not in the cache, so not saved.
    /// </summary>
    public void Save(string path, IKvCodec codec) => KvStoreFile.Save(path, Snapshot(), codec);

    /// <summary>
    /// A session on <paramref name="model"/> restored from the KV-store file <paramref name="path"/> (written by
    /// <see cref="Save"/>), on the model's default cache kind. The file is checked whole (version, this model's hash,
    /// checksums) and decoded before a cache is touched; any failure is a one-line exception and returns nothing.
    /// </summary>
    public static Conversation Load(LongCtxModel model, string path, PrefixCache? prefixCache = null)
    {
        var snapshot = KvStoreFile.Load(path, model.ModelHash);
        var conv = new Conversation(model, prefixCache);
        try { conv.Restore(snapshot); }
        catch { conv.Dispose(); throw; }
        return conv;
    }

    private bool UsePrefixCache => _prefix is not null && _prefix.Usable(_g.Cache) && _g.Length == 0;

    private int Evicted => NextPosition - Length;

    /// <summary>The pending tokens then the turn; checks the session stays within the model's context.</summary>
    private int[] Input(IReadOnlyList<int> turn)
    {
        var pending = _transcript.GetRange(_transcript.Count - _pending, _pending);
        int[] tokens = [.. pending, .. turn];
        if (tokens.Length == 0) throw new ArgumentException($"{Model.Name}: empty turn");
        int? cap = _g.Cache is StreamingKvCache ? null
            : _g.Cache.Capacity is { } c ? (Model.MaxContext is { } m ? Math.Min(c, m) : c) : Model.MaxContext;
        if (cap is { } max && Length + tokens.Length > max)
            throw new ArgumentException($"{Model.Name}: the session holds {Length} tokens and this turn adds {tokens.Length} ({Length + tokens.Length} in all), beyond the model's max context of {max}; truncate the session or start a new one");
        return tokens;
    }

    /// <summary>
    /// Records a call given <paramref name="input"/> (pending + turn) that generated <paramref name="generated"/>: the
    /// cache took the first NextPosition - <paramref name="start"/> of input + generated (all but the last sampled token,
    /// fewer after a failure). Generated tokens it did not take become pending; so do old pending tokens a failed call
    /// did not reach; turn tokens it did not reach are dropped (the caller sees the failure and may send the turn again).
    /// </summary>
    private void Fed(int[] input, IReadOnlyList<int> generated, int start, int evictedBefore)
    {
        int took = NextPosition - start, oldPending = _pending;
        int[] offered = [.. input, .. generated];
        took = Math.Min(took, offered.Length);
        int[] pending = took >= input.Length ? offered[took..] : took < oldPending ? input[took..oldPending] : [];
        _transcript.RemoveRange(_transcript.Count - oldPending, oldPending);
        _transcript.AddRange(offered[..took]);
        _transcript.AddRange(pending);
        _pending = pending.Length;
        _held.AddRange(offered[..took]);
        // a streaming cache drops the oldest tokens after its sinks; an evicting cache (SnapKV, H2O: rows kept per head,
        // no one token list) refuses snapshots (KvTransfer.RequireSnapshots), so for it only _held's count matters
        int dropped = Evicted - evictedBefore, from = Model.Streaming?.Sink ?? 0;
        if (dropped > 0) _held.RemoveRange(from, Math.Min(dropped, _held.Count - from));
    }

    private void Trim(int tokens)
    {
        _transcript.RemoveRange(tokens, _transcript.Count - tokens);
        LastLogits = null;
    }

    private void Clear()
    {
        _held.Clear();
        _transcript.Clear();
        _pending = 0;
        LastLogits = null;
    }

    public void Dispose() => _g.Dispose();
}

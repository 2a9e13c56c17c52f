using System.Security.Cryptography;
using System.Runtime.InteropServices;
using LongCtx.Runtime.KvStore;

namespace LongCtx.Runtime.Sessions;

/// <summary>What a prefix cache did: lookups, tokens asked for and found, blocks stored and evicted, bytes held.</summary>
public sealed record PrefixCacheStats(long Lookups, long LookupTokens, long HitTokens, long BlocksStored, long BlocksEvicted,
    int Blocks, long Bytes, long BudgetBytes, bool Enabled)
{
    /// <summary>Prompt tokens served from the cache / prompt tokens looked up.</summary>
    public double HitRate => LookupTokens == 0 ? 0 : (double)HitTokens / LookupTokens;

    public override string ToString() => !Enabled ? "prefix cache: off"
        : $"prefix cache: {Lookups} lookups, {HitTokens}/{LookupTokens} prompt tokens reused (hit rate {HitRate:P1}), {Blocks} blocks held ({Bytes / 1048576.0:F1} of {BudgetBytes / 1048576.0:F1} MiB), {BlocksStored} stored, {BlocksEvicted} evicted";
}

/// <summary>
/// KV of prompt prefixes shared across requests in one process (the automatic prefix caching of vLLM, Kwon et al. 2023
/// and SGLang's RadixAttention, Zheng et al. 2024, as a hash chain): a prompt is cut into blocks of
/// <see cref="BlockTokens"/> tokens and block i is keyed by h_i = SHA-256(h_{i-1} || tokens of block i), h_{-1} = the
/// model hash, so one key names the whole prefix up to the block's end. A new prompt looks its blocks up in order and
/// restores the longest cached run (at most len - 1 tokens: the last prompt token is always fed, for its logits); the
/// generator then prefills only the rest, and <see cref="Store"/> adds the prompt's missing full blocks. Blocks are
/// host fp32 <see cref="KvSnapshot"/>s (2 x layers x Hkv x block x HeadDim x 4 bytes) held under a byte budget with LRU
/// eviction; a lookup touches a chain from its last block to its first, so parents outlive their children. Thread-safe:
/// one lock around the table (copies in and out of caches run outside it; blocks are immutable once stored), so any
/// number of generators on one model may share it. Non-evicting caches only (a streaming cache is not the KV of its
/// prefix once it evicts), and caches that copy to the host (<see cref="KvCacheManager.SupportsSnapshots"/>); others
/// are served without it.
/// </summary>
public sealed class PrefixCache
{
    public const int DefaultBlockTokens = 256;

    private readonly object _lock = new();
    private readonly Dictionary<UInt128, LinkedListNode<Block>> _table = [];
    private readonly LinkedList<Block> _lru = []; // most recently used first
    private readonly long _blockBytes;
    private long _lookups, _lookupTokens, _hitTokens, _stored, _evicted, _bytes;

    private sealed record Block(UInt128 Key, KvSnapshot Kv);

    /// <param name="log">told once when the budget cannot hold one block (the cache is then off)</param>
    public PrefixCache(LongCtxModel model, long budgetBytes, int blockTokens = DefaultBlockTokens, Action<string>? log = null)
    {
        if (blockTokens < 1) throw new ArgumentOutOfRangeException(nameof(blockTokens), $"prefix cache block of {blockTokens} tokens: must be positive");
        Model = model;
        BlockTokens = blockTokens;
        BudgetBytes = budgetBytes;
        _blockBytes = 2L * model.Contract.Layers.Count * model.Contract.KvHeads * model.Contract.HeadDim * blockTokens * sizeof(float);
        if (budgetBytes < _blockBytes)
        {
            DisabledReason = $"{model.Name}: prefix cache budget of {budgetBytes} bytes is below one block of {blockTokens} tokens ({_blockBytes} bytes); prefix cache off";
            (log ?? (s => Console.Error.WriteLine("lcc: " + s)))("note: " + DisabledReason);
        }
    }

    public LongCtxModel Model { get; }
    public int BlockTokens { get; }
    public long BudgetBytes { get; }

    /// <summary>Bytes one block holds.</summary>
    public long BlockBytes => _blockBytes;

    /// <summary>Why the cache is off (budget below one block), or null.</summary>
    public string? DisabledReason { get; }

    public bool Enabled => DisabledReason is null;

    /// <summary>
    /// Restores the longest cached prefix of <paramref name="prompt"/> into the empty <paramref name="generator"/>
    /// (whole blocks, at most prompt.Count - 1 tokens); returns how many tokens it restored.
    /// </summary>
    public int Restore(Generator generator, IReadOnlyList<int> prompt)
    {
        if (generator.Length != 0) throw new InvalidOperationException($"{Model.Name}: the prefix cache restores into an empty generator only (it holds {generator.Length} tokens)");
        if (!Usable(generator.Cache)) return 0;
        int usable = (prompt.Count - 1) / BlockTokens;
        var keys = Chain(prompt, usable);
        var found = new List<KvSnapshot>(usable);
        lock (_lock)
        {
            _lookups++;
            _lookupTokens += prompt.Count;
            foreach (var k in keys)
            {
                if (!_table.TryGetValue(k, out var node)) break;
                found.Add(node.Value.Kv);
            }
            for (int i = found.Count - 1; i >= 0; i--) Touch(_table[keys[i]]); // last block first: parents end up most recent
            _hitTokens += found.Count * (long)BlockTokens;
        }
        if (found.Count == 0) return 0;
        KvTransfer.Import(generator.Cache, found, found.Count * BlockTokens);
        return found.Count * BlockTokens;
    }

    /// <summary>
    /// Stores the full blocks of <paramref name="prompt"/> that are not cached yet; the generator's cache must hold the
    /// prompt's KV at rows [0, prompt.Count) (true after prefilling it, and after decoding on a non-evicting cache).
    /// </summary>
    public void Store(Generator generator, IReadOnlyList<int> prompt)
    {
        if (!Usable(generator.Cache) || generator.Cache.NextPosition != generator.Length) return;
        int full = Math.Min(prompt.Count, generator.Length) / BlockTokens;
        var keys = Chain(prompt, full);
        var tokens = prompt as int[] ?? prompt.ToArray();
        for (int b = 0; b < full; b++)
        {
            lock (_lock)
                if (_table.TryGetValue(keys[b], out var have)) { Touch(have); continue; }
            var kv = KvTransfer.Export(generator.Cache, Model.ModelHash, b * BlockTokens, tokens[(b * BlockTokens)..((b + 1) * BlockTokens)], (b + 1) * BlockTokens);
            lock (_lock)
            {
                if (_table.ContainsKey(keys[b])) continue; // another generator stored it meanwhile
                while (_bytes + _blockBytes > BudgetBytes && _lru.Last is { } oldest)
                {
                    _lru.RemoveLast();
                    _table.Remove(oldest.Value.Key);
                    _bytes -= _blockBytes;
                    _evicted++;
                }
                _table[keys[b]] = _lru.AddFirst(new Block(keys[b], kv));
                _bytes += _blockBytes;
                _stored++;
            }
        }
    }

    /// <summary>Restores the cached prefix, prefills the rest and stores the prompt's new blocks; returns the last logits.</summary>
    public float[] Prefill(Generator generator, IReadOnlyList<int> prompt, int chunk = 0, CancellationToken ct = default)
    {
        var ids = prompt as int[] ?? prompt.ToArray();
        int hit = Restore(generator, ids);
        var logits = generator.Prefill(ids[hit..], chunk, null, ct);
        Store(generator, ids);
        return logits;
    }

    public PrefixCacheStats Stats()
    {
        lock (_lock) return new(_lookups, _lookupTokens, _hitTokens, _stored, _evicted, _table.Count, _bytes, BudgetBytes, Enabled);
    }

    /// <summary>Whether blocks can be copied in and out of <paramref name="cache"/> and are the KV of their prefix (not after eviction).</summary>
    public bool Usable(KvCacheManager cache) => Enabled && cache.SupportsSnapshots && cache is not StreamingKvCache;

    private void Touch(LinkedListNode<Block> node)
    {
        _lru.Remove(node);
        _lru.AddFirst(node);
    }

    /// <summary>Keys of the first <paramref name="blocks"/> blocks: h_i = SHA-256(h_{i-1} || block i's ids as int32), first 128 bits.</summary>
    private UInt128[] Chain(IReadOnlyList<int> prompt, int blocks)
    {
        var keys = new UInt128[blocks];
        Span<byte> prev = stackalloc byte[32];
        SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(Model.ModelHash), prev);
        var buf = new byte[32 + BlockTokens * sizeof(int)];
        for (int b = 0; b < blocks; b++)
        {
            prev.CopyTo(buf);
            var ids = MemoryMarshal.Cast<byte, int>(buf.AsSpan(32));
            for (int i = 0; i < BlockTokens; i++) ids[i] = prompt[b * BlockTokens + i];
            SHA256.HashData(buf, prev);
            keys[b] = MemoryMarshal.Read<UInt128>(prev);
        }
        return keys;
    }
}

namespace LongCtx.Runtime.KvStore;

/// <summary>
/// A host-side copy of one sequence's KV cache, the unit that sessions fork, the prefix cache reuses and the KV store
/// saves and loads. Keys are as cached (after RoPE). Values are fp32 whatever the cache's element type; a codec decides
/// how they are stored on disk.
/// </summary>
/// <param name="ModelHash">Identity of the model the cache belongs to (<see cref="LongCtxModel.ModelHash"/>, the one model hash); loading into a model with another hash is refused.</param>
/// <param name="Layers">Attention layers.</param>
/// <param name="KvHeads">KV heads per layer.</param>
/// <param name="HeadDim">Channels per head.</param>
/// <param name="Tokens">Token ids the cache holds, in order; <c>Tokens.Length</c> is the cached length.</param>
/// <param name="NextPosition">Absolute position of the next token (differs from the length after eviction).</param>
/// <param name="Keys">Per layer, <c>[KvHeads, Tokens.Length, HeadDim]</c> row-major.</param>
/// <param name="Values">Per layer, <c>[KvHeads, Tokens.Length, HeadDim]</c> row-major.</param>
public sealed record KvSnapshot(
    string ModelHash,
    int Layers,
    int KvHeads,
    int HeadDim,
    int[] Tokens,
    int NextPosition,
    float[][] Keys,
    float[][] Values)
{
    /// <summary>Cached tokens.</summary>
    public int Length => Tokens.Length;

    /// <summary>Throws when the arrays do not have the declared shape.</summary>
    public void Validate()
    {
        if (Layers <= 0 || KvHeads <= 0 || HeadDim <= 0)
            throw new ArgumentException($"KV snapshot: layers {Layers}, kv heads {KvHeads}, head dim {HeadDim} must be positive");
        if (Keys.Length != Layers || Values.Length != Layers)
            throw new ArgumentException($"KV snapshot: {Keys.Length} key / {Values.Length} value layers, expected {Layers}");
        long per = (long)KvHeads * Length * HeadDim;
        for (int l = 0; l < Layers; l++)
            if (Keys[l].LongLength != per || Values[l].LongLength != per)
                throw new ArgumentException($"KV snapshot: layer {l} holds {Keys[l].LongLength} key / {Values[l].LongLength} value floats, expected {per}");
        if (NextPosition < Length)
            throw new ArgumentException($"KV snapshot: next position {NextPosition} is below the cached length {Length}");
    }
}

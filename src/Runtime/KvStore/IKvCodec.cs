namespace LongCtx.Runtime.KvStore;

/// <summary>
/// The geometry a codec encodes: a snapshot's shape cut into chunks of <see cref="ChunkTokens"/> tokens, each chunk a
/// file section of its own (own checksum, decodable alone, so chunks decode in parallel).
/// </summary>
public sealed record KvLayout(int Layers, int KvHeads, int HeadDim, int Length, int ChunkTokens)
{
    public static KvLayout Of(KvSnapshot s, int chunkTokens) => new(s.Layers, s.KvHeads, s.HeadDim, s.Length, chunkTokens);

    public int Chunks => Length == 0 ? 0 : (Length + ChunkTokens - 1) / ChunkTokens;

    /// <summary>First token and token count of chunk <paramref name="i"/>.</summary>
    public (int Start, int Count) Chunk(int i) => (i * ChunkTokens, Math.Min(ChunkTokens, Length - i * ChunkTokens));

    /// <summary>Index of (head, token, channel) in a layer's <c>[KvHeads, Length, HeadDim]</c> array.</summary>
    public long Index(int head, int token, int channel) => ((long)head * Length + token) * HeadDim + channel;
}

/// <summary>A codec's output: one section every chunk decoder reads (parameters, symbol tables), and one per chunk.</summary>
public sealed record KvEncoding(byte[] Shared, byte[][] Chunks);

/// <summary>
/// How a <see cref="KvSnapshot"/>'s keys and values become bytes in a KV-store file. Implementations are stateless and
/// thread-safe; a file records the codec's <see cref="Name"/> and everything its decoder needs.
/// </summary>
public interface IKvCodec
{
    /// <summary>Name in files and on the command line (raw, int8, cachegen).</summary>
    string Name { get; }

    /// <summary>The per-element reconstruction error the codec guarantees, in words (for help text and reports).</summary>
    string ErrorBound { get; }

    KvEncoding Encode(KvSnapshot snapshot, KvLayout layout);

    /// <summary>Reads the shared section; throws <see cref="InvalidDataException"/> when it is malformed.</summary>
    IKvChunkDecoder OpenDecoder(KvLayout layout, ReadOnlySpan<byte> shared);
}

/// <summary>Decodes one chunk into the snapshot arrays; thread-safe, so chunks decode in parallel.</summary>
public interface IKvChunkDecoder
{
    /// <summary>Writes chunk <paramref name="chunk"/>'s tokens of every layer; throws <see cref="InvalidDataException"/> on malformed bytes.</summary>
    void Decode(int chunk, ReadOnlySpan<byte> payload, float[][] keys, float[][] values);
}

/// <summary>The codecs by name.</summary>
public static class KvCodecs
{
    public static IReadOnlyList<string> Names { get; } = ["raw", "int8", "cachegen"];

    /// <summary>The codec called <paramref name="name"/>; an unknown name is an error listing the known ones.</summary>
    public static IKvCodec Get(string name) => name.ToLowerInvariant() switch
    {
        "raw" => new RawKvCodec(),
        "int8" => new Int8KvCodec(),
        "cachegen" => new CacheGenKvCodec(),
        _ => throw new ArgumentException($"KV codec '{name}' is unknown; use one of {string.Join(", ", Names)}"),
    };
}

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

    /// <summary>What <c>--kv-codec</c> accepts, for help text.</summary>
    public const string Help = "raw (fp32, exact) | int8 (per token and head) | cachegen[:anchor=256,group=8,keys=5/3/3,values=3/2/2] (deltas + layer-wise bins + range coding)";

    /// <summary>
    /// The codec called <paramref name="spec"/>: a name, and for cachegen optional settings after a colon (anchor group,
    /// channel group, delta levels for the first/middle/last third of the layers). Unknown names and settings are errors.
    /// </summary>
    public static IKvCodec Get(string spec)
    {
        var colon = spec.IndexOf(':');
        string name = (colon < 0 ? spec : spec[..colon]).Trim().ToLowerInvariant();
        string? settings = colon < 0 ? null : spec[(colon + 1)..];
        if (settings is not null && name != "cachegen") throw new ArgumentException($"KV codec '{name}' takes no settings (only cachegen does), got '{settings}'");
        return name switch
        {
            "raw" => new RawKvCodec(),
            "int8" => new Int8KvCodec(),
            "cachegen" => new CacheGenKvCodec(settings is null ? null : ParseCacheGen(settings)),
            _ => throw new ArgumentException($"KV codec '{name}' is unknown; use one of {string.Join(", ", Names)}"),
        };
    }

    private static CacheGenOptions ParseCacheGen(string settings)
    {
        var o = CacheGenOptions.Default;
        foreach (var kv in settings.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = kv.IndexOf('=');
            string k = eq < 0 ? kv : kv[..eq], v = eq < 0 ? "" : kv[(eq + 1)..];
            int Int(string x) => int.TryParse(x, out int i) ? i : throw new ArgumentException($"cachegen setting {k}={v}: '{x}' is not a number");
            int[] Three() => v.Split('/') is { Length: 3 } parts ? parts.Select(Int).ToArray() : throw new ArgumentException($"cachegen setting {k}={v}: give three levels, first/middle/last third of the layers (e.g. 7/5/4)");
            o = k switch
            {
                "anchor" => o with { AnchorGroup = Int(v) },
                "group" => o with { ChannelGroup = Int(v) },
                "keys" => o with { KeyLevels = Three() },
                "values" => o with { ValueLevels = Three() },
                _ => throw new ArgumentException($"cachegen setting '{k}' is unknown; use anchor, group, keys, values"),
            };
        }
        o.Validate();
        return o;
    }
}

using System.Runtime.InteropServices;

namespace LongCtx.Runtime.KvStore;

/// <summary>
/// fp32 as cached, little-endian: per chunk, for each layer, K then V, each head's rows of the chunk's tokens. Exact:
/// decoding gives back the snapshot's bits. 4 bytes per element.
/// </summary>
public sealed class RawKvCodec : IKvCodec
{
    public string Name => "raw";
    public string ErrorBound => "exact (fp32 bits)";

    public KvEncoding Encode(KvSnapshot s, KvLayout layout)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("the raw KV codec writes little-endian floats");
        var chunks = new byte[layout.Chunks][];
        Parallel.For(0, chunks.Length, i =>
        {
            var (start, n) = layout.Chunk(i);
            int row = n * layout.HeadDim;
            var bytes = new byte[2L * layout.Layers * layout.KvHeads * row * sizeof(float)];
            var dst = MemoryMarshal.Cast<byte, float>(bytes.AsSpan());
            int o = 0;
            for (int l = 0; l < layout.Layers; l++)
                foreach (var src in (ReadOnlySpan<float[]>)[s.Keys[l], s.Values[l]])
                    for (int h = 0; h < layout.KvHeads; h++, o += row)
                        src.AsSpan(checked((int)layout.Index(h, start, 0)), row).CopyTo(dst[o..]);
            chunks[i] = bytes;
        });
        return new([], chunks);
    }

    public IKvChunkDecoder OpenDecoder(KvLayout layout, ReadOnlySpan<byte> shared) =>
        shared.Length == 0 ? new Decoder(layout) : throw new InvalidDataException($"the raw codec has no parameters, found {shared.Length} bytes");

    private sealed class Decoder(KvLayout layout) : IKvChunkDecoder
    {
        public void Decode(int chunk, ReadOnlySpan<byte> payload, float[][] keys, float[][] values)
        {
            var (start, n) = layout.Chunk(chunk);
            int row = n * layout.HeadDim;
            long want = 2L * layout.Layers * layout.KvHeads * row * sizeof(float);
            if (payload.Length != want) throw new InvalidDataException($"raw chunk {chunk} holds {payload.Length} bytes, expected {want}");
            var src = MemoryMarshal.Cast<byte, float>(payload);
            int o = 0;
            for (int l = 0; l < layout.Layers; l++)
                foreach (var dst in (ReadOnlySpan<float[]>)[keys[l], values[l]])
                    for (int h = 0; h < layout.KvHeads; h++, o += row)
                        src.Slice(o, row).CopyTo(dst.AsSpan(checked((int)layout.Index(h, start, 0)), row));
        }
    }
}

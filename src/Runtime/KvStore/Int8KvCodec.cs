using System.Buffers.Binary;

namespace LongCtx.Runtime.KvStore;

/// <summary>
/// Symmetric 8-bit quantization per (layer, K/V, head, token), the usual KV-cache int8 (e.g. KIVI's per-token keys
/// without grouping): scale s = max|x| / 127 over the head's <c>HeadDim</c> channels, q = round(x / s) in [-127, 127],
/// x' = q s. Per chunk, for each layer, K then V, head, token: s as fp32, then <c>HeadDim</c> signed bytes, so
/// <c>HeadDim + 4</c> bytes per (head, token) instead of <c>4 HeadDim</c>.
/// Error bound: |x - x'| &lt;= s / 2 = max|x| / 254 of its (head, token) row (round to nearest; fp32 rounding aside).
/// </summary>
public sealed class Int8KvCodec : IKvCodec
{
    public string Name => "int8";
    public string ErrorBound => "|x - x'| <= max|row| / 254 per (layer, K/V, head, token) row";

    public KvEncoding Encode(KvSnapshot s, KvLayout layout)
    {
        int d = layout.HeadDim;
        var chunks = new byte[layout.Chunks][];
        Parallel.For(0, chunks.Length, i =>
        {
            var (start, n) = layout.Chunk(i);
            var bytes = new byte[2L * layout.Layers * layout.KvHeads * n * (d + 4)];
            int o = 0;
            for (int l = 0; l < layout.Layers; l++)
                foreach (var src in (ReadOnlySpan<float[]>)[s.Keys[l], s.Values[l]])
                    for (int h = 0; h < layout.KvHeads; h++)
                        for (int t = start; t < start + n; t++, o += d + 4)
                        {
                            var x = src.AsSpan(checked((int)layout.Index(h, t, 0)), d);
                            float max = 0;
                            foreach (float v in x) max = Math.Max(max, Math.Abs(v));
                            float scale = max / 127f;
                            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(o), scale);
                            for (int c = 0; c < d; c++)
                                bytes[o + 4 + c] = (byte)(sbyte)(scale == 0 ? 0 : Math.Clamp(MathF.Round(x[c] / scale), -127f, 127f));
                        }
            chunks[i] = bytes;
        });
        return new([], chunks);
    }

    public IKvChunkDecoder OpenDecoder(KvLayout layout, ReadOnlySpan<byte> shared) =>
        shared.Length == 0 ? new Decoder(layout) : throw new InvalidDataException($"the int8 codec has no parameters, found {shared.Length} bytes");

    private sealed class Decoder(KvLayout layout) : IKvChunkDecoder
    {
        public void Decode(int chunk, ReadOnlySpan<byte> payload, float[][] keys, float[][] values)
        {
            int d = layout.HeadDim;
            var (start, n) = layout.Chunk(chunk);
            long want = 2L * layout.Layers * layout.KvHeads * n * (d + 4);
            if (payload.Length != want) throw new InvalidDataException($"int8 chunk {chunk} holds {payload.Length} bytes, expected {want}");
            int o = 0;
            for (int l = 0; l < layout.Layers; l++)
                foreach (var dst in (ReadOnlySpan<float[]>)[keys[l], values[l]])
                    for (int h = 0; h < layout.KvHeads; h++)
                        for (int t = start; t < start + n; t++, o += d + 4)
                        {
                            float scale = BinaryPrimitives.ReadSingleLittleEndian(payload[o..]);
                            if (!float.IsFinite(scale) || scale < 0) throw new InvalidDataException($"int8 chunk {chunk}: scale {scale} is not a finite non-negative number");
                            var x = dst.AsSpan(checked((int)layout.Index(h, t, 0)), d);
                            for (int c = 0; c < d; c++) x[c] = (sbyte)payload[o + 4 + c] * scale;
                        }
        }
    }
}

using System.Buffers.Binary;

namespace LongCtx.Runtime.KvStore;

/// <summary>CacheGen's knobs; a file records them, so the decoder needs none.</summary>
/// <param name="AnchorGroup">Tokens per anchor group inside a chunk: the group's first token is the anchor, the others are coded as deltas against it.</param>
/// <param name="ChannelGroup">Channels (of KvHeads x HeadDim) sharing one delta symbol table per layer and K/V.</param>
/// <param name="KeyLevels">Delta quantization levels L (2L + 1 bins) for keys in the first, middle and last third of the layers.</param>
/// <param name="ValueLevels">The same for values.</param>
public sealed record CacheGenOptions(int AnchorGroup, int ChannelGroup, int[] KeyLevels, int[] ValueLevels)
{
    /// <summary>
    /// One anchor per 256-token chunk, keys at 11/7/7 bins and values at 7/5/5 over the layer thirds: measured on
    /// recall-public at 4096 tokens (KvStoreBench, 10 prompts), 3.6x smaller than int8 at unchanged accuracy; smaller
    /// anchor groups cost more (8-bit anchors) than their deltas save there, and the channel-group size barely matters.
    /// </summary>
    public static CacheGenOptions Default { get; } = new(256, 8, [5, 3, 3], [3, 2, 2]);

    /// <summary>Levels of layer <paramref name="layer"/> of <paramref name="layers"/>: its third's entry (more bins for early layers).</summary>
    public int Levels(bool key, int layer, int layers) => (key ? KeyLevels : ValueLevels)[Math.Min(2, layer * 3 / layers)];

    /// <summary>The settings as <c>--kv-codec cachegen:</c> takes them.</summary>
    public override string ToString() => $"anchor={AnchorGroup},group={ChannelGroup},keys={string.Join('/', KeyLevels)},values={string.Join('/', ValueLevels)}";

    public void Validate()
    {
        if (AnchorGroup < 1 || ChannelGroup < 1) throw new ArgumentException($"cachegen: anchor group {AnchorGroup} and channel group {ChannelGroup} must be positive");
        foreach (int l in KeyLevels.Concat(ValueLevels))
            if (l is < 1 or > CacheGenKvCodec.MaxLevels) throw new ArgumentException($"cachegen: {l} quantization levels; 1..{CacheGenKvCodec.MaxLevels} allowed");
        if (KeyLevels.Length != 3 || ValueLevels.Length != 3) throw new ArgumentException("cachegen: give levels for three layer bands (first, middle, last third)");
    }
}

/// <summary>
/// CacheGen (Liu et al. 2024, "CacheGen: KV Cache Compression and Streaming for Fast Large Language Model Serving",
/// SIGCOMM '24, section 5): the KV cache is cut into chunks (256 tokens here, one file section each, decodable alone)
/// and in each chunk, per (layer, K/V, channel):
/// <list type="number">
/// <item>Token-wise locality: tokens are grouped (<see cref="CacheGenOptions.AnchorGroup"/> consecutive tokens; by
///   default the whole chunk, so one anchor per chunk); the first token of a group is the anchor, quantized to 8 bits
///   (scale s_a = max|anchor| / 127); every other token is coded as its delta d = x - a' against the reconstructed
///   anchor a' (closed loop: no error accumulates).</item>
/// <item>Layer-wise quantization: deltas are quantized symmetrically to 2L + 1 bins, q = round(d / s_d), s_d = max|d| / L,
///   with more levels L for the first third of the layers than the middle and last (the paper's observation that
///   early layers' errors hurt quality most).</item>
/// <item>Arithmetic coding: symbols are range coded (<see cref="RangeEncoder"/>) with static frequency tables per
///   (layer, K/V, channel group) for deltas and per (layer, K/V) for anchors, counted over the whole snapshot and
///   stored once in the shared section (the paper profiles one distribution per channel and layer).</item>
/// </list>
/// Scales s_a, s_d are stored per (chunk, layer, K/V, channel) as fp16, rounded up so every |q| stays in range.
/// Error bound: each element is off by at most half its step, |x - x'| &lt;= s/2; since |d| &lt;= 2 max|x| + s_a/2, this
/// is at most 1.01 max|x| / L, max over the element's (chunk, layer, K/V, channel), L its layer's levels (anchors: max|x| / 254).
/// </summary>
public sealed class CacheGenKvCodec(CacheGenOptions? options = null) : IKvCodec
{
    public const int MaxLevels = 127;
    private const int AnchorAlphabet = 255; // q in [-127, 127]
    private const byte ParamsVersion = 1;

    public CacheGenOptions Options { get; } = options ?? CacheGenOptions.Default;
    public string Name => "cachegen";
    public string ErrorBound => $"|x - x'| <= 1.01 max|x| / L per (chunk, layer, K/V, channel); L = the layer third's levels (keys {string.Join('/', Options.KeyLevels)}, values {string.Join('/', Options.ValueLevels)})";

    /// <summary>One chunk quantized: fp16 scales (s_a, s_d per layer, K/V, channel) and symbols in coding order.</summary>
    private sealed record Quantized(Half[] Scales, byte[] Symbols);

    /// <summary>Per-layer levels, layer-major, K then V.</summary>
    private static int[] LevelsOf(CacheGenOptions o, int layers) =>
        Enumerable.Range(0, layers).SelectMany(l => new[] { o.Levels(true, l, layers), o.Levels(false, l, layers) }).ToArray();

    /// <summary>
    /// The coding order: for each layer, K then V, each channel (head-major), the chunk's tokens in order. Calls
    /// <paramref name="run"/> once per (layer, K/V, channel) with its stream index (layer * 2 + kv), channel and the
    /// offset of its first symbol; tables: anchor table of stream i = i, delta table = streams + i * groups + channel / group.
    /// </summary>
    private static void ForEachRun(KvLayout lay, int tokens, Action<int, int, int> run)
    {
        int channels = lay.KvHeads * lay.HeadDim;
        for (int stream = 0, o = 0; stream < 2 * lay.Layers; stream++)
            for (int c = 0; c < channels; c++, o += tokens) run(stream, c, o);
    }

    private int Groups(KvLayout lay) => (lay.KvHeads * lay.HeadDim + Options.ChannelGroup - 1) / Options.ChannelGroup;
    private int DeltaTable(KvLayout lay, int stream, int channel) => 2 * lay.Layers + stream * Groups(lay) + channel / Options.ChannelGroup;

    public KvEncoding Encode(KvSnapshot s, KvLayout layout)
    {
        Options.Validate();
        int[] levels = LevelsOf(Options, layout.Layers);
        int g = Options.AnchorGroup;
        var q = new Quantized[layout.Chunks];
        Parallel.For(0, q.Length, i => q[i] = Quantize(s, layout, levels, i));

        // statistics over the whole snapshot: one table per (layer, K/V) for anchors, per (layer, K/V, channel group) for deltas
        var counts = new long[2 * layout.Layers * (1 + Groups(layout))][];
        for (int t = 0; t < counts.Length; t++) counts[t] = new long[t < 2 * layout.Layers ? AnchorAlphabet : 2 * levels[(t - 2 * layout.Layers) / Groups(layout)] + 1];
        for (int i = 0; i < q.Length; i++)
        {
            int n = layout.Chunk(i).Count;
            var sym = q[i].Symbols;
            ForEachRun(layout, n, (stream, c, o) =>
            {
                var anchors = counts[stream];
                var deltas = counts[DeltaTable(layout, stream, c)];
                for (int t = 0; t < n; t++) (t % g == 0 ? anchors : deltas)[sym[o + t]]++;
            });
        }
        var tables = counts.Select(c => SymbolTable.FromCounts(c)).ToArray();

        var shared = new List<byte> { ParamsVersion };
        VarInt.Write(shared, (uint)g);
        VarInt.Write(shared, (uint)Options.ChannelGroup);
        foreach (int l in levels) shared.Add((byte)l);
        foreach (var t in tables) t.Write(shared);

        var chunks = new byte[q.Length][];
        Parallel.For(0, q.Length, i =>
        {
            int n = layout.Chunk(i).Count;
            var (scales, sym) = q[i];
            var o = new List<byte>(scales.Length * 2 + sym.Length / 2);
            Span<byte> h = stackalloc byte[2];
            foreach (var scale in scales) { BinaryPrimitives.WriteHalfLittleEndian(h, scale); o.Add(h[0]); o.Add(h[1]); }
            var enc = new RangeEncoder(o);
            ForEachRun(layout, n, (stream, c, off) =>
            {
                var anchors = tables[stream];
                var deltas = tables[DeltaTable(layout, stream, c)];
                for (int t = 0; t < n; t++) enc.Encode(t % g == 0 ? anchors : deltas, sym[off + t]);
            });
            enc.Finish();
            chunks[i] = o.ToArray();
        });
        return new(shared.ToArray(), chunks);
    }

    /// <summary>Smallest fp16 at or above <paramref name="v"/> (v &gt;= 0), so quantizing with it never leaves the range.</summary>
    private static Half StepUp(float v)
    {
        if (v == 0) return Half.Zero;
        var h = (Half)v;
        if ((float)h < v) h = Half.BitIncrement(h);
        if (Half.IsInfinity(h)) throw new ArgumentException($"cachegen: a KV value of magnitude {v:G3} times the levels is beyond fp16 scales; use --kv-codec raw or int8");
        return h;
    }

    private static int Round(float x, float step, int levels) => step == 0 ? 0 : (int)Math.Clamp(MathF.Round(x / step), -levels, levels);

    private Quantized Quantize(KvSnapshot s, KvLayout lay, int[] levels, int chunk)
    {
        var (start, n) = lay.Chunk(chunk);
        int d = lay.HeadDim, g = Options.AnchorGroup;
        var scales = new Half[2 * 2 * lay.Layers * lay.KvHeads * d];
        var sym = new byte[2 * lay.Layers * lay.KvHeads * d * n];
        var x = new float[n];
        var anchor = new float[(n + g - 1) / g];
        ForEachRun(lay, n, (stream, c, o) =>
        {
            var src = stream % 2 == 0 ? s.Keys[stream / 2] : s.Values[stream / 2];
            int h = c / d, ch = c % d, levelsD = levels[stream];
            long at = lay.Index(h, start, ch);
            float amax = 0, dmax = 0;
            for (int t = 0; t < n; t++)
            {
                x[t] = src[at + (long)t * d];
                if (!float.IsFinite(x[t])) throw new ArgumentException($"cachegen: layer {stream / 2} {(stream % 2 == 0 ? "key" : "value")} holds a non-finite value at token {start + t}");
                if (t % g == 0) amax = Math.Max(amax, Math.Abs(x[t]));
            }
            var sa = StepUp(amax / 127f);
            for (int t = 0; t < n; t += g)
            {
                int qa = Round(x[t], (float)sa, 127);
                anchor[t / g] = qa * (float)sa;
                sym[o + t] = (byte)(qa + 127);
            }
            for (int t = 0; t < n; t++) if (t % g != 0) dmax = Math.Max(dmax, Math.Abs(x[t] - anchor[t / g]));
            var sd = StepUp(dmax / levelsD);
            for (int t = 0; t < n; t++) if (t % g != 0) sym[o + t] = (byte)(Round(x[t] - anchor[t / g], (float)sd, levelsD) + levelsD);
            scales[2 * (o / n)] = sa;
            scales[2 * (o / n) + 1] = sd;
        });
        return new(scales, sym);
    }

    public IKvChunkDecoder OpenDecoder(KvLayout layout, ReadOnlySpan<byte> shared)
    {
        if (shared.IsEmpty || shared[0] != ParamsVersion) throw new InvalidDataException($"cachegen parameters of version {(shared.IsEmpty ? "none" : shared[0])}; this lcc reads version {ParamsVersion}");
        var src = shared[1..];
        uint g = VarInt.Read(ref src), cg = VarInt.Read(ref src);
        if (g is 0 or > 1 << 20 || cg is 0 or > 1 << 20) throw new InvalidDataException($"cachegen anchor group {g} / channel group {cg} out of range");
        int streams = 2 * layout.Layers;
        if (src.Length < streams) throw new InvalidDataException("cachegen parameters end before the per-layer levels");
        var levels = new int[streams];
        for (int i = 0; i < streams; i++)
            levels[i] = src[i] is >= 1 and <= MaxLevels ? src[i] : throw new InvalidDataException($"cachegen levels {src[i]} out of range 1..{MaxLevels}");
        src = src[streams..];
        var codec = new CacheGenKvCodec(Options with { AnchorGroup = (int)g, ChannelGroup = (int)cg });
        int groups = codec.Groups(layout);
        var tables = new SymbolTable[streams * (1 + groups)];
        for (int t = 0; t < tables.Length; t++)
            tables[t] = SymbolTable.Read(ref src, t < streams ? AnchorAlphabet : 2 * levels[(t - streams) / groups] + 1);
        if (!src.IsEmpty) throw new InvalidDataException($"cachegen parameters have {src.Length} bytes after the last symbol table");
        return new Decoder(codec, layout, levels, tables);
    }

    private sealed class Decoder(CacheGenKvCodec codec, KvLayout lay, int[] levels, SymbolTable[] tables) : IKvChunkDecoder
    {
        public void Decode(int chunk, ReadOnlySpan<byte> payload, float[][] keys, float[][] values)
        {
            var (start, n) = lay.Chunk(chunk);
            int d = lay.HeadDim, g = codec.Options.AnchorGroup, channels = lay.KvHeads * d;
            int scaleBytes = 2 * 2 * 2 * lay.Layers * channels;
            if (payload.Length < scaleBytes + 5) throw new InvalidDataException($"cachegen chunk {chunk} holds {payload.Length} bytes, fewer than its {scaleBytes} bytes of scales");
            var rc = new RangeDecoder(payload[scaleBytes..]);
            for (int stream = 0, run = 0; stream < 2 * lay.Layers; stream++)
            {
                var dst = stream % 2 == 0 ? keys[stream / 2] : values[stream / 2];
                var anchors = tables[stream];
                int levelsD = levels[stream];
                for (int c = 0; c < channels; c++, run++)
                {
                    float sa = Scale(payload, 2 * run, chunk), sd = Scale(payload, 2 * run + 1, chunk), a = 0;
                    var deltas = tables[codec.DeltaTable(lay, stream, c)];
                    long at = lay.Index(c / d, start, c % d);
                    for (int t = 0; t < n; t++)
                    {
                        float v;
                        if (t % g == 0) v = a = (rc.Decode(anchors) - 127) * sa;
                        else v = a + (rc.Decode(deltas) - levelsD) * sd;
                        dst[at + (long)t * d] = v;
                    }
                }
            }
        }

        private static float Scale(ReadOnlySpan<byte> payload, int i, int chunk)
        {
            float s = (float)BinaryPrimitives.ReadHalfLittleEndian(payload[(2 * i)..]);
            return float.IsFinite(s) && s >= 0 ? s : throw new InvalidDataException($"cachegen chunk {chunk}: scale {s} is not a finite non-negative number");
        }
    }
}

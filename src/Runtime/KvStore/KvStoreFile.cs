using System.Buffers.Binary;
using System.Text;
using LongCtx.Contract;

namespace LongCtx.Runtime.KvStore;

/// <summary>What a KV-store file's header says.</summary>
public sealed record KvStoreHeader(string ModelHash, KvLayout Layout, int NextPosition, string Codec, int Sections);

/// <summary>
/// The KV-store file: one <see cref="KvSnapshot"/> encoded by an <see cref="IKvCodec"/>. Little-endian:
/// <code>
/// magic "LCKV\r\n\x1A\n" | u32 version | u32 header length | header | u32 CRC-32C(header)
/// header: varint-prefixed UTF-8 model hash, i32 layers, kv heads, head dim, tokens, next position, chunk tokens,
///         varint-prefixed codec name, i32 section count (= 2 + chunks)
/// sections, each: u64 length | bytes | u32 CRC-32C(bytes):  token ids (i32 each), codec shared, chunk 0, chunk 1, ...
/// </code>
/// and nothing after the last section. Writes are atomic (a temporary file in the target's folder, flushed to disk, then
/// renamed over the target; removed on failure). Loads check the version, the model hash, every length against the bytes
/// left in the file and every checksum, then decode the chunks in parallel; any failure is a one-line
/// <see cref="KvStoreException"/> and returns nothing.
/// </summary>
public static class KvStoreFile
{
    public const int Version = 1;
    public const int DefaultChunkTokens = 256;
    private static ReadOnlySpan<byte> Magic => "LCKV\r\n\u001A\n"u8;
    private const int MaxHeaderBytes = 1 << 16;

    /// <summary>Encodes <paramref name="snapshot"/> with <paramref name="codec"/> and writes it to <paramref name="path"/> atomically.</summary>
    public static void Save(string path, KvSnapshot snapshot, IKvCodec codec, int chunkTokens = DefaultChunkTokens)
    {
        snapshot.Validate();
        if (chunkTokens < 1) throw new ArgumentException($"KV store: chunk of {chunkTokens} tokens; must be positive");
        CheckFinite(snapshot);
        var layout = KvLayout.Of(snapshot, chunkTokens);
        var enc = codec.Encode(snapshot, layout);

        var header = new List<byte>();
        WriteString(header, snapshot.ModelHash);
        Span<byte> i32 = stackalloc byte[4];
        foreach (int v in new[] { snapshot.Layers, snapshot.KvHeads, snapshot.HeadDim, snapshot.Length, snapshot.NextPosition, chunkTokens })
        {
            BinaryPrimitives.WriteInt32LittleEndian(i32, v);
            header.AddRange(i32);
        }
        WriteString(header, codec.Name);
        BinaryPrimitives.WriteInt32LittleEndian(i32, 2 + enc.Chunks.Length);
        header.AddRange(i32);
        var tokens = new byte[4L * snapshot.Length];
        for (int t = 0; t < snapshot.Length; t++) BinaryPrimitives.WriteInt32LittleEndian(tokens.AsSpan(4 * t), snapshot.Tokens[t]);

        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"KV store: folder {dir} does not exist; create it or save elsewhere");
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                fs.Write(Magic);
                WriteU32(fs, Version);
                var h = header.ToArray();
                WriteU32(fs, (uint)h.Length);
                fs.Write(h);
                WriteU32(fs, Crc32C.Compute(h));
                WriteSection(fs, tokens);
                WriteSection(fs, enc.Shared);
                foreach (var c in enc.Chunks) WriteSection(fs, c);
                fs.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } // best effort: the original error is what matters
            throw;
        }
    }

    /// <summary>Reads only the header (format, version and header checksum checked).</summary>
    public static KvStoreHeader ReadHeader(string path)
    {
        using var fs = Open(path);
        return ReadHeader(fs, path);
    }

    /// <summary>
    /// Loads a file written by <see cref="Save"/>. With <paramref name="expectedModelHash"/>, a file from another model is
    /// refused before anything is decoded.
    /// </summary>
    public static KvSnapshot Load(string path, string? expectedModelHash = null)
    {
        using var fs = Open(path);
        var header = ReadHeader(fs, path);
        if (expectedModelHash is not null && header.ModelHash != expectedModelHash)
            throw new KvStoreException($"KV file {path} was saved from model {header.ModelHash}, not this model ({expectedModelHash}); save the KV again with this model", KvStoreError.ModelMismatch);
        var lay = header.Layout;
        var tokens = ReadSection(fs, path, "token ids");
        if (tokens.Length != 4L * lay.Length) throw Bad(path, $"token section holds {tokens.Length} bytes, expected {4L * lay.Length}");
        var ids = new int[lay.Length];
        for (int t = 0; t < ids.Length; t++) ids[t] = BinaryPrimitives.ReadInt32LittleEndian(tokens.AsSpan(4 * t));
        var shared = ReadSection(fs, path, "codec parameters");
        var chunks = new byte[lay.Chunks][];
        for (int i = 0; i < chunks.Length; i++) chunks[i] = ReadSection(fs, path, $"chunk {i}");
        if (fs.Position != fs.Length) throw Bad(path, $"{fs.Length - fs.Position} bytes follow the last section");

        IKvCodec codec;
        try { codec = KvCodecs.Get(header.Codec); }
        catch (ArgumentException) { throw Bad(path, $"unknown codec '{header.Codec}' (this lcc knows {string.Join(", ", KvCodecs.Names)})"); }
        long per = (long)lay.KvHeads * lay.Length * lay.HeadDim;
        var keys = new float[lay.Layers][];
        var values = new float[lay.Layers][];
        for (int l = 0; l < lay.Layers; l++) { keys[l] = new float[per]; values[l] = new float[per]; }
        try
        {
            var decoder = codec.OpenDecoder(lay, shared);
            Parallel.For(0, chunks.Length, i => decoder.Decode(i, chunks[i], keys, values));
        }
        catch (AggregateException e) when (e.InnerExceptions.All(x => x is InvalidDataException))
        {
            throw Bad(path, e.InnerExceptions[0].Message, e.InnerExceptions[0]);
        }
        catch (InvalidDataException e) { throw Bad(path, e.Message, e); }
        var snap = new KvSnapshot(header.ModelHash, lay.Layers, lay.KvHeads, lay.HeadDim, ids, header.NextPosition, keys, values);
        try { snap.Validate(); }
        catch (ArgumentException e) { throw Bad(path, e.Message, e); }
        return snap;
    }

    /// <summary>Through the SafeFile gate: a FIFO, device or other non-regular file is refused before it is opened.</summary>
    private static FileStream Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"KV file {path} not found", path);
        return SafeFile.OpenRead(path, what: $"KV file {path}");
    }

    private static KvStoreHeader ReadHeader(FileStream fs, string path)
    {
        Span<byte> magic = stackalloc byte[8];
        int got = fs.ReadAtLeast(magic, magic.Length, false);
        if (!magic[..got].SequenceEqual(Magic[..got]) || got == 0) throw Bad(path, "not an lcc KV-store file (no LCKV magic)");
        if (got < magic.Length) throw Truncated(path, "preamble");
        uint version = ReadU32(fs, path);
        if (version != Version)
            throw new KvStoreException($"KV file {path} has format version {version}; this lcc reads version {Version}; save the KV again with this lcc", KvStoreError.Version);
        uint length = ReadU32(fs, path);
        if (length > MaxHeaderBytes) throw Bad(path, $"header of {length} bytes (at most {MaxHeaderBytes})");
        var h = ReadExactly(fs, path, length + 4, "header");
        var body = h.AsSpan(0, (int)length);
        if (Crc32C.Compute(body) != BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan((int)length)))
            throw new KvStoreException($"KV file {path} is corrupted: the header checksum does not match; save the KV again", KvStoreError.Corrupted);
        try
        {
            var src = (ReadOnlySpan<byte>)body;
            string hash = ReadString(ref src);
            var f = new int[6];
            for (int i = 0; i < f.Length; i++) f[i] = ReadI32(ref src);
            string codec = ReadString(ref src);
            int sections = ReadI32(ref src);
            if (!src.IsEmpty) throw new InvalidDataException($"{src.Length} unknown bytes at the end of the header");
            var lay = new KvLayout(f[0], f[1], f[2], f[3], f[5]);
            if (lay.Layers < 1 || lay.KvHeads < 1 || lay.HeadDim < 1 || lay.Length < 0 || lay.ChunkTokens < 1 || f[4] < lay.Length)
                throw new InvalidDataException($"shape layers {lay.Layers}, kv heads {lay.KvHeads}, head dim {lay.HeadDim}, tokens {lay.Length}, next position {f[4]}, chunk {lay.ChunkTokens} is not valid");
            long per = (long)lay.KvHeads * lay.Length * lay.HeadDim;
            if (per > Array.MaxLength || (long)lay.Layers * lay.KvHeads * lay.HeadDim > int.MaxValue)
                throw new InvalidDataException($"shape layers {lay.Layers} x kv heads {lay.KvHeads} x tokens {lay.Length} x head dim {lay.HeadDim} is larger than this lcc loads");
            long decoded = 2L * lay.Layers * per * sizeof(float), memory = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
            if (memory > 0 && decoded > memory) // 0 before the first collection: no figure to compare with
                throw new InvalidDataException($"decoding needs {decoded / (1 << 20)} MiB, more than the {memory / (1 << 20)} MiB this process may use");
            if (sections != 2 + lay.Chunks) throw new InvalidDataException($"{sections} sections for {lay.Chunks} chunks");
            // every section takes at least 12 bytes (length + checksum) and every token id 4: a header promising more than
            // the file holds is a truncated file, found before anything is allocated
            if (12L * sections + 4L * lay.Length > fs.Length - fs.Position) throw Truncated(path, "sections");
            return new(hash, lay, f[4], codec, sections);
        }
        catch (InvalidDataException e) { throw Bad(path, e.Message, e); }
    }

    private static byte[] ReadSection(FileStream fs, string path, string what)
    {
        Span<byte> u64 = stackalloc byte[8];
        if (fs.ReadAtLeast(u64, 8, false) != 8) throw Truncated(path, what);
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(u64);
        if (length > (ulong)(fs.Length - fs.Position)) throw Truncated(path, what);
        if (length + 4 > (ulong)Array.MaxLength) throw Bad(path, $"{what} of {length} bytes is larger than this lcc reads");
        var b = ReadExactly(fs, path, (uint)length + 4, what);
        var body = b.AsSpan(0, (int)length);
        if (Crc32C.Compute(body) != BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)length)))
            throw new KvStoreException($"KV file {path} is corrupted: the checksum of its {what} does not match; save the KV again", KvStoreError.Corrupted);
        return body.ToArray();
    }

    private static byte[] ReadExactly(FileStream fs, string path, long count, string what)
    {
        if (count > fs.Length - fs.Position) throw Truncated(path, what);
        var b = new byte[count];
        if (fs.ReadAtLeast(b, b.Length, false) != b.Length) throw Truncated(path, what);
        return b;
    }

    private static KvStoreException Truncated(string path, string what) =>
        new($"KV file {path} is truncated: it ends inside its {what}; save the KV again", KvStoreError.Truncated);

    private static KvStoreException Bad(string path, string why, Exception? inner = null) =>
        new($"KV file {path} is not a valid KV store: {why}", KvStoreError.Format, inner);

    private static void CheckFinite(KvSnapshot s)
    {
        for (int l = 0; l < s.Layers; l++)
            foreach (var (a, what) in new[] { (s.Keys[l], "keys"), (s.Values[l], "values") })
                if (!AllFinite(a))
                    throw new ArgumentException($"KV snapshot: layer {l} {what} hold a non-finite value; nothing saved");
    }

    private static bool AllFinite(float[] a)
    {
        foreach (float v in a) if (!float.IsFinite(v)) return false;
        return true;
    }

    private static void WriteSection(Stream s, byte[] body)
    {
        Span<byte> u64 = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(u64, (ulong)body.Length);
        s.Write(u64);
        s.Write(body);
        WriteU32(s, Crc32C.Compute(body));
    }

    private static void WriteU32(Stream s, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        s.Write(b);
    }

    private static uint ReadU32(FileStream fs, string path)
    {
        Span<byte> b = stackalloc byte[4];
        if (fs.ReadAtLeast(b, 4, false) != 4) throw Truncated(path, "preamble");
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    private static void WriteString(List<byte> o, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        VarInt.Write(o, (uint)b.Length);
        o.AddRange(b);
    }

    private static string ReadString(ref ReadOnlySpan<byte> src)
    {
        uint n = VarInt.Read(ref src);
        if (n > src.Length) throw new InvalidDataException("a string runs past the end of the header");
        var s = Encoding.UTF8.GetString(src[..(int)n]);
        src = src[(int)n..];
        return s;
    }

    private static int ReadI32(ref ReadOnlySpan<byte> src)
    {
        if (src.Length < 4) throw new InvalidDataException("the header ends early");
        int v = BinaryPrimitives.ReadInt32LittleEndian(src);
        src = src[4..];
        return v;
    }
}

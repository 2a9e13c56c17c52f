using Google.Protobuf;
using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace LongCtx.Compiler.IR;

/// <summary>Where a tensor's bytes live. Sources are immutable; external ones are read lazily.</summary>
public abstract class TensorSource
{
    /// <summary>Number of raw little-endian bytes.</summary>
    public abstract long ByteLength { get; }
    /// <summary>Reads the whole payload into memory (avoid for multi-GB weights; prefer <see cref="CopyTo"/>).</summary>
    public abstract byte[] ReadAll();
    /// <summary>Streams the payload to <paramref name="destination"/> without materialising it whole.</summary>
    public virtual void CopyTo(Stream destination) { var b = ReadAll(); destination.Write(b); }
}

/// <summary>Bytes held in memory.</summary>
public sealed class InMemorySource(ReadOnlyMemory<byte> bytes) : TensorSource
{
    public ReadOnlyMemory<byte> Bytes { get; } = bytes;
    public override long ByteLength => Bytes.Length;
    public override byte[] ReadAll() => Bytes.ToArray();
    public override void CopyTo(Stream destination) => destination.Write(Bytes.Span);
}

/// <summary>Bytes in an external-data file: read only when asked. <see cref="Path"/> is the real path the reader
/// checked; every open checks again (still that real path, still a regular file long enough) so that a file swapped
/// for a link or a FIFO after loading is refused rather than followed.</summary>
public sealed class ExternalSource(string path, long offset, long length) : TensorSource
{
    public string Path { get; } = path;
    public long Offset { get; } = offset;
    public override long ByteLength { get; } = length;

    public override byte[] ReadAll()
    {
        if (ByteLength > Array.MaxLength) throw new InvalidOperationException($"external tensor in {Path} is {ByteLength} bytes: too large to read into one array; stream it");
        var buf = new byte[ByteLength];
        using var h = Open();
        long done = 0;
        while (done < ByteLength)
        {
            int n = RandomAccess.Read(h, buf.AsSpan((int)done), Offset + done);
            if (n <= 0) throw new EndOfStreamException($"external data file {Path} ended at {Offset + done}, expected {Offset + ByteLength} bytes");
            done += n;
        }
        return buf;
    }

    private Microsoft.Win32.SafeHandles.SafeFileHandle Open()
    {
        var (real, _) = LongCtx.Contract.SafeFile.Check(Path, need: Offset + ByteLength, what: $"external data file {Path}");
        if (real != Path) throw new LongCtx.Contract.UnsafeFileException($"external data file {Path} became a link to {real} after the model was loaded; refusing it");
        return File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
    }

    public override void CopyTo(Stream destination)
    {
        using var h = Open();
        var buf = new byte[1 << 20];
        long done = 0;
        while (done < ByteLength)
        {
            int want = (int)Math.Min(buf.Length, ByteLength - done);
            int n = RandomAccess.Read(h, buf.AsSpan(0, want), Offset + done);
            if (n <= 0) throw new EndOfStreamException($"external data file {Path} ended at {Offset + done}, expected {Offset + ByteLength} bytes");
            destination.Write(buf, 0, n);
            done += n;
        }
    }
}

/// <summary>Constant tensor data: element type, dims and a byte source. Immutable.</summary>
public sealed class Tensor
{
    public ElementType Element { get; }
    public ImmutableArray<long> Dims { get; }
    public TensorSource Source { get; }
    /// <summary>String tensors and other payloads kept as the original protobuf (never re-encoded).</summary>
    internal global::Onnx.TensorProto? OpaqueProto { get; }

    public Tensor(ElementType element, IEnumerable<long> dims, TensorSource source)
    {
        Element = element;
        Dims = dims.ToImmutableArray();
        Source = source;
        long expect = element.ByteCount(ElementCount);
        if (element != ElementType.String && element.BitWidth() > 0 && source.ByteLength != expect)
            throw new ArgumentException($"tensor data has {source.ByteLength} bytes, but {element.ShortName()}[{string.Join(",", Dims)}] needs {expect}");
    }

    internal Tensor(ElementType element, IEnumerable<long> dims, global::Onnx.TensorProto opaque)
    {
        Element = element;
        Dims = dims.ToImmutableArray();
        OpaqueProto = opaque;
        Source = new InMemorySource(opaque.ToByteArray());
    }

    public long ElementCount => Dims.Aggregate(1L, (a, d) => a * d);
    public long ByteLength => OpaqueProto is null ? Source.ByteLength : 0;
    public bool IsExternal => Source is ExternalSource;

    public static Tensor FromFloats(ReadOnlySpan<float> data, params long[] dims) => new(ElementType.Float, dims, new InMemorySource(MemoryMarshal.AsBytes(data).ToArray()));
    public static Tensor FromInt64s(ReadOnlySpan<long> data, params long[] dims) => new(ElementType.Int64, dims, new InMemorySource(MemoryMarshal.AsBytes(data).ToArray()));
    public static Tensor FromInt32s(ReadOnlySpan<int> data, params long[] dims) => new(ElementType.Int32, dims, new InMemorySource(MemoryMarshal.AsBytes(data).ToArray()));
    public static Tensor FromHalves(ReadOnlySpan<Half> data, params long[] dims) => new(ElementType.Float16, dims, new InMemorySource(MemoryMarshal.AsBytes(data).ToArray()));
    public static Tensor Scalar(float v) => FromFloats([v]);
    public static Tensor Scalar(long v) => FromInt64s([v]);

    /// <summary>Values as float32 (float, float16, bfloat16, double, integer types converted).</summary>
    public float[] ToFloats()
    {
        var b = Source.ReadAll();
        int n = checked((int)ElementCount);
        var r = new float[n];
        switch (Element)
        {
            case ElementType.Float: MemoryMarshal.Cast<byte, float>(b).CopyTo(r); break;
            case ElementType.Float16: { var h = MemoryMarshal.Cast<byte, Half>(b); for (int i = 0; i < n; i++) r[i] = (float)h[i]; break; }
            case ElementType.BFloat16: for (int i = 0; i < n; i++) r[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(2 * i)) << 16); break;
            case ElementType.Double: { var d = MemoryMarshal.Cast<byte, double>(b); for (int i = 0; i < n; i++) r[i] = (float)d[i]; break; }
            default: { var l = ToInt64s(); for (int i = 0; i < n; i++) r[i] = l[i]; break; }
        }
        return r;
    }

    /// <summary>Values as int64 (integer and bool types).</summary>
    public long[] ToInt64s()
    {
        var b = Source.ReadAll();
        int n = checked((int)ElementCount);
        var r = new long[n];
        for (int i = 0; i < n; i++)
        {
            r[i] = Element switch
            {
                ElementType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(8 * i)),
                ElementType.UInt64 => (long)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(8 * i)),
                ElementType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(4 * i)),
                ElementType.UInt32 => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(4 * i)),
                ElementType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(b.AsSpan(2 * i)),
                ElementType.UInt16 => BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(2 * i)),
                ElementType.Int8 => (sbyte)b[i],
                ElementType.UInt8 or ElementType.Bool => b[i],
                ElementType.Float => (long)BitConverter.ToSingle(b, 4 * i),
                ElementType.Double => (long)BitConverter.ToDouble(b, 8 * i),
                _ => throw new NotSupportedException($"cannot read {Element.ShortName()} tensor as integers"),
            };
        }
        return r;
    }

    /// <summary>SHA-256 over element type, dims and payload, streamed; hex, first 16 chars.</summary>
    public string ContentHash() => _hash ??= ComputeHash();
    private string? _hash;

    private string ComputeHash()
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(BitConverter.GetBytes((int)Element));
        foreach (var d in Dims) sha.AppendData(BitConverter.GetBytes(d));
        using (var s = new HashStream(sha)) Source.CopyTo(s);
        return Convert.ToHexStringLower(sha.GetHashAndReset())[..16];
    }

    public override string ToString() => $"{Element.ShortName()}[{string.Join(",", Dims)}]";

    private sealed class HashStream(IncrementalHash h) : Stream
    {
        public override void Write(byte[] buffer, int offset, int count) => h.AppendData(buffer, offset, count);
        public override void Write(ReadOnlySpan<byte> buffer) => h.AppendData(buffer);
        public override bool CanRead => false; public override bool CanSeek => false; public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException(); public override long Position { get => 0; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

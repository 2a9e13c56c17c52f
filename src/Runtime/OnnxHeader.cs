namespace LongCtx.Runtime;

/// <summary>
/// Reads the opset imports of an ONNX ModelProto without parsing the graph: a minimal protobuf
/// walk over the top-level fields (field 8 = opset_import {1: domain, 2: version}); every other
/// field is skipped by its length, so a large model costs a few seeks.
/// </summary>
internal static class OnnxHeader
{
    public static IReadOnlyDictionary<string, long> ReadOpsets(Stream s)
    {
        var result = new Dictionary<string, long>();
        while (s.Position < s.Length)
        {
            ulong key = ReadVarint(s);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: ReadVarint(s); break;
                case 1: s.Seek(8, SeekOrigin.Current); break;
                case 5: s.Seek(4, SeekOrigin.Current); break;
                case 2:
                    long len = (long)ReadVarint(s);
                    if (field == 8)
                    {
                        var buf = new byte[len];
                        s.ReadExactly(buf);
                        var (domain, version) = ParseOpset(buf);
                        result[domain] = version;
                    }
                    else s.Seek(len, SeekOrigin.Current);
                    break;
                default: throw new InvalidDataException($"not an ONNX model (protobuf wire type {wire} at byte {s.Position})");
            }
        }
        return result;
    }

    private static (string, long) ParseOpset(byte[] b)
    {
        using var ms = new MemoryStream(b);
        string domain = ""; long version = 0;
        while (ms.Position < ms.Length)
        {
            ulong key = ReadVarint(ms);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            if (wire == 2)
            {
                int len = (int)ReadVarint(ms);
                var bytes = new byte[len];
                ms.ReadExactly(bytes);
                if (field == 1) domain = System.Text.Encoding.UTF8.GetString(bytes);
            }
            else if (wire == 0) { ulong v = ReadVarint(ms); if (field == 2) version = (long)v; }
            else throw new InvalidDataException("malformed opset_import");
        }
        return (domain, version);
    }

    /// <summary>One protobuf base-128 varint (shared with <see cref="OnnxGraphScan"/>).</summary>
    internal static ulong ReadVarint(Stream s)
    {
        ulong v = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            int b = s.ReadByte();
            if (b < 0) throw new EndOfStreamException("truncated ONNX file");
            v |= (ulong)(b & 0x7f) << shift;
            if ((b & 0x80) == 0) return v;
        }
        throw new InvalidDataException("malformed varint");
    }
}

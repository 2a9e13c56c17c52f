using System.Collections.Immutable;
using Google.Protobuf;
using LongCtx.Compiler.IR;
using LongCtx.Contract;
using P = Onnx;

namespace LongCtx.Compiler.OnnxIO;

/// <summary>A model file that cannot be loaded. The message names the file and what is wrong.</summary>
public sealed class ModelFormatException(string message) : Exception(message);

/// <summary>Loads ONNX files into the IR. External data is checked (path, size) but not read.</summary>
public static class OnnxReader
{
    public const long MinIrVersion = 3;
    public const long MaxIrVersion = 12;

    public static Model Load(string path)
    {
        string file = Path.GetFileName(path);
        if (!File.Exists(path) && !Directory.Exists(path)) throw new ModelFormatException($"{path}: file not found");
        long size;
        try { size = SafeFile.Check(path, what: path).Size; }
        catch (UnsafeFileException e) { throw new ModelFormatException(e.Message); }
        if (size == 0) throw new ModelFormatException($"{file}: empty file, not an ONNX model");
        P.ModelProto proto;
        try
        {
            using var fs = SafeFile.OpenRead(path, what: path);
            proto = P.ModelProto.Parser.ParseFrom(fs);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ModelFormatException($"{file}: not a valid ONNX model (protobuf parse failed: {e.Message.TrimEnd('.')}; the file may be truncated or not ONNX)");
        }
        return FromProto(proto, Path.GetFullPath(path));
    }

    public static Model FromBytes(byte[] bytes, string displayName = "<memory>", string? baseDir = null)
    {
        if (bytes.Length == 0) throw new ModelFormatException($"{displayName}: empty file, not an ONNX model");
        P.ModelProto proto;
        try { proto = P.ModelProto.Parser.ParseFrom(bytes); }
        catch (InvalidProtocolBufferException e) { throw new ModelFormatException($"{displayName}: not a valid ONNX model (protobuf parse failed: {e.Message.TrimEnd('.')})"); }
        return FromProto(proto, baseDir is null ? null : Path.Combine(baseDir, displayName));
    }

    public static Model FromProto(P.ModelProto proto, string? sourcePath)
    {
        string file = sourcePath is null ? "<memory>" : Path.GetFileName(sourcePath);
        if (proto.Graph is null)
            throw new ModelFormatException($"{file}: not an ONNX model (no graph; is this really an .onnx file?)");
        if (proto.IrVersion < MinIrVersion || proto.IrVersion > MaxIrVersion)
            throw new ModelFormatException($"{file}: unsupported IR version {proto.IrVersion} (LongCtx reads IR versions {MinIrVersion}-{MaxIrVersion}); re-export the model with a supported ONNX version");
        var ctx = new Ctx(file, sourcePath is null ? null : Path.GetDirectoryName(sourcePath)!);
        var model = new Model(new Graph(proto.Graph.Name))
        {
            IrVersion = proto.IrVersion,
            ProducerName = proto.ProducerName,
            ProducerVersion = proto.ProducerVersion,
            Domain = proto.Domain,
            ModelVersion = proto.ModelVersion,
            DocString = proto.DocString,
            SourcePath = sourcePath,
        };
        foreach (var o in proto.OpsetImport) model.Opsets[Node.NormalizeDomain(o.Domain)] = o.Version;
        foreach (var kv in proto.MetadataProps) model.MetadataProps.Add(new(kv.Key, kv.Value));
        var residual = proto.Clone();
        residual.Graph = null;
        residual.OpsetImport.Clear();
        residual.MetadataProps.Clear();
        model.Residual = residual;
        ReadGraph(proto.Graph, model.Graph, new Dictionary<string, Value>(StringComparer.Ordinal), ctx);
        return model;
    }

    internal sealed record Ctx(string File, string? BaseDir);

    private static void ReadGraph(P.GraphProto gp, Graph g, Dictionary<string, Value> outer, Ctx ctx)
    {
        g.DocString = gp.DocString.Length > 0 ? gp.DocString : null;
        var residual = gp.Clone();
        residual.Node.Clear(); residual.Input.Clear(); residual.Output.Clear(); residual.Initializer.Clear(); residual.ValueInfo.Clear(); residual.SparseInitializer.Clear();
        g.Residual = residual;
        var scope = new Dictionary<string, Value>(outer, StringComparer.Ordinal);
        var local = new HashSet<string>(StringComparer.Ordinal);
        string where = g.Parent is null ? "" : $" (subgraph '{g.Name}')";

        void Define(Value v, string what)
        {
            if (!local.Add(v.Name))
                throw new ModelFormatException($"{ctx.File}: duplicate value name '{v.Name}'{where}: {what} redefines it; value names must be unique");
            if (outer.ContainsKey(v.Name))
                throw new ModelFormatException($"{ctx.File}: value name '{v.Name}'{where} shadows a value of the enclosing graph; ONNX forbids this");
            scope[v.Name] = v;
        }

        foreach (var vi in gp.Input)
        {
            var v = new Value(g, vi.Name, TypeOf(vi.Type)) { RawType = vi.Type, InfoResidual = InfoResidual(vi) };
            Define(v, "graph input");
            g.InputList.Add(v);
        }
        foreach (var tp in gp.Initializer)
        {
            var t = ReadTensor(tp, ctx);
            if (scope.TryGetValue(tp.Name, out var existing) && local.Contains(tp.Name) && existing.IsGraphInput && existing.Const is null)
            {
                existing.Const = t;
                existing.ConstResidual = TensorResidual(tp);
                existing.Type ??= new TensorType(t.Element, new Shape(t.Dims.Select(Dim.Of).ToArray()));
                g.InitializerList.Add(existing);
                continue;
            }
            var v = new Value(g, tp.Name, new TensorType(t.Element, new Shape(t.Dims.Select(Dim.Of).ToArray()))) { Const = t, ConstResidual = TensorResidual(tp) };
            Define(v, "initializer");
            g.InitializerList.Add(v);
        }
        foreach (var sp in gp.SparseInitializer)
        {
            // A sparse initializer becomes a dense one (written back dense): nodes read it like any initializer.
            var t = Densify(sp, ctx);
            string name = sp.Values?.Name ?? "";
            var v = new Value(g, name, new TensorType(t.Element, new Shape(t.Dims.Select(Dim.Of).ToArray()))) { Const = t };
            Define(v, "sparse initializer");
            g.InitializerList.Add(v);
        }
        // Create every node and its outputs first so that out-of-order files still resolve; order is checked afterwards.
        var pending = new List<(Node node, P.NodeProto proto)>();
        foreach (var np in gp.Node)
        {
            var n = new Node(g, np.Name, np.OpType, np.Domain) { DocString = np.DocString.Length > 0 ? np.DocString : null };
            var nres = np.Clone();
            nres.Input.Clear(); nres.Output.Clear(); nres.Attribute.Clear();
            n.Residual = nres;
            for (int k = 0; k < np.Output.Count; k++)
            {
                if (np.Output[k].Length == 0) { n.OutputList.Add(null); continue; }
                var o = new Value(g, np.Output[k], null) { Producer = n, OutputIndex = k };
                Define(o, $"output of node '{np.Name}' ({np.OpType})");
                n.OutputList.Add(o);
            }
            g.NodeList.Add(n);
            pending.Add((n, np));
        }
        foreach (var vi in gp.ValueInfo)
        {
            if (scope.TryGetValue(vi.Name, out var v) && local.Contains(vi.Name))
            {
                v.Type ??= TypeOf(vi.Type);
                v.RawType ??= vi.Type;
                v.InfoResidual = InfoResidual(vi);
            }
        }
        foreach (var (n, np) in pending)
        {
            for (int i = 0; i < np.Input.Count; i++)
            {
                string name = np.Input[i];
                if (name.Length == 0) { n.InputList.Add(null); continue; }
                if (!scope.TryGetValue(name, out var v))
                    throw new ModelFormatException($"{ctx.File}: node '{np.Name}' ({np.OpType}){where} reads '{name}', which nothing produces (not a graph input, initializer, or node output)");
                n.InputList.Add(v);
                v.AddUse(n, i);
            }
            foreach (var ap in np.Attribute) n.AttrList.Add(ReadAttr(ap, g, n, scope, ctx));
        }
        foreach (var vi in gp.Output)
        {
            if (!scope.TryGetValue(vi.Name, out var v))
                throw new ModelFormatException($"{ctx.File}: graph output '{vi.Name}'{where} is not produced by any node, input or initializer");
            v.Type ??= TypeOf(vi.Type);
            v.RawType ??= vi.Type;
            v.InfoResidual ??= InfoResidual(vi);
            g.OutputList.Add(v);
        }
        var order = g.TopologicalOrder();
        if (order is null)
        {
            var cyc = g.FindCycle();
            throw new ModelFormatException($"{ctx.File}: the graph{where} has a cycle: {string.Join(" -> ", cyc.Select(c => $"'{c.Name}' ({c.OpType})"))}");
        }
        g.NodeList.Clear();
        g.NodeList.AddRange(order);
    }

    private static P.ValueInfoProto? InfoResidual(P.ValueInfoProto vi)
    {
        var r = vi.Clone();
        r.Name = ""; r.Type = null;
        return r.CalculateSize() == 0 ? null : r;
    }

    private static P.TensorProto TensorResidual(P.TensorProto tp)
    {
        if (IsTyped(tp)) return tp; // typed payloads are written back verbatim
        var r = tp.Clone();
        r.RawData = ByteString.Empty;
        r.ExternalData.Clear();
        r.DataLocation = P.TensorProto.Types.DataLocation.Default;
        return r;
    }

    internal static bool IsTyped(P.TensorProto tp) =>
        tp.FloatData.Count > 0 || tp.Int32Data.Count > 0 || tp.Int64Data.Count > 0 || tp.DoubleData.Count > 0 || tp.Uint64Data.Count > 0 || tp.StringData.Count > 0;

    internal static TensorType? TypeOf(P.TypeProto? t)
    {
        if (t?.TensorType is not { } tt) return null;
        Shape? shape = null;
        if (tt.Shape is not null)
            shape = new Shape(tt.Shape.Dim.Select(d =>
                d.ValueCase == P.TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? Dim.Of(d.DimValue)
                : d.ValueCase == P.TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam && d.DimParam.Length > 0 ? Dim.Sym(d.DimParam)
                : Dim.Unknown).ToArray());
        return new TensorType((ElementType)tt.ElemType, shape);
    }

    internal static Tensor ReadTensor(P.TensorProto tp, Ctx ctx)
    {
        var et = (ElementType)tp.DataType;
        var dims = tp.Dims.ToArray();
        string tname = tp.Name.Length > 0 ? $"tensor '{tp.Name}'" : "a constant tensor";
        if (dims.Any(d => d < 0)) throw new ModelFormatException($"{ctx.File}: {tname} has a negative dimension [{string.Join(",", dims)}]");
        long count = ElementCount(dims, et, tname, ctx);
        if (tp.DataLocation == P.TensorProto.Types.DataLocation.External)
        {
            string? loc = null; long offset = 0; long? length = null;
            foreach (var kv in tp.ExternalData)
            {
                switch (kv.Key)
                {
                    case "location": loc = kv.Value; break;
                    case "offset": offset = ExternalNumber(kv.Value, "offset", tname, ctx); break;
                    case "length": length = ExternalNumber(kv.Value, "length", tname, ctx); break;
                }
            }
            if (string.IsNullOrEmpty(loc)) throw new ModelFormatException($"{ctx.File}: {tname} is external but names no location");
            if (Path.IsPathRooted(loc) || loc.Replace('\\', '/').Split('/').Contains(".."))
                throw new ModelFormatException($"{ctx.File}: {tname} has external data location '{loc}', which is absolute or leaves the model's folder; refusing it (path traversal risk): keep data files next to the model");
            if (ctx.BaseDir is null) throw new ModelFormatException($"{ctx.File}: {tname} uses external data '{loc}', but the model was not loaded from a file");
            string full = Path.GetFullPath(Path.Combine(ctx.BaseDir, loc));
            string baseFull = Path.GetFullPath(ctx.BaseDir) + Path.DirectorySeparatorChar;
            if (!full.StartsWith(baseFull, StringComparison.Ordinal))
                throw new ModelFormatException($"{ctx.File}: {tname} has external data location '{loc}' outside the model's folder; refusing it");
            if (!File.Exists(full) && !Directory.Exists(full))
                throw new ModelFormatException($"{ctx.File}: {tname} needs external data file '{loc}', which is missing (expected at {full})");
            long need = length ?? et.ByteCount(count);
            if (et.BitWidth() > 0 && need != et.ByteCount(count))
                throw new ModelFormatException($"{ctx.File}: {tname} is {et.ShortName()}[{string.Join(",", dims)}] ({et.ByteCount(count)} bytes) but its external data length is {need}");
            if (offset > long.MaxValue - need)
                throw new ModelFormatException($"{ctx.File}: {tname}: external data offset {offset} + length {need} overflows; the model is corrupt");
            // The real file (symlinks resolved) must be a regular file inside the model's folder, long enough for the
            // range: checked by stat before anything opens it (a FIFO, /dev/zero or a link to /proc/... is refused).
            string real; long have;
            try { (real, have) = SafeFile.Check(full, ctx.BaseDir, what: $"{ctx.File}: {tname}: external data '{loc}'"); }
            catch (UnsafeFileException e) { throw new ModelFormatException(e.Message); }
            if (offset + need > have)
                throw new ModelFormatException($"{ctx.File}: {tname} needs bytes {offset}..{offset + need} of '{loc}', but the file has only {have} bytes (truncated or wrong data file)");
            return new Tensor(et, dims, new ExternalSource(real, offset, need));
        }
        if (et == ElementType.String || et.BitWidth() == 0) return new Tensor(et, dims, tp.Clone());
        if (IsTyped(tp)) return new Tensor(et, dims, TypedToRaw(tp, et, count, tname, ctx));
        if (et.BitWidth() > 0 && tp.RawData.Length != et.ByteCount(count))
            throw new ModelFormatException($"{ctx.File}: {tname} is {et.ShortName()}[{string.Join(",", dims)}] but holds {tp.RawData.Length} bytes (expected {et.ByteCount(count)})");
        return new Tensor(et, dims, new InMemorySource(tp.RawData.Memory));
    }

    /// <summary>
    /// The dense tensor of a sparse_initializer (ONNX SparseTensorProto): <c>values</c> [NNZ] holds the non-zero
    /// elements (its name is the initializer's name), <c>indices</c> int64 either [NNZ] (linear positions) or
    /// [NNZ, rank] (coordinates), <c>dims</c> the dense shape; every other element is zero.
    /// </summary>
    private static Tensor Densify(P.SparseTensorProto sp, Ctx ctx)
    {
        string name = sp.Values?.Name is { Length: > 0 } n ? n : "(unnamed)";
        string tname = $"sparse initializer '{name}'";
        if (sp.Values is null || sp.Indices is null || sp.Values.Name.Length == 0)
            throw new ModelFormatException($"{ctx.File}: {tname} lacks values, indices or a name; the model is corrupt");
        var dims = sp.Dims.ToArray();
        if (dims.Any(d => d < 0)) throw new ModelFormatException($"{ctx.File}: {tname} has a negative dimension [{string.Join(",", dims)}]");
        var values = ReadTensor(sp.Values, ctx);
        var et = values.Element;
        int width = et.BitWidth();
        if (width == 0 || width % 8 != 0)
            throw new ModelFormatException($"{ctx.File}: {tname} has element type {et.ShortName()}; sparse initializers of sub-byte or string types are not supported");
        long count = ElementCount(dims, et, tname, ctx);
        long bytes = et.ByteCount(count);
        if (bytes > Array.MaxLength)
            throw new ModelFormatException($"{ctx.File}: {tname} is {bytes} bytes dense, too large to hold in memory");
        var idx = ReadTensor(sp.Indices, ctx);
        if (idx.Element != ElementType.Int64) throw new ModelFormatException($"{ctx.File}: {tname} has {idx.Element.ShortName()} indices; ONNX requires int64");
        long nnz = values.ElementCount;
        bool coordinates = idx.Dims.Length == 2 && idx.Dims[0] == nnz && idx.Dims[1] == dims.Length;
        if (!coordinates && !(idx.Dims.Length == 1 && idx.Dims[0] == nnz))
            throw new ModelFormatException($"{ctx.File}: {tname} has indices of shape [{string.Join(",", idx.Dims)}]; expected [{nnz}] or [{nnz},{dims.Length}]");
        var ix = idx.ToInt64s();
        var src = values.Source.ReadAll();
        var dense = new byte[bytes];
        int size = width / 8;
        for (long k = 0; k < nnz; k++)
        {
            long pos = 0;
            if (coordinates)
                for (int a = 0; a < dims.Length; a++)
                {
                    long c = ix[k * dims.Length + a];
                    if (c < 0 || c >= dims[a]) throw new ModelFormatException($"{ctx.File}: {tname}: index {c} out of range for axis {a} of [{string.Join(",", dims)}]");
                    pos = pos * dims[a] + c;
                }
            else pos = ix[k];
            if (pos < 0 || pos >= count) throw new ModelFormatException($"{ctx.File}: {tname}: position {pos} out of range (it has {count} elements)");
            Buffer.BlockCopy(src, (int)(k * size), dense, (int)(pos * size), size);
        }
        return new Tensor(et, dims, new InMemorySource(dense));
    }

    /// <summary>The element count of <paramref name="dims"/>; a product or byte count that overflows 64 bits is an error
    /// (a 2^61-element initializer must not pass as a few KiB).</summary>
    private static long ElementCount(long[] dims, ElementType et, string tname, Ctx ctx)
    {
        long count = 1;
        foreach (var d in dims)
        {
            if (d != 0 && count > long.MaxValue / d)
                throw new ModelFormatException($"{ctx.File}: {tname} has dims [{string.Join(",", dims)}], whose element count overflows 64 bits; the model is corrupt");
            count *= d;
        }
        if (et.BitWidth() > 0 && count > (long.MaxValue - 7) / Math.Max(1, et.BitWidth()))
            throw new ModelFormatException($"{ctx.File}: {tname} has {count} {et.ShortName()} elements, whose byte count overflows 64 bits; the model is corrupt");
        return count;
    }

    private static long ExternalNumber(string text, string key, string tname, Ctx ctx) =>
        long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new ModelFormatException($"{ctx.File}: {tname} has external data {key} '{text}', which is not a non-negative 64-bit integer; the model is corrupt");

    private static TensorSource TypedToRaw(P.TensorProto tp, ElementType et, long count, string tname, Ctx ctx)
    {
        var ms = new MemoryStream();
        var w = new BinaryWriter(ms);
        switch (et)
        {
            case ElementType.Float: foreach (var f in tp.FloatData) w.Write(f); break;
            case ElementType.Double: foreach (var f in tp.DoubleData) w.Write(f); break;
            case ElementType.Int64: foreach (var f in tp.Int64Data) w.Write(f); break;
            case ElementType.UInt64: foreach (var f in tp.Uint64Data) w.Write(f); break;
            case ElementType.UInt32: foreach (var f in tp.Uint64Data) w.Write((uint)f); break;
            case ElementType.Int32: foreach (var f in tp.Int32Data) w.Write(f); break;
            case ElementType.Int16: foreach (var f in tp.Int32Data) w.Write((short)f); break;
            case ElementType.UInt16 or ElementType.Float16 or ElementType.BFloat16: foreach (var f in tp.Int32Data) w.Write((ushort)f); break;
            case ElementType.Int8: foreach (var f in tp.Int32Data) w.Write((sbyte)f); break;
            case ElementType.UInt8 or ElementType.Bool or ElementType.Float8E4M3FN or ElementType.Float8E4M3FNUZ or ElementType.Float8E5M2 or ElementType.Float8E5M2FNUZ:
                foreach (var f in tp.Int32Data) w.Write((byte)f); break;
            case ElementType.Int4 or ElementType.UInt4 or ElementType.Float4E2M1: foreach (var f in tp.Int32Data) w.Write((byte)f); break;
            default: throw new ModelFormatException($"{ctx.File}: {tname}: typed data of {et.ShortName()} is not supported");
        }
        w.Flush();
        if (ms.Length != et.ByteCount(count))
            throw new ModelFormatException($"{ctx.File}: {tname} is {et.ShortName()}[{string.Join(",", tp.Dims)}] but holds {ms.Length} bytes of data (expected {et.ByteCount(count)})");
        return new InMemorySource(ms.ToArray());
    }

    private static Attr ReadAttr(P.AttributeProto ap, Graph g, Node n, Dictionary<string, Value> scope, Ctx ctx)
    {
        ModelFormatException Missing(string type, string what) =>
            new($"{ctx.File}: attribute '{ap.Name}' of node '{n.Name}' ({n.OpType}) has type {type} but holds no {what}; the model is corrupt");
        if (ap.RefAttrName.Length > 0) return new Attr(ap.Name, AttrKind.Opaque, ap.Clone());
        switch (ap.Type)
        {
            case P.AttributeProto.Types.AttributeType.Float: return Attr.Float(ap.Name, ap.F);
            case P.AttributeProto.Types.AttributeType.Int: return Attr.Int(ap.Name, ap.I);
            case P.AttributeProto.Types.AttributeType.String: return Attr.String(ap.Name, ap.S.ToStringUtf8());
            case P.AttributeProto.Types.AttributeType.Floats: return Attr.Floats(ap.Name, ap.Floats);
            case P.AttributeProto.Types.AttributeType.Ints: return Attr.Ints(ap.Name, ap.Ints);
            case P.AttributeProto.Types.AttributeType.Strings:
                if (ap.Strings.Any(s => !IsUtf8(s))) return new Attr(ap.Name, AttrKind.Opaque, ap.Clone());
                return Attr.Strings(ap.Name, ap.Strings.Select(s => s.ToStringUtf8()));
            case P.AttributeProto.Types.AttributeType.Tensor: return Attr.TensorValue(ap.Name, ReadTensor(ap.T ?? throw Missing("TENSOR", "tensor"), ctx));
            case P.AttributeProto.Types.AttributeType.Tensors: return new Attr(ap.Name, AttrKind.Tensors, ap.Tensors.Select(t => ReadTensor(t, ctx)).ToImmutableArray());
            case P.AttributeProto.Types.AttributeType.Graph: return Attr.GraphValue(ap.Name, ReadSubgraph(ap.G ?? throw Missing("GRAPH", "graph"), g, n, scope, ctx));
            case P.AttributeProto.Types.AttributeType.Graphs: return new Attr(ap.Name, AttrKind.Graphs, ap.Graphs.Select(sg => ReadSubgraph(sg, g, n, scope, ctx)).ToImmutableArray());
            default: return new Attr(ap.Name, AttrKind.Opaque, ap.Clone());
        }
    }

    private static bool IsUtf8(ByteString s)
    {
        try { _ = new System.Text.UTF8Encoding(false, true).GetString(s.Span); return true; } catch { return false; }
    }

    private static Graph ReadSubgraph(P.GraphProto gp, Graph parent, Node n, Dictionary<string, Value> scope, Ctx ctx)
    {
        var sg = new Graph(gp.Name, parent, n);
        ReadGraph(gp, sg, scope, ctx);
        return sg;
    }
}

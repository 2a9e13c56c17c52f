using Google.Protobuf;
using LongCtx.Compiler.IR;
using P = Onnx;

namespace LongCtx.Compiler.OnnxIO;

/// <summary>How to write a model.</summary>
public sealed record SaveOptions
{
    /// <summary>Initializers of at least this many bytes go to the external data file.</summary>
    public long ExternalDataThreshold { get; init; } = 1024;
    /// <summary>External data file name (in the model's folder); default "&lt;model file name&gt;.data".</summary>
    public string? DataFileName { get; init; }
    /// <summary>Keep every initializer inside the .onnx file (fails above the 2 GiB protobuf limit).</summary>
    public bool AllInline { get; init; }
    /// <summary>Alignment of tensors in the data file (lets runtimes memory-map them).</summary>
    public int Alignment { get; init; } = 64;
}

/// <summary>What a save wrote.</summary>
public sealed record SaveResult(string ModelPath, string? DataPath, long ModelBytes, long DataBytes, int ExternalTensors);

/// <summary>Writes the IR to ONNX. Atomic: temp files in the target folder, renamed at the end; nothing partial remains on failure.</summary>
public static class OnnxWriter
{
    public static SaveResult Save(Model model, string path, SaveOptions? options = null)
    {
        options ??= new SaveOptions();
        path = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(path)!;
        if (!Directory.Exists(dir)) throw new IOException($"output folder {dir} does not exist");
        string dataName = options.DataFileName ?? Path.GetFileName(path) + ".data";
        if (Path.IsPathRooted(dataName) || dataName.Contains('/') || dataName.Contains('\\'))
            throw new ArgumentException($"external data file name '{dataName}' must be a plain file name in the model's folder");
        string dataPath = Path.Combine(dir, dataName);
        foreach (var v in AllInitializers(model.Graph))
            if (v.Const?.Source is ExternalSource es && string.Equals(Path.GetFullPath(es.Path), dataPath, StringComparison.Ordinal))
                throw new IOException($"refusing to overwrite {dataName}: the model being saved reads its weights from it; write to another folder");

        string tag = Guid.NewGuid().ToString("N")[..8];
        string tmpModel = Path.Combine(dir, $".{Path.GetFileName(path)}.{tag}.tmp");
        string tmpData = Path.Combine(dir, $".{dataName}.{tag}.tmp");
        FileStream? data = null;
        try
        {
            var w = new Writer(options, () => data ??= new FileStream(tmpData, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20), dataName);
            var proto = w.WriteModel(model);
            long size;
            try { size = proto.CalculateSize(); }
            catch (Exception e) when (e is OverflowException or InvalidOperationException) { size = long.MaxValue; }
            if (size >= int.MaxValue || size < 0)
                throw new IOException($"{Path.GetFileName(path)}: the graph is over the 2 GiB protobuf limit; save with external data (lower the threshold)");
            using (var fs = new FileStream(tmpModel, FileMode.CreateNew, FileAccess.Write))
            {
                proto.WriteTo(fs);
                fs.Flush(true);
            }
            long dataBytes = 0;
            if (data is not null)
            {
                data.Flush(true);
                dataBytes = data.Length;
                data.Dispose();
                data = null;
                File.Move(tmpData, dataPath, overwrite: true);
            }
            File.Move(tmpModel, path, overwrite: true);
            return new SaveResult(path, w.ExternalCount > 0 ? dataPath : null, new FileInfo(path).Length, dataBytes, w.ExternalCount);
        }
        catch
        {
            data?.Dispose();
            TryDelete(tmpData);
            TryDelete(tmpModel);
            throw;
        }
    }

    /// <summary>Serialises a model with every initializer inline (small models, tests, in-memory sessions).</summary>
    public static byte[] ToBytes(Model model) => new Writer(new SaveOptions { AllInline = true }, () => throw new InvalidOperationException(), "").WriteModel(model).ToByteArray();

    private static void TryDelete(string p)
    {
        try { if (File.Exists(p)) File.Delete(p); } catch (IOException) { }
    }

    private static IEnumerable<Value> AllInitializers(Graph g)
    {
        foreach (var v in g.Initializers) yield return v;
        foreach (var n in g.Nodes) foreach (var sg in n.Subgraphs) foreach (var v in AllInitializers(sg)) yield return v;
    }

    private sealed class Writer(SaveOptions options, Func<FileStream> openData, string dataName)
    {
        public int ExternalCount { get; private set; }

        public P.ModelProto WriteModel(Model m)
        {
            var p = m.Residual?.Clone() ?? new P.ModelProto();
            p.IrVersion = m.IrVersion;
            p.ProducerName = m.ProducerName;
            p.ProducerVersion = m.ProducerVersion;
            p.Domain = m.Domain;
            p.ModelVersion = m.ModelVersion;
            p.DocString = m.DocString;
            p.OpsetImport.Clear();
            foreach (var (d, v) in m.Opsets) p.OpsetImport.Add(new P.OperatorSetIdProto { Domain = d, Version = v });
            p.MetadataProps.Clear();
            foreach (var kv in m.MetadataProps) p.MetadataProps.Add(new P.StringStringEntryProto { Key = kv.Key, Value = kv.Value });
            p.Graph = WriteGraph(m.Graph);
            return p;
        }

        private P.GraphProto WriteGraph(Graph g)
        {
            var p = g.Residual?.Clone() ?? new P.GraphProto();
            p.Name = g.Name;
            p.DocString = g.DocString ?? "";
            foreach (var v in g.Inputs) p.Input.Add(Info(v));
            foreach (var v in g.Initializers) p.Initializer.Add(WriteInitializer(v));
            foreach (var n in g.Nodes)
            {
                p.Node.Add(WriteNode(n));
                foreach (var o in n.Outputs)
                    if (o is not null && !o.IsGraphOutput && (o.Type is not null || o.InfoResidual is not null)) p.ValueInfo.Add(Info(o));
            }
            foreach (var v in g.Outputs) p.Output.Add(Info(v));
            return p;
        }

        private P.NodeProto WriteNode(Node n)
        {
            var p = n.Residual?.Clone() ?? new P.NodeProto();
            p.Name = n.Name;
            p.OpType = n.OpType;
            p.Domain = n.Domain;
            p.DocString = n.DocString ?? "";
            foreach (var i in n.Inputs) p.Input.Add(i?.Name ?? "");
            foreach (var o in n.Outputs) p.Output.Add(o?.Name ?? "");
            foreach (var a in n.Attributes) p.Attribute.Add(WriteAttr(a));
            return p;
        }

        private P.AttributeProto WriteAttr(Attr a)
        {
            if (a.Kind == AttrKind.Opaque) return ((P.AttributeProto)a.Value).Clone();
            var p = new P.AttributeProto { Name = a.Name };
            switch (a.Kind)
            {
                case AttrKind.Float: p.Type = P.AttributeProto.Types.AttributeType.Float; p.F = (float)a.Value; break;
                case AttrKind.Int: p.Type = P.AttributeProto.Types.AttributeType.Int; p.I = (long)a.Value; break;
                case AttrKind.String: p.Type = P.AttributeProto.Types.AttributeType.String; p.S = ByteString.CopyFromUtf8((string)a.Value); break;
                case AttrKind.Floats: p.Type = P.AttributeProto.Types.AttributeType.Floats; p.Floats.AddRange(a.AsFloats()); break;
                case AttrKind.Ints: p.Type = P.AttributeProto.Types.AttributeType.Ints; p.Ints.AddRange(a.AsInts()); break;
                case AttrKind.Strings: p.Type = P.AttributeProto.Types.AttributeType.Strings; p.Strings.AddRange(((System.Collections.Immutable.ImmutableArray<string>)a.Value).Select(ByteString.CopyFromUtf8)); break;
                case AttrKind.Tensor: p.Type = P.AttributeProto.Types.AttributeType.Tensor; p.T = InlineTensor((Tensor)a.Value, "", null); break;
                case AttrKind.Tensors: p.Type = P.AttributeProto.Types.AttributeType.Tensors; p.Tensors.AddRange(((System.Collections.Immutable.ImmutableArray<Tensor>)a.Value).Select(t => InlineTensor(t, "", null))); break;
                case AttrKind.Graph: p.Type = P.AttributeProto.Types.AttributeType.Graph; p.G = WriteGraph((Graph)a.Value); break;
                case AttrKind.Graphs: p.Type = P.AttributeProto.Types.AttributeType.Graphs; p.Graphs.AddRange(((System.Collections.Immutable.ImmutableArray<Graph>)a.Value).Select(WriteGraph)); break;
            }
            return p;
        }

        private P.TensorProto WriteInitializer(Value v)
        {
            var t = v.Const!;
            bool external = !options.AllInline && t.OpaqueProto is null && t.ByteLength >= options.ExternalDataThreshold && t.ByteLength > 0;
            if (!external) return InlineTensor(t, v.Name, v.ConstResidual);
            var p = v.ConstResidual?.Clone() ?? new P.TensorProto();
            ClearPayload(p);
            p.Name = v.Name;
            p.DataType = (int)t.Element;
            p.Dims.Clear(); p.Dims.AddRange(t.Dims);
            var fs = openData();
            long pad = (options.Alignment - fs.Position % options.Alignment) % options.Alignment;
            if (pad > 0) fs.Write(new byte[pad]);
            long offset = fs.Position;
            t.Source.CopyTo(fs);
            long length = fs.Position - offset;
            p.DataLocation = P.TensorProto.Types.DataLocation.External;
            p.ExternalData.Add(new P.StringStringEntryProto { Key = "location", Value = dataName });
            p.ExternalData.Add(new P.StringStringEntryProto { Key = "offset", Value = offset.ToString() });
            p.ExternalData.Add(new P.StringStringEntryProto { Key = "length", Value = length.ToString() });
            ExternalCount++;
            return p;
        }

        private static P.TensorProto InlineTensor(Tensor t, string name, P.TensorProto? residual)
        {
            if (t.OpaqueProto is not null) { var o = t.OpaqueProto.Clone(); if (name.Length > 0) o.Name = name; return o; }
            if (residual is not null && OnnxReader.IsTyped(residual) && t.Source is InMemorySource)
            {
                var r = residual.Clone();
                r.Name = name;
                return r;
            }
            var p = residual?.Clone() ?? new P.TensorProto();
            ClearPayload(p);
            p.Name = name;
            p.DataType = (int)t.Element;
            p.Dims.Clear(); p.Dims.AddRange(t.Dims);
            p.RawData = t.Source is InMemorySource im ? UnsafeByteOperations.UnsafeWrap(im.Bytes) : ByteString.CopyFrom(t.Source.ReadAll());
            return p;
        }

        private static void ClearPayload(P.TensorProto p)
        {
            p.FloatData.Clear(); p.Int32Data.Clear(); p.Int64Data.Clear(); p.DoubleData.Clear(); p.Uint64Data.Clear(); p.StringData.Clear();
            p.RawData = ByteString.Empty;
            p.ExternalData.Clear();
            p.DataLocation = P.TensorProto.Types.DataLocation.Default;
        }

        private static P.ValueInfoProto Info(Value v)
        {
            var p = v.InfoResidual?.Clone() ?? new P.ValueInfoProto();
            p.Name = v.Name;
            p.Type = TypeProto(v);
            return p;
        }

        private static P.TypeProto? TypeProto(Value v)
        {
            if (v.RawType is not null && (v.Type is null || Equals(OnnxReader.TypeOf(v.RawType), v.Type))) return v.RawType.Clone();
            if (v.Type is null) return null;
            var tt = new P.TypeProto.Types.Tensor { ElemType = (int)v.Type.Element };
            if (v.Type.Shape is { } s)
            {
                tt.Shape = new P.TensorShapeProto();
                foreach (var d in s.Dims)
                {
                    var pd = new P.TensorShapeProto.Types.Dimension();
                    if (d.Value is long x) pd.DimValue = x; else if (d.Param is string n) pd.DimParam = n;
                    tt.Shape.Dim.Add(pd);
                }
            }
            return new P.TypeProto { TensorType = tt };
        }
    }
}

using Google.Protobuf;
using System.Collections.Immutable;
using System.Globalization;

namespace LongCtx.Compiler.IR;

public enum AttrKind { Float, Int, String, Tensor, Graph, Floats, Ints, Strings, Tensors, Graphs, Opaque }

/// <summary>A node attribute. Immutable; <see cref="Opaque"/> keeps kinds the IR does not model (sparse tensors, type protos, function refs) byte-exact.</summary>
public sealed record Attr(string Name, AttrKind Kind, object Value)
{
    public static Attr Float(string name, float v) => new(name, AttrKind.Float, v);
    public static Attr Int(string name, long v) => new(name, AttrKind.Int, v);
    public static Attr String(string name, string v) => new(name, AttrKind.String, v);
    public static Attr Floats(string name, IEnumerable<float> v) => new(name, AttrKind.Floats, v.ToImmutableArray());
    public static Attr Ints(string name, IEnumerable<long> v) => new(name, AttrKind.Ints, v.ToImmutableArray());
    public static Attr Strings(string name, IEnumerable<string> v) => new(name, AttrKind.Strings, v.ToImmutableArray());
    public static Attr TensorValue(string name, Tensor t) => new(name, AttrKind.Tensor, t);
    public static Attr GraphValue(string name, Graph g) => new(name, AttrKind.Graph, g);

    public float AsFloat() => Kind == AttrKind.Float ? (float)Value : Kind == AttrKind.Int ? (long)Value : throw Wrong("float");
    public long AsInt() => Kind == AttrKind.Int ? (long)Value : throw Wrong("int");
    public string AsString() => Kind == AttrKind.String ? (string)Value : throw Wrong("string");
    public ImmutableArray<long> AsInts() => Kind == AttrKind.Ints ? (ImmutableArray<long>)Value : throw Wrong("ints");
    public ImmutableArray<float> AsFloats() => Kind == AttrKind.Floats ? (ImmutableArray<float>)Value : throw Wrong("floats");
    public Tensor AsTensor() => Kind == AttrKind.Tensor ? (Tensor)Value : throw Wrong("tensor");
    public Graph AsGraph() => Kind == AttrKind.Graph ? (Graph)Value : throw Wrong("graph");
    public IEnumerable<Graph> Subgraphs => Kind switch
    {
        AttrKind.Graph => [(Graph)Value],
        AttrKind.Graphs => (ImmutableArray<Graph>)Value,
        _ => [],
    };

    private InvalidOperationException Wrong(string want) => new($"attribute '{Name}' is {Kind}, not {want}");

    /// <summary>Deterministic text used by diffs and signatures (tensors by content hash, graphs by name).</summary>
    public string Render() => Kind switch
    {
        AttrKind.Float => ((float)Value).ToString("R", CultureInfo.InvariantCulture),
        AttrKind.Int => ((long)Value).ToString(CultureInfo.InvariantCulture),
        AttrKind.String => "\"" + (string)Value + "\"",
        AttrKind.Floats => "[" + string.Join(",", ((ImmutableArray<float>)Value).Select(f => f.ToString("R", CultureInfo.InvariantCulture))) + "]",
        AttrKind.Ints => "[" + string.Join(",", (ImmutableArray<long>)Value) + "]",
        AttrKind.Strings => "[" + string.Join(",", ((ImmutableArray<string>)Value).Select(s => "\"" + s + "\"")) + "]",
        AttrKind.Tensor => $"tensor {(Tensor)Value} #{((Tensor)Value).ContentHash()}",
        AttrKind.Tensors => "[" + string.Join(",", ((ImmutableArray<Tensor>)Value).Select(t => $"{t} #{t.ContentHash()}")) + "]",
        AttrKind.Graph => $"graph '{((Graph)Value).Name}' ({((Graph)Value).Nodes.Count} nodes)",
        AttrKind.Graphs => "[" + string.Join(",", ((ImmutableArray<Graph>)Value).Select(g => $"graph '{g.Name}'")) + "]",
        _ => "opaque #" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(((global::Onnx.AttributeProto)Value).ToByteArray()))[..12],
    };
}

namespace LongCtx.Compiler.IR;

/// <summary>One use of a value: node input slot <see cref="Index"/>.</summary>
public readonly record struct Use(Node Node, int Index);

/// <summary>
/// An SSA value: a graph input, an initializer (constant), or a node output. Knows its producer and its uses.
/// Values are compared by reference. Mutated only through <see cref="Rewriter"/>.
/// </summary>
public sealed class Value
{
    private readonly List<Use> _uses = [];

    internal Value(Graph graph, string name, TensorType? type)
    {
        Graph = graph;
        Name = name;
        Type = type;
    }

    /// <summary>The graph in whose scope the value is defined.</summary>
    public Graph Graph { get; internal set; }
    public string Name { get; internal set; }
    /// <summary>Tensor type when known. Non-tensor types (sequences, maps) keep their protobuf in <see cref="RawType"/>.</summary>
    public TensorType? Type { get; internal set; }
    internal global::Onnx.TypeProto? RawType { get; set; }
    /// <summary>Extra metadata from the original value_info (doc strings, metadata props, unknown fields).</summary>
    internal global::Onnx.ValueInfoProto? InfoResidual { get; set; }

    public Node? Producer { get; internal set; }
    public int OutputIndex { get; internal set; }
    public IReadOnlyList<Use> Uses => _uses;
    /// <summary>Constant data when this value is an initializer.</summary>
    public Tensor? Const { get; internal set; }
    internal global::Onnx.TensorProto? ConstResidual { get; set; }

    public bool IsInitializer => Const is not null;
    public bool IsGraphInput => Graph.Inputs.Contains(this);
    public bool IsGraphOutput => Graph.Outputs.Contains(this);
    /// <summary>Used by any node or as a graph output.</summary>
    public bool IsUsed => _uses.Count > 0 || IsGraphOutput;

    internal void AddUse(Node n, int i) => _uses.Add(new Use(n, i));
    internal void RemoveUse(Node n, int i)
    {
        int k = _uses.LastIndexOf(new Use(n, i)); // from the end: removing readers newest-first stays O(1) each
        if (k < 0) throw new InvalidOperationException($"value '{Name}' has no use ({n}, {i})");
        _uses.RemoveAt(k);
    }

    /// <summary>Drops every use by a node in <paramref name="nodes"/> in one pass (batch removal, linear).</summary>
    internal int RemoveUsesBy(IReadOnlySet<Node> nodes) => _uses.RemoveAll(u => nodes.Contains(u.Node));

    public override string ToString() => $"%{Name}" + (Type is null ? "" : ": " + Type);
}

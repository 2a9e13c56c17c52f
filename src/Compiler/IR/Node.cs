namespace LongCtx.Compiler.IR;

/// <summary>An operator application. Inputs may be null (omitted optional input); outputs may be null (omitted optional output).</summary>
public sealed class Node
{
    internal readonly List<Value?> InputList = [];
    internal readonly List<Value?> OutputList = [];
    internal readonly List<Attr> AttrList = [];

    internal Node(Graph graph, string name, string opType, string domain)
    {
        Graph = graph;
        Name = name;
        OpType = opType;
        Domain = NormalizeDomain(domain);
    }

    public Graph Graph { get; internal set; }
    public string Name { get; internal set; }
    public string OpType { get; internal set; }
    /// <summary>Operator domain; the default ONNX domain is "" ("ai.onnx" is normalised to "").</summary>
    public string Domain { get; internal set; }
    public string? DocString { get; internal set; }
    internal global::Onnx.NodeProto? Residual { get; set; }

    public IReadOnlyList<Value?> Inputs => InputList;
    public IReadOnlyList<Value?> Outputs => OutputList;
    public IReadOnlyList<Attr> Attributes => AttrList;

    public Value? Input(int i) => i < InputList.Count ? InputList[i] : null;
    public Value Output(int i = 0) => OutputList[i] ?? throw new InvalidOperationException($"{this} output {i} is omitted");
    public Attr? Attribute(string name) => AttrList.FirstOrDefault(a => a.Name == name);
    public long IntAttr(string name, long dflt) => Attribute(name)?.AsInt() ?? dflt;
    public float FloatAttr(string name, float dflt) => Attribute(name)?.AsFloat() ?? dflt;
    public string StringAttr(string name, string dflt) => Attribute(name)?.AsString() ?? dflt;

    /// <summary>Subgraphs held by attributes (If/Loop/Scan bodies).</summary>
    public IEnumerable<Graph> Subgraphs => AttrList.SelectMany(a => a.Subgraphs);

    /// <summary>Outer-scope values used by nodes inside this node's subgraphs (at any depth).</summary>
    public IEnumerable<Value> ImplicitInputs()
    {
        var seen = new HashSet<Value>();
        foreach (var g in Subgraphs)
            foreach (var v in g.OuterReferences())
                if (seen.Add(v)) yield return v;
    }

    public string QualifiedOp => Domain.Length == 0 ? OpType : Domain + "." + OpType;

    public static string NormalizeDomain(string d) => d == "ai.onnx" ? "" : d;

    public override string ToString() => $"{QualifiedOp} '{Name}'";
}

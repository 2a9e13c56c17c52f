namespace LongCtx.Runtime;

/// <summary>One node of the main graph: op, domain, inputs (empty string = omitted optional input), outputs.</summary>
internal sealed record ScannedNode(string OpType, string Domain, IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs);

/// <summary>
/// The node list of an ONNX model's main graph, read with a minimal protobuf walk (ModelProto.graph = 7,
/// GraphProto.node = 1, NodeProto input 1 / output 2 / op_type 4 / domain 7 / attribute 5); initializers and every
/// other field are skipped by length, so inline weights cost a seek. Names read by nodes of subgraphs (If/Loop/Scan
/// bodies, attribute g = 6 / graphs = 11) are gathered as <see cref="SubgraphUses"/>: the runtime only needs to know
/// who reads a value, not what the subgraph computes.
/// </summary>
internal sealed class OnnxGraphScan
{
    private OnnxGraphScan(List<ScannedNode> nodes, HashSet<string> subgraphUses)
    {
        Nodes = nodes;
        SubgraphUses = subgraphUses;
    }

    public IReadOnlyList<ScannedNode> Nodes { get; }

    /// <summary>Every name read by a node inside a subgraph attribute (at any depth).</summary>
    public IReadOnlySet<string> SubgraphUses { get; }

    /// <summary>Main-graph nodes reading <paramref name="name"/>, with the input index.</summary>
    public IEnumerable<(ScannedNode Node, int Index)> Consumers(string name)
    {
        foreach (var n in Nodes)
            for (int i = 0; i < n.Inputs.Count; i++)
                if (n.Inputs[i] == name) yield return (n, i);
    }

    public ScannedNode? Producer(string name) => Nodes.FirstOrDefault(n => n.Outputs.Contains(name));

    public static OnnxGraphScan Read(string modelPath)
    {
        using var s = File.OpenRead(modelPath);
        var nodes = new List<ScannedNode>();
        var sub = new HashSet<string>(StringComparer.Ordinal);
        while (s.Position < s.Length)
        {
            var (field, wire) = Key(s);
            if (field == 7 && wire == 2)
            {
                long end = (long)ReadVarint(s) + s.Position;
                ReadGraph(s, end, nodes, sub);
                s.Position = end;
            }
            else Skip(s, wire);
        }
        return new OnnxGraphScan(nodes, sub);
    }

    private static void ReadGraph(Stream s, long end, List<ScannedNode>? nodes, HashSet<string> sub)
    {
        while (s.Position < end)
        {
            var (field, wire) = Key(s);
            if (field == 1 && wire == 2)
            {
                var node = ReadNode(new MemoryStream(ReadBytes(s)), sub);
                if (nodes is not null) nodes.Add(node);
                else foreach (var i in node.Inputs) sub.Add(i);
            }
            else Skip(s, wire);
        }
    }

    private static ScannedNode ReadNode(MemoryStream s, HashSet<string> sub)
    {
        var inputs = new List<string>();
        var outputs = new List<string>();
        string op = "", domain = "";
        while (s.Position < s.Length)
        {
            var (field, wire) = Key(s);
            if (wire != 2) { Skip(s, wire); continue; }
            switch (field)
            {
                case 1: inputs.Add(ReadString(s)); break;
                case 2: outputs.Add(ReadString(s)); break;
                case 4: op = ReadString(s); break;
                case 7: domain = ReadString(s); break;
                case 5: ReadAttribute(new MemoryStream(ReadBytes(s)), sub); break;
                default: Skip(s, wire); break;
            }
        }
        return new ScannedNode(op, domain is "ai.onnx" ? "" : domain, inputs, outputs);
    }

    private static void ReadAttribute(MemoryStream s, HashSet<string> sub)
    {
        while (s.Position < s.Length)
        {
            var (field, wire) = Key(s);
            if (wire == 2 && field is 6 or 11)
            {
                long end = (long)ReadVarint(s) + s.Position;
                ReadGraph(s, end, null, sub);
                s.Position = end;
            }
            else Skip(s, wire);
        }
    }

    private static (int Field, int Wire) Key(Stream s)
    {
        ulong k = ReadVarint(s);
        return ((int)(k >> 3), (int)(k & 7));
    }

    private static void Skip(Stream s, int wire)
    {
        switch (wire)
        {
            case 0: ReadVarint(s); break;
            case 1: s.Seek(8, SeekOrigin.Current); break;
            case 5: s.Seek(4, SeekOrigin.Current); break;
            case 2: s.Seek((long)ReadVarint(s), SeekOrigin.Current); break;
            default: throw new InvalidDataException($"not an ONNX model (protobuf wire type {wire} at byte {s.Position})");
        }
    }

    private static byte[] ReadBytes(Stream s)
    {
        var b = new byte[(int)ReadVarint(s)];
        s.ReadExactly(b);
        return b;
    }

    private static string ReadString(Stream s) => System.Text.Encoding.UTF8.GetString(ReadBytes(s));

    private static ulong ReadVarint(Stream s) => OnnxHeader.ReadVarint(s);
}

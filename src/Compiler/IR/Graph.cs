namespace LongCtx.Compiler.IR;

/// <summary>A (sub)graph: inputs, outputs, initializers and nodes. Nested graphs see the values of their enclosing graphs.</summary>
public sealed class Graph
{
    internal readonly List<Value> InputList = [];
    internal readonly List<Value> OutputList = [];
    internal readonly List<Node> NodeList = [];
    internal readonly List<Value> InitializerList = [];

    internal Graph(string name, Graph? parent = null, Node? parentNode = null)
    {
        Name = name;
        Parent = parent;
        ParentNode = parentNode;
    }

    public string Name { get; internal set; }
    public Graph? Parent { get; internal set; }
    public Node? ParentNode { get; internal set; }
    public string? DocString { get; internal set; }
    internal global::Onnx.GraphProto? Residual { get; set; }

    public IReadOnlyList<Value> Inputs => InputList;
    public IReadOnlyList<Value> Outputs => OutputList;
    /// <summary>Nodes in their current order (topological after <see cref="Rewriter.SortTopologically"/> and after loading).</summary>
    public IReadOnlyList<Node> Nodes => NodeList;
    /// <summary>Initializer values (constants), in file order. Some may also be graph inputs (overridable defaults).</summary>
    public IReadOnlyList<Value> Initializers => InitializerList;

    public Value? Initializer(string name) => InitializerList.FirstOrDefault(v => v.Name == name);
    public Value? Input(string name) => InputList.FirstOrDefault(v => v.Name == name);
    public Value? Output(string name) => OutputList.FirstOrDefault(v => v.Name == name);

    /// <summary>Every value defined in this graph's own scope: inputs, initializers, node outputs.</summary>
    public IEnumerable<Value> DefinedValues()
    {
        foreach (var v in InputList) yield return v;
        foreach (var v in InitializerList) if (!v.IsGraphInput) yield return v;
        foreach (var n in NodeList) foreach (var o in n.OutputList) if (o is not null) yield return o;
    }

    /// <summary>Finds a value by name in this graph (not in enclosing scopes).</summary>
    public Value? FindValue(string name) => DefinedValues().FirstOrDefault(v => v.Name == name);

    /// <summary>All nodes of this graph and of every nested subgraph, depth first.</summary>
    public IEnumerable<Node> AllNodes()
    {
        foreach (var n in NodeList)
        {
            yield return n;
            foreach (var g in n.Subgraphs)
                foreach (var m in g.AllNodes()) yield return m;
        }
    }

    /// <summary>Values from enclosing scopes that nodes of this graph (or deeper) read.</summary>
    public IEnumerable<Value> OuterReferences()
    {
        var seen = new HashSet<Value>();
        foreach (var n in AllNodes())
            foreach (var v in n.InputList)
                if (v is not null && !IsWithin(v.Graph) && seen.Add(v)) yield return v;
    }

    /// <summary>True when <paramref name="g"/> is this graph or nested inside it.</summary>
    public bool IsWithin(Graph g)
    {
        for (Graph? x = g; x is not null; x = x.Parent) if (x == this) return true;
        return false;
    }

    /// <summary>Nodes in a topological order, stable with respect to the current order; null when there is a cycle (see <see cref="FindCycle"/>).</summary>
    public List<Node>? TopologicalOrder()
    {
        var order = KahnOrder();
        return order.Count == NodeList.Count ? order : null;
    }

    private List<Node> KahnOrder()
    {
        var index = new Dictionary<Node, int>();
        for (int i = 0; i < NodeList.Count; i++) index[NodeList[i]] = i;
        var indeg = new int[NodeList.Count];
        var succ = new List<int>[NodeList.Count];
        for (int i = 0; i < NodeList.Count; i++) succ[i] = [];
        for (int i = 0; i < NodeList.Count; i++)
        {
            var n = NodeList[i];
            foreach (var v in n.InputList.Concat(n.ImplicitInputs()).Distinct())
            {
                if (v?.Producer is { } p && index.TryGetValue(p, out int j))
                {
                    succ[j].Add(i);
                    indeg[i]++;
                }
            }
        }
        var ready = new PriorityQueue<int, int>();
        for (int i = 0; i < indeg.Length; i++) if (indeg[i] == 0) ready.Enqueue(i, i);
        var order = new List<Node>(NodeList.Count);
        while (ready.TryDequeue(out int i, out _))
        {
            order.Add(NodeList[i]);
            foreach (int s in succ[i]) if (--indeg[s] == 0) ready.Enqueue(s, s);
        }
        return order;
    }

    /// <summary>Names of the nodes on some cycle, for error messages; empty when acyclic.</summary>
    public IReadOnlyList<Node> FindCycle()
    {
        var order = KahnOrder();
        if (order.Count == NodeList.Count) return [];
        var done = order.ToHashSet();
        // Kahn left the cyclic nodes (and their descendants); walk producers from one of them until a repeat.
        var remaining = NodeList.Where(n => !done.Contains(n)).ToHashSet();
        var start = remaining.First();
        var path = new List<Node>();
        var pos = new Dictionary<Node, int>();
        var cur = start;
        while (!pos.ContainsKey(cur))
        {
            pos[cur] = path.Count;
            path.Add(cur);
            var next = cur.InputList.Concat(cur.ImplicitInputs()).Select(v => v?.Producer).FirstOrDefault(p => p is not null && remaining.Contains(p));
            if (next is null) break;
            cur = next;
        }
        return pos.TryGetValue(cur, out int k) ? path.Skip(k).Reverse().ToList() : path;
    }

    public override string ToString() => $"graph '{Name}' ({NodeList.Count} nodes)";
}

namespace LongCtx.Compiler.IR;

/// <summary>
/// The only way to mutate a model. Keeps producer/use lists consistent, uniquifies names, counts every
/// mutation (for <c>--trace</c>) and refuses edits that would leave dangling values. <c>--step-limit</c> counts
/// logical steps (after ILSpy's Stepper): a group opened with <see cref="BeginStep"/> (one whole rule application) is
/// one step however many mutations it makes, and the limit is checked before the group starts, so a stop never
/// leaves a half-done rewrite; a mutation outside any group is a step of its own.
/// </summary>
public sealed class Rewriter
{
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly List<string> _trace = [];

    public Rewriter(Model model)
    {
        Model = model;
        CollectNames(model.Graph);
    }

    public Model Model { get; }
    /// <summary>Number of mutations so far.</summary>
    public int Steps { get; private set; }
    /// <summary>Number of logical steps so far (whole rule applications, plus mutations made outside any group).</summary>
    public int LogicalSteps { get; private set; }
    /// <summary>When true, every mutation is recorded in <see cref="Trace"/>.</summary>
    public bool Tracing { get; set; }
    public IReadOnlyList<string> Trace => _trace;

    private void CollectNames(Graph g)
    {
        _names.Add(g.Name);
        foreach (var v in g.DefinedValues()) _names.Add(v.Name);
        foreach (var n in g.NodeList)
        {
            if (n.Name.Length > 0) _names.Add(n.Name);
            foreach (var sg in n.Subgraphs) CollectNames(sg);
        }
    }

    private int? _limit;
    private int _groupDepth;

    private void CheckLimit()
    {
        if (_limit is int lim && LogicalSteps >= lim) throw new Passes.StepLimitReachedException(lim);
    }

    private void Step(string what)
    {
        if (_groupDepth == 0)
        {
            CheckLimit();
            LogicalSteps++;
            if (Tracing) _trace.Add(what);
        }
        else if (Tracing) _trace.Add("  " + what);
        Steps++;
    }

    /// <summary>
    /// Opens a logical step (<paramref name="label"/>, e.g. one rule application): throws
    /// <see cref="Passes.StepLimitReachedException"/> before anything changes when the limit is spent; the mutations
    /// made until the returned handle is disposed count as this one step (traced indented below the label).
    /// </summary>
    public IDisposable BeginStep(string label)
    {
        if (_groupDepth == 0)
        {
            CheckLimit();
            LogicalSteps++;
            if (Tracing) _trace.Add(label);
        }
        _groupDepth++;
        return new Reset(() => _groupDepth--);
    }

    /// <summary>Makes logical steps past <paramref name="limit"/> in total throw <see cref="Passes.StepLimitReachedException"/>.</summary>
    public IDisposable LimitSteps(int limit)
    {
        _limit = limit;
        return new Reset(() => _limit = null);
    }

    private sealed class Reset(Action a) : IDisposable { public void Dispose() => a(); }

    /// <summary>Sets (or replaces) a model metadata_props entry: facts a pass wants to travel with the ONNX file.</summary>
    public void SetMetadata(string key, string value)
    {
        int i = Model.MetadataProps.FindIndex(kv => kv.Key == key);
        if (i >= 0 && Model.MetadataProps[i].Value == value) return;
        if (i >= 0) Model.MetadataProps[i] = new(key, value);
        else Model.MetadataProps.Add(new(key, value));
        Step($"metadata {key} = {value}");
    }

    /// <summary>A model-wide unique name derived from <paramref name="hint"/>.</summary>
    public string UniqueName(string hint)
    {
        if (string.IsNullOrEmpty(hint)) hint = "v";
        if (_names.Add(hint)) return hint;
        // Resume after the last suffix handed out for this hint (names are never freed, so every smaller suffix is
        // taken): the same names as counting from 1, without 100k nodes of one hint costing 100k^2 probes.
        for (int i = _nextSuffix.GetValueOrDefault(hint, 1); ; i++)
        {
            var c = $"{hint}_{i}";
            if (_names.Add(c)) { _nextSuffix[hint] = i + 1; return c; }
        }
    }

    private readonly Dictionary<string, int> _nextSuffix = new(StringComparer.Ordinal);

    internal void Reserve(string name) => _names.Add(name);

    /// <summary>Adds a node at the end of <paramref name="graph"/> (or before <paramref name="before"/>). Output names are uniquified.</summary>
    public Node AddNode(Graph graph, string opType, IEnumerable<Value?> inputs, IEnumerable<string> outputNames,
        IEnumerable<Attr>? attrs = null, string domain = "", string? name = null, Node? before = null)
    {
        var n = new Node(graph, UniqueName(name ?? opType), opType, domain);
        int i = 0;
        foreach (var v in inputs)
        {
            if (v is not null) CheckVisible(graph, v, n);
            n.InputList.Add(v);
            v?.AddUse(n, i);
            i++;
        }
        int k = 0;
        foreach (var o in outputNames)
        {
            if (o.Length == 0) { n.OutputList.Add(null); k++; continue; }
            var v = new Value(graph, UniqueName(o), null) { Producer = n, OutputIndex = k++ };
            n.OutputList.Add(v);
        }
        if (attrs is not null) n.AttrList.AddRange(attrs);
        foreach (var sg in n.Subgraphs) { sg.Parent = graph; sg.ParentNode = n; }
        int at = before is null ? graph.NodeList.Count : graph.NodeList.IndexOf(before);
        if (at < 0) throw new InvalidOperationException($"{before} is not in {graph}");
        graph.NodeList.Insert(at, n);
        Step($"add {n}");
        return n;
    }

    /// <summary>Convenience: adds a single-output node and returns its output.</summary>
    public Value Op(Graph graph, string opType, IEnumerable<Value?> inputs, IEnumerable<Attr>? attrs = null,
        string domain = "", string? outputName = null, Node? before = null)
        => AddNode(graph, opType, inputs, [outputName ?? opType.ToLowerInvariant() + "_out"], attrs, domain, null, before).Output();

    private static void CheckVisible(Graph graph, Value v, Node n)
    {
        if (!v.Graph.IsWithin(graph))
            throw new InvalidOperationException($"{n}: input {v.Name} is defined in {v.Graph}, which does not enclose {graph}");
    }

    /// <summary>Adds a constant initializer.</summary>
    public Value AddInitializer(Graph graph, string nameHint, Tensor data)
    {
        var v = new Value(graph, UniqueName(nameHint), new TensorType(data.Element, new Shape(data.Dims.Select(Dim.Of).ToArray()))) { Const = data };
        graph.InitializerList.Add(v);
        Step($"add initializer {v.Name} {data}");
        return v;
    }

    /// <summary>Replaces the constant data of an initializer (same name, maybe new shape).</summary>
    public void SetInitializerData(Value v, Tensor data)
    {
        if (!v.IsInitializer) throw new InvalidOperationException($"{v.Name} is not an initializer");
        v.Const = data;
        v.Type = new TensorType(data.Element, new Shape(data.Dims.Select(Dim.Of).ToArray()));
        Step($"set data {v.Name} {data}");
    }

    /// <summary>Adds a graph input.</summary>
    public Value AddInput(Graph graph, string name, TensorType type)
    {
        var v = new Value(graph, UniqueName(name), type);
        graph.InputList.Add(v);
        Step($"add input {v.Name}");
        return v;
    }

    /// <summary>Marks a value as a graph output (at the end, or at <paramref name="position"/>).</summary>
    public void AddOutput(Graph graph, Value v, int position = -1)
    {
        if (position < 0) graph.OutputList.Add(v); else graph.OutputList.Insert(position, v);
        Step($"add output {v.Name}");
    }

    public void RemoveOutput(Graph graph, Value v)
    {
        if (!graph.OutputList.Remove(v)) throw new InvalidOperationException($"{v.Name} is not an output of {graph}");
        Step($"remove output {v.Name}");
    }

    /// <summary>Removes a graph input that nothing uses.</summary>
    public void RemoveInput(Graph graph, Value v)
    {
        if (v.Uses.Count > 0) throw new InvalidOperationException($"input {v.Name} is still used by {v.Uses[0].Node}");
        graph.InputList.Remove(v);
        if (v.IsInitializer) graph.InitializerList.Remove(v);
        Step($"remove input {v.Name}");
    }

    public void SetInput(Node n, int index, Value? v)
    {
        while (n.InputList.Count <= index) n.InputList.Add(null);
        var old = n.InputList[index];
        if (old == v) return;
        if (v is not null) CheckVisible(n.Graph, v, n);
        old?.RemoveUse(n, index);
        n.InputList[index] = v;
        v?.AddUse(n, index);
        Step($"set {n} input {index}: {old?.Name ?? "-"} -> {v?.Name ?? "-"}");
    }

    /// <summary>
    /// Points every use of <paramref name="old"/> at <paramref name="replacement"/>. When <paramref name="old"/> is a
    /// graph output, the replacement takes its place and its name, so the model's I/O contract is unchanged.
    /// </summary>
    public void ReplaceAllUsesWith(Value old, Value replacement)
    {
        if (old == replacement) return;
        foreach (var u in old.Uses.ToList()) SetInput(u.Node, u.Index, replacement);
        var g = old.Graph;
        int pos = g.OutputList.IndexOf(old);
        if (pos >= 0)
        {
            g.OutputList[pos] = replacement;
            if (!replacement.IsGraphInput && !replacement.IsInitializer && !g.OutputList.Take(pos).Contains(replacement))
            {
                string name = old.Name;
                old.Name = UniqueName(name + "_replaced");
                replacement.Name = name;
                if (replacement.Type is null) replacement.Type = old.Type;
            }
        }
        Step($"replace uses {old.Name} -> {replacement.Name}");
    }

    /// <summary>Removes a node whose outputs are unused (outputs that are still used make this throw).</summary>
    public void RemoveNode(Node n)
    {
        foreach (var o in n.OutputList)
            if (o is not null && o.IsUsed)
                throw new InvalidOperationException($"cannot remove {n}: output {o.Name} is still used" + (o.Uses.Count > 0 ? $" by {o.Uses[0].Node}" : " as a graph output"));
        for (int i = 0; i < n.InputList.Count; i++) n.InputList[i]?.RemoveUse(n, i);
        n.InputList.Clear();
        foreach (var sg in n.Subgraphs) DetachUses(sg);
        if (!n.Graph.NodeList.Remove(n)) throw new InvalidOperationException($"{n} is not in {n.Graph}");
        Step($"remove {n}");
    }

    /// <summary>
    /// Removes many nodes at once in time linear in their size (removing 100k dead readers of one value one by one
    /// costs 100k^2 in list searches). <paramref name="nodes"/> must list consumers before producers (reverse
    /// topological order), each output used only by nodes of the batch; each node is one step, and at a step limit the
    /// nodes before it are removed (a prefix of such a list is itself removable) before the limit is reported.
    /// </summary>
    public void RemoveNodes(IReadOnlyList<Node> nodes)
    {
        var batch = new HashSet<Node>();
        Passes.StepLimitReachedException? stop = null;
        foreach (var n in nodes)
        {
            try { Step($"remove {n}"); }
            catch (Passes.StepLimitReachedException e) { stop = e; break; }
            batch.Add(n);
        }
        foreach (var n in batch)
            foreach (var o in n.OutputList)
                if (o is not null && (o.IsGraphOutput || o.Uses.Any(u => !batch.Contains(u.Node))))
                    throw new InvalidOperationException($"cannot remove {n}: output {o.Name} is still used" + (o.IsGraphOutput ? " as a graph output" : $" by {o.Uses.First(u => !batch.Contains(u.Node)).Node}"));
        var inputs = new HashSet<Value>();
        foreach (var n in batch)
        {
            foreach (var v in n.InputList) if (v is not null) inputs.Add(v);
            n.InputList.Clear();
            foreach (var sg in n.Subgraphs) DetachUses(sg);
        }
        foreach (var v in inputs) v.RemoveUsesBy(batch);
        foreach (var g in batch.Select(n => n.Graph).Distinct().ToList()) g.NodeList.RemoveAll(batch.Contains);
        if (stop is not null) throw stop;
    }

    private static void DetachUses(Graph g)
    {
        foreach (var m in g.NodeList)
        {
            for (int i = 0; i < m.InputList.Count; i++)
                if (m.InputList[i] is { } v && !g.IsWithin(v.Graph)) v.RemoveUse(m, i);
            foreach (var sg in m.Subgraphs) DetachUses(sg);
        }
    }

    /// <summary>Removes an unused initializer.</summary>
    public void RemoveInitializer(Value v)
    {
        if (v.IsUsed) throw new InvalidOperationException($"initializer {v.Name} is still used");
        v.Graph.InitializerList.Remove(v);
        v.Graph.InputList.Remove(v);
        Step($"remove initializer {v.Name}");
    }

    public void SetAttribute(Node n, Attr a)
    {
        int i = n.AttrList.FindIndex(x => x.Name == a.Name);
        if (i >= 0) n.AttrList[i] = a; else n.AttrList.Add(a);
        Step($"set {n} attr {a.Name}={a.Render()}");
    }

    public void RemoveAttribute(Node n, string name)
    {
        if (n.AttrList.RemoveAll(a => a.Name == name) > 0) Step($"remove {n} attr {name}");
    }

    public void SetType(Value v, TensorType? t)
    {
        v.Type = t;
        Step($"type {v.Name}: {t}");
    }

    public void RenameValue(Value v, string name)
    {
        if (v.Name == name) return;
        v.Name = UniqueName(name);
        Step($"rename value -> {v.Name}");
    }

    /// <summary>Sets (or raises) the opset version a domain is imported at.</summary>
    public void EnsureOpset(string domain, long version)
    {
        domain = Node.NormalizeDomain(domain);
        if (!Model.Opsets.TryGetValue(domain, out var have) || have < version)
        {
            Model.Opsets[domain] = version;
            Step($"opset {domain}={version}");
        }
    }

    /// <summary>Reorders the nodes of <paramref name="g"/> (and subgraphs) topologically; throws on a cycle.</summary>
    public void SortTopologically(Graph g)
    {
        var order = g.TopologicalOrder() ?? throw new IrException($"graph '{g.Name}' has a cycle through {string.Join(" -> ", g.FindCycle())}");
        g.NodeList.Clear();
        g.NodeList.AddRange(order);
        foreach (var n in order) foreach (var sg in n.Subgraphs) SortTopologically(sg);
    }
}

/// <summary>An IR invariant or model structure error.</summary>
public class IrException(string message) : Exception(message);

namespace LongCtx.Compiler.IR;

/// <summary>
/// Checks IR invariants: SSA (one definition per name, no shadowing), use lists match inputs, producers match
/// outputs, nodes in topological order, every input defined before use, graph outputs defined; and element types
/// where they are known (cheap, local checks): operands of elementwise ops, MatMul, Concat and Where agree, an
/// initializer's declared type matches its data, a Cast's output type is its 'to'.
/// Run after every pass (always in tests and Debug, <c>--verify</c> in the CLI).
/// </summary>
public static class Verifier
{
    public static IReadOnlyList<string> Check(Model model)
    {
        var errors = new List<string>();
        var allNodes = new HashSet<Node>();
        var defined = new HashSet<Value>();
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        var reads = new Dictionary<Value, int>();
        CheckGraph(model.Graph, [], errors, allNodes, defined, names, reads);
        // Use lists in linear time (a Sum of 100k copies of one input must not cost 100k^2): every listed use must be
        // current and listed once; then as many uses as inputs reading the value means none is missing.
        var seen = new HashSet<Use>();
        foreach (var v in defined)
        {
            bool valid = true;
            foreach (var u in v.Uses)
            {
                if (!allNodes.Contains(u.Node)) { errors.Add($"value '{v.Name}' lists a use by {u.Node}, which is not in the model"); valid = false; }
                else if (u.Index >= u.Node.Inputs.Count || u.Node.Inputs[u.Index] != v) { errors.Add($"value '{v.Name}' lists a stale use ({u.Node}, input {u.Index})"); valid = false; }
                else if (!seen.Add(u)) { errors.Add($"value '{v.Name}' lists its use ({u.Node}, input {u.Index}) twice"); valid = false; }
            }
            if (valid && reads.GetValueOrDefault(v) != v.Uses.Count) MissingUses(v, errors);
        }
        return errors;
    }

    /// <summary>Names the inputs that read <paramref name="v"/> without being in its use list (only on a mismatch).</summary>
    private static void MissingUses(Value v, List<string> errors)
    {
        var listed = v.Uses.ToHashSet();
        foreach (var n in ReadersOf(v))
            for (int i = 0; i < n.Inputs.Count; i++)
                if (n.Inputs[i] == v && !listed.Contains(new Use(n, i))) errors.Add($"value '{v.Name}' does not list its use by {n} input {i}");
    }

    private static IEnumerable<Node> ReadersOf(Value v)
    {
        var root = v.Graph;
        var stack = new Stack<Graph>([root]);
        while (stack.Count > 0)
            foreach (var n in stack.Pop().Nodes)
            {
                if (n.Inputs.Contains(v)) yield return n;
                foreach (var sg in n.Subgraphs) stack.Push(sg);
            }
    }

    public static void Verify(Model model, string? after = null)
    {
        var e = Check(model);
        if (e.Count > 0)
            throw new IrException($"IR verification failed{(after is null ? "" : " after " + after)} on {model.DisplayName}: " + string.Join("; ", e.Take(10)) + (e.Count > 10 ? $" (+{e.Count - 10} more)" : ""));
    }

    /// <summary>Default-domain ops whose listed inputs must share one element type (ONNX type constraint T).</summary>
    private static readonly Dictionary<string, int[]> SameTypeInputs = new(StringComparer.Ordinal)
    {
        ["Add"] = [0, 1], ["Sub"] = [0, 1], ["Mul"] = [0, 1], ["Div"] = [0, 1], ["MatMul"] = [0, 1],
        ["Equal"] = [0, 1], ["Less"] = [0, 1], ["LessOrEqual"] = [0, 1], ["Greater"] = [0, 1], ["GreaterOrEqual"] = [0, 1],
        ["And"] = [0, 1], ["Or"] = [0, 1], ["Xor"] = [0, 1], ["Where"] = [1, 2],
    };

    private static ElementType? Known(Value? v) => v?.Type?.Element is { } e && e != ElementType.Undefined ? e : null;

    private static void CheckTypes(Node n, List<string> errors)
    {
        if (n.Domain.Length != 0) return;
        IEnumerable<int> slots = n.OpType is "Concat" or "Sum" or "Max" or "Min" or "Mean"
            ? Enumerable.Range(0, n.Inputs.Count)
            : SameTypeInputs.TryGetValue(n.OpType, out var s) ? s : [];
        int? first = null;
        foreach (int i in slots)
        {
            if (Known(n.Input(i)) is not { } e) continue;
            if (first is not int f) { first = i; continue; }
            if (Known(n.Input(f)) is { } ef && ef != e)
                errors.Add($"{n} input {i} '{n.Input(i)!.Name}' is {e.ShortName()} but input {f} '{n.Input(f)!.Name}' is {ef.ShortName()} (the operands of {n.OpType} must have one element type)");
        }
        if (n.OpType == "Cast" && n.Attribute("to") is { } to && n.Outputs.Count > 0 && Known(n.Outputs[0]) is { } oe && (long)oe != to.AsInt())
            errors.Add($"{n} casts to {((ElementType)to.AsInt()).ShortName()} but its output '{n.Outputs[0]!.Name}' is declared {oe.ShortName()}");
    }

    /// <summary>
    /// <paramref name="names"/> holds the names of this graph and its enclosing graphs: a name may not repeat there
    /// (SSA, no shadowing), but sibling subgraphs (the two branches of an If) may each define the same local name, as
    /// ONNX allows, so a subgraph's names leave the table when its check ends.
    /// </summary>
    private static void CheckGraph(Graph g, HashSet<Value> outerVisible, List<string> errors, HashSet<Node> allNodes, HashSet<Value> defined,
        Dictionary<string, string> names, Dictionary<Value, int> reads)
    {
        var visible = new HashSet<Value>(outerVisible);
        var local = new List<string>();
        void Define(Value v, string what)
        {
            if (v.Graph != g) errors.Add($"{what} '{v.Name}' belongs to {v.Graph}, listed in {g}");
            if (names.TryGetValue(v.Name, out var prev)) errors.Add($"name '{v.Name}' is defined twice ({prev} and {what} in graph '{g.Name}')");
            else { names[v.Name] = $"{what} in graph '{g.Name}'"; local.Add(v.Name); }
            visible.Add(v);
            defined.Add(v);
        }
        foreach (var v in g.Inputs) Define(v, "input");
        foreach (var v in g.Initializers)
        {
            if (v.Const is null) errors.Add($"initializer '{v.Name}' has no data");
            else if (Known(v) is { } declared && declared != v.Const.Element)
                errors.Add($"initializer '{v.Name}' is declared {declared.ShortName()} but its data is {v.Const.Element.ShortName()}");
            if (!v.IsGraphInput) Define(v, "initializer");
        }
        foreach (var n in g.Nodes)
        {
            if (!allNodes.Add(n)) errors.Add($"{n} appears twice");
            if (n.Graph != g) errors.Add($"{n} belongs to {n.Graph}, listed in {g}");
            for (int i = 0; i < n.Inputs.Count; i++)
            {
                var v = n.Inputs[i];
                if (v is null) continue;
                if (!visible.Contains(v))
                    errors.Add($"{n} input {i} '{v.Name}' is not defined before use (not a graph input, initializer, or output of an earlier node)");
                reads[v] = reads.GetValueOrDefault(v) + 1;
            }
            CheckTypes(n, errors);
            foreach (var sg in n.Subgraphs)
            {
                if (sg.Parent != g || sg.ParentNode != n) errors.Add($"subgraph '{sg.Name}' of {n} has a wrong parent link");
                CheckGraph(sg, visible, errors, allNodes, defined, names, reads);
            }
            for (int k = 0; k < n.Outputs.Count; k++)
            {
                var o = n.Outputs[k];
                if (o is null) continue;
                if (o.Producer != n || o.OutputIndex != k) errors.Add($"output {k} '{o.Name}' of {n} has a wrong producer link");
                Define(o, $"output of {n}");
            }
        }
        foreach (var o in g.Outputs)
            if (!visible.Contains(o)) errors.Add($"graph output '{o.Name}' of '{g.Name}' is not defined");
        if (g.Parent is not null) foreach (var name in local) names.Remove(name);
    }
}

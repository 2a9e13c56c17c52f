using System.Security.Cryptography;
using System.Text;
using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Diff;

public sealed record IoChange(string Kind, string Name, string? Before, string? After);
public sealed record OpsetChange(string Domain, long? Before, long? After);
public sealed record NodeRecord(string Op, string Name, IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs, IReadOnlyList<string> Attributes);
public sealed record NodeChange(string Op, string Name, IReadOnlyList<string> Changes);
public sealed record InitializerRecord(string Name, string Type, string Hash);
public sealed record InitializerChange(string Name, string Before, string After);

/// <summary>The structural difference between two models. Deterministic; never contains raw weights.</summary>
public sealed record DiffResult(
    IReadOnlyList<string> Header,
    IReadOnlyList<OpsetChange> Opsets,
    IReadOnlyList<IoChange> Io,
    int UnchangedNodes,
    IReadOnlyList<NodeRecord> AddedNodes,
    IReadOnlyList<NodeRecord> RemovedNodes,
    IReadOnlyList<NodeChange> ChangedNodes,
    IReadOnlyList<InitializerRecord> AddedInitializers,
    IReadOnlyList<InitializerRecord> RemovedInitializers,
    IReadOnlyList<InitializerChange> ChangedInitializers,
    IReadOnlyList<string> RenamedInitializers)
{
    public bool IsEmpty => Header.Count == 0 && Opsets.Count == 0 && Io.Count == 0 && AddedNodes.Count == 0 && RemovedNodes.Count == 0
        && ChangedNodes.Count == 0 && AddedInitializers.Count == 0 && RemovedInitializers.Count == 0 && ChangedInitializers.Count == 0 && RenamedInitializers.Count == 0;

    /// <summary>Readable text: the format every pass snapshot records.</summary>
    public string ToText()
    {
        var sb = new StringBuilder();
        if (IsEmpty) return "no structural differences\n";
        foreach (var h in Header) sb.Append("model: ").Append(h).Append('\n');
        foreach (var o in Opsets) sb.Append($"opset {(o.Domain.Length == 0 ? "ai.onnx" : o.Domain)}: {o.Before?.ToString() ?? "-"} -> {o.After?.ToString() ?? "-"}\n");
        foreach (var c in Io) sb.Append($"{c.Kind} {c.Name}: {c.Before ?? "-"} -> {c.After ?? "-"}\n");
        sb.Append($"nodes: {UnchangedNodes} unchanged, {AddedNodes.Count} added, {RemovedNodes.Count} removed, {ChangedNodes.Count} changed\n");
        foreach (var n in RemovedNodes) sb.Append("  - ").Append(Render(n)).Append('\n');
        foreach (var n in AddedNodes) sb.Append("  + ").Append(Render(n)).Append('\n');
        foreach (var n in ChangedNodes)
        {
            sb.Append($"  ~ {n.Op} '{n.Name}'\n");
            foreach (var c in n.Changes) sb.Append("      ").Append(c).Append('\n');
        }
        int ic = AddedInitializers.Count + RemovedInitializers.Count + ChangedInitializers.Count + RenamedInitializers.Count;
        if (ic > 0)
        {
            sb.Append($"initializers: {AddedInitializers.Count} added, {RemovedInitializers.Count} removed, {ChangedInitializers.Count} changed, {RenamedInitializers.Count} renamed\n");
            foreach (var i in RemovedInitializers) sb.Append($"  - {i.Name} {i.Type} #{i.Hash}\n");
            foreach (var i in AddedInitializers) sb.Append($"  + {i.Name} {i.Type} #{i.Hash}\n");
            foreach (var i in ChangedInitializers) sb.Append($"  ~ {i.Name}: {i.Before} -> {i.After}\n");
            foreach (var r in RenamedInitializers) sb.Append($"  = {r}\n");
        }
        return sb.ToString();
    }

    private static string Render(NodeRecord n) =>
        $"{n.Op} '{n.Name}' ({string.Join(", ", n.Inputs)}) -> ({string.Join(", ", n.Outputs)})" + (n.Attributes.Count > 0 ? " {" + string.Join(", ", n.Attributes) + "}" : "");
}

/// <summary>
/// Structural model diff. Nodes are matched first by a structural signature (op, attributes, and the signatures of
/// their inputs, computed bottom-up from graph inputs and initializer contents), so matching does not depend on node
/// order or generated names; unmatched nodes then pair by name and op type. Initializers compare by name and content hash.
/// </summary>
public static class ModelDiff
{
    public static DiffResult Compare(Model a, Model b)
    {
        var header = new List<string>();
        if (a.IrVersion != b.IrVersion) header.Add($"ir_version {a.IrVersion} -> {b.IrVersion}");
        var opsets = new List<OpsetChange>();
        foreach (var d in a.Opsets.Keys.Union(b.Opsets.Keys).Order(StringComparer.Ordinal))
        {
            long? x = a.Opsets.TryGetValue(d, out var va) ? va : null, y = b.Opsets.TryGetValue(d, out var vb) ? vb : null;
            if (x != y) opsets.Add(new OpsetChange(d, x, y));
        }
        var io = new List<IoChange>();
        CompareIo("input", a.Graph.Inputs.Where(v => !v.IsInitializer), b.Graph.Inputs.Where(v => !v.IsInitializer), io);
        CompareIo("output", a.Graph.Outputs, b.Graph.Outputs, io);

        var sa = new Signatures(a.Graph);
        var sb = new Signatures(b.Graph);
        var nodesA = a.Graph.Nodes.ToList();
        var nodesB = b.Graph.Nodes.ToList();
        var matched = new Dictionary<Node, Node>();
        var bySigB = nodesB.GroupBy(sb.Of).ToDictionary(g => g.Key, g => new Queue<Node>(g));
        foreach (var n in nodesA)
            if (bySigB.TryGetValue(sa.Of(n), out var q) && q.Count > 0) matched[n] = q.Dequeue();
        int unchanged = 0;
        var changed = new List<NodeChange>();
        foreach (var (n, m) in matched)
        {
            // Same structure; report rewiring to differently named but identical values (e.g. after dedup).
            var c = NodeChanges(n, m, includeName: false);
            if (c.Count == 0) unchanged++; else changed.Add(new NodeChange(m.QualifiedOp, m.Name, c));
        }
        var restB = nodesB.Except(matched.Values).ToList();
        var restA = nodesA.Where(n => !matched.ContainsKey(n)).ToList();
        var pairs = new List<(Node, Node)>();
        foreach (var n in restA.ToList())
        {
            var m = (n.Name.Length > 0 ? restB.FirstOrDefault(x => x.Name == n.Name && x.OpType == n.OpType && x.Domain == n.Domain) : null)
                ?? restB.FirstOrDefault(x => x.OpType == n.OpType && x.Domain == n.Domain && x.Outputs.Count > 0 && n.Outputs.Count > 0 && x.Outputs[0]?.Name == n.Outputs[0]?.Name);
            if (m is null) continue;
            restB.Remove(m);
            restA.Remove(n);
            pairs.Add((n, m));
        }
        foreach (var (n, m) in pairs)
        {
            var c = NodeChanges(n, m);
            if (c.Count == 0) unchanged++; else changed.Add(new NodeChange(m.QualifiedOp, m.Name, c));
        }
        var removed = restA.Select(Record).OrderBy(r => r.Op, StringComparer.Ordinal).ThenBy(r => r.Name, StringComparer.Ordinal).ThenBy(r => string.Join(",", r.Outputs), StringComparer.Ordinal).ToList();
        var added = restB.Select(Record).OrderBy(r => r.Op, StringComparer.Ordinal).ThenBy(r => r.Name, StringComparer.Ordinal).ThenBy(r => string.Join(",", r.Outputs), StringComparer.Ordinal).ToList();
        changed.Sort((x, y) => string.CompareOrdinal(x.Op + x.Name, y.Op + y.Name));

        var ia = a.Graph.Initializers.ToDictionary(v => v.Name);
        var ib = b.Graph.Initializers.ToDictionary(v => v.Name);
        var addedI = new List<InitializerRecord>();
        var removedI = new List<InitializerRecord>();
        var changedI = new List<InitializerChange>();
        foreach (var (name, v) in ia.OrderBy(k => k.Key, StringComparer.Ordinal))
        {
            if (!ib.TryGetValue(name, out var w)) { removedI.Add(new InitializerRecord(name, v.Const!.ToString(), v.Const.ContentHash())); continue; }
            string da = $"{v.Const} #{v.Const!.ContentHash()}", db = $"{w.Const} #{w.Const!.ContentHash()}";
            if (da != db) changedI.Add(new InitializerChange(name, da, db));
        }
        foreach (var (name, w) in ib.OrderBy(k => k.Key, StringComparer.Ordinal))
            if (!ia.ContainsKey(name)) addedI.Add(new InitializerRecord(name, w.Const!.ToString(), w.Const.ContentHash()));
        var renamed = new List<string>();
        foreach (var r in removedI.ToList())
        {
            var m = addedI.FirstOrDefault(x => x.Hash == r.Hash && x.Type == r.Type);
            if (m is null) continue;
            renamed.Add($"{r.Name} -> {m.Name} {m.Type} #{m.Hash}");
            removedI.Remove(r);
            addedI.Remove(m);
        }
        return new DiffResult(header, opsets, io, unchanged, added, removed, changed, addedI, removedI, changedI, renamed);
    }

    private static void CompareIo(string kind, IEnumerable<Value> a, IEnumerable<Value> b, List<IoChange> io)
    {
        var la = a.ToList();
        var lb = b.ToList();
        foreach (var v in la)
        {
            var w = lb.FirstOrDefault(x => x.Name == v.Name);
            if (w is null) io.Add(new IoChange(kind, v.Name, TypeText(v), null));
            else if (TypeText(v) != TypeText(w)) io.Add(new IoChange(kind, v.Name, TypeText(v), TypeText(w)));
        }
        foreach (var w in lb)
            if (la.All(x => x.Name != w.Name)) io.Add(new IoChange(kind, w.Name, null, TypeText(w)));
    }

    private static string TypeText(Value v) => v.Type?.ToString() ?? (v.RawType is not null ? "non-tensor" : "?");

    private static NodeRecord Record(Node n) => new(
        n.QualifiedOp, n.Name,
        n.Inputs.Select(i => i?.Name ?? "").ToList(),
        n.Outputs.Select(o => o?.Name ?? "").ToList(),
        n.Attributes.OrderBy(x => x.Name, StringComparer.Ordinal).Select(x => $"{x.Name}={x.Render()}").ToList());

    private static List<string> NodeChanges(Node a, Node b, bool includeName = true)
    {
        var c = new List<string>();
        if (includeName && a.Name != b.Name) c.Add($"name: '{a.Name}' -> '{b.Name}'");
        int ni = Math.Max(a.Inputs.Count, b.Inputs.Count);
        for (int i = 0; i < ni; i++)
        {
            string x = a.Input(i)?.Name ?? "-", y = b.Input(i)?.Name ?? "-";
            if (x != y) c.Add($"input {i}: {x} -> {y}");
        }
        int no = Math.Max(a.Outputs.Count, b.Outputs.Count);
        for (int i = 0; i < no; i++)
        {
            string x = i < a.Outputs.Count ? a.Outputs[i]?.Name ?? "-" : "-", y = i < b.Outputs.Count ? b.Outputs[i]?.Name ?? "-" : "-";
            if (x != y) c.Add($"output {i}: {x} -> {y}");
        }
        foreach (var name in a.Attributes.Select(x => x.Name).Union(b.Attributes.Select(x => x.Name)).Order(StringComparer.Ordinal))
        {
            string? x = a.Attribute(name)?.Render(), y = b.Attribute(name)?.Render();
            if (x != y) c.Add($"attr {name}: {x ?? "-"} -> {y ?? "-"}");
        }
        return c;
    }

    /// <summary>Bottom-up structural hashes of values and nodes (memoised, iterative over topological order).</summary>
    private sealed class Signatures
    {
        private readonly Dictionary<Value, string> _values = [];
        private readonly Dictionary<Node, string> _nodes = [];

        public Signatures(Graph g)
        {
            foreach (var v in g.Inputs) _values[v] = "in:" + v.Name;
            foreach (var v in g.Initializers) if (!v.IsGraphInput) _values[v] = "init:" + v.Const!.ContentHash();
            foreach (var n in g.TopologicalOrder() ?? g.Nodes.ToList())
            {
                var sb = new StringBuilder();
                sb.Append(n.Domain).Append('.').Append(n.OpType).Append('(');
                foreach (var i in n.Inputs) sb.Append(i is null ? "-" : _values.GetValueOrDefault(i, "outer:" + i.Name)).Append(',');
                sb.Append(')');
                foreach (var a in n.Attributes.OrderBy(x => x.Name, StringComparer.Ordinal)) sb.Append(a.Name).Append('=').Append(a.Render()).Append(';');
                string h = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())))[..20];
                _nodes[n] = h;
                for (int k = 0; k < n.Outputs.Count; k++) if (n.Outputs[k] is { } o) _values[o] = h + ":" + k;
            }
        }

        public string Of(Node n) => _nodes[n];
    }
}

using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;

namespace LongCtx.Passes;

/// <summary>
/// Dead-code elimination: removes nodes none of whose outputs reach a graph output (directly, or through a node
/// that does), then initializers nothing reads. Subgraph bodies are cleaned too. Exact: outputs are unchanged.
/// <code>
///   x ─ A ─ y ─ (graph output)         x ─ A ─ y ─ (graph output)
///    └─ B ─ z   (unused)        ==>
/// </code>
/// Nodes with side effects do not exist in ONNX inference graphs, so reachability is the whole criterion.
/// </summary>
public sealed class DeadCodeElimination : IPass
{
    public string Name => "dce";
    public string Description => "remove nodes and initializers that no graph output depends on";
    public bool IsExact => true;

    public void Run(Model model, PassContext ctx) => Clean(model.Graph, ctx);

    private static void Clean(Graph g, PassContext ctx)
    {
        // Walk nodes in reverse topological order: a node whose outputs are used only by dead nodes is dead too. The
        // dead set is collected first and removed in one batch: linear in the graph (100k dead readers of one value
        // removed one by one cost 100k^2 list searches).
        var dead = new List<Node>();
        var isDead = new HashSet<Node>();
        foreach (var n in g.Nodes.Reverse())
        {
            ctx.Cancellation.ThrowIfCancellationRequested();
            if (n.Outputs.Any(o => o is not null && (o.IsGraphOutput || o.Uses.Any(u => !isDead.Contains(u.Node))))) continue;
            dead.Add(n);
            isDead.Add(n);
        }
        int before = g.Nodes.Count;
        try { ctx.Rewriter.RemoveNodes(dead); }
        finally { if (before > g.Nodes.Count) ctx.Count("nodes removed", before - g.Nodes.Count); }
        foreach (var n in g.Nodes) foreach (var sg in n.Subgraphs) Clean(sg, ctx);
        foreach (var v in g.Initializers.Where(v => !v.IsUsed && !v.IsGraphInput).ToList())
        {
            ctx.Rewriter.RemoveInitializer(v);
            ctx.Count("initializers removed");
        }
    }
}

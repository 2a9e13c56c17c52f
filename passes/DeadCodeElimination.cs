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
        // Walk nodes in reverse topological order: a node whose outputs are all unused can go, which may free its producers.
        foreach (var n in g.Nodes.Reverse().ToList())
        {
            ctx.Cancellation.ThrowIfCancellationRequested();
            if (n.Outputs.Any(o => o is not null && o.IsUsed)) continue;
            ctx.Rewriter.RemoveNode(n);
            ctx.Count("nodes removed");
        }
        foreach (var n in g.Nodes) foreach (var sg in n.Subgraphs) Clean(sg, ctx);
        foreach (var v in g.Initializers.Where(v => !v.IsUsed && !v.IsGraphInput).ToList())
        {
            ctx.Rewriter.RemoveInitializer(v);
            ctx.Count("initializers removed");
        }
    }
}

using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;

namespace LongCtx.Passes;

/// <summary>
/// Initializer deduplication: initializers with identical element type, dims and bytes (SHA-256 of the content,
/// confirmed byte for byte) are merged into the first one; readers of the others are rewired. Exact.
/// Initializers that are also graph inputs (overridable defaults) are left alone. Tensors above
/// <c>max-bytes</c> (default 64 MiB) are skipped so compiling multi-GB models does not hash every weight twice.
/// </summary>
public sealed class InitializerDedup : IPass
{
    public string Name => "dedup-initializers";
    public string Description => "merge initializers with identical contents";
    public bool IsExact => true;

    public void Run(Model model, PassContext ctx)
    {
        long maxBytes = long.Parse(ctx.Option("max-bytes", (64L << 20).ToString()));
        Dedup(model.Graph, ctx, maxBytes);
    }

    private static void Dedup(Graph g, PassContext ctx, long maxBytes)
    {
        var first = new Dictionary<(ElementType, string, long, string), Value>();
        foreach (var v in g.Initializers.ToList())
        {
            ctx.Cancellation.ThrowIfCancellationRequested();
            var t = v.Const!;
            if (v.IsGraphInput || v.IsGraphOutput || t.ByteLength > maxBytes || t.ByteLength == 0) continue;
            var key = (t.Element, string.Join(",", t.Dims), t.ByteLength, t.ContentHash());
            if (!first.TryGetValue(key, out var keep)) { first[key] = v; continue; }
            if (!t.Source.ReadAll().AsSpan().SequenceEqual(keep.Const!.Source.ReadAll())) continue; // hash collision guard
            ctx.Rewriter.ReplaceAllUsesWith(v, keep);
            ctx.Rewriter.RemoveInitializer(v);
            ctx.Count("initializers merged");
        }
        foreach (var n in g.Nodes) foreach (var sg in n.Subgraphs) Dedup(sg, ctx, maxBytes);
    }
}

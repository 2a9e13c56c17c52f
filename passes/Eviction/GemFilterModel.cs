using LongCtx.Compiler;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Schemas;

namespace LongCtx.Passes.Eviction;

/// <summary>
/// GemFilter's filter model (see <see cref="GemFilterPass"/>), cut from a compiled model: the cache outputs of layers
/// 0..r stay (so the runtime prefills it in chunks through the usual KV cache), the query input of layer r's attention
/// becomes the output "logits" (the runtime reads its last row as the scoring query), and everything after layer r is
/// removed with the outputs it fed and the cache inputs of later layers.
/// <code>
///   embed ─ L0 ─ … ─ Lr ─ … ─ L(n-1) ─ logits   ==>   embed ─ L0 ─ … ─ [q of Lr] ─ Identity ─ "logits" (= query of layer r)
/// </code>
/// </summary>
public static class GemFilterModel
{
    /// <summary>The filter's query output: named "logits" so the runtime drives the filter as a decoder.</summary>
    public const string QueryOutput = "logits";

    public static void Build(Model model, int layer)
    {
        var blocks = AttentionDiscovery.Discover(model).Blocks;
        if (layer >= blocks.Count) throw new CompileException($"{model.DisplayName}: --token-filter gemfilter: layer={layer} is beyond the model's depth (attention layers 0-{blocks.Count - 1})");
        var g = model.Graph;
        var rw = new Rewriter(model);
        var keepOutputs = blocks.Take(layer + 1).SelectMany(b => new[] { b.PresentKey, b.PresentValue }).OfType<string>().ToHashSet(StringComparer.Ordinal);
        var q = OpSchemas.GroupQueryAttention.Input(blocks[layer].Match.Anchor, "query")!;
        foreach (var o in g.Outputs.ToList())
            if (!keepOutputs.Contains(o.Name)) rw.RemoveOutput(g, o);
        if (g.Outputs.Count != keepOutputs.Count) throw new CompileException($"{model.DisplayName}: --token-filter gemfilter: layers 0-{layer} do not all have present cache outputs");
        new DeadCodeElimination().Run(model, new PassContext(rw)); // first: the old logits go, and their name with them
        rw = new Rewriter(model); // a fresh name table: "logits" is free again
        var query = rw.Op(g, "Identity", [q], outputName: QueryOutput);
        rw.SetType(query, q.Type);
        rw.AddOutput(g, query, 0);
        foreach (var i in g.Inputs.Where(i => i.Uses.Count == 0 && !i.IsInitializer).ToList()) rw.RemoveInput(g, i);
    }
}

using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Rewriting;
using LongCtx.Compiler.Schemas;
using LongCtx.Passes.Attention;

namespace LongCtx.Passes;

/// <summary>
/// Rewrites every recognised decoder attention block into the canonical form the rest of the compiler targets:
/// one <c>com.microsoft.GroupQueryAttention</c> (Ainslie et al. 2023, "GQA", arXiv:2305.13245) with RoPE applied
/// inside the op from cos/sin cache initializers (Su et al. 2021, arXiv:2104.09864). Exact up to float reassociation.
/// The pass is the greedy rule driver (<see cref="GreedyDriver"/>) over one rule per source form, each in
/// passes/Attention/ with its formula and before/after subgraph:
/// <list type="bullet">
/// <item><see cref="TorchAttentionToGqa"/>: form a, torch export (caches built from the recovered inv_freq)</item>
/// <item><see cref="MultiHeadAttentionToGqa"/>: form b, com.microsoft RotaryEmbedding + MultiHeadAttention</item>
/// <item><see cref="OnnxAttentionToGqa"/>: form d, ONNX Attention + RotaryEmbedding with a Concat cache</item>
/// <item><see cref="FoldRotaryIntoGqa"/>: form c with RotaryEmbedding outside the op: RoPE moves into the op</item>
/// <item><see cref="OrtAttentionToGqa"/>: onnxruntime.transformers GPT-2, com.microsoft.Attention with packed QKV and a packed past</item>
/// </list>
/// Blocks GQA cannot express stay as they are, with a note saying why ("layer N (form) kept: ..."); attention sites no
/// form reads get a "not recognised" note. seqlens_k = ReduceSum(attention_mask, axis 1) - 1 (int32) and
/// total_sequence_length = attention_mask.shape[1]: the causal + padding mask the exporter built from attention_mask is
/// what GQA derives from them, for masks that are ones followed by zeros per row (no left padding). RoPE positions come
/// from seqlens_k (past length + i), which equals position_ids whenever the caller passes position_ids =
/// arange(past, past + S), the usual contract; option <c>positions=input</c> feeds position_ids to GQA instead (ORT CPU
/// only). The model's inputs and outputs keep their names, dtypes and meaning, except a packed past_N / present_N cache
/// (<see cref="OrtAttentionToGqa"/>), which becomes the contract's past_key_values.N.key/value and present.N.key/value.
/// The driver erases the nodes a rewrite
/// leaves dead; shared subgraphs (the RoPE tables) become dead with the last block and <c>dce</c> removes them and their
/// initializers (so this pass must run before dce).
/// Options: <c>max-positions</c> (rows of the cos/sin caches, default the largest of 32768, the model's own cache length
/// and the pipeline's target context <see cref="PassContext.TargetContext"/>),
/// <c>positions</c> (seqlens | input).
/// </summary>
public sealed class CanonicalizeAttention : IPass
{
    public string Name => "canonicalize-attention";
    public string Description => "rewrite recognised attention blocks into com.microsoft.GroupQueryAttention with in-op RoPE";
    public bool IsExact => true;

    public const int DefaultMaxPositions = GqaRewrite.DefaultMaxPositions;
    /// <summary>Model metadata key: rows of the model's own cos cache before this pass made longer ones ("unknown" when it had none).</summary>
    public const string OriginalMaxPositionsKey = ArchitectureCard.OriginalMaxPositionsKey;

    /// <summary>The rule set, one rule per form (order only matters between rules sharing a root operator; none do).</summary>
    public static IReadOnlyList<IRewriteRule> Rules { get; } =
        [new TorchAttentionToGqa(), new MultiHeadAttentionToGqa(), new OnnxAttentionToGqa(), new FoldRotaryIntoGqa(), new OrtAttentionToGqa()];

    /// <summary>
    /// The longest sequence the rewritten model can take: GroupQueryAttention reads RoPE rows by position, so the
    /// shortest cos cache bounds it. Written to longctx.json ("runtime.max_context"), which the runtime enforces.
    /// </summary>
    private static void RecordMaxContext(Model model, PassContext ctx)
    {
        var gqa = OpSchemas.GroupQueryAttention;
        var rows = model.Graph.Nodes
            .Where(n => gqa.Is(n) && n.IntAttr("do_rotary", 0) == 1)
            .Select(n => gqa.Input(n, "cos_cache")?.Const?.Dims is { Length: 2 } d ? (long?)d[0] : null)
            .Where(r => r is not null).ToList();
        if (rows.Count > 0) ctx.RuntimeConfig["max_context"] = rows.Min();
    }

    public void Run(Model model, PassContext ctx)
    {
        try
        {
            var result = GreedyDriver.Run(model, Rules, ctx, Name);
            // what stayed as it was: unrecognised sites first, then kept blocks, each in graph order
            foreach (var f in result.Failures.OrderBy(f => f.Failure.Recognised ? 1 : 0))
            {
                if (f.Failure.Note is { } note) ctx.Note(note);
                if (f.Failure.Count is { } count) ctx.Count(count);
            }
        }
        finally { RecordMaxContext(model, ctx); }
    }
}

using System.Globalization;
using System.Text.RegularExpressions;
using LongCtx.Compiler;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.Rewriting;
using LongCtx.Compiler.Schemas;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Passes.Rope;

namespace LongCtx.Passes.Attention;

/// <summary>
/// Lowers canonical <c>com.microsoft.GroupQueryAttention</c> blocks (do_rotary 1 or 0) to lcc's own
/// <c>longctx.LongAttention</c> (same nine inputs and three outputs, plus a <c>pattern</c> attribute), so a pattern
/// other than dense attention can run (issue 9). Runs after canonicalize-attention and the dce behind it (it reads the
/// canonical blocks, numbered as the layers that remain); cos/sin tables a dca truncation replaced are removed here.
/// Patterns (query i at cache index q, key j; R(p) the rotation by position p):
/// <list type="bullet">
/// <item><c>dense</c>: softmax(scale R(q) q . R(j) k_j) over j &lt;= q: exactly GroupQueryAttention (rotated keys cached,
/// the cache is bit-compatible).</item>
/// <item><c>streaming</c> (StreamingLLM, Xiao et al. 2023, arXiv:2309.17453): attends j &lt; sink or q - window &lt; j &lt;= q;
/// keys are cached un-rotated and rotated by their index in the cache, queries by theirs (past_valid + i), so positions
/// are cache-relative and stay below the cos-cache rows however long generation runs. The runtime's KV manager evicts
/// the oldest non-sink tokens (longctx.json <c>runtime.kv = {policy: streaming, sink, window, max_positions}</c>, where
/// max_positions is the cos-cache rows the cache may index); <c>runtime.max_context</c> is then unbounded. The cos cache
/// must hold sink + window rows.</item>
/// <item><c>dca</c> (Dual Chunk Attention, An et al. 2024, arXiv:2402.17463; Qwen2.5-1M report, arXiv:2501.15383): with
/// chunk length c = chunk_size - local_size, keys sit at j mod c; queries at q mod c (intra-chunk), min(q mod c + c,
/// chunk_size) (successive chunk) and min(2c - 1, chunk_size) (earlier chunks; vLLM's dual_chunk_rope qc_cache[c - 1]);
/// the three partial attentions are merged by their log-sum-exp, and logits scaled by max(1, 0.1 ln(len / trained) + 1). Remapped positions never exceed chunk_size, so
/// the cos/sin caches are truncated to their first chunk_size + 1 rows (shared by all layers) and the model's context is
/// no longer bounded by them: <c>runtime.max_context</c> follows the <c>context</c> option (or is unbounded).</item>
/// </list>
/// The pass is the greedy rule driver over one rule, <see cref="GqaToLongAttention"/> (pattern + check + rewrite).
/// Blocks the kernel cannot run stay on ORT's GroupQueryAttention with a note naming the layer and the reason (head_dim
/// not a multiple of 16 or above 256, element type not float32/float16, an integer KV cache, packed QKV,
/// local_window_size, softcap, smooth_softmax, position_ids/attention_bias inputs, RoPE outside the op); attention blocks
/// that are not canonical GroupQueryAttention are named with their layer and form. Options: see
/// <see cref="LongAttentionSettings"/>.
/// </summary>
public sealed partial class LowerToLongAttention : IPass
{
    public string Name => "lower-attention";
    public string Description => "lower canonical GroupQueryAttention to longctx.LongAttention (dense: exact; streaming, dca: approximate by design)";
    public bool IsExact => false;

    private static readonly OpSchema La = OpSchemas.LongAttention, Gqa = OpSchemas.GroupQueryAttention;
    public static IReadOnlyList<IRewriteRule> Rules { get; } = [new GqaToLongAttention()];

    public void Run(Model model, PassContext ctx)
    {
        // options first: a bad pattern or window is one error before anything changes
        var s = LongAttentionSettings.Parse(ctx.Options, TrainedContext(model), model.DisplayName, ctx.TargetContext);
        if (s.Said is not null) ctx.Note(s.Said);
        var before = AttentionDiscovery.Discover(model);
        foreach (var u in before.Unrecognised) ctx.Note("not canonical attention, kept: " + u);
        foreach (var b in before.Blocks.Where(b => s.Applies(b.Layer)))
        {
            if (b.Form == FusedAttentionForms.LongAttention) ctx.Count("blocks already LongAttention");
            else if (b.Form != FusedAttentionForms.Gqa)
            {
                ctx.Note($"layer {b.Layer} stays on its {b.Form} attention: not canonical GroupQueryAttention (canonicalize-attention kept it)");
                ctx.Count(GqaToLongAttention.KeptCount);
            }
        }
        int layerCount = before.Blocks.Count + before.Unrecognised.Count;
        if (s.Calibration is var (calPath, cal) && before.Blocks.FirstOrDefault() is { } first)
            cal.CheckModel(calPath, model.DisplayName, layerCount, (int)first.Match.Anchor.IntAttr("num_heads", 0), (int)first.Match.Anchor.IntAttr("kv_num_heads", 0));
        if (s.Layers?.FirstOrDefault(l => l >= layerCount) is int missing && missing >= layerCount)
            throw new CompileException($"{model.DisplayName}: --attention layers: the model has no attention layer {missing} (its layers are 0-{layerCount - 1})");
        var tables = model.Graph.Nodes.Where(Gqa.Is).SelectMany(n => new[] { Gqa.Input(n, "cos_cache"), Gqa.Input(n, "sin_cache") })
            .OfType<Value>().Where(v => v.IsInitializer).Distinct().ToList();

        var result = GreedyDriver.Run(model, Rules, ctx, Name);
        foreach (var f in result.Failures)
        {
            if (f.Failure.Note is { } note) ctx.Note(note);
            if (f.Failure.Count is { } count) ctx.Count(count);
        }
        // tables a dca truncation replaced (and no one else reads) go with their last reader
        var dropped = tables.Where(v => !v.IsUsed).ToList();
        foreach (var v in dropped) ctx.Rewriter.RemoveInitializer(v);
        if (dropped.Count > 0)
        {
            ctx.Count("cos/sin caches truncated", dropped.Count);
            ctx.Note($"dca: cos/sin caches truncated to their first {s.Chunk + 1} rows (remapped positions stay in [0, chunk {s.Chunk}]); the context is no longer bounded by them");
        }
        Record(model, s, result.Total, ctx);
    }

    /// <summary>longctx.json "runtime": the per-layer table, the streaming KV policy, and max_context.</summary>
    private static void Record(Model model, LongAttentionSettings s, int lowered, PassContext ctx)
    {
        var rt = ctx.RuntimeConfig;
        var attention = new Dictionary<string, object?> { ["op"] = La.Qualified, ["pattern"] = s.PatternName };
        if (s.Pattern == AttentionPattern.Streaming) { attention["sink"] = s.Sink; attention["window"] = s.Window; }
        if (s.Pattern == AttentionPattern.Dca) { attention["chunk_size"] = s.Chunk; attention["local_size"] = s.Local; attention["trained_context"] = s.TrainedContext; }
        var kept = ctx.Notes.Select(n => KeptNote().Match(n)).Where(m => m.Success).ToDictionary(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), m => m.Groups[2].Value);
        attention["layers"] = AttentionDiscovery.Discover(model).Blocks.Select(b => new Dictionary<string, object?>
        {
            ["layer"] = b.Layer,
            ["op"] = b.Match.Anchor.QualifiedOp,
            ["pattern"] = La.Is(b.Match.Anchor) ? b.Match.Anchor.StringAttr("pattern", "dense") : null,
            ["kept"] = La.Is(b.Match.Anchor) ? null : kept.GetValueOrDefault(b.Layer) ?? (s.Applies(b.Layer) ? null : "not selected (layers=)"),
        }).ToList();
        if (s.Sparse is { } sp) SparsePrefillRecord.Add(attention, s, sp, ctx);
        AutoAttention.Record(attention, s);
        rt["attention"] = attention;

        var nodes = model.Graph.Nodes;
        string Pattern(Node n) => n.StringAttr("pattern", "dense");
        bool allStreaming = lowered > 0 && s.Pattern == AttentionPattern.Streaming && !nodes.Any(n => Gqa.Is(n) || La.Is(n) && Pattern(n) != "streaming");
        if (s.Pattern == AttentionPattern.Streaming && lowered > 0 && !allStreaming)
            ctx.Note("streaming: some layers stay on another attention, so the runtime cannot evict (every layer must be streaming); the context stays bounded by runtime.max_context");
        int? streamingRows = null;
        if (allStreaming)
        {
            streamingRows = nodes.Where(n => La.Is(n) && n.IntAttr("do_rotary", 0) == 1).Select(GqaToLongAttention.CosRows).Min();
            // the cache may index at most max_positions RoPE rows by cache position: it bounds the runtime's buffer
            rt["kv"] = new Dictionary<string, object?> { ["policy"] = "streaming", ["sink"] = s.Sink, ["window"] = s.Window, ["max_positions"] = streamingRows };
        }
        // the longest sequence: every op that reads RoPE rows by absolute position bounds it by its cos cache
        var bounds = nodes.Where(n => n.IntAttr("do_rotary", 0) == 1 && (Gqa.Is(n) || La.Is(n) && Pattern(n) is not ("streaming" or "dca")))
            .Select(GqaToLongAttention.CosRows).Where(r => r is not null).Select(r => (long)r!.Value).ToList();
        if (allStreaming) bounds.Clear();
        else if (nodes.Any(n => La.Is(n) && Pattern(n) == "dca") && s.Context is int c) bounds.Add(c);
        rt["max_context"] = bounds.Count > 0 ? bounds.Min() : null;
        if (lowered > 0 && s.Pattern != AttentionPattern.Dense)
            ctx.Note(bounds.Count > 0 ? $"runtime.max_context = {bounds.Min()}" : "runtime.max_context: unbounded" + (allStreaming ? $" (the streaming cache evicts to sink + window; cos cache {streamingRows} rows)" : ""));
    }

    [GeneratedRegex(@"^layer (\d+) stays on [^:]+: (.*)$")]
    private static partial Regex KeptNote();

    /// <summary>
    /// The context the model was trained at and where that was read: the RoPE pass's record (longctx.rope metadata),
    /// canonicalize-attention's original cos-cache length, config.json beside the model, else the cos cache of a model
    /// whose caches lcc did not regenerate.
    /// </summary>
    internal static (int Value, string Source)? TrainedContext(Model model)
    {
        if (model.MetadataProps.FirstOrDefault(kv => kv.Key == RopeScalingPass.AppliedKey).Value is { } rope
            && TrainedInRope().Match(rope) is { Success: true } m && double.TryParse(m.Groups[1].Value, CultureInfo.InvariantCulture, out var t))
            return ((int)t, "the RoPE pass");
        if (RopeScalingPass.MetadataTrainedContext(model) is double md) return ((int)md, "the model's original cos cache");
        if (RopeScalingPass.ConfigTrainedContext(model) is double cd) return ((int)cd, "config.json");
        if (model.MetadataProps.All(kv => kv.Key != CanonicalizeAttention.OriginalMaxPositionsKey)
            && model.Graph.Nodes.Where(n => Gqa.Is(n) && n.IntAttr("do_rotary", 0) == 1).Select(GqaToLongAttention.CosRows).FirstOrDefault(r => r is not null) is int rows)
            return (rows, "cos cache rows");
        return null;
    }

    [GeneratedRegex(@"trained=([0-9.]+)")]
    private static partial Regex TrainedInRope();
}

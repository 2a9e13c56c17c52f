using System.Globalization;
using System.Text.RegularExpressions;
using LongCtx.Compiler;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Passes.Rope;

namespace LongCtx.Passes.Attention;

/// <summary>
/// Lowers canonical <c>com.microsoft.GroupQueryAttention</c> blocks (do_rotary 1 or 0) to lcc's own
/// <c>longctx.LongAttention</c> (same nine inputs and three outputs, plus a <c>pattern</c> attribute), so a pattern
/// other than dense attention can run (issue 9). Runs after canonicalize-attention and the dce behind it (it reads the
/// canonical blocks, numbered as the layers that remain); cos/sin tables a dca truncation replaced are removed here.
/// <code>
///   q, k, v, past_k, past_v, seqlens_k, total_len, cos, sin          q, k, v, past_k, past_v, seqlens_k, total_len, cos', sin'
///        └─ com.microsoft.GroupQueryAttention ─┬ out          ==>         └─ longctx.LongAttention(pattern, ...) ─┬ out
///                                              ├ present_k                                                         ├ present_k
///                                              └ present_v                                                         └ present_v
/// </code>
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
/// chunk_size) (successive chunk) and chunk_size (earlier chunks); the three partial attentions are merged by their
/// log-sum-exp, and logits scaled by max(1, 0.1 ln(len / trained) + 1). Remapped positions never exceed chunk_size, so
/// the cos/sin caches are truncated to their first chunk_size + 1 rows (shared by all layers) and the model's context is
/// no longer bounded by them: <c>runtime.max_context</c> follows the <c>context</c> option (or is unbounded).</item>
/// </list>
/// Blocks the kernel cannot run stay on ORT's GroupQueryAttention with a note naming the layer and the reason: head_dim
/// not a multiple of 16 or above 256, element type not float32/float16, an integer KV cache, packed QKV,
/// local_window_size, softcap, smooth_softmax, position_ids/attention_bias inputs, RoPE outside the op; attention blocks
/// that are not canonical GroupQueryAttention are named with their form. Options: see <see cref="LongAttentionSettings"/>.
/// </summary>
public sealed partial class LowerToLongAttention : IPass
{
    public string Name => "lower-attention";
    public string Description => "lower canonical GroupQueryAttention to longctx.LongAttention (dense: exact; streaming, dca: approximate by design)";
    public bool IsExact => false;

    public const string Domain = "longctx", OpType = "LongAttention";

    /// <summary>What Check found for one block: the node and the cos/sin rows the pattern keeps (null: unchanged).</summary>
    private sealed record Lowering(AttentionBlock Block, int? CacheRows);

    public void Run(Model model, PassContext ctx)
    {
        var trained = TrainedContext(model);
        var s = LongAttentionSettings.Parse(ctx.Options, trained, model.DisplayName);
        if (s.Said is not null) ctx.Note(s.Said);
        var found = AttentionDiscovery.Discover(model);
        foreach (var u in found.Unrecognised) ctx.Note("not canonical attention, kept: " + u);
        var layers = new SortedDictionary<int, Dictionary<string, object?>>();
        var plan = new List<Lowering>();
        foreach (var b in found.Blocks)
        {
            if (!s.Applies(b.Layer)) { layers[b.Layer] = Row(b, "not selected (layers=)"); continue; }
            if (b.Form == FusedAttentionForms.LongAttention)
            {
                ctx.Count("blocks already LongAttention");
                layers[b.Layer] = Row(b, null);
                continue;
            }
            string? why = b.Form != FusedAttentionForms.Gqa
                ? $"{b.Form} attention is not canonical GroupQueryAttention (canonicalize-attention kept it)"
                : Check(b, s);
            if (why is not null)
            {
                ctx.Note($"layer {b.Layer} stays on GroupQueryAttention: {why}");
                ctx.Count("blocks kept");
                layers[b.Layer] = Row(b, why);
                continue;
            }
            plan.Add(new Lowering(b, s.Pattern == AttentionPattern.Dca ? s.Chunk + 1 : null));
        }
        if (s.Layers is not null)
            foreach (var l in s.Layers.Where(l => !found.Blocks.Any(b => b.Layer == l)))
                ctx.Note($"layers={l}: the model has no attention layer {l} (layers 0-{found.Blocks.Count + found.Unrecognised.Count - 1})");

        var truncated = new Dictionary<Value, Value>();
        foreach (var p in plan)
        {
            ctx.Cancellation.ThrowIfCancellationRequested();
            Rewrite(model, p, s, ctx, truncated);
            ctx.Count($"blocks lowered to LongAttention ({s.PatternName})");
            layers[p.Block.Layer] = new() { ["layer"] = p.Block.Layer, ["op"] = $"{Domain}.{OpType}", ["pattern"] = s.PatternName };
        }
        if (plan.Count > 0) ctx.Rewriter.SortTopologically(model.Graph);
        if (truncated.Count > 0)
        {
            foreach (var old in truncated.Keys.Where(v => !v.IsUsed && v.IsInitializer)) ctx.Rewriter.RemoveInitializer(old);
            ctx.Count("cos/sin caches truncated", truncated.Count);
            ctx.Note($"dca: cos/sin caches truncated to their first {s.Chunk + 1} rows (remapped positions stay in [0, chunk {s.Chunk}]); the context is no longer bounded by them");
        }
        Record(model, s, plan, layers, ctx);
    }

    private static Dictionary<string, object?> Row(AttentionBlock b, string? kept) => new()
    {
        ["layer"] = b.Layer,
        ["op"] = b.Form == FusedAttentionForms.LongAttention ? $"{Domain}.{OpType}" : b.Match.Anchor.QualifiedOp,
        ["pattern"] = b.Form == FusedAttentionForms.LongAttention ? b.Match.Anchor.StringAttr("pattern", "dense") : null,
        ["kept"] = kept,
    };

    /// <summary>Why the kernel cannot run canonical block <paramref name="b"/> with <paramref name="s"/>, or null. Pure.</summary>
    private static string? Check(AttentionBlock b, LongAttentionSettings s)
    {
        var n = b.Match.Anchor;
        bool rotary = n.IntAttr("do_rotary", 0) == 1;
        if (n.Input(1) is null || n.Input(2) is null) return "packed QKV (key/value inputs omitted); the kernel takes separate q, k, v";
        if (b.Rope.Present && !rotary) return "RoPE is applied outside the op (RotaryEmbedding on q/k)";
        if (n.Inputs.Skip(9).Any(i => i is not null)) return "position_ids or attention_bias inputs are used (the kernel derives positions from seqlens_k)";
        if (n.IntAttr("local_window_size", -1) != -1) return $"local_window_size {n.IntAttr("local_window_size", -1)} (sliding-window GroupQueryAttention)";
        if (n.FloatAttr("softcap", 0) != 0) return $"softcap {n.FloatAttr("softcap", 0).ToString(CultureInfo.InvariantCulture)}";
        if (n.IntAttr("smooth_softmax", 0) != 0) return "smooth_softmax is set";
        if (b.HeadDim % 16 != 0 || b.HeadDim > 256) return $"head_dim {b.HeadDim}: the kernel supports multiples of 16 up to 256";
        var elem = n.Input(0)?.Type?.Element ?? b.Match.Output.Type?.Element;
        if (elem is not (null or ElementType.Float or ElementType.Float16)) return $"element type {elem?.ShortName()}: the kernel handles float32 and float16";
        var kv = n.Input(3)?.Type?.Element;
        if (kv is not (null or ElementType.Float or ElementType.Float16)) return $"the KV cache is {kv?.ShortName()} (quantized or integer caches are not supported)";
        if (kv is not null && elem is not null && kv != elem) return $"the KV cache is {kv?.ShortName()} but q is {elem?.ShortName()}";
        int? rows = rotary ? CosRows(n) : null;
        if (rotary && rows is null) return "the cos/sin caches are not constant [max_positions, rotary_dim/2] tensors";
        switch (s.Pattern)
        {
            case AttentionPattern.Dca:
                if (!rotary) return "dca remaps RoPE positions but the block applies no RoPE inside the op";
                if (rows < s.Chunk + 1) return $"the cos cache has {rows} rows; dca with chunk {s.Chunk} reads positions up to {s.Chunk}";
                break;
            case AttentionPattern.Streaming:
                if (rotary && rows < s.Sink + s.Window)
                    return $"the cos cache has {rows} rows; streaming with sink {s.Sink} + window {s.Window} indexes {s.Sink + s.Window} positions";
                break;
        }
        return null;
    }

    private static int? CosRows(Node n) =>
        n.Input(7)?.Const is { Dims.Length: 2 } c && n.Input(8)?.Const is { Dims.Length: 2 } sn && c.Dims.SequenceEqual(sn.Dims) ? (int)c.Dims[0] : null;

    private static void Rewrite(Model model, Lowering p, LongAttentionSettings s, PassContext ctx, Dictionary<Value, Value> truncated)
    {
        var rw = ctx.Rewriter;
        var g = model.Graph;
        var gqa = p.Block.Match.Anchor;
        rw.EnsureOpset(Domain, 1);
        var inputs = gqa.Inputs.Take(9).ToList();
        if (p.CacheRows is int rows && CosRows(gqa) > rows)
        {
            inputs[7] = Truncate(rw, g, inputs[7]!, rows, truncated);
            inputs[8] = Truncate(rw, g, inputs[8]!, rows, truncated);
        }
        var attrs = new List<Attr>
        {
            Attr.Int("num_heads", gqa.IntAttr("num_heads", 0)),
            Attr.Int("kv_num_heads", gqa.IntAttr("kv_num_heads", 0)),
            Attr.Int("do_rotary", gqa.IntAttr("do_rotary", 0)),
            Attr.Int("rotary_interleaved", gqa.IntAttr("rotary_interleaved", 0)),
            Attr.String("pattern", s.PatternName),
        };
        if (gqa.Attribute("scale") is { } scale) attrs.Insert(2, scale);
        if (s.Pattern == AttentionPattern.Streaming) attrs.AddRange([Attr.Int("sink", s.Sink), Attr.Int("window", s.Window)]);
        if (s.Pattern == AttentionPattern.Dca)
            attrs.AddRange([Attr.Int("chunk_size", s.Chunk), Attr.Int("local_size", s.Local), Attr.Int("trained_context", s.TrainedContext!.Value)]);
        string prefix = $"layers.{p.Block.Layer}.long_attention";
        var la = rw.AddNode(g, OpType, inputs, [prefix + ".output", prefix + ".present_key", prefix + ".present_value"], attrs,
            domain: Domain, name: $"/layers.{p.Block.Layer}/LongAttention", before: gqa);
        for (int i = 0; i < 3; i++)
        {
            if (gqa.Outputs.ElementAtOrDefault(i) is not { } old) continue;
            rw.SetType(la.Output(i), old.Type);
            rw.ReplaceAllUsesWith(old, la.Output(i));
        }
        rw.RemoveNode(gqa);
    }

    /// <summary>The first <paramref name="rows"/> rows of a constant [max_pos, R/2] table (one new initializer per source table).</summary>
    private static Value Truncate(Rewriter rw, Graph g, Value table, int rows, Dictionary<Value, Value> done)
    {
        if (done.TryGetValue(table, out var t)) return t;
        var c = table.Const!;
        long rowBytes = c.ByteLength / c.Dims[0];
        var bytes = c.Source.ReadAll().AsMemory(0, checked((int)(rowBytes * rows)));
        var v = rw.AddInitializer(g, table.Name + "_dca", new Tensor(c.Element, [rows, c.Dims[1]], new InMemorySource(bytes)));
        done[table] = v;
        return v;
    }

    /// <summary>longctx.json "runtime": the per-layer table, the streaming KV policy, and max_context.</summary>
    private static void Record(Model model, LongAttentionSettings s, List<Lowering> plan, SortedDictionary<int, Dictionary<string, object?>> layers, PassContext ctx)
    {
        var rt = ctx.RuntimeConfig;
        var attention = new Dictionary<string, object?> { ["op"] = $"{Domain}.{OpType}", ["pattern"] = s.PatternName };
        if (s.Pattern == AttentionPattern.Streaming) { attention["sink"] = s.Sink; attention["window"] = s.Window; }
        if (s.Pattern == AttentionPattern.Dca) { attention["chunk_size"] = s.Chunk; attention["local_size"] = s.Local; attention["trained_context"] = s.TrainedContext; }
        attention["layers"] = layers.Values.ToList();
        rt["attention"] = attention;

        var nodes = model.Graph.Nodes;
        bool allStreaming = plan.Count > 0 && s.Pattern == AttentionPattern.Streaming
            && !nodes.Any(n => n.OpType == "GroupQueryAttention" || (n.OpType == OpType && n.Domain == Domain && n.StringAttr("pattern", "dense") != "streaming"));
        if (s.Pattern == AttentionPattern.Streaming && plan.Count > 0 && !allStreaming)
            ctx.Note("streaming: some layers stay on another attention, so the runtime cannot evict (every layer must be streaming); the context stays bounded by runtime.max_context");
        int? streamingRows = null;
        if (allStreaming)
        {
            streamingRows = nodes.Where(n => n.OpType == OpType && n.Domain == Domain && n.IntAttr("do_rotary", 0) == 1).Select(CosRows).Min();
            rt["kv"] = new Dictionary<string, object?>
            {
                ["policy"] = "streaming", ["sink"] = s.Sink, ["window"] = s.Window,
                // the cache may hold at most this many tokens after a step (RoPE rows by cache index)
                ["max_positions"] = streamingRows,
            };
        }
        // the longest sequence: every op that reads RoPE rows by absolute position bounds it by its cos cache
        var bounds = nodes.Where(n => n.IntAttr("do_rotary", 0) == 1 && (n.OpType == "GroupQueryAttention"
                || n.OpType == OpType && n.Domain == Domain && n.StringAttr("pattern", "dense") == "dense"))
            .Select(CosRows).Where(r => r is not null).Select(r => (long)r!.Value).ToList();
        if (allStreaming) bounds.Clear();
        else if (nodes.Any(n => n.OpType == OpType && n.Domain == Domain && n.StringAttr("pattern", "dense") == "dca") && s.Context is int c) bounds.Add(c);
        rt["max_context"] = bounds.Count > 0 ? bounds.Min() : null;
        if (plan.Count > 0 && s.Pattern != AttentionPattern.Dense)
            ctx.Note(bounds.Count > 0 ? $"runtime.max_context = {bounds.Min()}" : "runtime.max_context: unbounded" + (allStreaming ? $" (streaming cache evicts to sink + window, cos cache {streamingRows} rows)" : ""));
    }

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
            && model.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention" && n.IntAttr("do_rotary", 0) == 1).Select(CosRows).FirstOrDefault(r => r is not null) is int rows)
            return (rows, "cos cache rows");
        return null;
    }

    [GeneratedRegex(@"trained=([0-9.]+)")]
    private static partial Regex TrainedInRope();
}

using System.Globalization;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;
using LongCtx.Compiler.Schemas;

namespace LongCtx.Passes.Attention;

/// <summary>The GQA node to replace, its layer, the settings, and the cos/sin rows the pattern keeps (null: unchanged).</summary>
internal sealed record LongAttentionMatch(Node Gqa, int Layer, LongAttentionSettings Settings, int? CacheRows);

/// <summary>
/// One canonical com.microsoft.GroupQueryAttention becomes one longctx.LongAttention with the same nine inputs and
/// three outputs plus the pattern attributes (the formulas are in <see cref="LowerToLongAttention"/>):
/// <code>
///   q, k, v, past_k, past_v, seqlens_k, total_len, cos, sin                q, k, v, past_k, past_v, seqlens_k, total_len, cos', sin'
///     └─ com.microsoft.GroupQueryAttention ─┬ out, present_k, present_v  ==>  └─ longctx.LongAttention(pattern, ...) ─┬ out, present_k, present_v
/// </code>
/// cos' / sin' are the first chunk_size + 1 rows for dca (DCA's remapped positions never exceed chunk_size; one table
/// per source table, shared by the layers), the original tables otherwise. Check refuses, with the reason as the
/// layer's note, what the kernel cannot run: packed QKV, RoPE outside the op, position_ids / attention_bias inputs,
/// local_window_size, softcap, smooth_softmax, head_dim not a multiple of 16 or above 256, element types other than
/// float32 / float16, an integer or mismatched KV cache, non-constant cos/sin, and too few RoPE rows for the pattern.
/// </summary>
internal sealed class GqaToLongAttention : RewriteRule<LongAttentionMatch>
{
    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention, La = OpSchemas.LongAttention;

    public const string KeptCount = "blocks kept";

    public override string Name => "gqa-to-long-attention";
    public override string Counter => "blocks lowered to LongAttention";
    public override IReadOnlyList<OpKey> Roots { get; } = [new(Gqa.Domain, Gqa.OpType)];

    public override Checked<LongAttentionMatch> Check(Node root, Bindings bindings, RuleContext ctx)
    {
        var s = LongAttentionSettings.Parse(ctx.Options, LowerToLongAttention.TrainedContext(ctx.Model), ctx.Model.DisplayName, ctx.TargetContext);
        int layer = AttentionDiscovery.LayerOf(root);
        if (!s.Applies(layer)) return new RuleFailure(MatchResult.Fail($"layer {layer} is not in layers=", root.Outputs[0], 0));
        s = s.ForLayer(layer);
        var (b, failure) = AttentionDiscovery.Match(root, layer);
        if (b is null) return new RuleFailure(failure, $"layer {layer} stays on GroupQueryAttention: not recognised ({failure.Reason})", KeptCount);
        if (Why(b, s) is { } why)
            return new RuleFailure(MatchResult.Fail(why, root.Outputs[0], 1), $"layer {layer} stays on GroupQueryAttention: {why}", KeptCount);
        return new LongAttentionMatch(root, layer, s, s.Pattern == AttentionPattern.Dca ? s.Chunk + 1 : null);
    }

    /// <summary>Why the kernel cannot run block <paramref name="b"/> with <paramref name="s"/>, or null. Pure.</summary>
    private static string? Why(AttentionBlock b, LongAttentionSettings s)
    {
        var n = b.Match.Anchor;
        bool rotary = n.IntAttr("do_rotary", 0) == 1;
        if (Gqa.Input(n, "key") is null || Gqa.Input(n, "value") is null) return "packed QKV (key/value inputs omitted); the kernel takes separate q, k, v";
        if (b.Rope.Present && !rotary) return "RoPE is applied outside the op (RotaryEmbedding on q/k)";
        if (n.Inputs.Skip(Gqa.In("position_ids")).Any(i => i is not null)) return "position_ids, attention_bias or head_sink inputs are used (the kernel derives positions from seqlens_k)";
        if (n.IntAttr("local_window_size", -1) != -1) return $"local_window_size {n.IntAttr("local_window_size", -1)} (sliding-window GroupQueryAttention)";
        if (n.FloatAttr("softcap", 0) != 0) return $"softcap {n.FloatAttr("softcap", 0).ToString(CultureInfo.InvariantCulture)}";
        if (n.IntAttr("smooth_softmax", 0) != 0) return "smooth_softmax is set";
        if (b.HeadDim % 16 != 0 || b.HeadDim > 256) return $"head_dim {b.HeadDim}: the kernel supports multiples of 16 up to 256";
        var elem = Gqa.Input(n, "query")?.Type?.Element ?? b.Match.Output.Type?.Element;
        if (elem is not (null or ElementType.Float or ElementType.Float16)) return $"element type {elem?.ShortName()}: the kernel handles float32 and float16";
        var kv = Gqa.Input(n, "past_key")?.Type?.Element;
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

    /// <summary>Rows of constant cos/sin caches of equal shape [rows, R/2] at the op's cos_cache/sin_cache slots, else null.</summary>
    internal static int? CosRows(Node n) =>
        Gqa.Input(n, "cos_cache")?.Const is { Dims.Length: 2 } c && Gqa.Input(n, "sin_cache")?.Const is { Dims.Length: 2 } sn && c.Dims.SequenceEqual(sn.Dims) ? (int)c.Dims[0] : null;

    public override void Rewrite(IRewriter rw, LongAttentionMatch m)
    {
        var g = m.Gqa.Graph;
        var s = m.Settings;
        rw.EnsureOpset(La.Domain, La.SinceVersion);
        var inputs = m.Gqa.Inputs.Take(La.Inputs.Count).ToArray();
        if (m.CacheRows is int rows && CosRows(m.Gqa) > rows)
            foreach (var slot in new[] { "cos_cache", "sin_cache" })
            {
                var table = inputs[La.In(slot)]!;
                inputs[La.In(slot)] = rw.Shared($"dca-rows:{rows}:{table.Name}", () => rw.AddInitializer(g, table.Name + "_dca", FirstRows(table.Const!, rows)));
            }
        var attrs = new List<Attr>
        {
            Attr.Int("num_heads", m.Gqa.IntAttr("num_heads", 0)),
            Attr.Int("kv_num_heads", m.Gqa.IntAttr("kv_num_heads", 0)),
            Attr.Int("do_rotary", m.Gqa.IntAttr("do_rotary", 0)),
            Attr.Int("rotary_interleaved", m.Gqa.IntAttr("rotary_interleaved", 0)),
            Attr.String("pattern", s.PatternName),
        };
        if (m.Gqa.Attribute("scale") is { } scale) attrs.Insert(2, scale);
        if (s.Pattern == AttentionPattern.Streaming) attrs.AddRange([Attr.Int("sink", s.Sink), Attr.Int("window", s.Window)]);
        if (s.Pattern == AttentionPattern.Dca)
            attrs.AddRange([Attr.Int("chunk_size", s.Chunk), Attr.Int("local_size", s.Local), Attr.Int("trained_context", s.TrainedContext!.Value)]);
        if (s.Sparse is { } sp) attrs.AddRange(sp.Attrs(s.Pattern, s.Sink, s.Window));
        if (s.Heads is { } heads) attrs.AddRange(PerHeadAttention.Attrs(heads));
        string prefix = $"layers.{m.Layer}.long_attention";
        var la = rw.AddNode(g, La.OpType, inputs, [prefix + ".output", prefix + ".present_key", prefix + ".present_value"], attrs,
            domain: La.Domain, name: $"/layers.{m.Layer}/LongAttention");
        foreach (var slot in new[] { "output", "present_key", "present_value" })
        {
            if (Gqa.Output(m.Gqa, slot) is not { } old) continue;
            var fresh = La.Output(la, slot)!;
            rw.SetType(fresh, old.Type);
            rw.ReplaceAllUsesWith(old, fresh); // the driver erases the GroupQueryAttention once its outputs are unused
        }
    }

    /// <summary>The first <paramref name="rows"/> rows of a constant [max_pos, R/2] table, byte for byte.</summary>
    private static Tensor FirstRows(Tensor t, int rows)
    {
        long rowBytes = t.ByteLength / t.Dims[0];
        return new Tensor(t.Element, [rows, t.Dims[1]], new InMemorySource(t.Source.ReadAll().AsMemory(0, checked((int)(rowBytes * rows)))));
    }
}

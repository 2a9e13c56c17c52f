using LongCtx.Compiler;
using LongCtx.Compiler.Capabilities;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Schemas;
using LongCtx.Contract;

namespace LongCtx.Passes.Kv;

/// <summary>
/// Lowers each canonical <c>com.microsoft.GroupQueryAttention</c> to <c>longctx.KiviAttention</c> over a KIVI cache
/// (issue 11 item 4, <c>lcc compile --kv kivi2|kivi4 [--kv-residual 128] [--kv-group 32]</c>; Liu et al. 2024, "KIVI: A
/// Tuning-Free Asymmetric 2bit Quantization for KV Cache", arXiv:2402.02750): keys quantized per channel in groups of
/// G tokens, values per token in groups of G channels, asymmetric (zero = min, scale = (max - min) / (2^b - 1)), the
/// most recent R..R+G-1 tokens in fp32. No calibration: the ranges are those of each group (tuning-free).
/// <code>
///   q, k, v, past_key_values.L.key/value f32, seqlens_k, total_len, cos, sin
///     └─ GroupQueryAttention ─┬ out, present.L.key/value
///   becomes
///   q, k, v, past_key_values.L.key/value (the fp32 residual), seqlens_k, total_len,
///   kivi.L.key_codes u8 [B,Hkv,Pq,D*b/8], kivi.L.key_params f32 [B,Hkv,Pq/G,2,D],
///   kivi.L.value_codes u8 [B,Hkv,Pq,D*b/8], kivi.L.value_params f32 [B,Hkv,Pq,2,D/G], cos, sin
///     └─ KiviAttention(bits, group) ─┬ out, present.L.key/value (residual ++ the step's tokens)
/// </code>
/// The runtime's KiviKvCache folds the residual into the store (<see cref="KiviLayout"/>, recorded as
/// <c>runtime.kivi</c>). Approximate by design. Refused with a one-line error naming the layer: a cache not read by
/// one GroupQueryAttention (e.g. --attention), an already quantized cache, float16, packed QKV, position_ids /
/// attention_bias, local_window_size, softcap, smooth_softmax, head_dim not a multiple of 8 and of the group.
/// Options: <c>bits</c> 2 | 4, <c>group</c> (32), <c>residual</c> (128).
/// </summary>
public sealed class LowerToKivi : IPass
{
    public string Name => "kivi-kv";
    public string Description => "KIVI 2/4-bit KV cache (keys per channel, values per token, fp32 residual) on longctx.KiviAttention (approximate)";
    public bool IsExact => false;

    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention, Kivi = OpSchemas.KiviAttention;

    /// <summary>The option values, checked.</summary>
    public sealed record Settings(int Bits, int Group, int Residual)
    {
        public static Settings Parse(IReadOnlyDictionary<string, string> o)
        {
            static int Int(IReadOnlyDictionary<string, string> o, string key, string dflt, string flag) =>
                int.TryParse(o.GetValueOrDefault(key, dflt), out int v) && v > 0 ? v : throw new CompileException($"{flag} {o[key]}: give a positive integer");
            int bits = Int(o, "bits", "2", "--kv kivi");
            if (bits is not (2 or 4)) throw new CompileException($"--kv kivi{bits}: unknown; valid: kivi2, kivi4");
            return new Settings(bits, Int(o, "group", "32", "--kv-group"), Int(o, "residual", "128", "--kv-residual"));
        }
    }

    public void Run(Model model, PassContext ctx)
    {
        var s = Settings.Parse(ctx.Options);
        var g = model.Graph;
        var (layers, problem) = RuntimeCapabilityAnalysis.Layers(g);
        if (problem is not null) throw new CompileException($"{model.DisplayName}: --kv kivi{s.Bits}: {problem}");
        if (layers.Count == 0) throw new CompileException($"{model.DisplayName}: --kv kivi{s.Bits}: the model has no KV-cache inputs ({KvNames.Describe(KvRole.Past)}); only a decoder with a cache can quantize it");
        int hkv = 0, d = 0;
        foreach (var layer in layers)
        {
            var (n, h, hd) = Site(model, layer, s);
            if (hkv == 0) (hkv, d) = (h, hd);
            else if (h != hkv || hd != d)
                throw new CompileException($"{model.DisplayName}: --kv kivi{s.Bits}: layer {layer.Layer} has {h} KV heads x {hd} channels, layer {layers[0].Layer} {hkv} x {d}; one cache geometry is needed");
            Lower(ctx.Rewriter, g, n, layer, s, h, hd);
            ctx.Count($"layers lowered to KiviAttention ({s.Bits}-bit)");
        }
        ctx.Rewriter.SortTopologically(g); // each KiviAttention was appended after the nodes reading its output
        ctx.RuntimeConfig["kivi"] = new Dictionary<string, object?>
        {
            ["bits"] = s.Bits, ["group"] = s.Group, ["residual"] = s.Residual, ["head_dim"] = d, ["kv_heads"] = hkv, ["layers"] = layers.Count,
        };
        ctx.Note($"KIVI {s.Bits}-bit: keys per channel and values per token in groups of {s.Group}, the last {s.Residual}..{s.Residual + s.Group - 1} tokens in fp32; " +
            $"{new KiviLayout(s.Bits, s.Group, s.Residual, d, hkv, layers.Count).QuantizedBytesPerToken:0} bytes/token quantized vs {2L * layers.Count * hkv * d * sizeof(float)} fp32");
    }

    /// <summary>The GroupQueryAttention reading the layer's past directly, checked for what KiviAttention runs.</summary>
    private static (Node Node, int KvHeads, int HeadDim) Site(Model model, KvLayerValues layer, Settings s)
    {
        string where = $"{model.DisplayName}: --kv kivi{s.Bits}: layer {layer.Layer}";
        if (layer.PastKey.Uses.Count != 1 || !Gqa.Is(layer.PastKey.Uses[0].Node) || layer.PastKey.Uses[0].Index != Gqa.In("past_key"))
            throw new CompileException($"{where}: the cache is read by {string.Join(", ", layer.PastKey.Uses.Select(u => u.Node.QualifiedOp).Distinct())}, not by one com.microsoft.GroupQueryAttention; KIVI lowers the canonical attention (do not combine with --attention)");
        var n = layer.PastKey.Uses[0].Node;
        if (Gqa.Input(n, "past_value") != layer.PastValue || Gqa.Output(n, "present_key") != layer.PresentKey || Gqa.Output(n, "present_value") != layer.PresentValue)
            throw new CompileException($"{where}: past/present key and value do not belong to one GroupQueryAttention");
        string? why =
            n.StringAttr("k_quant_type", "NONE") != "NONE" ? "the cache is already quantized (--kv int8/int4)"
            : Gqa.Input(n, "key") is null || Gqa.Input(n, "value") is null ? "packed QKV (key/value inputs omitted)"
            : n.Inputs.Skip(Gqa.In("position_ids")).Any(i => i is not null) ? "position_ids, attention_bias, head_sink or scale inputs are used"
            : n.IntAttr("local_window_size", -1) != -1 ? "local_window_size is set (sliding-window attention)"
            : n.FloatAttr("softcap", 0) != 0 ? "softcap is set"
            : n.IntAttr("smooth_softmax", 0) != 0 ? "smooth_softmax is set"
            : Gqa.Input(n, "query")?.Type?.Element is { } e && e != ElementType.Float ? $"the attention computes in {e.ShortName()}; KiviAttention runs float32"
            : null;
        if (why is not null) throw new CompileException($"{where}: {why}; KiviAttention cannot run it (compile without --kv kivi*)");
        var shape = layer.PastKey.Type?.Shape;
        if (shape is not { Rank: 4 } || shape[1].Value is not long h || shape[3].Value is not long d)
            throw new CompileException($"{where}: past key '{layer.PastKey.Name}' has shape {shape?.ToString() ?? "?"}; need [batch, kv_heads, past, head_dim] with static heads and head_dim");
        if (d % 8 != 0 || d % s.Group != 0)
            throw new CompileException($"{where}: head_dim {d} is not a multiple of 8 and of --kv-group {s.Group} (values are quantized per token in groups of {s.Group} channels); pick a --kv-group that divides {d}");
        return (n, (int)h, (int)d);
    }

    private static void Lower(Rewriter rw, Graph g, Node gqa, KvLayerValues layer, Settings s, int hkv, int d)
    {
        rw.EnsureOpset(Kivi.Domain, Kivi.SinceVersion);
        int l = layer.Layer;
        var batch = layer.PastKey.Type!.Shape![0];
        Dim q = Dim.Sym("kivi_quantized"), groups = Dim.Sym("kivi_groups");
        var kc = rw.AddInput(g, KiviLayout.KeyCodes(l), new TensorType(ElementType.UInt8, new Shape(batch, hkv, q, d * s.Bits / 8)));
        var kp = rw.AddInput(g, KiviLayout.KeyParams(l), new TensorType(ElementType.Float, new Shape(batch, hkv, groups, 2, d)));
        var vc = rw.AddInput(g, KiviLayout.ValueCodes(l), new TensorType(ElementType.UInt8, new Shape(batch, hkv, q, d * s.Bits / 8)));
        var vp = rw.AddInput(g, KiviLayout.ValueParams(l), new TensorType(ElementType.Float, new Shape(batch, hkv, q, 2, d / s.Group)));
        var inputs = Kivi.Operands(("query", Gqa.Input(gqa, "query")), ("key", Gqa.Input(gqa, "key")), ("value", Gqa.Input(gqa, "value")),
            ("past_key", layer.PastKey), ("past_value", layer.PastValue), ("seqlens_k", Gqa.Input(gqa, "seqlens_k")),
            ("total_sequence_length", Gqa.Input(gqa, "total_sequence_length")), ("key_codes", kc), ("key_params", kp), ("value_codes", vc),
            ("value_params", vp), ("cos_cache", Gqa.Input(gqa, "cos_cache")), ("sin_cache", Gqa.Input(gqa, "sin_cache")));
        var attrs = new List<Attr>
        {
            Attr.Int("num_heads", gqa.IntAttr("num_heads", 0)), Attr.Int("kv_num_heads", gqa.IntAttr("kv_num_heads", 0)),
            Attr.Int("do_rotary", gqa.IntAttr("do_rotary", 0)), Attr.Int("rotary_interleaved", gqa.IntAttr("rotary_interleaved", 0)),
            Attr.Int("bits", s.Bits), Attr.Int("group", s.Group),
        };
        if (gqa.Attribute("scale") is { } scale) attrs.Add(scale);
        string prefix = $"layers.{l}.kivi";
        var kivi = rw.AddNode(g, Kivi.OpType, inputs, [prefix + ".output", prefix + ".present_key", prefix + ".present_value"], attrs,
            domain: Kivi.Domain, name: $"/layers.{l}/KiviAttention");
        foreach (var slot in new[] { "output", "present_key", "present_value" })
        {
            var old = Gqa.Output(gqa, slot)!;
            var fresh = Kivi.Output(kivi, slot)!;
            rw.SetType(fresh, old.Type);
            rw.ReplaceAllUsesWith(old, fresh);
        }
        rw.RemoveNode(gqa);
    }
}

using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Analysis.Rope;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Schemas;

namespace LongCtx.Compiler.Attention;

/// <summary>
/// Forms whose attention is already one operator: c) com.microsoft.GroupQueryAttention (the canonical form),
/// b) com.microsoft.RotaryEmbedding + com.microsoft.MultiHeadAttention (onnxruntime-genai builder), and
/// d) ONNX opset-23/24 Attention + RotaryEmbedding with Concat or TensorScatter caches. Recognition reads the op's
/// attributes and its neighbours; nothing is rewritten here.
/// </summary>
public static class FusedAttentionForms
{
    public const string Gqa = "ms-gqa", MsMha = "ms-mha-rotary", OnnxAttention = "onnx-attention";
    /// <summary>lcc's own longctx.LongAttention: GroupQueryAttention's inputs and attributes plus a pattern (lower-attention).</summary>
    public const string LongAttention = "longctx-attention";
    private static readonly OpSchema GqaOp = OpSchemas.GroupQueryAttention, Mha = OpSchemas.MultiHeadAttention, Att = OpSchemas.Attention;

    private static readonly Pattern MsRotary = P.MsOp("RotaryEmbedding", P.Any("x"), P.Any("positions"), P.Any("cos"), P.Any("sin")).NodeNamed("rot");
    private static readonly Pattern OnnxRotary = P.Op("RotaryEmbedding", P.Any("x"), P.Any("cos"), P.Any("sin")).ExtraInputs().NodeNamed("rot");
    private static readonly Pattern Scatter = P.Op("TensorScatter", P.Input("cache"), P.Any("fresh")).ExtraInputs().NodeNamed("scatter");

    public static (AttentionBlock?, MatchResult) Match(Node n, int layer) => (n.Domain, n.OpType) switch
    {
        ("com.microsoft", "GroupQueryAttention") => MatchGqa(n, layer),
        ("longctx", "LongAttention") => MatchGqa(n, layer) is var (b, r) && b is not null ? (b with { Form = LongAttention }, r) : (null, r),
        ("com.microsoft", "MultiHeadAttention") => MatchMha(n, layer),
        ("", "Attention") => MatchOnnx(n, layer),
        _ => (null, MatchResult.Fail($"no form for {n.QualifiedOp}", n.Outputs[0], 0)),
    };

    private static MatchResult Fail(Node n, string reason) => MatchResult.Fail(reason, n.Outputs[0], 1);

    private static AttentionMatch Handles(Node n, Value? q, Value? k, Value? v, Value? pastK, Value? pastV, Value? presentK, Value? presentV, Value? positions, Value? cos, Value? sin, Value? mask)
    {
        var o = n.Output(0);
        var oProj = o.Uses.Select(u => u.Node).FirstOrDefault(x => x.OpType == "MatMul" && x.Input(0) == o);
        return new AttentionMatch(n, q, k, v, o, Weight(q), Weight(k), Weight(v), oProj?.Input(1) is { } w && Consts.IsConst(w) ? w : null,
            pastK, pastV, presentK, presentV, positions, InvFreqFromCos(cos, sin), cos, sin, mask, [n]);
    }

    private static Value? Weight(Value? proj) =>
        Noise.Skip(proj)?.Producer is { OpType: "MatMul" } mm && Consts.IsConst(mm.Input(1)) ? mm.Input(1) : null;

    /// <summary>inv_freq from cos/sin caches [maxPos, d/2] (or Gathers of them), as <see cref="RopeAnalysis.CacheFrequencies"/> reads them.</summary>
    private static float[]? InvFreqFromCos(Value? cos, Value? sin) =>
        CosTensor(cos) is { } c ? RopeAnalysis.CacheFrequencies(c, CosTensor(sin), CacheLayout.Half)?.Select(x => (float)x).ToArray() : null;

    internal static Tensor? CosTensor(Value? cos) =>
        Consts.Of(cos) ?? (Noise.Skip(cos)?.Producer is { OpType: "Gather" } g ? Consts.Of(g.Input(0)) : null);

    private static RopeInfo RopeFromCache(Value? cos, Value? sin, bool interleaved, long rotaryDimAttr) =>
        RopeAnalysis.FromCache(CosTensor(cos), CosTensor(sin), CacheLayout.Half, interleaved, rotaryDimAttr);

    private static int? LastDim(Value? v) => v?.Type?.Shape is { Rank: > 0 } s && s[s.Rank - 1].Value is long d ? (int)d : null;

    private static (AttentionBlock?, MatchResult) MatchGqa(Node n, int layer)
    {
        int heads = (int)n.IntAttr("num_heads", 0), kv = (int)n.IntAttr("kv_num_heads", 0);
        if (heads <= 0 || kv <= 0) return (null, Fail(n, "num_heads/kv_num_heads missing"));
        bool packed = GqaOp.Input(n, "key") is null;
        int? headDim = LastDim(GqaOp.Input(n, "past_key"));
        if (headDim is null && Consts.Of(Weight(GqaOp.Input(n, "query"))) is { Dims.Length: 2 } w) headDim = (int)(w.Dims[1] / (packed ? heads + 2 * kv : heads));
        if (headDim is null) return (null, Fail(n, "cannot tell head_dim (no typed past_key, no query weight)"));
        double scale = n.FloatAttr("scale", 0) is var s && s != 0 ? s : 1 / Math.Sqrt(headDim.Value);
        var rope = n.IntAttr("do_rotary", 0) == 1 ? RopeFromCache(OpSchemas.GroupQueryAttention.Input(n, "cos_cache"), OpSchemas.GroupQueryAttention.Input(n, "sin_cache"), n.IntAttr("rotary_interleaved", 0) == 1, 0) : RopeInfo.None;
        Value? qIn = GqaOp.Input(n, "query"), kIn = GqaOp.Input(n, "key"), positions = GqaOp.Input(n, "position_ids"), cos = GqaOp.Input(n, "cos_cache"), sin = GqaOp.Input(n, "sin_cache");
        if (!rope.Present && !packed && MsRotary.Match(qIn) is { Ok: true } qr && MsRotary.Match(kIn) is { Ok: true } kr)
        {
            // RoPE applied outside the op by com.microsoft.RotaryEmbedding on q and k (separate-rope exports)
            var rot = qr.Bindings!.Node("rot");
            cos = qr.Bindings["cos"]; sin = qr.Bindings["sin"]; positions = qr.Bindings["positions"];
            rope = RopeFromCache(cos, sin, rot.IntAttr("interleaved", 0) == 1, rot.IntAttr("rotary_embedding_dim", 0));
            qIn = qr.Bindings["x"]; kIn = kr.Bindings!["x"];
        }
        int hidden = Consts.Of(Weight(qIn)) is { Dims.Length: 2 } qw ? (int)qw.Dims[0] : heads * headDim.Value;
        var m = Handles(n, qIn, kIn, GqaOp.Input(n, "value"), GqaOp.Input(n, "past_key"), GqaOp.Input(n, "past_value"), GqaOp.Output(n, "present_key"), GqaOp.Output(n, "present_value"),
            positions, cos, sin, GqaOp.Input(n, "seqlens_k"));
        return (new AttentionBlock(layer, Gqa, heads, kv, headDim.Value, hidden, true, scale, rope,
            GqaOp.Input(n, "past_key")?.Name, GqaOp.Input(n, "past_value")?.Name, GqaOp.Output(n, "present_key")?.Name, GqaOp.Output(n, "present_value")?.Name, "BHSD", GqaOp.Input(n, "seqlens_k") is { } sk ? GraphFacts.MaskInput(sk) : null, m), MatchResult.Success(Bindings.Empty, 1));
    }

    private static (AttentionBlock?, MatchResult) MatchMha(Node n, int layer)
    {
        int heads = (int)n.IntAttr("num_heads", 0);
        if (heads <= 0) return (null, Fail(n, "num_heads missing"));
        var q = MsRotary.Match(Mha.Input(n, "query"));
        var k = MsRotary.Match(Mha.Input(n, "key"));
        Value? qIn = Mha.Input(n, "query"), kIn = Mha.Input(n, "key");
        var rope = RopeInfo.None;
        Value? positions = null, cos = null, sin = null;
        if (q.Ok != k.Ok) return (null, q.Ok ? k : q);
        if (q.Ok)
        {
            var rot = q.Bindings!.Node("rot");
            cos = q.Bindings["cos"]; sin = q.Bindings["sin"]; positions = q.Bindings["positions"];
            rope = RopeFromCache(cos, sin, rot.IntAttr("interleaved", 0) == 1, rot.IntAttr("rotary_embedding_dim", 0));
            qIn = q.Bindings["x"]; kIn = k.Bindings!["x"];
        }
        int? headDim = LastDim(Mha.Input(n, "past_key"));
        if (headDim is null && Consts.Of(Weight(qIn)) is { Dims.Length: 2 } w) headDim = (int)(w.Dims[1] / heads);
        if (headDim is null) return (null, Fail(n, "cannot tell head_dim (no typed past_key, no query weight)"));
        double scale = n.FloatAttr("scale", 0) is var s && s != 0 ? s : 1 / Math.Sqrt(headDim.Value);
        var mask = Mha.Input(n, "attention_bias") ?? Mha.Input(n, "key_padding_mask");
        bool causal = n.IntAttr("unidirectional", 0) == 1 || (mask is not null && GraphFacts.AncestorOps(mask).Overlaps(["Trilu", "LessOrEqual", "Less", "Greater", "GreaterOrEqual", "Range"]));
        int hidden = Consts.Of(Weight(qIn)) is { Dims.Length: 2 } qw ? (int)qw.Dims[0] : heads * headDim.Value;
        var m = Handles(n, qIn, kIn, Mha.Input(n, "value"), Mha.Input(n, "past_key"), Mha.Input(n, "past_value"), Mha.Output(n, "present_key"), Mha.Output(n, "present_value"), positions, cos, sin, mask);
        return (new AttentionBlock(layer, MsMha, heads, heads, headDim.Value, hidden, causal, scale, rope,
            Mha.Input(n, "past_key")?.Name, Mha.Input(n, "past_value")?.Name, Mha.Output(n, "present_key")?.Name, Mha.Output(n, "present_value")?.Name, "BHSD", GraphFacts.MaskInput(mask), m), MatchResult.Success(Bindings.Empty, 1));
    }

    private static (AttentionBlock?, MatchResult) MatchOnnx(Node n, int layer)
    {
        int heads = (int)n.IntAttr("q_num_heads", 0), kv = (int)n.IntAttr("kv_num_heads", 0);
        if (heads <= 0 || kv <= 0) return (null, Fail(n, "q_num_heads/kv_num_heads missing: 4-D inputs are not read yet"));
        Value? kIn = Att.Input(n, "K"), vIn = Att.Input(n, "V"), pastK = Att.Input(n, "past_key"), pastV = Att.Input(n, "past_value");
        Value? presentK = Att.Output(n, "present_key"), presentV = Att.Output(n, "present_value");
        string layout = "BHSD";
        var ks = Scatter.Match(kIn);
        var vs = Scatter.Match(vIn);
        if (ks.Ok && vs.Ok)
        {
            // static cache: K = TensorScatter(key_cache, k_new, write_indices) along the sequence axis of [B, maxS, Hkv*D]
            pastK = ks.Bindings!["cache"]; pastV = vs.Bindings!["cache"];
            presentK = kIn; presentV = vIn;
            kIn = ks.Bindings["fresh"]; vIn = vs.Bindings["fresh"];
            layout = "BSH-static";
        }
        var q = OnnxRotary.Match(Att.Input(n, "Q"));
        var k = OnnxRotary.Match(kIn);
        var rope = RopeInfo.None;
        Value? qIn = Att.Input(n, "Q"), cos = null, sin = null, positions = null;
        if (q.Ok != k.Ok) return (null, q.Ok ? k : q);
        if (q.Ok)
        {
            var rot = q.Bindings!.Node("rot");
            cos = q.Bindings["cos"]; sin = q.Bindings["sin"];
            positions = OpSchemas.RotaryEmbedding.Input(rot, "position_ids") ?? (Noise.Skip(cos)?.Producer is { OpType: "Gather" } g ? GraphFacts.AncestorInputs(g.Input(1)!).FirstOrDefault() : null);
            rope = RopeFromCache(cos, sin, rot.IntAttr("interleaved", 0) == 1, rot.IntAttr("rotary_embedding_dim", 0));
            qIn = q.Bindings["x"]; kIn = k.Bindings!["x"];
        }
        int? headDim = LastDim(pastK) is int kd ? (layout == "BHSD" ? kd : kd / kv) : null;
        if (headDim is null && Consts.Of(Weight(qIn)) is { Dims.Length: 2 } w) headDim = (int)(w.Dims[1] / heads);
        if (headDim is null) return (null, Fail(n, "cannot tell head_dim"));
        double scale = n.FloatAttr("scale", 0) is var s && s != 0 ? s : 1 / Math.Sqrt(headDim.Value);
        var mask = Att.Input(n, "attn_mask");
        bool causal = n.IntAttr("is_causal", 0) == 1 || (mask is not null && GraphFacts.AncestorOps(mask).Overlaps(["Trilu", "LessOrEqual", "Less", "Greater", "GreaterOrEqual"]));
        int hidden = Consts.Of(Weight(qIn)) is { Dims.Length: 2 } qw ? (int)qw.Dims[0] : heads * headDim.Value;
        var m = Handles(n, qIn, kIn, vIn, pastK, pastV, presentK, presentV, positions, cos, sin, mask);
        return (new AttentionBlock(layer, OnnxAttention, heads, kv, headDim.Value, hidden, causal, scale, rope,
            pastK?.Name, pastV?.Name, presentK?.Name, presentV?.Name, layout, GraphFacts.MaskInput(mask ?? Att.Input(n, "nonpad_kv_seqlen")), m), MatchResult.Success(Bindings.Empty, 1));
    }
}

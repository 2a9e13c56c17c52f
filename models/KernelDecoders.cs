using LongCtx.Compiler.IR;
using LongCtx.Contract;

namespace LongCtx.Models;

/// <summary>How a <see cref="GqaDecoder"/> applies RoPE.</summary>
public enum GqaRope
{
    /// <summary>GroupQueryAttention do_rotary=1 with cos_cache/sin_cache initializers.</summary>
    Fused,
    /// <summary>com.microsoft.RotaryEmbedding on q and k before GroupQueryAttention (needs position_ids).</summary>
    Separate,
    /// <summary>No positional encoding inside attention (like the qwen-gqa-fp16 fixture).</summary>
    None,
}

/// <summary>
/// com.microsoft.GroupQueryAttention decoder, laid out like onnxruntime's transformers/genai exporters
/// (<c>shared/models/genai/qwen-gqa-fp16/decoder.onnx</c>): seqlens_k = ReduceSum(attention_mask) - 1 and
/// total_sequence_length = attention_mask.shape[1] as int32; q/k/v as separate MatMuls on [B,S,hidden]; KV cache in
/// BNSH [B,kvH,P,D] shared past/present; SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization; SwiGLU MLP.
/// </summary>
public static class GqaDecoder
{
    public static Model Build(DecoderConfig c, GqaRope rope = GqaRope.Fused) =>
        KernelDecoderCore.Build(c, KernelDecoderCore.Kind.Gqa, rope);
}

/// <summary>
/// onnxruntime-genai builder form (<c>shared/models/genai/llama-mha-rotary-fp16</c>): com.microsoft.RotaryEmbedding on
/// q and k ([B,S,H*D] with position_ids and [max_pos, R/2] cos/sin caches) feeding com.microsoft.MultiHeadAttention
/// (inputs q, k, v, -, -, attention_bias, past_key, past_value; attrs num_heads, scale). MultiHeadAttention has no
/// grouped KV, so kv heads must equal heads. The attention_bias is an additive causal+padding mask [B,1,S,T].
/// </summary>
public static class GenaiMhaDecoder
{
    public static Model Build(DecoderConfig c) => KernelDecoderCore.Build(c, KernelDecoderCore.Kind.Mha, GqaRope.Separate);
}

/// <summary>
/// ONNX opset-24 form (after <c>shared/models/genai/opset24-attention-static-cache</c>, mobius exporter): standard
/// <c>RMSNormalization</c>, <c>RotaryEmbedding</c> (3-D input, num_heads attr, position_ids, [max_pos, R/2] caches) and
/// <c>Attention</c> (3-D q/k/v, q_num_heads/kv_num_heads, additive attn_mask [B,1,S,T], past_key/past_value 4-D
/// inputs -> present_key/present_value: the Concat cache variant).
/// </summary>
public static class Opset24Decoder
{
    public const long Opset = 24;
    public static Model Build(DecoderConfig c) => KernelDecoderCore.Build(c, KernelDecoderCore.Kind.Onnx, GqaRope.Separate);

    /// <summary>
    /// The static-cache variant, I/O as in the fixture: input_ids, position_ids [B,S], key_cache.N / value_cache.N
    /// [B, cacheLength, kvH*D], write_indices [B] (where this chunk is written), nonpad_kv_seqlen [B] (valid cache length
    /// after the write) -> logits, updated_key_cache.N, updated_value_cache.N. The cache is updated in place by
    /// <c>TensorScatter</c> (axis 1) and read whole by <c>Attention</c> with an additive mask: key j is visible to query i
    /// when j &lt;= write_index + i and j &lt; nonpad_kv_seqlen.
    /// </summary>
    public static Model BuildStaticCache(DecoderConfig c, int cacheLength) => KernelDecoderCore.BuildStatic(c, cacheLength);
}

internal static class KernelDecoderCore
{
    public enum Kind { Gqa, Mha, Onnx }

    public static Model Build(DecoderConfig c, Kind kind, GqaRope rope)
    {
        c.Validate();
        if (kind == Kind.Mha && c.KvHeads != c.Heads)
            throw new ArgumentException($"decoder config: com.microsoft.MultiHeadAttention needs kv heads == heads (got {c.KvHeads} vs {c.Heads}); use the GQA form");
        if (kind == Kind.Gqa && rope == GqaRope.Fused && (c.Rotary / 2) % 8 != 0)
            throw new ArgumentException($"decoder config: GroupQueryAttention do_rotary needs rotary_dim/2 to be a multiple of 8 (ORT CPU), got rotary dim {c.Rotary}; use GqaRope.Separate");
        var b = new GraphBuilder(kind == Kind.Onnx ? "mobius_graph" : "main_graph", kind == Kind.Onnx ? Opset24Decoder.Opset : 21, c.Dtype);
        if (kind != Kind.Onnx) b.Rw.EnsureOpset("com.microsoft", 1);
        var el = b.Elem;
        var wts = DecoderWeights.Draw(c);
        bool positions = kind != Kind.Gqa || rope == GqaRope.Separate;

        var inputIds = b.Input(IoNames.InputIds, ElementType.Int64, "batch_size", "sequence_length");
        var attnMask = b.Input(IoNames.AttentionMask, ElementType.Int64, "batch_size", "total_sequence_length");
        var posIds = positions ? b.Input(IoNames.PositionIds, ElementType.Int64, "batch_size", "sequence_length") : null;
        var past = new (Value K, Value V)[c.Layers];
        for (int l = 0; l < c.Layers; l++)
            past[l] = (b.Input(KvNames.PastKeyValues.Format(l, KvPart.Key), el, "batch_size", c.KvHeads, "past_sequence_length", c.HeadDim),
                       b.Input(KvNames.PastKeyValues.Format(l, KvPart.Value), el, "batch_size", c.KvHeads, "past_sequence_length", c.HeadDim));

        Value? cosCache = null, sinCache = null;
        if (kind != Kind.Gqa || rope != GqaRope.None)
        {
            var (cs, sn) = c.RopeCaches();
            cosCache = b.Init("cos_cache", cs, c.MaxPositions, c.Rotary / 2);
            sinCache = b.Init("sin_cache", sn, c.MaxPositions, c.Rotary / 2);
        }

        // attention inputs derived once for all layers
        Value? seqlensK = null, totalLen = null, additiveMask = null;
        if (kind == Kind.Gqa)
        {
            const string s = "model/attn_mask_reformat";
            var m32 = b.T(s, "Cast", [attnMask], [GraphBuilder.Int("to", (long)ElementType.Int32)]);
            var sum = b.T(s, "ReduceSum", [m32, b.InitI64("reduce_axes", [1], 1)], [GraphBuilder.Int("keepdims", 0)]);
            seqlensK = b.T(s, "Sub", [sum, b.Rw.AddInitializer(b.G, "one_i32", Tensor.FromInt32s([1], 1))], output: "seqlens_k");
            var t64 = b.T(s, "Gather", [b.T(s, "Shape", [attnMask]), b.InitI64("idx_1", [1])], [GraphBuilder.Int("axis", 0)]);
            totalLen = b.T(s, "Cast", [t64], [GraphBuilder.Int("to", (long)ElementType.Int32)], output: "total_seq_len");
        }
        else additiveMask = AdditiveMask(b, c, inputIds, attnMask, past[0].K);

        var embed = b.Init("model.embed_tokens.weight", wts.Embed, c.Vocab, c.Hidden);
        var x = b.T("model/embed_tokens", "Gather", [embed, inputIds]);
        Value? delta = null; // pending residual update (for Skip norms)
        var presents = new List<(Value K, Value V)>();

        for (int l = 0; l < c.Layers; l++)
        {
            var lw = wts.Layers[l];
            string ls = $"model/layers.{l}";
            Value h;
            (h, x) = Norm(b, c, kind, $"{ls}/input_layernorm", x, delta, b.Init($"model.layers.{l}.input_layernorm.weight", lw.InputNorm, c.Hidden));
            string a = $"{ls}/attn";
            var q = b.T($"{a}/q_proj", "MatMul", [h, b.Init($"model.layers.{l}.attn.q_proj.MatMul.weight", lw.Q, c.Hidden, c.QueryWidth)]);
            var k = b.T($"{a}/k_proj", "MatMul", [h, b.Init($"model.layers.{l}.attn.k_proj.MatMul.weight", lw.K, c.Hidden, c.KvWidth)]);
            var v = b.T($"{a}/v_proj", "MatMul", [h, b.Init($"model.layers.{l}.attn.v_proj.MatMul.weight", lw.V, c.Hidden, c.KvWidth)]);
            if (kind != Kind.Gqa || rope == GqaRope.Separate)
            {
                q = Rotary(b, c, kind, $"{a}/q_rotary", q, c.Heads, posIds!, cosCache!, sinCache!);
                k = Rotary(b, c, kind, $"{a}/k_rotary", k, c.KvHeads, posIds!, cosCache!, sinCache!);
            }
            float scale = 1f / MathF.Sqrt(c.HeadDim);
            string pk = KvNames.Present.Format(l, KvPart.Key), pv = KvNames.Present.Format(l, KvPart.Value);
            IReadOnlyList<Value?> outs = kind switch
            {
                Kind.Gqa => b.TN(a, "GroupQueryAttention",
                    rope == GqaRope.Fused ? [q, k, v, past[l].K, past[l].V, seqlensK, totalLen, cosCache, sinCache] : [q, k, v, past[l].K, past[l].V, seqlensK, totalLen],
                    [$"/{a}/GroupQueryAttention/output_0", pk, pv],
                    rope == GqaRope.Fused
                        ? [GraphBuilder.Int("num_heads", c.Heads), GraphBuilder.Int("kv_num_heads", c.KvHeads), GraphBuilder.Float("scale", scale), GraphBuilder.Int("do_rotary", 1), GraphBuilder.Int("rotary_interleaved", c.Interleaved ? 1 : 0)]
                        : [GraphBuilder.Int("num_heads", c.Heads), GraphBuilder.Int("kv_num_heads", c.KvHeads), GraphBuilder.Float("scale", scale)],
                    "com.microsoft"),
                Kind.Mha => b.TN(a, "MultiHeadAttention", [q, k, v, null, null, additiveMask, past[l].K, past[l].V],
                    [$"/{a}/MultiHeadAttention/output_0", pk, pv],
                    [GraphBuilder.Int("num_heads", c.Heads), GraphBuilder.Float("scale", scale)], "com.microsoft"),
                _ => b.TN(a, "Attention", [q, k, v, additiveMask, past[l].K, past[l].V],
                    [$"/{a}/Attention/output_0", pk, pv],
                    [GraphBuilder.Int("q_num_heads", c.Heads), GraphBuilder.Int("kv_num_heads", c.KvHeads), GraphBuilder.Float("scale", scale), GraphBuilder.Int("is_causal", 0)]),
            };
            presents.Add((outs[1]!, outs[2]!));
            var o = b.T($"{a}/o_proj", "MatMul", [outs[0], b.Init($"model.layers.{l}.attn.o_proj.MatMul.weight", lw.O, c.QueryWidth, c.Hidden)]);
            Value h2;
            (h2, x) = Norm(b, c, kind, $"{ls}/post_attention_layernorm", x, o, b.Init($"model.layers.{l}.post_attention_layernorm.weight", lw.PostNorm, c.Hidden));
            string mlp = $"{ls}/mlp";
            var gate = b.T($"{mlp}/gate_proj", "MatMul", [h2, b.Init($"model.layers.{l}.mlp.gate_proj.MatMul.weight", lw.Gate, c.Hidden, c.Mlp)]);
            var up = b.T($"{mlp}/up_proj", "MatMul", [h2, b.Init($"model.layers.{l}.mlp.up_proj.MatMul.weight", lw.Up, c.Hidden, c.Mlp)]);
            var act = b.T($"{mlp}/act_fn", "Mul", [gate, b.T($"{mlp}/act_fn", "Sigmoid", [gate])]);
            delta = b.T($"{mlp}/down_proj", "MatMul", [b.T(mlp, "Mul", [act, up]), b.Init($"model.layers.{l}.mlp.down_proj.MatMul.weight", lw.Down, c.Mlp, c.Hidden)]);
        }
        var (hn, _) = Norm(b, c, kind, $"model/layers.{c.Layers}/final_norm_layernorm", x, delta, b.Init("model.norm.weight", wts.FinalNorm, c.Hidden));
        var logits = b.T("lm_head", "MatMul", [hn, b.Init("lm_head.MatMul.weight", wts.LmHead, c.Hidden, c.Vocab)], output: IoNames.Logits);
        b.Output(logits, el, "batch_size", "sequence_length", c.Vocab);
        foreach (var (pk, pv) in presents)
        {
            b.Output(pk, el, "batch_size", c.KvHeads, "total_sequence_length", c.HeadDim);
            b.Output(pv, el, "batch_size", c.KvHeads, "total_sequence_length", c.HeadDim);
        }
        Verifier.Verify(b.Model);
        return b.Model;
    }

    public static Model BuildStatic(DecoderConfig c, int cacheLength)
    {
        c.Validate();
        if (cacheLength < 1) throw new ArgumentException($"decoder config: static cache length must be >= 1, got {cacheLength}");
        var b = new GraphBuilder("mobius_graph", Opset24Decoder.Opset, c.Dtype);
        var el = b.Elem;
        var wts = DecoderWeights.Draw(c);
        var inputIds = b.Input(IoNames.InputIds, ElementType.Int64, "batch", "sequence_len");
        var posIds = b.Input(IoNames.PositionIds, ElementType.Int64, "batch", "sequence_len");
        var caches = new (Value K, Value V)[c.Layers];
        for (int l = 0; l < c.Layers; l++)
            caches[l] = (b.Input(KvNames.StaticCache.Format(l, KvPart.Key), el, "batch", cacheLength, c.KvWidth), b.Input(KvNames.StaticCache.Format(l, KvPart.Value), el, "batch", cacheLength, c.KvWidth));
        var writeIdx = b.Input(IoNames.WriteIndices, ElementType.Int64, "batch");
        var nonpad = b.Input(IoNames.NonPadKvSeqLen, ElementType.Int64, "batch");
        var (cs, sn) = c.RopeCaches();
        var cosCache = b.Init("model.rotary_emb.cos_cache", cs, c.MaxPositions, c.Rotary / 2);
        var sinCache = b.Init("model.rotary_emb.sin_cache", sn, c.MaxPositions, c.Rotary / 2);

        const string s = "model";
        var seq = b.T(s, "Squeeze", [b.T(s, "Shape", [inputIds], [GraphBuilder.Int("start", 1), GraphBuilder.Int("end", 2)]), b.InitI64("sq_axes", [0], 1)]);
        var zero = b.InitI64("c_zero", [0]); var one = b.InitI64("c_one", [1]);
        var qPos = b.T(s, "Add", [b.T(s, "Unsqueeze", [writeIdx, b.InitI64("ax1", [1], 1)]), b.T(s, "Unsqueeze", [b.T(s, "Range", [zero, seq, one]), b.InitI64("ax0", [0], 1)])]);
        var kPos = b.T(s, "Range", [zero, b.InitI64("c_cache_len", [cacheLength]), one]);
        var causal = b.T(s, "GreaterOrEqual", [b.T(s, "Unsqueeze", [qPos, b.InitI64("ax2", [2], 1)]), kPos]);
        var valid = b.T(s, "Unsqueeze", [b.T(s, "Less", [kPos, b.T(s, "Unsqueeze", [nonpad, b.InitI64("ax1b", [1], 1)])]), b.InitI64("ax1c", [1], 1)]);
        float min = c.Dtype == ModelDtype.Float16 ? -65504f : float.MinValue;
        var mask = b.T(s, "Unsqueeze", [b.T(s, "Where", [b.T(s, "And", [causal, valid]), b.Init("c_zero_f", [0f]), b.Init("c_min_f", [min])]), b.InitI64("ax1d", [1], 1)]);

        var x = b.T("model/embed_tokens", "Gather", [b.Init("model.embed_tokens.weight", wts.Embed, c.Vocab, c.Hidden), inputIds]);
        Value? delta = null;
        var updated = new List<(Value K, Value V)>();
        for (int l = 0; l < c.Layers; l++)
        {
            var lw = wts.Layers[l];
            string ls = $"model/layers.{l}", a = $"{ls}/self_attn";
            Value h;
            (h, x) = Norm(b, c, Kind.Onnx, $"{ls}/input_layernorm", x, delta, b.Init($"model.layers.{l}.input_layernorm.weight", lw.InputNorm, c.Hidden));
            var q = b.T($"{a}/q_proj", "MatMul", [h, b.Init($"model.layers.{l}.self_attn.q_proj.weight_t", lw.Q, c.Hidden, c.QueryWidth)]);
            var k = b.T($"{a}/k_proj", "MatMul", [h, b.Init($"model.layers.{l}.self_attn.k_proj.weight_t", lw.K, c.Hidden, c.KvWidth)]);
            var v = b.T($"{a}/v_proj", "MatMul", [h, b.Init($"model.layers.{l}.self_attn.v_proj.weight_t", lw.V, c.Hidden, c.KvWidth)]);
            q = Rotary(b, c, Kind.Onnx, a, q, c.Heads, posIds, cosCache, sinCache);
            k = Rotary(b, c, Kind.Onnx, a, k, c.KvHeads, posIds, cosCache, sinCache);
            var uk = b.T(a, "TensorScatter", [caches[l].K, k, writeIdx], [GraphBuilder.Int("axis", 1)], output: KvNames.StaticUpdated.Format(l, KvPart.Key));
            var uv = b.T(a, "TensorScatter", [caches[l].V, v, writeIdx], [GraphBuilder.Int("axis", 1)], output: KvNames.StaticUpdated.Format(l, KvPart.Value));
            updated.Add((uk, uv));
            var attn = b.TN(a, "Attention", [q, uk, uv, mask, null, null, nonpad], [$"/{a}/Attention/output_0"],
                [GraphBuilder.Int("q_num_heads", c.Heads), GraphBuilder.Int("kv_num_heads", c.KvHeads), GraphBuilder.Float("scale", 1f / MathF.Sqrt(c.HeadDim)), GraphBuilder.Int("is_causal", 0)])[0]!;
            var o = b.T($"{a}/o_proj", "MatMul", [attn, b.Init($"model.layers.{l}.self_attn.o_proj.weight_t", lw.O, c.QueryWidth, c.Hidden)]);
            Value h2;
            (h2, x) = Norm(b, c, Kind.Onnx, $"{ls}/post_attention_layernorm", x, o, b.Init($"model.layers.{l}.post_attention_layernorm.weight", lw.PostNorm, c.Hidden));
            string mlp = $"{ls}/mlp";
            var gate = b.T($"{mlp}/gate_proj", "MatMul", [h2, b.Init($"model.layers.{l}.mlp.gate_proj.weight_t", lw.Gate, c.Hidden, c.Mlp)]);
            var up = b.T($"{mlp}/up_proj", "MatMul", [h2, b.Init($"model.layers.{l}.mlp.up_proj.weight_t", lw.Up, c.Hidden, c.Mlp)]);
            var act = b.T(mlp, "Mul", [gate, b.T(mlp, "Sigmoid", [gate])]);
            delta = b.T($"{mlp}/down_proj", "MatMul", [b.T(mlp, "Mul", [act, up]), b.Init($"model.layers.{l}.mlp.down_proj.weight_t", lw.Down, c.Mlp, c.Hidden)]);
        }
        var (hn, _) = Norm(b, c, Kind.Onnx, "model/norm", x, delta, b.Init("model.norm.weight", wts.FinalNorm, c.Hidden));
        var logits = b.T("lm_head", "MatMul", [hn, b.Init("lm_head.weight_t", wts.LmHead, c.Hidden, c.Vocab)], output: IoNames.Logits);
        b.Output(logits, el, "batch", "sequence_len", c.Vocab);
        foreach (var (uk, uv) in updated)
        {
            b.Output(uk, el, "batch", cacheLength, c.KvWidth);
            b.Output(uv, el, "batch", cacheLength, c.KvWidth);
        }
        Verifier.Verify(b.Model);
        return b.Model;
    }

    /// <summary>
    /// RMS norm of (x + delta): SkipSimplifiedLayerNormalization (genai) or Add + RMSNormalization (opset 23+).
    /// Returns (normalised, new residual stream).
    /// </summary>
    private static (Value Normed, Value Residual) Norm(GraphBuilder b, DecoderConfig c, Kind kind, string scope, Value x, Value? delta, Value weight)
    {
        var eps = GraphBuilder.Float("epsilon", (float)c.RmsEpsilon);
        if (kind == Kind.Onnx)
        {
            var r = delta is null ? x : b.T(scope, "Add", [x, delta]);
            return (b.T(scope, "RMSNormalization", [r, weight], [eps, GraphBuilder.Int("axis", -1)]), r);
        }
        if (delta is null)
            return (b.T(scope, "SimplifiedLayerNormalization", [x, weight], [eps, GraphBuilder.Int("axis", -1), GraphBuilder.Int("stash_type", 1)]), x);
        var outs = b.TN(scope, "SkipSimplifiedLayerNormalization", [x, delta, weight], [$"/{scope}/output_0", "", "", $"/{scope}/output_3"], [eps], "com.microsoft");
        return (outs[0]!, outs[3]!);
    }

    private static Value Rotary(GraphBuilder b, DecoderConfig c, Kind kind, string scope, Value x, int heads, Value pos, Value cos, Value sin)
    {
        bool partial = c.Rotary < c.HeadDim;
        var attrs = new List<Attr> { GraphBuilder.Int("interleaved", c.Interleaved ? 1 : 0), GraphBuilder.Int("num_heads", heads) };
        if (partial || kind == Kind.Onnx) attrs.Add(GraphBuilder.Int("rotary_embedding_dim", partial ? c.Rotary : 0));
        return kind == Kind.Onnx
            ? b.T(scope, "RotaryEmbedding", [x, cos, sin, pos], attrs)
            : b.T(scope, "RotaryEmbedding", [x, pos, cos, sin], attrs, "com.microsoft");
    }

    /// <summary>Additive [B,1,S,T] mask: 0 where key j &lt;= past + query i and attention_mask[j] = 1, else the dtype's lowest value.</summary>
    private static Value AdditiveMask(GraphBuilder b, DecoderConfig c, Value inputIds, Value attnMask, Value pastKey)
    {
        const string s = "model/attn_mask";
        var seq = b.T(s, "Gather", [b.T(s, "Shape", [inputIds]), b.InitI64("mask_idx_1", [1])], [GraphBuilder.Int("axis", 0)]);
        var pastLen = b.T(s, "Gather", [b.T(s, "Shape", [pastKey]), b.InitI64("mask_idx_2", [2])], [GraphBuilder.Int("axis", 0)]);
        var total = b.T(s, "Gather", [b.T(s, "Shape", [attnMask]), b.InitI64("mask_idx_1b", [1])], [GraphBuilder.Int("axis", 0)]);
        var zero = b.InitI64("mask_zero", [0]); var one = b.InitI64("mask_one", [1]);
        var qPos = b.T(s, "Unsqueeze", [b.T(s, "Add", [b.T(s, "Range", [zero, seq, one]), pastLen]), b.InitI64("mask_axes_1", [1], 1)]);
        var kPos = b.T(s, "Unsqueeze", [b.T(s, "Range", [zero, total, one]), b.InitI64("mask_axes_0", [0], 1)]);
        var causal = b.T(s, "LessOrEqual", [kPos, qPos]);
        var pad = b.T(s, "Cast", [b.T(s, "Unsqueeze", [attnMask, b.InitI64("mask_axes_12", [1, 2], 2)])], [GraphBuilder.Int("to", (long)ElementType.Bool)]);
        var ok = b.T(s, "And", [causal, pad]);
        float min = c.Dtype == ModelDtype.Float16 ? -65504f : float.MinValue;
        return b.T(s, "Where", [ok, b.Init("mask_zero_f", [0f]), b.Init("mask_min_f", [min])]);
    }
}

using LongCtx.Compiler.IR;
using LongCtx.Contract;

namespace LongCtx.Models;

/// <summary>
/// A Llama-style decoder laid out like <c>torch.onnx.export</c> of a HF module (structure copied from
/// <c>shared/models/recall-public/model.onnx</c>, opset 17): RMSNorm as Pow/ReduceMean/Add/Sqrt/Div/Mul, q/k/v MatMul +
/// Reshape/Transpose to BHSD, RoPE from an inv_freq constant (freqs = position_ids x inv_freq, emb = Concat(freqs, freqs),
/// q*cos + rotate_half(q)*sin with Slice/Neg/Concat), KV cache as Concat(past, new) -> present.N.key/value, repeat_kv as
/// Unsqueeze/Expand/Reshape, MatMul(Q, K^T)/sqrt(d) + additive causal&amp;padding mask, Softmax, MatMul V, o_proj,
/// SwiGLU MLP, lm_head.
/// <code>
///   x -> RMSNorm -> MatMul(Wq) -> Reshape[B,S,H,D] -> Transpose(0,2,1,3) -> RoPE -> Q
///                -> MatMul(Wk) -> ...                               -> RoPE -> Concat(past_k, .) -> present.k -> repeat_kv -> Transpose(0,1,3,2) -> K^T
///                -> MatMul(Wv) -> ...                                       -> Concat(past_v, .) -> present.v -> repeat_kv -> V
///   Softmax(MatMul(Q, K^T) / sqrt(D) + mask) -> MatMul(., V) -> Transpose -> Reshape[B,S,H*D] -> MatMul(Wo) -> + x
/// </code>
/// Partial rotary (rotary_dim &lt; head_dim) slices the rotated part off and concatenates the pass-through part, as
/// GPT-NeoX/Phi do; interleaved rotary uses GPT-J's rotate_every_two (strided Slice/Neg/Unsqueeze/Concat/Reshape) with
/// repeat-interleaved cos/sin. With float16 the RoPE tables are computed in float32 and cast, and RMSNorm runs in
/// float32 (as HF LlamaRMSNorm does).
/// </summary>
public static class TorchStyleDecoder
{
    public const long Opset = 17;

    public static Model Build(DecoderConfig c)
    {
        c.Validate();
        var b = new GraphBuilder("main_graph", Opset, c.Dtype);
        var el = b.Elem;
        var inputIds = b.Input(IoNames.InputIds, ElementType.Int64, "batch_size", "sequence_length");
        var attnMask = b.Input(IoNames.AttentionMask, ElementType.Int64, "batch_size", "total_sequence_length");
        var posIds = b.Input(IoNames.PositionIds, ElementType.Int64, "batch_size", "sequence_length");
        var past = new (Value K, Value V)[c.Layers];
        for (int l = 0; l < c.Layers; l++)
            past[l] = (b.Input(KvNames.PastKeyValues.Format(l, KvPart.Key), el, "batch_size", c.KvHeads, "past_sequence_length", c.HeadDim),
                       b.Input(KvNames.PastKeyValues.Format(l, KvPart.Value), el, "batch_size", c.KvHeads, "past_sequence_length", c.HeadDim));

        var wts = DecoderWeights.Draw(c);
        var embedW = b.Init("embed_tokens.weight", wts.Embed, c.Vocab, c.Hidden);

        // sequence / past / total lengths
        var seqLen = b.T("", "Gather", [b.T("", "Shape", [inputIds]), b.CScalarI("", 1)], [GraphBuilder.Int("axis", 0)]);
        var pastLen = b.T("", "Gather", [b.T("", "Shape", [past[0].K]), b.CScalarI("", 2)], [GraphBuilder.Int("axis", 0)]);
        var totalLen = b.T("", "Add", [pastLen, seqLen]);
        var x = b.T("embed_tokens", "Gather", [embedW, inputIds]);

        // rotary tables: [B,1,S,R]
        var (cos, sin) = RotaryTables(b, c, posIds);

        // additive mask [B,1,S,T]: key position <= query position (causal, offset by past) AND attention_mask
        var qPos = b.T("", "Add", [b.T("", "Unsqueeze", [b.T("", "Range", [b.CScalarI("", 0), b.T("", "Cast", [seqLen], [GraphBuilder.Int("to", 7)]), b.CScalarI("", 1)]), b.CI("", 1)]), pastLen]);
        var kPos = b.T("", "Unsqueeze", [b.T("", "Range", [b.CScalarI("", 0), b.T("", "Cast", [totalLen], [GraphBuilder.Int("to", 7)]), b.CScalarI("", 1)]), b.CI("", 0)]);
        var causal = b.T("", "LessOrEqual", [kPos, qPos]);
        causal = b.T("", "Unsqueeze", [b.T("", "Unsqueeze", [causal, b.CI("", 0)]), b.CI("", 1)]);
        var pad = b.T("", "Cast", [b.T("", "Unsqueeze", [b.T("", "Unsqueeze", [attnMask, b.CI("", 1)]), b.CI("", 2)])], [GraphBuilder.Int("to", (long)ElementType.Bool)]);
        float minValue = c.Dtype == ModelDtype.Float16 ? -65504f : float.MinValue;
        var mask = b.T("", "Where", [b.T("", "And", [causal, pad]), b.CScalarF("", 0f), b.CScalarF("", minValue)]);

        var presents = new List<(Value K, Value V)>();
        for (int l = 0; l < c.Layers; l++)
        {
            string ls = $"layers.{l}";
            var lw = wts.Layers[l];
            var h = RmsNorm(b, c, $"{ls}/input_layernorm", x, $"{ls}.input_layernorm.weight", lw.InputNorm);
            string sa = $"{ls}/self_attn";
            var bsz = b.T(sa, "Gather", [b.T(sa, "Shape", [h]), b.CScalarI(sa, 0)], [GraphBuilder.Int("axis", 0)]);
            var sl = b.T(sa, "Gather", [b.T(sa, "Shape", [h]), b.CScalarI(sa, 1)], [GraphBuilder.Int("axis", 0)]);
            Value Heads(Value proj, int n)
            {
                var shape = b.T(sa, "Concat", [b.T(sa, "Unsqueeze", [bsz, b.CI(sa, 0)]), b.T(sa, "Unsqueeze", [sl, b.CI(sa, 0)]), b.CI(sa, n), b.CI(sa, c.HeadDim)], [GraphBuilder.Int("axis", 0)]);
                var r = b.T(sa, "Reshape", [proj, shape], [GraphBuilder.Int("allowzero", 0)]);
                return b.T(sa, "Transpose", [r], [GraphBuilder.Ints("perm", 0, 2, 1, 3)]);
            }
            var q = Heads(b.T($"{sa}/q_proj", "MatMul", [h, b.Weight(lw.Q, c.Hidden, c.QueryWidth)]), c.Heads);
            var k = Heads(b.T($"{sa}/k_proj", "MatMul", [h, b.Weight(lw.K, c.Hidden, c.KvWidth)]), c.KvHeads);
            var v = Heads(b.T($"{sa}/v_proj", "MatMul", [h, b.Weight(lw.V, c.Hidden, c.KvWidth)]), c.KvHeads);
            q = ApplyRope(b, c, sa, q, cos, sin);
            k = ApplyRope(b, c, sa, k, cos, sin);
            var presentK = b.T(sa, "Concat", [past[l].K, k], [GraphBuilder.Int("axis", 2)], output: KvNames.Present.Format(l, KvPart.Key));
            var presentV = b.T(sa, "Concat", [past[l].V, v], [GraphBuilder.Int("axis", 2)], output: KvNames.Present.Format(l, KvPart.Value));
            presents.Add((presentK, presentV));
            var kr = RepeatKv(b, c, sa, presentK);
            var vr = RepeatKv(b, c, sa, presentV);
            var scores = b.T(sa, "MatMul", [q, b.T(sa, "Transpose", [kr], [GraphBuilder.Ints("perm", 0, 1, 3, 2)])]);
            scores = b.T(sa, "Div", [scores, b.CScalarF(sa, MathF.Sqrt(c.HeadDim))]);
            scores = b.T(sa, "Add", [scores, mask]);
            var probs = b.T(sa, "Softmax", [scores], [GraphBuilder.Int("axis", -1)]);
            var ctx = b.T(sa, "Transpose", [b.T(sa, "MatMul", [probs, vr])], [GraphBuilder.Ints("perm", 0, 2, 1, 3)]);
            var outShape = b.T(sa, "Concat", [b.T(sa, "Unsqueeze", [bsz, b.CI(sa, 0)]), b.T(sa, "Unsqueeze", [sl, b.CI(sa, 0)]), b.CI(sa, c.QueryWidth)], [GraphBuilder.Int("axis", 0)]);
            ctx = b.T(sa, "Reshape", [ctx, outShape], [GraphBuilder.Int("allowzero", 0)]);
            var o = b.T($"{sa}/o_proj", "MatMul", [ctx, b.Weight(lw.O, c.QueryWidth, c.Hidden)]);
            x = b.T(ls, "Add", [x, o]);

            var h2 = RmsNorm(b, c, $"{ls}/post_attention_layernorm", x, $"{ls}.post_attention_layernorm.weight", lw.PostNorm);
            string mlp = $"{ls}/mlp";
            var gate = b.T($"{mlp}/gate_proj", "MatMul", [h2, b.Weight(lw.Gate, c.Hidden, c.Mlp)]);
            var act = b.T(mlp, "Mul", [gate, b.T(mlp, "Sigmoid", [gate])]);
            var up = b.T($"{mlp}/up_proj", "MatMul", [h2, b.Weight(lw.Up, c.Hidden, c.Mlp)]);
            var down = b.T($"{mlp}/down_proj", "MatMul", [b.T(mlp, "Mul", [act, up]), b.Weight(lw.Down, c.Mlp, c.Hidden)]);
            x = b.T(ls, "Add", [x, down]);
        }
        var hn = RmsNorm(b, c, "norm", x, "norm.weight", wts.FinalNorm);
        var logits = b.T("lm_head", "MatMul", [hn, b.Weight(wts.LmHead, c.Hidden, c.Vocab)], output: IoNames.Logits);
        b.Output(logits, el, "batch_size", "sequence_length", c.Vocab);
        for (int l = 0; l < c.Layers; l++)
        {
            b.Output(presents[l].K, el, "batch_size", c.KvHeads, "total_sequence_length", c.HeadDim);
            b.Output(presents[l].V, el, "batch_size", c.KvHeads, "total_sequence_length", c.HeadDim);
        }
        Verifier.Verify(b.Model);
        return b.Model;
    }

    /// <summary>HF LlamaRotaryEmbedding: freqs = position_ids[:, :, None].float() * inv_freq; emb = cat(freqs, freqs); returns cos/sin unsqueezed to [B,1,S,R].</summary>
    private static (Value Cos, Value Sin) RotaryTables(GraphBuilder b, DecoderConfig c, Value posIds)
    {
        const string s = "rotary";
        var pos = b.T(s, "Cast", [b.T(s, "Unsqueeze", [posIds, b.CI(s, 2)])], [GraphBuilder.Int("to", 1)]);
        var invFreq = b.C(s, Tensor.FromFloats(c.InverseFrequencies(), 1, 1, c.Rotary / 2));
        var freqs = b.T(s, "Mul", [pos, invFreq]);
        Value emb;
        if (!c.Interleaved) emb = b.T(s, "Concat", [freqs, freqs], [GraphBuilder.Int("axis", -1)]);
        else
        {
            // repeat_interleave(freqs, 2, dim=-1): [B,S,R/2] -> [B,S,R/2,1] x2 -> [B,S,R/2,2] -> [B,S,R]
            var f1 = b.T(s, "Unsqueeze", [freqs, b.CI(s, -1)]);
            emb = b.T(s, "Reshape", [b.T(s, "Concat", [f1, f1], [GraphBuilder.Int("axis", -1)]), b.CI(s, 0, 0, -1)], [GraphBuilder.Int("allowzero", 0)]);
        }
        Value cos = b.T(s, "Cos", [emb]), sin = b.T(s, "Sin", [emb]);
        if (c.Dtype == ModelDtype.Float16)
        {
            cos = b.T(s, "Cast", [cos], [GraphBuilder.Int("to", b.ElemCode)]);
            sin = b.T(s, "Cast", [sin], [GraphBuilder.Int("to", b.ElemCode)]);
        }
        return (b.T(s, "Unsqueeze", [cos, b.CI(s, 1)]), b.T(s, "Unsqueeze", [sin, b.CI(s, 1)]));
    }

    /// <summary>x*cos + rotate(x)*sin on the first rotary dims of BHSD <paramref name="x"/>; pass-through dims re-appended.</summary>
    private static Value ApplyRope(GraphBuilder b, DecoderConfig c, string sa, Value x, Value cos, Value sin)
    {
        Value rot = x, pass = x;
        bool partial = c.Rotary < c.HeadDim;
        if (partial)
        {
            rot = b.T(sa, "Slice", [x, b.CI(sa, 0), b.CI(sa, c.Rotary), b.CI(sa, 3), b.CI(sa, 1)]);
            pass = b.T(sa, "Slice", [x, b.CI(sa, c.Rotary), b.CI(sa, long.MaxValue), b.CI(sa, 3), b.CI(sa, 1)]);
        }
        var xc = b.T(sa, "Mul", [rot, cos]);
        Value rotated;
        if (!c.Interleaved)
        {
            // rotate_half: cat(-x[..., d/2:], x[..., :d/2])
            var half = b.T(sa, "Cast", [b.T(sa, "Cast", [b.T(sa, "Div", [b.T(sa, "Gather", [b.T(sa, "Shape", [rot]), b.CScalarI(sa, 3)], [GraphBuilder.Int("axis", 0)]), b.CScalarI(sa, 2)])], [GraphBuilder.Int("to", 7)])], [GraphBuilder.Int("to", 7)]);
            var x1 = b.T(sa, "Slice", [rot, b.CI(sa, 0), b.T(sa, "Unsqueeze", [half, b.CI(sa, 0)]), b.CI(sa, 3), b.CI(sa, 1)]);
            var x2 = b.T(sa, "Slice", [rot, b.T(sa, "Unsqueeze", [half, b.CI(sa, 0)]), b.CI(sa, long.MaxValue), b.CI(sa, 3), b.CI(sa, 1)]);
            rotated = b.T(sa, "Concat", [b.T(sa, "Neg", [x2]), x1], [GraphBuilder.Int("axis", -1)]);
        }
        else
        {
            // rotate_every_two: stack(-x[..., 1::2], x[..., ::2], dim=-1).flatten(-2)
            var x1 = b.T(sa, "Slice", [rot, b.CI(sa, 0), b.CI(sa, long.MaxValue), b.CI(sa, 3), b.CI(sa, 2)]);
            var x2 = b.T(sa, "Slice", [rot, b.CI(sa, 1), b.CI(sa, long.MaxValue), b.CI(sa, 3), b.CI(sa, 2)]);
            var st = b.T(sa, "Concat", [b.T(sa, "Unsqueeze", [b.T(sa, "Neg", [x2]), b.CI(sa, -1)]), b.T(sa, "Unsqueeze", [x1, b.CI(sa, -1)])], [GraphBuilder.Int("axis", -1)]);
            rotated = b.T(sa, "Reshape", [st, b.CI(sa, 0, 0, 0, -1)], [GraphBuilder.Int("allowzero", 0)]);
        }
        var y = b.T(sa, "Add", [xc, b.T(sa, "Mul", [rotated, sin])]);
        return partial ? b.T(sa, "Concat", [y, pass], [GraphBuilder.Int("axis", -1)]) : y;
    }

    /// <summary>HF repeat_kv: [B,kvH,T,D] -> Unsqueeze(2) -> Expand [B,kvH,n_rep,T,D] -> Reshape [B,kvH*n_rep,T,D] (identity when n_rep = 1, as torch skips it).</summary>
    private static Value RepeatKv(GraphBuilder b, DecoderConfig c, string sa, Value kv)
    {
        int nRep = c.Heads / c.KvHeads;
        if (nRep == 1) return kv;
        Value Dim(int i) => b.T(sa, "Gather", [b.T(sa, "Shape", [kv]), b.CScalarI(sa, i)], [GraphBuilder.Int("axis", 0)]);
        var d0 = Dim(0); var d1 = Dim(1); var d2 = Dim(2); var d3 = Dim(3);
        Value U(Value v) => b.T(sa, "Unsqueeze", [v, b.CI(sa, 0)]);
        var expandShape = b.T(sa, "Concat", [U(d0), U(d1), b.CI(sa, nRep), U(d2), U(d3)], [GraphBuilder.Int("axis", 0)]);
        expandShape = b.T(sa, "Reshape", [expandShape, b.CI(sa, -1)], [GraphBuilder.Int("allowzero", 0)]);
        // torch's Expand export: where(shape == -1, 1, shape)
        var ones = b.T(sa, "ConstantOfShape", [b.T(sa, "Shape", [expandShape])], [Attr.TensorValue("value", Tensor.FromInt64s([1], 1))]);
        var isNeg = b.T(sa, "Equal", [expandShape, b.T(sa, "Mul", [ones, b.CScalarI(sa, -1)])]);
        expandShape = b.T(sa, "Where", [isNeg, ones, expandShape]);
        var expanded = b.T(sa, "Expand", [b.T(sa, "Unsqueeze", [kv, b.CI(sa, 2)]), expandShape]);
        var heads = b.T(sa, "Mul", [d1, b.CScalarI(sa, nRep)]);
        var outShape = b.T(sa, "Concat", [U(d0), U(heads), U(d2), U(d3)], [GraphBuilder.Int("axis", 0)]);
        return b.T(sa, "Reshape", [expanded, outShape], [GraphBuilder.Int("allowzero", 0)]);
    }

    /// <summary>HF LlamaRMSNorm: w * x / sqrt(mean(x^2) + eps), in float32 (cast around it for float16 models).</summary>
    private static Value RmsNorm(GraphBuilder b, DecoderConfig c, string scope, Value x, string weightName, float[] weight)
    {
        var w = b.Init(weightName, weight, c.Hidden);
        bool half = c.Dtype == ModelDtype.Float16;
        var xf = half ? b.T(scope, "Cast", [x], [GraphBuilder.Int("to", 1)]) : x;
        var ms = b.T(scope, "ReduceMean", [b.T(scope, "Pow", [xf, b.CScalarF32(scope, 2f)])], [GraphBuilder.Ints("axes", -1), GraphBuilder.Int("keepdims", 1)]);
        var inv = b.T(scope, "Div", [b.CScalarF32(scope, 1f), b.T(scope, "Sqrt", [b.T(scope, "Add", [ms, b.CScalarF32(scope, (float)c.RmsEpsilon)])])]);
        var n = b.T(scope, "Mul", [xf, inv]);
        if (half) n = b.T(scope, "Cast", [n], [GraphBuilder.Int("to", b.ElemCode)]);
        return b.T(scope, "Mul", [w, n]);
    }
}

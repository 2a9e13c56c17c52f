using LongCtx.Compiler.IR;
using LongCtx.Contract;

namespace LongCtx.Models;

/// <summary>
/// GPT-2 as onnxruntime.transformers' optimiser leaves it (<c>python -m onnxruntime.transformers.optimizer --model_type
/// gpt2</c>, the "past_N" export of its gpt2 tools): learned position embeddings, LayerNormalization, and per layer one
/// com.microsoft.Attention (ORT ContribOperators.md, Attention v1: inputs input, weights, bias, mask_index, past;
/// outputs output, present; attributes num_heads, unidirectional) with packed QKV weights [hidden, 3*hidden] + bias
/// [3*hidden] and a packed cache past_N [2, batch, heads, past, head_dim] -> present_N [2, batch, heads, past+S,
/// head_dim]; the MLP is fc (hidden -> 4*hidden) + GELU (erf form) + proj. attention_mask [batch, past+S] (1 = keep) is
/// cast to int32 and passed as the 2-D raw mask_index. Weights are this builder's own, drawn from the config's seed
/// (uniform, std 1/sqrt(fan_in)), so the model is tiny and deterministic. Uses Hidden, Heads, HeadDim (hidden must be
/// heads * head_dim; kv heads = heads), Layers, Vocab, MaxPositions (rows of the position table), Dtype, Seed.
/// </summary>
public static class OrtGpt2Decoder
{
    /// <summary>The opset the optimiser's GPT-2 output uses for its standard ops (LayerNormalization needs 17).</summary>
    public const long Opset = 17;

    public static Model Build(DecoderConfig c)
    {
        c.Validate();
        if (c.Hidden != c.Heads * c.HeadDim)
            throw new ArgumentException($"decoder config: GPT-2 needs hidden == heads * head_dim (got {c.Hidden} vs {c.Heads} x {c.HeadDim})");
        var b = new GraphBuilder("torch-jit-export", Opset, c.Dtype);
        b.Rw.EnsureOpset("com.microsoft", 1);
        var el = b.Elem;
        var r = new SeededWeights(c.Seed);
        float[] W(int rows, int cols) => r.Uniform(rows * cols, 1f / MathF.Sqrt(rows));
        float[] Bias(int n) => r.Uniform(n, 0.1f);
        float[] Ln() => r.Around(c.Hidden, 1f, 0.1f);
        int h = c.Hidden, mlp = 4 * c.Hidden;

        var inputIds = b.Input(IoNames.InputIds, ElementType.Int64, "batch_size", "seq_len");
        var positionIds = b.Input(IoNames.PositionIds, ElementType.Int64, "batch_size", "seq_len");
        var attnMask = b.Input(IoNames.AttentionMask, ElementType.Int64, "batch_size", "total_seq_len");
        var past = new Value[c.Layers];
        for (int l = 0; l < c.Layers; l++)
            past[l] = b.Input(KvNames.PackedPast.Format(l, KvPart.Key), el, 2, "batch_size", c.Heads, "past_seq_len", c.HeadDim);

        var wte = b.Init("transformer.wte.weight", r.Uniform(c.Vocab * h, 1f), c.Vocab, h);
        var wpe = b.Init("transformer.wpe.weight", r.Uniform(c.MaxPositions * h, 0.5f), c.MaxPositions, h);
        var x = b.T("transformer", "Add", [b.T("transformer/wte", "Gather", [wte, inputIds]), b.T("transformer/wpe", "Gather", [wpe, positionIds])]);
        var mask32 = b.T("transformer", "Cast", [attnMask], [GraphBuilder.Int("to", (long)ElementType.Int32)]);

        var presents = new List<Value>();
        for (int l = 0; l < c.Layers; l++)
        {
            string s = $"transformer/h.{l}";
            var ln1 = LayerNorm(b, $"{s}/ln_1", x, b.Init($"transformer.h.{l}.ln_1.weight", Ln(), h), b.Init($"transformer.h.{l}.ln_1.bias", Bias(h), h));
            var outs = b.TN($"{s}/attn", "Attention",
                [ln1, b.Init($"transformer.h.{l}.attn.c_attn.weight", W(h, 3 * h), h, 3 * h), b.Init($"transformer.h.{l}.attn.c_attn.bias", Bias(3 * h), 3 * h), mask32, past[l]],
                [$"/{s}/attn/Attention_output_0", KvNames.PackedPresent.Format(l, KvPart.Key)],
                [GraphBuilder.Int("num_heads", c.Heads), GraphBuilder.Int("unidirectional", 1)], "com.microsoft");
            presents.Add(outs[1]!);
            var proj = Linear(b, $"{s}/attn/c_proj", outs[0]!, W(h, h), Bias(h), h, h, $"transformer.h.{l}.attn.c_proj");
            x = b.T(s, "Add", [x, proj]);
            var ln2 = LayerNorm(b, $"{s}/ln_2", x, b.Init($"transformer.h.{l}.ln_2.weight", Ln(), h), b.Init($"transformer.h.{l}.ln_2.bias", Bias(h), h));
            var fc = Linear(b, $"{s}/mlp/c_fc", ln2, W(h, mlp), Bias(mlp), h, mlp, $"transformer.h.{l}.mlp.c_fc");
            // GELU(x) = 0.5 x (1 + erf(x / sqrt 2))
            var erf = b.T($"{s}/mlp/act", "Erf", [b.T($"{s}/mlp/act", "Div", [fc, b.CScalarF($"{s}/mlp/act", MathF.Sqrt(2f))])]);
            var gelu = b.T($"{s}/mlp/act", "Mul", [b.T($"{s}/mlp/act", "Mul", [fc, b.CScalarF($"{s}/mlp/act", 0.5f)]),
                b.T($"{s}/mlp/act", "Add", [erf, b.CScalarF($"{s}/mlp/act", 1f)])]);
            x = b.T(s, "Add", [x, Linear(b, $"{s}/mlp/c_proj", gelu, W(mlp, h), Bias(h), mlp, h, $"transformer.h.{l}.mlp.c_proj")]);
        }
        var lnf = LayerNorm(b, "transformer/ln_f", x, b.Init("transformer.ln_f.weight", Ln(), h), b.Init("transformer.ln_f.bias", Bias(h), h));
        var logits = b.T("lm_head", "MatMul", [lnf, b.Init("lm_head.weight", W(h, c.Vocab), h, c.Vocab)], output: IoNames.Logits);
        b.Output(logits, el, "batch_size", "seq_len", c.Vocab);
        foreach (var p in presents) b.Output(p, el, 2, "batch_size", c.Heads, "total_seq_len", c.HeadDim);
        Verifier.Verify(b.Model);
        return b.Model;
    }

    private static Value LayerNorm(GraphBuilder b, string scope, Value x, Value scale, Value bias) =>
        b.T(scope, "LayerNormalization", [x, scale, bias], [GraphBuilder.Int("axis", -1), GraphBuilder.Float("epsilon", 1e-5f)]);

    private static Value Linear(GraphBuilder b, string scope, Value x, float[] w, float[] bias, int rows, int cols, string name) =>
        b.T(scope, "Add", [b.T(scope, "MatMul", [x, b.Init(name + ".weight", w, rows, cols)]), b.Init(name + ".bias", bias, cols)]);
}

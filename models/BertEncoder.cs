using LongCtx.Compiler.IR;

namespace LongCtx.Models;

/// <summary>
/// A BERT-style encoder as torch.onnx.export lays out HF BertModel self-attention (non-causal, no cache):
/// word + position embeddings, LayerNormalization, per layer q/k/v MatMul + Add(bias), Reshape [B,S,H,D] /
/// Transpose to BHSD (K transposed to BHDS), MatMul(Q, K^T) / sqrt(D) + extended mask (1 - mask) * lowest, Softmax,
/// MatMul V, Transpose/Reshape back, dense + bias, residual + LayerNorm, GELU (erf) FFN, residual + LayerNorm.
/// Inputs input_ids, attention_mask int64 [B,S]; output last_hidden_state [B,S,hidden]. Uses Heads and HeadDim
/// (hidden is Heads*HeadDim as in BERT), Layers, Vocab, MaxPositions, Seed; KvHeads and RoPE fields are ignored.
/// </summary>
public static class BertEncoder
{
    public const long Opset = 17;

    public static Model Build(DecoderConfig c)
    {
        c.Validate();
        if (c.Dtype != ModelDtype.Float32) throw new ArgumentException("decoder config: the BERT encoder builder is float32 only");
        int hidden = c.Heads * c.HeadDim, ffn = c.Mlp;
        var r = new SeededWeights(c.Seed);
        var b = new GraphBuilder("main_graph", Opset, c.Dtype);
        float[] W(int rows, int cols) => r.Uniform(rows * cols, 1f / MathF.Sqrt(rows));
        float[] Bias(int n) => r.Uniform(n, 0.02f);
        var ids = b.Input("input_ids", ElementType.Int64, "batch_size", "sequence_length");
        var mask = b.Input("attention_mask", ElementType.Int64, "batch_size", "sequence_length");

        const string e = "embeddings";
        var words = b.T($"{e}/word_embeddings", "Gather", [b.Init("embeddings.word_embeddings.weight", r.Uniform(c.Vocab * hidden, 1f), c.Vocab, hidden), ids]);
        var seq = b.T(e, "Gather", [b.T(e, "Shape", [ids]), b.CScalarI(e, 1)], [GraphBuilder.Int("axis", 0)]);
        var posIds = b.T(e, "Unsqueeze", [b.T(e, "Range", [b.CScalarI(e, 0), seq, b.CScalarI(e, 1)]), b.CI(e, 0)]);
        var pos = b.T($"{e}/position_embeddings", "Gather", [b.Init("embeddings.position_embeddings.weight", r.Uniform(c.MaxPositions * hidden, 1f), c.MaxPositions, hidden), posIds]);
        Value LayerNorm(string scope, Value x, string name) =>
            b.T(scope, "LayerNormalization", [x, b.Init($"{name}.weight", r.Around(hidden, 1f, 0.1f), hidden), b.Init($"{name}.bias", Bias(hidden), hidden)],
                [GraphBuilder.Int("axis", -1), GraphBuilder.Float("epsilon", 1e-12f)]);
        var x = LayerNorm($"{e}/LayerNorm", b.T(e, "Add", [words, pos]), "embeddings.LayerNorm");

        // extended mask [B,1,1,S]: (1 - mask) * lowest
        var m = b.T("", "Cast", [b.T("", "Unsqueeze", [mask, b.CI("", 1, 2)])], [GraphBuilder.Int("to", 1)]);
        var ext = b.T("", "Mul", [b.T("", "Sub", [b.CScalarF32("", 1f), m]), b.CScalarF32("", float.MinValue)]);

        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"encoder/layer.{l}", at = $"{p}/attention/self";
            Value Linear(string scope, Value input, int inF, int outF, string name) =>
                b.T(scope, "Add", [b.Init($"{name}.bias", Bias(outF), outF), b.T(scope, "MatMul", [input, b.Weight(W(inF, outF), inF, outF)])]);
            Value Split(Value t, bool transposeForK)
            {
                var shape = b.T(at, "Concat", [b.T(at, "Unsqueeze", [b.T(at, "Gather", [b.T(at, "Shape", [t]), b.CScalarI(at, 0)], [GraphBuilder.Int("axis", 0)]), b.CI(at, 0)]),
                    b.T(at, "Unsqueeze", [b.T(at, "Gather", [b.T(at, "Shape", [t]), b.CScalarI(at, 1)], [GraphBuilder.Int("axis", 0)]), b.CI(at, 0)]),
                    b.CI(at, c.Heads), b.CI(at, c.HeadDim)], [GraphBuilder.Int("axis", 0)]);
                var rs = b.T(at, "Reshape", [t, shape], [GraphBuilder.Int("allowzero", 0)]);
                return b.T(at, "Transpose", [rs], [transposeForK ? GraphBuilder.Ints("perm", 0, 2, 3, 1) : GraphBuilder.Ints("perm", 0, 2, 1, 3)]);
            }
            var q = Split(Linear($"{at}/query", x, hidden, hidden, $"encoder.layer.{l}.attention.self.query"), false);
            var kT = Split(Linear($"{at}/key", x, hidden, hidden, $"encoder.layer.{l}.attention.self.key"), true);
            var v = Split(Linear($"{at}/value", x, hidden, hidden, $"encoder.layer.{l}.attention.self.value"), false);
            var scores = b.T(at, "Div", [b.T(at, "MatMul", [q, kT]), b.CScalarF32(at, MathF.Sqrt(c.HeadDim))]);
            var probs = b.T(at, "Softmax", [b.T(at, "Add", [scores, ext])], [GraphBuilder.Int("axis", -1)]);
            var ctx = b.T(at, "Transpose", [b.T(at, "MatMul", [probs, v])], [GraphBuilder.Ints("perm", 0, 2, 1, 3)]);
            ctx = b.T(at, "Reshape", [ctx, b.CI(at, 0, 0, hidden)], [GraphBuilder.Int("allowzero", 0)]);
            var ao = Linear($"{p}/attention/output/dense", ctx, hidden, hidden, $"encoder.layer.{l}.attention.output.dense");
            x = LayerNorm($"{p}/attention/output/LayerNorm", b.T($"{p}/attention/output", "Add", [ao, x]), $"encoder.layer.{l}.attention.output.LayerNorm");
            var inter = Linear($"{p}/intermediate/dense", x, hidden, ffn, $"encoder.layer.{l}.intermediate.dense");
            string g = $"{p}/intermediate/intermediate_act_fn";
            var gelu = b.T(g, "Mul", [b.T(g, "Mul", [inter, b.T(g, "Add", [b.T(g, "Erf", [b.T(g, "Div", [inter, b.CScalarF32(g, MathF.Sqrt(2f))])]), b.CScalarF32(g, 1f)])]), b.CScalarF32(g, 0.5f)]);
            var fo = Linear($"{p}/output/dense", gelu, ffn, hidden, $"encoder.layer.{l}.output.dense");
            x = LayerNorm($"{p}/output/LayerNorm", b.T($"{p}/output", "Add", [fo, x]), $"encoder.layer.{l}.output.LayerNorm");
        }
        var outp = b.T("", "Identity", [x], output: "last_hidden_state");
        b.Output(outp, ElementType.Float, "batch_size", "sequence_length", hidden);
        Verifier.Verify(b.Model);
        return b.Model;
    }
}

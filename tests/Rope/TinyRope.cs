using LongCtx.Compiler.IR;

namespace LongCtx.Tests.Rope;

/// <summary>Tiny models with rotary tables, built with the IR (no dependency on the models/ builders).</summary>
internal static class TinyRope
{
    public const int Dim = 16, Theta = 10000, Trained = 32;

    public static float[] InvFreq() => Enumerable.Range(0, Dim / 2).Select(i => (float)(1.0 / Math.Pow(Theta, 2.0 * i / Dim))).ToArray();

    /// <summary>
    /// Torch-export form: y = x * cos(pos * inv_freq) + x * sin(pos * inv_freq) (cos/sin over the concatenated halves),
    /// inv_freq in a Constant node, as torch.onnx.export writes it.
    /// </summary>
    public static Model TorchForm()
    {
        var m = Model.Create("tiny_rope_torch", 17);
        var rw = new Rewriter(m);
        var g = m.Graph;
        var pos = rw.AddInput(g, "position_ids", new TensorType(ElementType.Int64, new Shape(1, "seq")));
        var x = rw.AddInput(g, "x", new TensorType(ElementType.Float, new Shape(1, "seq", Dim)));
        var axes = rw.AddInitializer(g, "axes", Tensor.FromInt64s([2], 1));
        var u = rw.Op(g, "Unsqueeze", [pos, axes], outputName: "pos3");
        var pf = rw.Op(g, "Cast", [u], [Attr.Int("to", 1)], outputName: "pos_f");
        var inv = rw.AddNode(g, "Constant", [], ["inv_freq"], [Attr.TensorValue("value", Tensor.FromFloats(InvFreq(), 1, 1, Dim / 2))], name: "rotary_inv_freq").Output();
        var freqs = rw.Op(g, "Mul", [pf, inv], outputName: "freqs");
        var emb = rw.Op(g, "Concat", [freqs, freqs], [Attr.Int("axis", -1)], outputName: "emb");
        var cos = rw.Op(g, "Cos", [emb], outputName: "cos");
        var sin = rw.Op(g, "Sin", [emb], outputName: "sin");
        var a = rw.Op(g, "Mul", [x, cos], outputName: "x_cos");
        var b = rw.Op(g, "Mul", [x, sin], outputName: "x_sin");
        var y = rw.Op(g, "Add", [a, b], outputName: "y");
        rw.SetType(y, new TensorType(ElementType.Float, new Shape(1, "seq", Dim)));
        rw.AddOutput(g, y);
        return m;
    }

    /// <summary>
    /// The torch form converted to fp16 end to end (as onnxconverter-common's float16 conversion leaves it): positions
    /// Cast to float16, an fp16 inv_freq Constant, fp16 x and y, with value_info types on the rotary chain.
    /// </summary>
    public static Model TorchFormFp16()
    {
        var m = Model.Create("tiny_rope_torch_fp16", 17);
        var rw = new Rewriter(m);
        var g = m.Graph;
        var h = ElementType.Float16;
        var pos = rw.AddInput(g, "position_ids", new TensorType(ElementType.Int64, new Shape(1, "seq")));
        var x = rw.AddInput(g, "x", new TensorType(h, new Shape(1, "seq", Dim)));
        var axes = rw.AddInitializer(g, "axes", Tensor.FromInt64s([2], 1));
        var u = rw.Op(g, "Unsqueeze", [pos, axes], outputName: "pos3");
        var pf = rw.Op(g, "Cast", [u], [Attr.Int("to", (long)h)], outputName: "pos_f");
        rw.SetType(pf, new TensorType(h, new Shape(1, "seq", 1)));
        var inv = rw.AddNode(g, "Constant", [], ["inv_freq"], [Attr.TensorValue("value", Tensor.FromHalves(InvFreq().Select(v => (Half)v).ToArray(), 1, 1, Dim / 2))], name: "rotary_inv_freq").Output();
        rw.SetType(inv, new TensorType(h, new Shape(1, 1, Dim / 2)));
        var freqs = rw.Op(g, "Mul", [pf, inv], outputName: "freqs");
        rw.SetType(freqs, new TensorType(h, new Shape(1, "seq", Dim / 2)));
        var emb = rw.Op(g, "Concat", [freqs, freqs], [Attr.Int("axis", -1)], outputName: "emb");
        var cos = rw.Op(g, "Cos", [emb], outputName: "cos");
        var sin = rw.Op(g, "Sin", [emb], outputName: "sin");
        foreach (var v in new[] { emb, cos, sin }) rw.SetType(v, new TensorType(h, new Shape(1, "seq", Dim)));
        var a = rw.Op(g, "Mul", [x, cos], outputName: "x_cos");
        var b = rw.Op(g, "Mul", [x, sin], outputName: "x_sin");
        var y = rw.Op(g, "Add", [a, b], outputName: "y");
        rw.SetType(y, new TensorType(h, new Shape(1, "seq", Dim)));
        rw.AddOutput(g, y);
        return m;
    }

    /// <summary>Cache form: com.microsoft.RotaryEmbedding with cos/sin caches [Trained, Dim/2].</summary>
    public static Model CacheForm()
    {
        var m = Model.Create("tiny_rope_cache", 17);
        var rw = new Rewriter(m);
        rw.EnsureOpset("com.microsoft", 1);
        var g = m.Graph;
        var x = rw.AddInput(g, "x", new TensorType(ElementType.Float, new Shape(1, "seq", Dim)));
        var pos = rw.AddInput(g, "position_ids", new TensorType(ElementType.Int64, new Shape(1, "seq")));
        var f = InvFreq();
        var c = new float[Trained * Dim / 2];
        var s = new float[Trained * Dim / 2];
        for (int p = 0; p < Trained; p++)
            for (int i = 0; i < Dim / 2; i++) { c[p * Dim / 2 + i] = MathF.Cos(p * f[i]); s[p * Dim / 2 + i] = MathF.Sin(p * f[i]); }
        var cc = rw.AddInitializer(g, "cos_cache", Tensor.FromFloats(c, Trained, Dim / 2));
        var sc = rw.AddInitializer(g, "sin_cache", Tensor.FromFloats(s, Trained, Dim / 2));
        var y = rw.Op(g, "RotaryEmbedding", [x, pos, cc, sc], [Attr.Int("num_heads", 1)], domain: "com.microsoft", outputName: "y");
        rw.SetType(y, new TensorType(ElementType.Float, new Shape(1, "seq", Dim)));
        rw.AddOutput(g, y);
        return m;
    }

    /// <summary>No rotary embedding at all: y = x * 2.</summary>
    public static Model NoRope()
    {
        var m = Model.Create("tiny_no_rope", 17);
        var rw = new Rewriter(m);
        var g = m.Graph;
        var x = rw.AddInput(g, "x", new TensorType(ElementType.Float, new Shape(1, "seq", Dim)));
        var two = rw.AddInitializer(g, "two", Tensor.Scalar(2f));
        var y = rw.Op(g, "Mul", [x, two], outputName: "y");
        rw.AddOutput(g, y);
        return m;
    }
}

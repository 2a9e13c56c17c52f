using LongCtx.Compiler.IR;

namespace LongCtx.Tests.Foundation;

/// <summary>Small hand-built graphs for IR, pass and diff tests.</summary>
internal static class TinyGraphs
{
    /// <summary>y = Relu(x @ W + b); plus dead branches: Sigmoid(x) unused, an unused initializer, and a duplicate of b.</summary>
    public static Model WithDeadCode()
    {
        var m = Model.Create("tiny", 17);
        var r = new Rewriter(m);
        var g = m.Graph;
        var x = r.AddInput(g, "x", new TensorType(ElementType.Float, new Shape("batch", 4)));
        var w = r.AddInitializer(g, "W", Tensor.FromFloats(Enumerable.Range(0, 16).Select(i => (i % 5 - 2) * 0.25f).ToArray(), 4, 4));
        var b = r.AddInitializer(g, "b", Tensor.FromFloats([0.5f, -0.5f, 1f, 0f], 4));
        var b2 = r.AddInitializer(g, "b_copy", Tensor.FromFloats([0.5f, -0.5f, 1f, 0f], 4));
        r.AddInitializer(g, "unused_weight", Tensor.FromFloats([1f, 2f, 3f], 3));
        var mm = r.Op(g, "MatMul", [x, w], outputName: "mm");
        var add = r.Op(g, "Add", [mm, b], outputName: "add");
        var add2 = r.Op(g, "Add", [add, b2], outputName: "add2");
        var y = r.Op(g, "Relu", [add2], outputName: "y");
        var dead = r.Op(g, "Sigmoid", [x], outputName: "dead_sig");
        r.Op(g, "Neg", [dead], outputName: "dead_neg");
        r.AddOutput(g, y);
        r.SetType(y, new TensorType(ElementType.Float, new Shape("batch", 4)));
        return m;
    }
}

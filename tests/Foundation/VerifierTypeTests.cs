using LongCtx.Compiler.IR;
using NUnit.Framework;

namespace LongCtx.Tests.Foundation;

/// <summary>The Verifier's element-type checks: each broken model is rejected with a one-line reason; well-typed ones pass.</summary>
public sealed class VerifierTypeTests
{
    private static (Model, Rewriter, Value F, Value I) Start()
    {
        var m = Model.Create("types", 17);
        var rw = new Rewriter(m);
        var f = rw.AddInput(m.Graph, "f", new TensorType(ElementType.Float, new Shape(2)));
        var i = rw.AddInput(m.Graph, "i", new TensorType(ElementType.Int64, new Shape(2)));
        return (m, rw, f, i);
    }

    [Test]
    public void WellTypedGraphVerifies()
    {
        var (m, rw, f, i) = Start();
        var c = rw.Op(m.Graph, "Cast", [i], [Attr.Int("to", (long)ElementType.Float)]);
        rw.SetType(c, new TensorType(ElementType.Float, new Shape(2)));
        rw.AddOutput(m.Graph, rw.Op(m.Graph, "Add", [f, c], outputName: "y"));
        Assert.That(Verifier.Check(m), Is.Empty);
    }

    [Test]
    public void ElementwiseOperandsMustAgree()
    {
        var (m, rw, f, i) = Start();
        rw.AddOutput(m.Graph, rw.Op(m.Graph, "Add", [f, i], outputName: "y"));
        Assert.That(Verifier.Check(m), Has.One.Contains("input 1 'i' is int64 but input 0 'f' is float32").And.Contains("Add"));
    }

    [Test]
    public void MatMulAndWhereOperandsMustAgree()
    {
        var (m, rw, f, i) = Start();
        var cond = rw.AddInput(m.Graph, "cond", new TensorType(ElementType.Bool, new Shape(2)));
        rw.AddOutput(m.Graph, rw.Op(m.Graph, "MatMul", [f, i], outputName: "mm"));
        rw.AddOutput(m.Graph, rw.Op(m.Graph, "Where", [cond, f, i], outputName: "w"));
        var errors = Verifier.Check(m);
        Assert.That(errors, Has.Exactly(2).Contains("must have one element type"));
        Assert.That(errors, Has.None.Contains("input 0 'cond'"), "Where's condition is bool by definition");
    }

    [Test]
    public void InitializerDeclaredTypeMustMatchItsData()
    {
        var (m, rw, f, _) = Start();
        var w = rw.AddInitializer(m.Graph, "w", Tensor.FromFloats([1f, 2f], 2));
        rw.SetType(w, new TensorType(ElementType.Float16, new Shape(2)));
        rw.AddOutput(m.Graph, rw.Op(m.Graph, "Relu", [w], outputName: "y"));
        Assert.That(Verifier.Check(m), Has.One.EqualTo("initializer 'w' is declared float16 but its data is float32"));
        Assert.Throws<IrException>(() => Verifier.Verify(m));
    }

    [Test]
    public void CastOutputTypeMustBeItsTo()
    {
        var (m, rw, f, _) = Start();
        var c = rw.Op(m.Graph, "Cast", [f], [Attr.Int("to", (long)ElementType.Int32)], outputName: "c");
        rw.SetType(c, new TensorType(ElementType.Int64, new Shape(2)));
        rw.AddOutput(m.Graph, c);
        Assert.That(Verifier.Check(m), Has.One.Contains("casts to int32 but its output 'c' is declared int64"));
    }
}

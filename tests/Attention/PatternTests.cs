using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

public sealed class PatternTests
{
    private static (Model m, Rewriter rw, Value x, Value w) Start()
    {
        var m = Model.Create("p", 17);
        var rw = new Rewriter(m);
        var x = rw.AddInput(m.Graph, "x", new TensorType(ElementType.Float, new Shape(2, 4)));
        var w = rw.AddInitializer(m.Graph, "w", Tensor.FromFloats(new float[16], 4, 4));
        return (m, rw, x, w);
    }

    [Test]
    public void MatchesCommutativeOperandsAndCaptures()
    {
        var (m, rw, x, w) = Start();
        var mm = rw.Op(m.Graph, "MatMul", [x, w]);
        var half = rw.Op(m.Graph, "Constant", [], [Attr.TensorValue("value", Tensor.Scalar(0.5f))]);
        var scaled = rw.Op(m.Graph, "Mul", [half, mm]); // constant first: needs commutativity
        var pat = P.Op("Mul", P.Op("MatMul", P.Input("x"), P.Const("w")), P.Scalar("s", s => s > 0, "positive")).Commutative();
        var r = pat.Match(scaled);
        Assert.That(r.Ok, Is.True, r.ToString());
        Assert.That(r.Bindings!["x"], Is.SameAs(x));
        Assert.That(r.Bindings!["w"], Is.SameAs(w));
        Assert.That(Consts.Scalar(r.Bindings!["s"]), Is.EqualTo(0.5));
        Assert.That(P.Op("Mul", P.Op("MatMul", P.Input(), P.Const()), P.Const()).Match(scaled).Ok, Is.False, "without Commutative() the order matters");
    }

    [Test]
    public void SkipsIdentityAndReportsWhereItStopped()
    {
        var (m, rw, x, w) = Start();
        var id = rw.Op(m.Graph, "Identity", [x]);
        var mm = rw.Op(m.Graph, "MatMul", [id, w]);
        var sm = rw.Op(m.Graph, "Softmax", [mm]);
        Assert.That(P.Op("Softmax", P.Op("MatMul", P.Input("x"), P.Const())).Match(sm).Ok, Is.True);
        var r = P.Op("Softmax", P.Op("MatMul", P.Op("Transpose", P.Any()), P.Const())).Match(sm);
        Assert.That(r.Ok, Is.False);
        Assert.That(r.Reason, Does.Contain("expected Transpose, found graph input 'x'"));
    }

    [Test]
    public void RepeatedCaptureMeansSameValueAndOptionalWrappers()
    {
        var (m, rw, x, w) = Start();
        var a = rw.Op(m.Graph, "Neg", [x]);
        var y = rw.AddInput(m.Graph, "y", new TensorType(ElementType.Float, new Shape(2, 4)));
        var same = rw.Op(m.Graph, "Add", [x, x]);
        var diff = rw.Op(m.Graph, "Add", [x, y]);
        var pat = P.Op("Add", P.Any("t"), P.Any("t"));
        Assert.That(pat.Match(same).Ok, Is.True);
        Assert.That(pat.Match(diff).Ok, Is.False);
        var opt = P.Opt("Neg", P.Input("in"));
        Assert.That(opt.Match(a).Bindings!["in"], Is.SameAs(x));
        Assert.That(opt.Match(x).Bindings!["in"], Is.SameAs(x));
        var check = P.Op("Add", P.Any("l"), P.Any("r")).Where(b => b["l"] == b["r"] ? null : "operands differ");
        Assert.That(check.Match(diff).Reason, Is.EqualTo("operands differ"));
        Assert.That(m.Graph.Nodes, Has.Count.EqualTo(3), "matching never mutates");
    }

    [Test]
    public void AttributesAndConstantNodesOfEveryForm()
    {
        var (m, rw, x, _) = Start();
        var t = rw.Op(m.Graph, "Transpose", [x], [Attr.Ints("perm", [1, 0])]);
        Assert.That(P.Op("Transpose", P.Any()).Attr("perm", [1L, 0]).Match(t).Ok, Is.True);
        var r = P.Op("Transpose", P.Any()).Attr("perm", [0L, 1]).Match(t);
        Assert.That(r.Reason, Does.Contain("perm is [1,0], expected [0,1]"));
        var c1 = rw.Op(m.Graph, "Constant", [], [Attr.Ints("value_ints", [4, 32])]);
        var c2 = rw.Op(m.Graph, "Constant", [], [Attr.Float("value_float", 2.5f)]);
        Assert.That(Consts.Ints(c1), Is.EqualTo(new long[] { 4, 32 }));
        Assert.That(Consts.Scalar(c2), Is.EqualTo(2.5));
        Assert.That(Consts.Of(x), Is.Null);
    }
}

using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using NUnit.Framework;

namespace LongCtx.Tests.Foundation;

public sealed class IrTests
{
    [Test]
    public void BuiltGraph_Verifies_AndUsesAreTracked()
    {
        var m = TinyGraphs.WithDeadCode();
        Verifier.Verify(m);
        var w = m.Graph.Initializer("W")!;
        Assert.That(w.Uses, Has.Count.EqualTo(1));
        Assert.That(w.Uses[0].Node.OpType, Is.EqualTo("MatMul"));
        Assert.That(m.Graph.Outputs.Single().Producer!.OpType, Is.EqualTo("Relu"));
    }

    [Test]
    public void ReplaceAllUsesWith_GraphOutput_KeepsOutputName()
    {
        var m = TinyGraphs.WithDeadCode();
        var r = new Rewriter(m);
        var y = m.Graph.Outputs[0];
        var add2 = y.Producer!.Input(0)!;
        var tanh = r.Op(m.Graph, "Tanh", [add2], outputName: "t");
        r.ReplaceAllUsesWith(y, tanh);
        Assert.That(m.Graph.Outputs[0], Is.SameAs(tanh));
        Assert.That(tanh.Name, Is.EqualTo("y"));
        Assert.That(y.Name, Is.Not.EqualTo("y"));
        Verifier.Verify(m);
    }

    [Test]
    public void RemoveNode_WithLiveOutput_Throws()
    {
        var m = TinyGraphs.WithDeadCode();
        var r = new Rewriter(m);
        var matmul = m.Graph.Nodes.First(n => n.OpType == "MatMul");
        Assert.That(() => r.RemoveNode(matmul), Throws.InvalidOperationException.With.Message.Contains("still used"));
        Verifier.Verify(m);
    }

    [Test]
    public void UniqueName_NeverCollides()
    {
        var m = TinyGraphs.WithDeadCode();
        var r = new Rewriter(m);
        var a = r.UniqueName("W");
        var b = r.UniqueName("W");
        Assert.That(new[] { a, b, "W" }, Is.Unique);
    }

    [Test]
    public void Verifier_CatchesOutOfOrderNodes_AndSortFixesThem()
    {
        var m = TinyGraphs.WithDeadCode();
        var nodes = m.Graph.NodeList;
        var first = nodes[0];
        nodes.RemoveAt(0);
        nodes.Add(first);
        Assert.That(Verifier.Check(m), Has.Some.Contains("not defined before use"));
        new Rewriter(m).SortTopologically(m.Graph);
        Assert.That(Verifier.Check(m), Is.Empty);
    }

    [Test]
    public void Verifier_CatchesStaleUseLists()
    {
        var m = TinyGraphs.WithDeadCode();
        var mm = m.Graph.Nodes.First(n => n.OpType == "MatMul");
        mm.InputList[1] = m.Graph.Initializer("b")!; // bypass the rewriter on purpose
        var errors = Verifier.Check(m);
        Assert.That(errors, Has.Some.Contains("does not list its use"));
        Assert.That(errors, Has.Some.Contains("stale use"));
    }

    [Test]
    public void TopologicalOrder_DetectsCycle()
    {
        var m = Model.Create("cyc");
        var r = new Rewriter(m);
        var x = r.AddInput(m.Graph, "x", new TensorType(ElementType.Float, new Shape(2)));
        var a = r.Op(m.Graph, "Add", [x, x], outputName: "a");
        var b = r.Op(m.Graph, "Relu", [a], outputName: "b");
        r.SetInput(a.Producer!, 1, b);
        r.AddOutput(m.Graph, b);
        Assert.That(m.Graph.TopologicalOrder(), Is.Null);
        Assert.That(m.Graph.FindCycle().Select(n => n.OpType), Is.EquivalentTo(new[] { "Add", "Relu" }));
    }

    [Test]
    public void SaveLoad_PreservesStructureTypesAndData()
    {
        var m = TinyGraphs.WithDeadCode();
        var bytes = OnnxWriter.ToBytes(m);
        var back = OnnxReader.FromBytes(bytes);
        Verifier.Verify(back);
        Assert.That(back.Graph.Nodes.Select(n => n.OpType), Is.EqualTo(m.Graph.Nodes.Select(n => n.OpType)));
        Assert.That(back.Graph.Inputs[0].Type, Is.EqualTo(m.Graph.Inputs[0].Type));
        Assert.That(back.Graph.Initializer("W")!.Const!.ToFloats(), Is.EqualTo(m.Graph.Initializer("W")!.Const!.ToFloats()));
        Assert.That(OnnxWriter.ToBytes(back), Is.EqualTo(bytes), "a second round trip must be byte-identical");
    }

    [Test]
    public void Subgraphs_SeeOuterValues_AndRoundTrip()
    {
        var m = Model.Create("withif", 17);
        var r = new Rewriter(m);
        var g = m.Graph;
        var x = r.AddInput(g, "x", new TensorType(ElementType.Float, new Shape(3)));
        var c = r.AddInput(g, "cond", new TensorType(ElementType.Bool, new Shape()));
        var thenG = new Graph("then_body");
        var elseG = new Graph("else_body");
        var ifNode = r.AddNode(g, "If", [c], ["if_out"], [Attr.GraphValue("then_branch", thenG), Attr.GraphValue("else_branch", elseG)]);
        var t = r.Op(thenG, "Relu", [x], outputName: "then_out");
        r.AddOutput(thenG, t);
        var e = r.Op(elseG, "Neg", [x], outputName: "else_out");
        r.AddOutput(elseG, e);
        r.AddOutput(g, ifNode.Output());
        Verifier.Verify(m);
        Assert.That(x.Uses.Select(u => u.Node.OpType), Is.EquivalentTo(new[] { "Relu", "Neg" }));
        Assert.That(ifNode.ImplicitInputs(), Is.EqualTo(new[] { x }));
        var back = OnnxReader.FromBytes(OnnxWriter.ToBytes(m));
        Verifier.Verify(back);
        var bif = back.Graph.Nodes.Single();
        Assert.That(bif.Subgraphs.Select(s => s.Nodes.Single().OpType), Is.EqualTo(new[] { "Relu", "Neg" }));
        Assert.That(bif.Subgraphs.First().Nodes.Single().Input(0), Is.SameAs(back.Graph.Inputs[0]));
    }
}

using LongCtx.Compiler.IR;
using LongCtx.Compiler.Schemas;
using NUnit.Framework;

namespace LongCtx.Tests.Foundation;

public sealed class OpSchemaTests
{
    [Test]
    public void SlotsAreAddressedByName()
    {
        var gqa = OpSchemas.GroupQueryAttention;
        Assert.That(new[] { gqa.In("query"), gqa.In("seqlens_k"), gqa.In("cos_cache"), gqa.In("sin_cache"), gqa.In("position_ids") }, Is.EqualTo(new[] { 0, 5, 7, 8, 9 }));
        Assert.That(gqa.Out("present_value"), Is.EqualTo(2));
        Assert.That(OpSchemas.MsRotaryEmbedding.In("cos_cache"), Is.EqualTo(2), "com.microsoft order: input, position_ids, cos, sin");
        Assert.That(OpSchemas.RotaryEmbedding.In("cos_cache"), Is.EqualTo(1), "ONNX order: X, cos, sin, position_ids");
        Assert.That(OpSchemas.Attention.Inputs[OpSchemas.Attention.In("nonpad_kv_seqlen")].Since, Is.EqualTo(24));
        Assert.That(OpSchemas.LongAttention.Inputs.Select(s => s.Name), Is.EqualTo(OpSchemas.GroupQueryAttention.Inputs.Take(9).Select(s => s.Name)), "our attention ops keep GQA's inputs");
        Assert.That(OpSchemas.ReferenceAttention.Out("lse"), Is.EqualTo(3));
        Assert.That(gqa.Attribute("local_window_size").Default, Is.EqualTo(-1L));
        Assert.Throws<ArgumentException>(() => gqa.In("cos"), "a misspelt slot is an error, not a miss");
        Assert.That(OpSchemas.All.Select(s => s.Qualified), Is.Unique);
    }

    [Test]
    public void OperandsPlaceValuesAtTheirSlots()
    {
        var m = Model.Create("s", 17);
        var rw = new Rewriter(m);
        var x = rw.AddInput(m.Graph, "x", new TensorType(ElementType.Float, new Shape(1)));
        var ops = OpSchemas.GroupQueryAttention.Operands(("query", x), ("cos_cache", x), ("position_ids", null));
        Assert.That(ops, Has.Length.EqualTo(8), "trailing omitted slots are dropped");
        Assert.That(ops.Select(v => v is not null), Is.EqualTo(new[] { true, false, false, false, false, false, false, true }));
    }
}

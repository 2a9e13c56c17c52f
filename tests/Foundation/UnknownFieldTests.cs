using Google.Protobuf;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using NUnit.Framework;
using P = Onnx;

namespace LongCtx.Tests.Foundation;

/// <summary>Fields the IR does not model (newer ONNX versions, vendor extensions) survive load -> save.</summary>
public sealed class UnknownFieldTests
{
    // field 1999, wire type 2 (length-delimited), payload "future"
    private static readonly byte[] Unknown = [.. EncodeTag(1999, 2), 6, .. "future"u8.ToArray()];

    private static byte[] EncodeTag(int field, int wire)
    {
        var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        o.WriteTag(field, (WireFormat.WireType)wire);
        o.Flush();
        return ms.ToArray();
    }

    private static T WithUnknown<T>(T msg, MessageParser<T> parser) where T : IMessage<T> => parser.ParseFrom([.. msg.ToByteArray(), .. Unknown]);

    private static bool EndsWithUnknown(IMessage m)
    {
        var b = m.ToByteArray();
        return b.Length >= Unknown.Length && b.AsSpan(b.Length - Unknown.Length).SequenceEqual(Unknown);
    }

    [Test]
    public void UnknownFields_OnModelGraphNodeTensorAndValueInfo_Survive()
    {
        var p = P.ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(TinyGraphs.WithDeadCode()));
        var g = p.Graph;
        int relu = g.Node.IndexOf(g.Node.Single(n => n.OpType == "Relu"));
        g.Node[relu] = WithUnknown(g.Node[relu], P.NodeProto.Parser);
        int w = g.Initializer.IndexOf(g.Initializer.Single(t => t.Name == "W"));
        g.Initializer[w] = WithUnknown(g.Initializer[w], P.TensorProto.Parser);
        g.Input[0] = WithUnknown(g.Input[0], P.ValueInfoProto.Parser);
        p.Graph = WithUnknown(g, P.GraphProto.Parser);
        p = WithUnknown(p, P.ModelProto.Parser);

        var model = OnnxReader.FromBytes(p.ToByteArray());
        var back = P.ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(model));
        Assert.Multiple(() =>
        {
            Assert.That(EndsWithUnknown(back), "model");
            Assert.That(EndsWithUnknown(back.Graph), "graph");
            Assert.That(EndsWithUnknown(back.Graph.Node.Single(n => n.OpType == "Relu")), "node");
            Assert.That(EndsWithUnknown(back.Graph.Initializer.Single(t => t.Name == "W")), "initializer");
            Assert.That(EndsWithUnknown(back.Graph.Input[0]), "graph input value_info");
        });
    }

    [Test]
    public void UnknownFields_SurviveExternalDataSave()
    {
        var p = P.ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(TinyGraphs.WithDeadCode()));
        int w = p.Graph.Initializer.IndexOf(p.Graph.Initializer.Single(t => t.Name == "W"));
        p.Graph.Initializer[w] = WithUnknown(p.Graph.Initializer[w], P.TensorProto.Parser);
        var dir = TestSupport.TempDir("unk");
        try
        {
            var saved = OnnxWriter.Save(OnnxReader.FromBytes(p.ToByteArray()), Path.Combine(dir, "m.onnx"), new SaveOptions { ExternalDataThreshold = 16 });
            var back = P.ModelProto.Parser.ParseFrom(File.ReadAllBytes(saved.ModelPath));
            var t = back.Graph.Initializer.Single(x => x.Name == "W");
            Assert.That(t.DataLocation, Is.EqualTo(P.TensorProto.Types.DataLocation.External));
            Assert.That(t.ToByteArray().AsSpan().IndexOf(Unknown), Is.GreaterThanOrEqualTo(0), "unknown field kept next to the external-data entries");
        }
        finally { Directory.Delete(dir, true); }
    }
}

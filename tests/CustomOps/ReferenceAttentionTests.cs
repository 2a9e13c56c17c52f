using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;

using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.CustomOps;

/// <summary>
/// Checks the longctx.ReferenceAttention custom op (custom-ops/, liblongctx_ops.so) against
/// com.microsoft.GroupQueryAttention on the ORT CPU provider and against a naive C# oracle.
/// </summary>
[TestFixture]
public class ReferenceAttentionTests
{
    private const double Tolerance = 1e-5;

    private static string LibPath => OpTestKit.LibPath;

    [OneTimeSetUp]
    public void RequireLibrary() => OpTestKit.RequireLibrary();

    // ---------------------------------------------------------------- cases

    public static IEnumerable<TestCaseData> GqaCases()
    {
        // (B, Hq, Hkv, D, P, S, window)
        foreach (var d in new[] { 16, 32 })
        {
            yield return new TestCaseData(1, 2, 2, d, 0, 7, -1).SetName($"MHA_Prefill_D{d}");
            yield return new TestCaseData(2, 2, 2, d, 9, 1, -1).SetName($"MHA_Decode_D{d}");
            yield return new TestCaseData(1, 4, 2, d, 0, 7, -1).SetName($"GQA_Prefill_D{d}");
            yield return new TestCaseData(2, 4, 2, d, 9, 1, -1).SetName($"GQA_Decode_D{d}");
        }
        yield return new TestCaseData(1, 4, 2, 16, 0, 7, 3).SetName("GQA_Prefill_LocalWindow3");
        yield return new TestCaseData(1, 4, 2, 32, 9, 1, 4).SetName("GQA_Decode_LocalWindow4");
        yield return new TestCaseData(1, 4, 2, 16, 5, 3, -1).SetName("GQA_ChunkWithPast_D16");
    }

    [TestCaseSource(nameof(GqaCases))]
    public void MatchesGroupQueryAttention(int b, int hq, int hkv, int d, int p, int s, int window)
    {
        var rng = new Random(1234 + 7 * hq + 13 * d + 31 * p + window);
        var q = RandomArray(rng, b * s * hq * d);
        var k = RandomArray(rng, b * s * hkv * d);
        var v = RandomArray(rng, b * s * hkv * d);
        var pk = RandomArray(rng, b * hkv * p * d);
        var pv = RandomArray(rng, b * hkv * p * d);
        float scale = 0.8f / MathF.Sqrt(d);

        var attrs = new List<AttributeProto> { IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv), FloatAttr("scale", scale) };
        if (window > 0) attrs.Add(IntAttr("local_window_size", window));

        var inputs = new Dictionary<string, (float[] data, long[] shape)>
        {
            ["query"] = (q, new long[] { b, s, hq * d }),
            ["key"] = (k, new long[] { b, s, hkv * d }),
            ["value"] = (v, new long[] { b, s, hkv * d }),
        };
        if (p > 0)
        {
            inputs["past_key"] = (pk, new long[] { b, hkv, p, d });
            inputs["past_value"] = (pv, new long[] { b, hkv, p, d });
        }
        string pastK = p > 0 ? "past_key" : "", pastV = p > 0 ? "past_value" : "";

        var refOut = RunSingleNode("longctx", "ReferenceAttention",
            new[] { "query", "key", "value", pastK, pastV }, attrs, inputs, null);

        int total = p + s;
        var gqaInts = new Dictionary<string, (int[] data, long[] shape)>
        {
            ["seqlens_k"] = (Enumerable.Repeat(total - 1, b).ToArray(), new long[] { b }),
            ["total_sequence_length"] = (new[] { total }, Array.Empty<long>()),
        };
        var gqaOut = RunSingleNode("com.microsoft", "GroupQueryAttention",
            new[] { "query", "key", "value", pastK, pastV, "seqlens_k", "total_sequence_length" },
            attrs, inputs, gqaInts);

        var naive = NaiveAttention(q, k, v, pk, pv, b, hq, hkv, d, p, s, scale, causal: true, window);

        AssertShape(refOut["output"].shape, b, s, hq * d);
        AssertShape(refOut["present_key"].shape, b, hkv, total, d);
        AssertShape(refOut["present_value"].shape, b, hkv, total, d);

        double dOut = MaxAbsDiff(refOut["output"].data, gqaOut["output"].data);
        double dNaive = MaxAbsDiff(refOut["output"].data, naive);
        double dPk = MaxAbsDiff(refOut["present_key"].data, gqaOut["present_key"].data);
        double dPv = MaxAbsDiff(refOut["present_value"].data, gqaOut["present_value"].data);
        TestContext.Out.WriteLine($"max|ref-gqa| output={dOut:E3} present_key={dPk:E3} present_value={dPv:E3}; max|ref-naive|={dNaive:E3}");

        Assert.Multiple(() =>
        {
            Assert.That(dOut, Is.LessThanOrEqualTo(Tolerance), "output vs GroupQueryAttention");
            Assert.That(dNaive, Is.LessThanOrEqualTo(Tolerance), "output vs naive C#");
            Assert.That(dPk, Is.LessThanOrEqualTo(0.0), "present_key vs GroupQueryAttention");
            Assert.That(dPv, Is.LessThanOrEqualTo(0.0), "present_value vs GroupQueryAttention");
        });
    }

    [Test]
    public void TinyHandComputedCase()
    {
        // 1 head, D=16, S=2, no past, causal: row 0 attends only key 0 (output == v0),
        // row 1 softmax-mixes v0 and v1 with weights from q1.k0 and q1.k1.
        const int d = 16;
        var q = new float[2 * d];
        var k = new float[2 * d];
        var v = new float[2 * d];
        for (int i = 0; i < d; i++)
        {
            q[i] = 0.5f; q[d + i] = i % 2 == 0 ? 1f : -0.25f;
            k[i] = 1f; k[d + i] = i < 8 ? 0.5f : -0.5f;
            v[i] = i; v[d + i] = -2f * i + 1f;
        }
        var outputs = RunSingleNode("longctx", "ReferenceAttention", new[] { "query", "key", "value" },
            new[] { IntAttr("num_heads", 1), IntAttr("kv_num_heads", 1) },
            new() { ["query"] = (q, new long[] { 1, 2, d }), ["key"] = (k, new long[] { 1, 2, d }), ["value"] = (v, new long[] { 1, 2, d }) },
            null);

        // Hand computation: scale = 1/sqrt(16) = 1/4. q1.k0 = 8*1 + 8*(-0.25) = 6 -> logit 1.5;
        // q1.k1 = (i<8: 4*0.5 - 4*0.125) + (i>=8: -4*0.5 + 4*0.125) = 1.5 - 1.5 = 0 -> logit 0.
        double w0 = Math.Exp(1.5), w1 = Math.Exp(0.0);
        var expected = new float[2 * d];
        for (int i = 0; i < d; i++)
        {
            expected[i] = i;
            expected[d + i] = (float)((w0 * i + w1 * (-2.0 * i + 1.0)) / (w0 + w1));
        }
        double diff = MaxAbsDiff(outputs["output"].data, expected);
        TestContext.Out.WriteLine($"max|ref-hand|={diff:E3}");
        Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
        Assert.That(outputs["present_key"].data, Is.EqualTo(k));
        Assert.That(outputs["present_value"].data, Is.EqualTo(v));
        AssertShape(outputs["present_key"].shape, 1, 1, 2, d);
    }

    [TestCase(0, -1, TestName = "NonCausal_MatchesNaive")]
    [TestCase(1, 2, TestName = "ChunkWithPast_Window2_MatchesNaive")]
    [TestCase(0, 3, TestName = "NonCausal_Window3_MatchesNaive")]
    public void MatchesNaive(int causal, int window)
    {
        const int b = 2, hq = 6, hkv = 3, d = 8, p = 5, s = 4;
        var rng = new Random(99 + causal + window);
        var q = RandomArray(rng, b * s * hq * d, 3f);
        var k = RandomArray(rng, b * s * hkv * d, 3f);
        var v = RandomArray(rng, b * s * hkv * d);
        var pk = RandomArray(rng, b * hkv * p * d, 3f);
        var pv = RandomArray(rng, b * hkv * p * d);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv), IntAttr("causal", causal) };
        if (window > 0) attrs.Add(IntAttr("local_window_size", window));
        var outputs = RunSingleNode("longctx", "ReferenceAttention",
            new[] { "query", "key", "value", "past_key", "past_value" }, attrs,
            new()
            {
                ["query"] = (q, new long[] { b, s, hq * d }),
                ["key"] = (k, new long[] { b, s, hkv * d }),
                ["value"] = (v, new long[] { b, s, hkv * d }),
                ["past_key"] = (pk, new long[] { b, hkv, p, d }),
                ["past_value"] = (pv, new long[] { b, hkv, p, d }),
            }, null);
        var naive = NaiveAttention(q, k, v, pk, pv, b, hq, hkv, d, p, s, 1f / MathF.Sqrt(d), causal == 1, window);
        double diff = MaxAbsDiff(outputs["output"].data, naive);
        TestContext.Out.WriteLine($"max|ref-naive|={diff:E3}");
        Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
    }

    [Test]
    public void EmptyPastEqualsNoPast()
    {
        const int b = 1, hq = 2, hkv = 1, d = 16, s = 3;
        var rng = new Random(5);
        var q = RandomArray(rng, b * s * hq * d);
        var k = RandomArray(rng, b * s * hkv * d);
        var v = RandomArray(rng, b * s * hkv * d);
        var attrs = new[] { IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv) };
        var baseInputs = new Dictionary<string, (float[] data, long[] shape)>
        {
            ["query"] = (q, new long[] { b, s, hq * d }),
            ["key"] = (k, new long[] { b, s, hkv * d }),
            ["value"] = (v, new long[] { b, s, hkv * d }),
        };
        var noPast = RunSingleNode("longctx", "ReferenceAttention", new[] { "query", "key", "value", "", "" }, attrs, baseInputs, null);
        var withEmpty = new Dictionary<string, (float[] data, long[] shape)>(baseInputs)
        {
            ["past_key"] = (Array.Empty<float>(), new long[] { b, hkv, 0, d }),
            ["past_value"] = (Array.Empty<float>(), new long[] { b, hkv, 0, d }),
        };
        var emptyPast = RunSingleNode("longctx", "ReferenceAttention", new[] { "query", "key", "value", "past_key", "past_value" }, attrs, withEmpty, null);
        Assert.That(emptyPast["output"].data, Is.EqualTo(noPast["output"].data));
        AssertShape(emptyPast["present_key"].shape, b, hkv, s, d);
    }

    [Test]
    public void OnlyOutputWired_MatchesFullNode()
    {
        const int b = 1, hq = 4, hkv = 2, d = 16, p = 3, s = 2;
        var rng = new Random(77);
        var inputs = new Dictionary<string, (float[] data, long[] shape)>
        {
            ["query"] = (RandomArray(rng, b * s * hq * d), new long[] { b, s, hq * d }),
            ["key"] = (RandomArray(rng, b * s * hkv * d), new long[] { b, s, hkv * d }),
            ["value"] = (RandomArray(rng, b * s * hkv * d), new long[] { b, s, hkv * d }),
            ["past_key"] = (RandomArray(rng, b * hkv * p * d), new long[] { b, hkv, p, d }),
            ["past_value"] = (RandomArray(rng, b * hkv * p * d), new long[] { b, hkv, p, d }),
        };
        var attrs = new[] { IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv) };
        string[] names = { "query", "key", "value", "past_key", "past_value" };
        var full = RunSingleNode("longctx", "ReferenceAttention", names, attrs, inputs, null);
        var onlyOut = RunSingleNode("longctx", "ReferenceAttention", names, attrs, inputs, null, new[] { "output" });
        Assert.That(onlyOut["output"].data, Is.EqualTo(full["output"].data));
    }

    [Test]
    public void KeyHiddenSizeMismatch_ThrowsNamingOp()
    {
        // num_heads=2, D=16 from query; key carries 24 columns instead of kv_num_heads*D = 16.
        var ex = Assert.Throws<OnnxRuntimeException>(() => RunSingleNode("longctx", "ReferenceAttention",
            new[] { "query", "key", "value" },
            new[] { IntAttr("num_heads", 2), IntAttr("kv_num_heads", 1) },
            new()
            {
                ["query"] = (new float[1 * 3 * 32], new long[] { 1, 3, 32 }),
                ["key"] = (new float[1 * 3 * 24], new long[] { 1, 3, 24 }),
                ["value"] = (new float[1 * 3 * 24], new long[] { 1, 3, 24 }),
            }, null));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("ReferenceAttention"));
        Assert.That(ex.Message, Does.Contain("[1, 3, 24]"));
    }

    [Test]
    public void QueryWrongRank_ThrowsNamingOp()
    {
        var ex = Assert.Throws<OnnxRuntimeException>(() => RunSingleNode("longctx", "ReferenceAttention",
            new[] { "query", "key", "value" },
            new[] { IntAttr("num_heads", 1), IntAttr("kv_num_heads", 1) },
            new()
            {
                ["query"] = (new float[16], new long[] { 16 }),
                ["key"] = (new float[16], new long[] { 1, 1, 16 }),
                ["value"] = (new float[16], new long[] { 1, 1, 16 }),
            }, null));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("ReferenceAttention").And.Contain("rank 3"));
    }

    [Test]
    public void HeadsNotDivisible_ThrowsNamingOp()
    {
        var ex = Assert.Catch<OnnxRuntimeException>(() => RunSingleNode("longctx", "ReferenceAttention",
            new[] { "query", "key", "value" },
            new[] { IntAttr("num_heads", 3), IntAttr("kv_num_heads", 2) },
            new()
            {
                ["query"] = (new float[48], new long[] { 1, 1, 48 }),
                ["key"] = (new float[32], new long[] { 1, 1, 32 }),
                ["value"] = (new float[32], new long[] { 1, 1, 32 }),
            }, null));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("ReferenceAttention").And.Contain("kv_num_heads"));
    }

    // ---------------------------------------------------------------- naive oracle

    /// <summary>Textbook attention in double; q [B,S,Hq*D], k/v [B,S,Hkv*D], past [B,Hkv,P,D].</summary>
    private static float[] NaiveAttention(float[] q, float[] k, float[] v, float[] pk, float[] pv,
        int b, int hq, int hkv, int d, int p, int s, float scale, bool causal, int window)
    {
        int total = p + s, group = hq / hkv;
        var output = new float[b * s * hq * d];
        double K(int bi, int h, int t, int j) => t < p ? pk[((bi * hkv + h) * p + t) * d + j] : k[((bi * s + t - p) * hkv + h) * d + j];
        double V(int bi, int h, int t, int j) => t < p ? pv[((bi * hkv + h) * p + t) * d + j] : v[((bi * s + t - p) * hkv + h) * d + j];
        for (int bi = 0; bi < b; bi++)
        for (int h = 0; h < hq; h++)
        for (int i = 0; i < s; i++)
        {
            int pos = p + i, kvh = h / group;
            var allowed = Enumerable.Range(0, total)
                .Where(t => (!causal || t <= pos) && (window <= 0 || t > pos - window))
                .ToArray();
            var logits = allowed.Select(t =>
            {
                double dot = 0;
                for (int j = 0; j < d; j++) dot += q[((bi * s + i) * hq + h) * d + j] * K(bi, kvh, t, j);
                return dot * scale;
            }).ToArray();
            double max = logits.Max();
            var w = logits.Select(x => Math.Exp(x - max)).ToArray();
            double sum = w.Sum();
            for (int j = 0; j < d; j++)
            {
                double acc = 0;
                for (int n = 0; n < allowed.Length; n++) acc += w[n] * V(bi, kvh, allowed[n], j);
                output[((bi * s + i) * hq + h) * d + j] = (float)(acc / sum);
            }
        }
        return output;
    }

    // ---------------------------------------------------------------- ONNX plumbing

    private static Dictionary<string, (float[] data, long[] shape)> RunSingleNode(
        string domain, string opType, IReadOnlyList<string> nodeInputs, IEnumerable<AttributeProto> attrs,
        Dictionary<string, (float[] data, long[] shape)> floatInputs,
        Dictionary<string, (int[] data, long[] shape)>? intInputs,
        string[]? outputNames = null)
    {
        outputNames ??= new[] { "output", "present_key", "present_value" };
        var node = new NodeProto { Name = opType + "_0", OpType = opType, Domain = domain };
        node.Input.AddRange(nodeInputs);
        node.Output.AddRange(outputNames);
        node.Attribute.AddRange(attrs);

        var graph = new GraphProto { Name = "attn_test" };
        graph.Node.Add(node);
        foreach (var name in nodeInputs.Where(n => n.Length > 0))
        {
            var elemType = intInputs != null && intInputs.ContainsKey(name) ? TensorProto.Types.DataType.Int32 : TensorProto.Types.DataType.Float;
            graph.Input.Add(ValueInfo(name, elemType));
        }
        foreach (var name in outputNames) graph.Output.Add(ValueInfo(name, TensorProto.Types.DataType.Float));

        var model = new ModelProto { IrVersion = 10, ProducerName = "LongCtx.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "longctx", Version = 1 });

        using var options = new SessionOptions();
        options.RegisterCustomOpLibrary(LibPath);
        using var session = new InferenceSession(model.ToByteArray(), options);

        var feeds = new Dictionary<string, OrtValue>();
        try
        {
            foreach (var name in nodeInputs.Where(n => n.Length > 0))
            {
                if (intInputs != null && intInputs.TryGetValue(name, out var iv))
                    feeds[name] = OrtValue.CreateTensorValueFromMemory(iv.data, iv.shape);
                else
                    feeds[name] = OrtValue.CreateTensorValueFromMemory(floatInputs[name].data, floatInputs[name].shape);
            }
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, feeds, outputNames);
            var map = new Dictionary<string, (float[] data, long[] shape)>();
            for (int i = 0; i < outputNames.Length; i++)
            {
                var value = results[i];
                map[outputNames[i]] = (value.GetTensorDataAsSpan<float>().ToArray(), value.GetTensorTypeAndShape().Shape);
            }
            return map;
        }
        finally
        {
            foreach (var f in feeds.Values) f.Dispose();
        }
    }

    private static void AssertShape(long[] actual, params long[] expected) =>
        Assert.That(actual, Is.EqualTo(expected), "shape");
}

using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;

using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// What com.microsoft.GroupQueryAttention on ORT 1.31's CPU provider does with its optional <c>attention_bias</c> input
/// (slot 10, [1, num_heads, S, total_sequence_length]) when it masks chosen key slots of chosen heads with -inf, the
/// mechanism AdaKV (per-head cache lengths in one layer) relies on: checked on a one-node graph against textbook
/// attention with the same additive bias, prefill (no past), a chunk after a past, a decode step, and a decode step
/// into a shared past/present buffer longer than the sequence (as the runtime binds it).
/// </summary>
[TestFixture]
public class GqaAttentionBiasProbeTests
{
    private const int Hq = 4, Hkv = 2, D = 8;

    [TestCase(0, 6, 0, TestName = "Prefill_NoPast")]
    [TestCase(5, 3, 0, TestName = "ChunkAfterPast")]
    [TestCase(7, 1, 0, TestName = "DecodeAfterPast")]
    [TestCase(5, 1, 12, TestName = "Decode_SharedBuffer")]
    public void MinusInfinityBias_MasksChosenSlotsPerHead(int past, int s, int buffer)
    {
        var rng = new Random(past * 7 + s);
        int total = past + s, rows = buffer > 0 ? buffer : past;
        var q = RandomArray(rng, s * Hq * D); var k = RandomArray(rng, s * Hkv * D); var v = RandomArray(rng, s * Hkv * D);
        var pastK = RandomArray(rng, Hkv * rows * D); var pastV = RandomArray(rng, Hkv * rows * D);
        // per query head, mask a different set of earlier slots (each row's own slot, past + i, stays visible)
        var bias = new float[Hq * s * total];
        for (int h = 0; h < Hq; h++)
            for (int i = 0; i < s; i++)
                for (int j = 0; j < past + i; j++)
                    if ((j + h) % 3 == 0) bias[(h * s + i) * total + j] = float.NegativeInfinity;
        var got = Run(q, k, v, pastK, pastV, rows, past, s, bias);
        var expect = Reference(q, k, v, pastK, pastV, rows, past, s, bias);
        double diff = MaxAbsDiff(got, expect);
        TestContext.Out.WriteLine($"past={past} S={s} buffer={buffer}: max|ort-ref| = {diff:E3}");
        Assert.That(double.IsFinite(diff), Is.True, "finite outputs");
        Assert.That(diff, Is.LessThanOrEqualTo(1e-5), "GQA output with a -inf attention_bias vs masked attention");
        // and the bias really matters: without it the output differs
        Assert.That(MaxAbsDiff(Run(q, k, v, pastK, pastV, rows, past, s, null), expect), Is.GreaterThan(1e-3), "the bias changes the output");
    }

    /// <summary>A bias of shape [1, 1, S, total] broadcasts over the heads (the runtime feeds one zero tensor to layers with no gaps).</summary>
    [Test]
    public void HeadBroadcastBias_AppliesToEveryHead()
    {
        var rng = new Random(5);
        const int past = 4, s = 2, total = past + s;
        var q = RandomArray(rng, s * Hq * D); var k = RandomArray(rng, s * Hkv * D); var v = RandomArray(rng, s * Hkv * D);
        var pastK = RandomArray(rng, Hkv * past * D); var pastV = RandomArray(rng, Hkv * past * D);
        var one = new float[s * total];
        one[1] = one[total + 2] = float.NegativeInfinity;
        var perHead = Enumerable.Range(0, Hq).SelectMany(_ => one).ToArray();
        var got = Run(q, k, v, pastK, pastV, past, past, s, one, heads: 1);
        Assert.That(MaxAbsDiff(got, Reference(q, k, v, pastK, pastV, past, past, s, perHead)), Is.LessThanOrEqualTo(1e-5));
    }

    /// <summary>Textbook causal attention with an additive bias [Hq, S, total]: the query row i sits at position past + i.</summary>
    private static float[] Reference(float[] q, float[] k, float[] v, float[] pastK, float[] pastV, int rows, int past, int s, float[] bias)
    {
        int total = past + s;
        float scale = 1f / MathF.Sqrt(D);
        float Key(float[] from, int g, int j, int c) => j < past ? from == k ? pastK[(g * rows + j) * D + c] : pastV[(g * rows + j) * D + c]
            : from[((j - past) * Hkv + g) * D + c];
        var o = new float[s * Hq * D];
        for (int i = 0; i < s; i++)
            for (int h = 0; h < Hq; h++)
            {
                int g = h / (Hq / Hkv), visible = past + i + 1;
                var w = new double[visible];
                double max = double.NegativeInfinity;
                for (int j = 0; j < visible; j++)
                {
                    double dot = 0;
                    for (int c = 0; c < D; c++) dot += q[(i * Hq + h) * D + c] * Key(k, g, j, c);
                    w[j] = dot * scale + bias[(h * s + i) * total + j];
                    max = Math.Max(max, w[j]);
                }
                double sum = 0;
                for (int j = 0; j < visible; j++) { w[j] = Math.Exp(w[j] - max); sum += w[j]; }
                for (int c = 0; c < D; c++)
                {
                    double acc = 0;
                    for (int j = 0; j < visible; j++) acc += w[j] / sum * Key(v, g, j, c);
                    o[(i * Hq + h) * D + c] = (float)acc;
                }
            }
        return o;
    }

    private static float[] Run(float[] q, float[] k, float[] v, float[] pastK, float[] pastV, int rows, int past, int s, float[]? bias, int heads = Hq)
    {
        string[] inputs = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "", "", "", bias is null ? "" : "attention_bias"];
        var node = new NodeProto { Name = "gqa", OpType = "GroupQueryAttention", Domain = "com.microsoft" };
        node.Input.AddRange(inputs);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.AddRange([IntAttr("num_heads", Hq), IntAttr("kv_num_heads", Hkv)]);
        var graph = new GraphProto { Name = "gqa_bias" };
        graph.Node.Add(node);
        foreach (var n in inputs.Where(n => n.Length > 0))
            graph.Input.Add(ValueInfo(n, n is "seqlens_k" or "total_sequence_length" ? TensorProto.Types.DataType.Int32 : TensorProto.Types.DataType.Float));
        foreach (var n in node.Output) graph.Output.Add(ValueInfo(n, TensorProto.Types.DataType.Float));
        var model = new ModelProto { IrVersion = 10, ProducerName = "LongCtx.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        using var session = new InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(model));
        int total = past + s;
        var feeds = new Dictionary<string, OrtValue>
        {
            ["query"] = OrtValue.CreateTensorValueFromMemory(q, [1, s, Hq * D]),
            ["key"] = OrtValue.CreateTensorValueFromMemory(k, [1, s, Hkv * D]),
            ["value"] = OrtValue.CreateTensorValueFromMemory(v, [1, s, Hkv * D]),
            ["past_key"] = OrtValue.CreateTensorValueFromMemory((float[])pastK.Clone(), [1, Hkv, rows, D]),
            ["past_value"] = OrtValue.CreateTensorValueFromMemory((float[])pastV.Clone(), [1, Hkv, rows, D]),
            ["seqlens_k"] = OrtValue.CreateTensorValueFromMemory(new[] { total - 1 }, [1]),
            ["total_sequence_length"] = OrtValue.CreateTensorValueFromMemory(new[] { total }, []),
        };
        if (bias is not null) feeds["attention_bias"] = OrtValue.CreateTensorValueFromMemory(bias, [1, heads, s, total]);
        try
        {
            using var run = new RunOptions();
            using var results = session.Run(run, feeds, ["output"]);
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var f in feeds.Values) f.Dispose();
        }
    }
}

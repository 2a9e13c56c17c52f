using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using NUnit.Framework;
using Onnx;

using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.KvQuant;

/// <summary>
/// What com.microsoft.GroupQueryAttention on ORT 1.31's CPU provider really does with a quantized KV cache, checked on
/// a one-node graph: the stored bytes of present_key/value against <see cref="KvQuantReference"/> (quantize-dequantize
/// round trip) and the output against textbook attention over the dequantized cache, prefill then cached decode, for
/// int8 / int4 x per-tensor / per-channel, and with past and present sharing one buffer.
/// </summary>
[TestFixture]
public class GqaQuantizedKvTests
{
    private const int Hq = 4, Hkv = 2, D = 16;

    public static IEnumerable<TestCaseData> Modes()
    {
        foreach (int bits in new[] { 8, 4 })
            foreach (var g in new[] { "PER_TENSOR", "PER_CHANNEL" })
                foreach (int s1 in new[] { 1, 5 })
                    yield return new TestCaseData(bits, g, s1).SetName($"Int{bits}_{g}_{(s1 == 1 ? "Decode" : "ChunkAfterPast")}");
    }

    [TestCaseSource(nameof(Modes))]
    public void PrefillThenDecode_MatchesReference(int bits, string granularity, int s1)
    {
        var rng = new Random(bits * 31 + granularity.Length + s1);
        const int s0 = 7;
        int total = s0 + s1;
        var (kScale, vScale) = Scales(rng, granularity, bits);
        var q0 = RandomArray(rng, s0 * Hq * D); var k0 = RandomArray(rng, s0 * Hkv * D, 2f); var v0 = RandomArray(rng, s0 * Hkv * D);
        var q1 = RandomArray(rng, s1 * Hq * D); var k1 = RandomArray(rng, s1 * Hkv * D, 2f); var v1 = RandomArray(rng, s1 * Hkv * D);
        float sm = 1f / MathF.Sqrt(D);

        // prefill: empty past
        var prefill = RunGqa(bits, granularity, q0, k0, v0, new byte[0], new byte[0], 0, s0, kScale, vScale, bufferLength: null);
        var refK0 = KvQuantReference.Quantize(ToBhsd(k0, s0), Hkv, s0, D, kScale, bits);
        var refV0 = KvQuantReference.Quantize(ToBhsd(v0, s0), Hkv, s0, D, vScale, bits);
        Assert.That(prefill.PresentKeyShape, Is.EqualTo(new long[] { 1, Hkv, s0, bits == 4 ? D / 2 : D }), "present_key shape");
        Assert.That(KvQuantReference.Unpack(prefill.PresentKey, bits), Is.EqualTo(refK0), "present_key codes");
        Assert.That(KvQuantReference.Unpack(prefill.PresentValue, bits), Is.EqualTo(refV0), "present_value codes");
        var expect0 = KvQuantReference.Attention(q0, KvQuantReference.Dequantize(refK0, Hkv, s0, D, kScale),
            KvQuantReference.Dequantize(refV0, Hkv, s0, D, vScale), Hq, Hkv, D, 0, s0, sm);
        Assert.That(MaxAbsDiff(prefill.Output, expect0), Is.LessThanOrEqualTo(1e-5), "prefill output vs attention over the dequantized cache");

        // decode: the present bytes come back as past
        var decode = RunGqa(bits, granularity, q1, k1, v1, prefill.PresentKey, prefill.PresentValue, s0, s1, kScale, vScale, bufferLength: null);
        var refK = KvQuantReference.Quantize(Concat(ToBhsd(k0, s0), s0, ToBhsd(k1, s1), s1), Hkv, total, D, kScale, bits);
        var refV = KvQuantReference.Quantize(Concat(ToBhsd(v0, s0), s0, ToBhsd(v1, s1), s1), Hkv, total, D, vScale, bits);
        Assert.That(KvQuantReference.Unpack(decode.PresentKey, bits), Is.EqualTo(refK), "decode present_key codes");
        var expect1 = KvQuantReference.Attention(q1, KvQuantReference.Dequantize(refK, Hkv, total, D, kScale),
            KvQuantReference.Dequantize(refV, Hkv, total, D, vScale), Hq, Hkv, D, s0, s1, sm);
        double diff = MaxAbsDiff(decode.Output, expect1);
        TestContext.Out.WriteLine($"int{bits} {granularity}: decode max|ort-ref| = {diff:E3}");
        Assert.That(diff, Is.LessThanOrEqualTo(1e-5), "decode output vs attention over the dequantized cache");
    }

    [TestCase(8)]
    [TestCase(4)]
    public void SharedBuffer_WritesInPlaceAtSeqlens(int bits)
    {
        var rng = new Random(99 + bits);
        const int cap = 12, p = 5, s = 1;
        var (kScale, vScale) = Scales(rng, "PER_CHANNEL", bits);
        int row = bits == 4 ? D / 2 : D;
        var pastK = new byte[Hkv * cap * row];
        var pastV = new byte[Hkv * cap * row];
        rng.NextBytes(pastK); rng.NextBytes(pastV);
        var q = RandomArray(rng, s * Hq * D); var k = RandomArray(rng, s * Hkv * D); var v = RandomArray(rng, s * Hkv * D);
        var r = RunGqa(bits, "PER_CHANNEL", q, k, v, pastK, pastV, p, s, kScale, vScale, bufferLength: cap);
        Assert.That(r.PresentKeyShape, Is.EqualTo(new long[] { 1, Hkv, cap, row }), "present has the buffer's length");
        var newK = KvQuantReference.Quantize(ToBhsd(k, s), Hkv, s, D, kScale, bits);
        var gotK = KvQuantReference.Unpack(r.PresentKey, bits);
        for (int h = 0; h < Hkv; h++)
            for (int j = 0; j < D; j++)
                Assert.That(gotK[(h * cap + p) * D + j], Is.EqualTo(newK[h * D + j]), $"head {h} channel {j} written at row {p}");
    }

    [Test]
    public void MixedGranularity_IsRefused()
    {
        var rng = new Random(3);
        var (kScale, _) = Scales(rng, "PER_TENSOR", 8);
        var (_, vScale) = Scales(rng, "PER_CHANNEL", 8);
        var ex = Assert.Throws<OnnxRuntimeException>(() => RunGqa(8, "PER_TENSOR", RandomArray(rng, Hq * D), RandomArray(rng, Hkv * D),
            RandomArray(rng, Hkv * D), [], [], 0, 1, kScale, vScale, null, vQuant: "PER_CHANNEL"));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("k_quant_type == v_quant_type"));
    }

    // ---------------------------------------------------------------- plumbing

    private static (float[] K, float[] V) Scales(Random rng, string granularity, int bits)
    {
        int n = granularity == "PER_TENSOR" ? 1 : Hkv * D;
        float qmax = bits == 8 ? 127f : 7f;
        // per channel the scales span 20x, so a channel read with another channel's scale cannot go unnoticed
        float[] Make(float absmax) => Enumerable.Range(0, n).Select(_ => absmax * (0.1f + 1.9f * (float)rng.NextDouble()) / qmax).ToArray();
        return (Make(2f), Make(1f));
    }

    /// <summary>[S, Hkv*D] -> [Hkv, S, D].</summary>
    private static float[] ToBhsd(float[] x, int s)
    {
        var y = new float[x.Length];
        for (int i = 0; i < s; i++) for (int h = 0; h < Hkv; h++) for (int j = 0; j < D; j++) y[(h * s + i) * D + j] = x[(i * Hkv + h) * D + j];
        return y;
    }

    private static float[] Concat(float[] a, int ta, float[] b, int tb)
    {
        var y = new float[a.Length + b.Length];
        for (int h = 0; h < Hkv; h++)
        {
            Array.Copy(a, h * ta * D, y, h * (ta + tb) * D, ta * D);
            Array.Copy(b, h * tb * D, y, (h * (ta + tb) + ta) * D, tb * D);
        }
        return y;
    }

    private sealed record GqaResult(float[] Output, byte[] PresentKey, byte[] PresentValue, long[] PresentKeyShape);

    /// <summary>One GroupQueryAttention node with a quantized cache: past [1, Hkv, P or buffer, D or D/2] int8 / uint8.</summary>
    private static GqaResult RunGqa(int bits, string kQuant, float[] q, float[] k, float[] v, byte[] pastK, byte[] pastV, int p, int s,
        float[] kScale, float[] vScale, int? bufferLength, string? vQuant = null)
    {
        var cacheType = bits == 8 ? TensorProto.Types.DataType.Int8 : TensorProto.Types.DataType.Uint8;
        string[] inputs = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "", "", "", "", "", "k_scale", "v_scale"];
        var node = new NodeProto { Name = "gqa", OpType = "GroupQueryAttention", Domain = "com.microsoft" };
        node.Input.AddRange(inputs);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.AddRange([IntAttr("num_heads", Hq), IntAttr("kv_num_heads", Hkv), StringAttr("k_quant_type", kQuant),
            StringAttr("v_quant_type", vQuant ?? kQuant), IntAttr("kv_cache_bit_width", bits)]);
        var graph = new GraphProto { Name = "gqa_quant" };
        graph.Node.Add(node);
        foreach (var n in new[] { "query", "key", "value", "k_scale", "v_scale" }) graph.Input.Add(ValueInfo(n, TensorProto.Types.DataType.Float));
        graph.Input.Add(ValueInfo("past_key", cacheType));
        graph.Input.Add(ValueInfo("past_value", cacheType));
        graph.Input.Add(ValueInfo("seqlens_k", TensorProto.Types.DataType.Int32));
        graph.Input.Add(ValueInfo("total_sequence_length", TensorProto.Types.DataType.Int32));
        graph.Output.Add(ValueInfo("output", TensorProto.Types.DataType.Float));
        graph.Output.Add(ValueInfo("present_key", cacheType));
        graph.Output.Add(ValueInfo("present_value", cacheType));
        var model = new ModelProto { IrVersion = 10, ProducerName = "LongCtx.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });

        using var options = new SessionOptions();
        using var session = new InferenceSession(model.ToByteArray(), options);
        int row = bits == 4 ? D / 2 : D;
        long[] pastShape = [1, Hkv, bufferLength ?? p, row];
        var elem = bits == 8 ? TensorElementType.Int8 : TensorElementType.UInt8;
        var feeds = new Dictionary<string, OrtValue>
        {
            ["query"] = OrtValue.CreateTensorValueFromMemory(q, [1, s, Hq * D]),
            ["key"] = OrtValue.CreateTensorValueFromMemory(k, [1, s, Hkv * D]),
            ["value"] = OrtValue.CreateTensorValueFromMemory(v, [1, s, Hkv * D]),
            ["past_key"] = Bytes(pastK, elem, pastShape),
            ["past_value"] = Bytes(pastV, elem, pastShape),
            ["seqlens_k"] = OrtValue.CreateTensorValueFromMemory(new[] { p + s - 1 }, [1]),
            ["total_sequence_length"] = OrtValue.CreateTensorValueFromMemory(new[] { p + s }, []),
            ["k_scale"] = OrtValue.CreateTensorValueFromMemory(kScale, kScale.Length == 1 ? [1] : [Hkv, 1, D]),
            ["v_scale"] = OrtValue.CreateTensorValueFromMemory(vScale, vScale.Length == 1 ? [1] : [Hkv, 1, D]),
        };
        try
        {
            using var run = new RunOptions();
            using var results = session.Run(run, feeds, ["output", "present_key", "present_value"]);
            return new GqaResult(results[0].GetTensorDataAsSpan<float>().ToArray(),
                results[1].GetTensorDataAsSpan<byte>().ToArray(), results[2].GetTensorDataAsSpan<byte>().ToArray(),
                results[1].GetTensorTypeAndShape().Shape);
        }
        finally
        {
            foreach (var f in feeds.Values) f.Dispose();
        }
    }

    private static OrtValue Bytes(byte[] data, TensorElementType elem, long[] shape)
    {
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, elem, shape);
        data.CopyTo(v.GetTensorMutableRawData());
        return v;
    }
}

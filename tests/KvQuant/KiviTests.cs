using System.Runtime.InteropServices;
using Google.Protobuf;
using LongCtx.Contract;
using LongCtx.Runtime;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;
using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.KvQuant;

/// <summary>
/// KIVI (issue 11 item 4): the runtime's C# codec against the native kernels (codes and params bit-exact, round trip
/// within scale/2), and longctx.KiviAttention driven like the runtime drives it (prefill, then cached decode past R and
/// several groups, the residual folded in groups of G) against a C# reference of the quantized attention: dense
/// softmax attention in double over [dequantized store | fp32 residual], RoPE in double. Tolerance 1e-4 (fp32
/// accumulation over <= 120 keys of unit-scale data); the present residual within 1e-5 of the C# RoPE.
/// </summary>
[TestFixture]
public class KiviTests
{
    private const int H = 4, Hkv = 2, D = 32, MaxPos = 256;

    [TestCase(2, true)]
    [TestCase(4, true)]
    [TestCase(2, false)]
    [TestCase(4, false)]
    public void Codec_MatchesNativeBitForBit(int bits, bool keys)
    {
        RequireLibrary();
        const int T = 64, G = 16;
        var rng = new Random(bits * 10 + (keys ? 1 : 0));
        var x = RandomArray(rng, T * D);
        for (int t = 0; t < T; t++) x[t * D + 5] *= 20f; // an outlier channel
        int rb = D * bits / 8, np = keys ? T / G * 2 * D : T * 2 * (D / G);
        byte[] codes = new byte[T * rb], native = new byte[T * rb];
        float[] prm = new float[np], nativePrm = new float[np], y = new float[T * D], nativeY = new float[T * D];
        if (keys) KiviCodec.QuantizeKeys(x, T, D, bits, G, codes, prm); else KiviCodec.QuantizeValues(x, T, D, bits, G, codes, prm);
        Assert.That(Export<QuantFn>("LongCtxKiviQuantize")(keys ? 1 : 0, bits, G, T, D, x, native, nativePrm), Is.Zero);
        Assert.That(codes, Is.EqualTo(native), "codes");
        Assert.That(prm, Is.EqualTo(nativePrm), "scales and zeros");
        if (keys) KiviCodec.DequantizeKeys(codes, prm, T, D, bits, G, y); else KiviCodec.DequantizeValues(codes, prm, T, D, bits, G, y);
        Assert.That(Export<DequantFn>("LongCtxKiviDequantize")(keys ? 1 : 0, bits, G, T, D, native, nativePrm, nativeY), Is.Zero);
        Assert.That(MaxAbsDiff(y, nativeY), Is.LessThanOrEqualTo(1e-5), "dequantized (native FMA vs C# multiply-add)");
        for (int t = 0; t < T; t++)
            for (int j = 0; j < D; j++)
            {
                float scale = keys ? prm[t / G * 2 * D + j] : prm[t * 2 * (D / G) + j / G];
                Assert.That(Math.Abs(y[t * D + j] - x[t * D + j]), Is.LessThanOrEqualTo(scale / 2 + 1e-5), $"|y - x| <= scale/2 at token {t} channel {j}");
            }
    }

    [Test]
    public void Codec_RejectsAPartialKeyGroup()
    {
        var ex = Assert.Throws<ArgumentException>(() => KiviCodec.QuantizeKeys(new float[20 * D], 20, D, 2, 16, new byte[20 * 8], new float[64]));
        Assert.That(ex!.Message, Does.Contain("groups of 16"));
    }

    [TestCase(2, 16, 16)]
    [TestCase(4, 16, 16)]
    [TestCase(2, 8, 24)]
    public void PrefillThenDecode_MatchesQuantizedReference(int bits, int group, int residual)
    {
        RequireLibrary();
        var layout = new KiviLayout(bits, group, residual, D, Hkv, 1);
        var rng = new Random(bits * 100 + group);
        var (cos, sin) = Rope();
        using var session = Session(Model(bits, group));
        // the test owns the cache the way KiviKvCache does: store (per head) + fp32 residual [Hkv, r, D]
        int rb = D * bits / 8, pq = 0, r = 0;
        var storeK = new List<float>[Hkv]; var storeV = new List<float>[Hkv];     // the raw tokens folded, per head (for the reference)
        for (int h = 0; h < Hkv; h++) { storeK[h] = []; storeV[h] = []; }
        byte[] kc = [], vc = []; float[] kp = [], vp = [];
        float[] resK = [], resV = [];
        var allK = new List<double[]>[Hkv]; var allV = new List<double[]>[Hkv]; // every token as the reference sees it
        for (int h = 0; h < Hkv; h++) { allK[h] = []; allV[h] = []; }
        int[] steps = [40, 1, 1, 1, 5, .. Enumerable.Repeat(1, 40)]; // prefill past R + G, a chunk, then decode across several folds
        int folds = 0;
        foreach (int s in steps)
        {
            int pos0 = pq + r;
            var q = RandomArray(rng, s * H * D); var k = RandomArray(rng, s * Hkv * D); var v = RandomArray(rng, s * Hkv * D);
            var feeds = new Dictionary<string, OrtValue>
            {
                ["query"] = OrtValue.CreateTensorValueFromMemory(q, [1, s, H * D]),
                ["key"] = OrtValue.CreateTensorValueFromMemory(k, [1, s, Hkv * D]),
                ["value"] = OrtValue.CreateTensorValueFromMemory(v, [1, s, Hkv * D]),
                ["past_key"] = OrtValue.CreateTensorValueFromMemory(resK.Length == 0 ? new float[1] : resK, [1, Hkv, r, D]),
                ["past_value"] = OrtValue.CreateTensorValueFromMemory(resV.Length == 0 ? new float[1] : resV, [1, Hkv, r, D]),
                ["seqlens_k"] = OrtValue.CreateTensorValueFromMemory(new[] { pos0 + s - 1 }, [1]),
                ["total_sequence_length"] = OrtValue.CreateTensorValueFromMemory(new[] { pos0 + s }, [1]),
                ["key_codes"] = OrtValue.CreateTensorValueFromMemory(kc.Length == 0 ? new byte[1] : kc, [1, Hkv, pq, rb]),
                ["key_params"] = OrtValue.CreateTensorValueFromMemory(kp.Length == 0 ? new float[1] : kp, [1, Hkv, pq / group, 2, D]),
                ["value_codes"] = OrtValue.CreateTensorValueFromMemory(vc.Length == 0 ? new byte[1] : vc, [1, Hkv, pq, rb]),
                ["value_params"] = OrtValue.CreateTensorValueFromMemory(vp.Length == 0 ? new float[1] : vp, [1, Hkv, pq, 2, D / group]),
                ["cos_cache"] = OrtValue.CreateTensorValueFromMemory(cos, [MaxPos, D / 2]),
                ["sin_cache"] = OrtValue.CreateTensorValueFromMemory(sin, [MaxPos, D / 2]),
            };
            using var results = session.Run(new RunOptions(), feeds, session.OutputNames);
            foreach (var f in feeds.Values) f.Dispose();
            var output = results[0].GetTensorDataAsSpan<float>().ToArray();
            var presentK = results[1].GetTensorDataAsSpan<float>().ToArray();
            var presentV = results[2].GetTensorDataAsSpan<float>().ToArray();

            // reference: the new tokens rotated in double, appended to what the reference holds
            for (int h = 0; h < Hkv; h++)
                for (int i = 0; i < s; i++)
                {
                    allK[h].Add(Rotate(k.AsSpan(((i * Hkv) + h) * D, D), cos, sin, pos0 + i));
                    allV[h].Add(v.AsSpan(((i * Hkv) + h) * D, D).ToArray().Select(x => (double)x).ToArray());
                }
            int rows = r + s;
            for (int h = 0; h < Hkv; h++)
                for (int t = 0; t < rows; t++)
                    for (int j = 0; j < D; j++)
                        Assert.That(Math.Abs(presentK[(h * rows + t) * D + j] - allK[h][pq + t][j]), Is.LessThanOrEqualTo(1e-5), "present key = residual ++ rotated new keys");
            double worst = 0;
            for (int h = 0; h < H; h++)
                for (int i = 0; i < s; i++)
                {
                    var want = Attend(Rotate(q.AsSpan((i * H + h) * D, D), cos, sin, pos0 + i), allK[h / (H / Hkv)], allV[h / (H / Hkv)], pos0 + i + 1);
                    for (int j = 0; j < D; j++) worst = Math.Max(worst, Math.Abs(want[j] - output[(i * H + h) * D + j]));
                }
            Assert.That(worst, Is.LessThanOrEqualTo(1e-4), $"step of {s} at position {pos0}: |KiviAttention - reference|");

            // fold as the runtime does; the reference replaces the folded tokens by their dequantized values
            var (fold, keep) = layout.Split(rows);
            Assert.That(keep, Is.LessThan(residual + group).And.AtLeast(Math.Min(rows, residual)), "the residual after a fold");
            if (fold > 0)
            {
                folds++;
                int f = (int)fold, pn = pq + f;
                var nkc = new byte[Hkv * pn * rb]; var nvc = new byte[nkc.Length];
                var nkp = new float[Hkv * pn / group * 2 * D]; var nvp = new float[Hkv * pn * 2 * (D / group)];
                for (int h = 0; h < Hkv; h++)
                {
                    kc.AsSpan(h * pq * rb, pq * rb).CopyTo(nkc.AsSpan(h * pn * rb)); vc.AsSpan(h * pq * rb, pq * rb).CopyTo(nvc.AsSpan(h * pn * rb));
                    kp.AsSpan(h * pq / group * 2 * D, pq / group * 2 * D).CopyTo(nkp.AsSpan(h * pn / group * 2 * D));
                    vp.AsSpan(h * pq * 2 * (D / group), pq * 2 * (D / group)).CopyTo(nvp.AsSpan(h * pn * 2 * (D / group)));
                    var hk = presentK.AsSpan(h * rows * D, f * D); var hv = presentV.AsSpan(h * rows * D, f * D);
                    KiviCodec.QuantizeKeys(hk, f, D, bits, group, nkc.AsSpan((h * pn + pq) * rb, f * rb), nkp.AsSpan((h * pn / group + pq / group) * 2 * D, f / group * 2 * D));
                    KiviCodec.QuantizeValues(hv, f, D, bits, group, nvc.AsSpan((h * pn + pq) * rb, f * rb), nvp.AsSpan((h * pn + pq) * 2 * (D / group), f * 2 * (D / group)));
                    var dk = new float[f * D]; var dv = new float[f * D];
                    KiviCodec.DequantizeKeys(nkc.AsSpan((h * pn + pq) * rb, f * rb), nkp.AsSpan((h * pn / group + pq / group) * 2 * D, f / group * 2 * D), f, D, bits, group, dk);
                    KiviCodec.DequantizeValues(nvc.AsSpan((h * pn + pq) * rb, f * rb), nvp.AsSpan((h * pn + pq) * 2 * (D / group), f * 2 * (D / group)), f, D, bits, group, dv);
                    for (int t = 0; t < f; t++)
                    {
                        allK[h][pq + t] = dk.AsSpan(t * D, D).ToArray().Select(x => (double)x).ToArray();
                        allV[h][pq + t] = dv.AsSpan(t * D, D).ToArray().Select(x => (double)x).ToArray();
                    }
                }
                (kc, vc, kp, vp, pq) = (nkc, nvc, nkp, nvp, pn);
            }
            r = (int)keep;
            resK = new float[Hkv * r * D]; resV = new float[Hkv * r * D];
            for (int h = 0; h < Hkv; h++)
            {
                presentK.AsSpan((h * rows + (int)fold) * D, r * D).CopyTo(resK.AsSpan(h * r * D));
                presentV.AsSpan((h * rows + (int)fold) * D, r * D).CopyTo(resV.AsSpan(h * r * D));
            }
        }
        Assert.That(folds, Is.GreaterThanOrEqualTo(3), "the run crosses several fold boundaries");
        Assert.That(pq % group, Is.Zero);
        Assert.That(pq, Is.GreaterThanOrEqualTo(2 * group));
    }

    [Test]
    public void WrongParamsShape_IsOneLineErrorNamingTheInput()
    {
        RequireLibrary();
        using var session = Session(Model(2, 16));
        var (cos, sin) = Rope();
        var feeds = new Dictionary<string, OrtValue>
        {
            ["query"] = OrtValue.CreateTensorValueFromMemory(new float[H * D], [1, 1, H * D]),
            ["key"] = OrtValue.CreateTensorValueFromMemory(new float[Hkv * D], [1, 1, Hkv * D]),
            ["value"] = OrtValue.CreateTensorValueFromMemory(new float[Hkv * D], [1, 1, Hkv * D]),
            ["past_key"] = OrtValue.CreateTensorValueFromMemory(new float[1], [1, Hkv, 0, D]),
            ["past_value"] = OrtValue.CreateTensorValueFromMemory(new float[1], [1, Hkv, 0, D]),
            ["seqlens_k"] = OrtValue.CreateTensorValueFromMemory(new[] { 16 }, [1]),
            ["total_sequence_length"] = OrtValue.CreateTensorValueFromMemory(new[] { 17 }, [1]),
            ["key_codes"] = OrtValue.CreateTensorValueFromMemory(new byte[Hkv * 16 * 8], [1, Hkv, 16, 8]),
            ["key_params"] = OrtValue.CreateTensorValueFromMemory(new float[Hkv * 2 * 2 * D], [1, Hkv, 2, 2, D]), // 2 groups for 16 tokens: wrong
            ["value_codes"] = OrtValue.CreateTensorValueFromMemory(new byte[Hkv * 16 * 8], [1, Hkv, 16, 8]),
            ["value_params"] = OrtValue.CreateTensorValueFromMemory(new float[Hkv * 16 * 2 * 2], [1, Hkv, 16, 2, 2]),
            ["cos_cache"] = OrtValue.CreateTensorValueFromMemory(cos, [MaxPos, D / 2]),
            ["sin_cache"] = OrtValue.CreateTensorValueFromMemory(sin, [MaxPos, D / 2]),
        };
        var ex = Assert.Catch<OnnxRuntimeException>(() => session.Run(new RunOptions(), feeds, session.OutputNames).Dispose())!;
        foreach (var f in feeds.Values) f.Dispose();
        Assert.That(ex.Message, Does.Contain("longctx.KiviAttention: key_params shape [1, 2, 2, 2, 32] does not match expected [1, 2, 1, 2, 32]"));
        Assert.That(ex.Message.Split('\n').Count(l => l.Contains("KiviAttention")), Is.EqualTo(1));
    }

    // ---------------------------------------------------------------- helpers

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int QuantFn(int keys, long bits, long group, long tokens, long d, float[] x, byte[] codes, float[] qparams);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int DequantFn(int keys, long bits, long group, long tokens, long d, byte[] codes, float[] qparams, float[] y);

    private static T Export<T>(string name) where T : Delegate =>
        Marshal.GetDelegateForFunctionPointer<T>(NativeLibrary.GetExport(NativeLibrary.Load(LibPath), name));

    private static InferenceSession Session(ModelProto model)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 2 };
        options.RegisterCustomOpLibrary(LibPath);
        return new InferenceSession(model.ToByteArray(), options);
    }

    private static ModelProto Model(int bits, int group)
    {
        string[] ins = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "key_codes", "key_params", "value_codes", "value_params", "cos_cache", "sin_cache"];
        var node = new NodeProto { Name = "kivi", OpType = "KiviAttention", Domain = "longctx" };
        node.Input.AddRange(ins);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.AddRange([IntAttr("num_heads", H), IntAttr("kv_num_heads", Hkv), IntAttr("do_rotary", 1), IntAttr("bits", bits), IntAttr("group", group)]);
        var graph = new GraphProto { Name = "kivi" };
        graph.Node.Add(node);
        foreach (var n in ins)
            graph.Input.Add(ValueInfo(n, n is "seqlens_k" or "total_sequence_length" ? TensorProto.Types.DataType.Int32
                : n.EndsWith("codes", StringComparison.Ordinal) ? TensorProto.Types.DataType.Uint8 : TensorProto.Types.DataType.Float));
        foreach (var n in node.Output) graph.Output.Add(ValueInfo(n, TensorProto.Types.DataType.Float));
        var model = new ModelProto { IrVersion = 10, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "longctx", Version = 1 });
        return model;
    }

    private static (float[] Cos, float[] Sin) Rope()
    {
        var cos = new float[MaxPos * D / 2]; var sin = new float[MaxPos * D / 2];
        for (int p = 0; p < MaxPos; p++)
            for (int i = 0; i < D / 2; i++)
            {
                double th = p * Math.Pow(10000.0, -2.0 * i / D);
                cos[p * D / 2 + i] = (float)Math.Cos(th);
                sin[p * D / 2 + i] = (float)Math.Sin(th);
            }
        return (cos, sin);
    }

    /// <summary>GQA's half-split RoPE at <paramref name="pos"/>, in double.</summary>
    private static double[] Rotate(ReadOnlySpan<float> x, float[] cos, float[] sin, int pos)
    {
        var y = new double[D];
        for (int j = 0; j < D / 2; j++)
        {
            double c = cos[pos * D / 2 + j], s = sin[pos * D / 2 + j], a = x[j], b = x[j + D / 2];
            y[j] = a * c - b * s;
            y[j + D / 2] = b * c + a * s;
        }
        return y;
    }

    /// <summary>softmax(q K^T / sqrt(D)) V over the first <paramref name="n"/> tokens, in double.</summary>
    private static double[] Attend(double[] q, List<double[]> keys, List<double[]> values, int n)
    {
        var s = new double[n];
        double mx = double.NegativeInfinity, sum = 0;
        for (int t = 0; t < n; t++) { s[t] = q.Zip(keys[t], (a, b) => a * b).Sum() / Math.Sqrt(D); mx = Math.Max(mx, s[t]); }
        for (int t = 0; t < n; t++) sum += s[t] = Math.Exp(s[t] - mx);
        var o = new double[D];
        for (int t = 0; t < n; t++) for (int j = 0; j < D; j++) o[j] += s[t] / sum * values[t][j];
        return o;
    }
}

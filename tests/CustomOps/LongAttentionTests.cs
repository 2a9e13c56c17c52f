using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;

using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.CustomOps;

/// <summary>
/// Checks the longctx.LongAttention custom op (custom-ops/ort/long_attention_op.cc over the kernels in
/// custom-ops/kernels/attention, loaded from liblongctx_ops.so) through ONNX Runtime: dense against
/// com.microsoft.GroupQueryAttention (same inputs, same KV I/O, also in one shared buffer), streaming
/// against a masked reference written here, DCA against dense within one chunk, float16 I/O, its
/// scratch memory following the tokens present, and its error messages.
/// </summary>
[TestFixture]
public class LongAttentionTests
{
    private const double Tolerance = 1e-5;

    private static string LibPath => OpTestKit.LibPath;

    [OneTimeSetUp]
    public void RequireLibrary() => OpTestKit.RequireLibrary();

    // ---------------------------------------------------------------- dense == GQA

    public static IEnumerable<TestCaseData> GqaCases()
    {
        // (B, Hq, Hkv, D, P, S, rotary, interleaved)
        yield return new TestCaseData(1, 2, 2, 32, 0, 7, false, false).SetName("Dense_MHA_Prefill_D32");
        yield return new TestCaseData(2, 4, 2, 64, 0, 19, true, false).SetName("Dense_GQA2_Prefill_Rotary_D64");
        yield return new TestCaseData(1, 8, 2, 64, 0, 257, true, false).SetName("Dense_GQA4_Prefill257_Rotary_D64");
        yield return new TestCaseData(2, 4, 1, 128, 33, 1, true, false).SetName("Dense_GQA4_Decode_Rotary_D128");
        yield return new TestCaseData(1, 4, 2, 32, 70, 7, true, true).SetName("Dense_GQA2_ChunkWithPast_Interleaved_D32");
        yield return new TestCaseData(1, 2, 1, 64, 300, 1, false, false).SetName("Dense_GQA2_Decode_LongPast_D64");
    }

    [TestCaseSource(nameof(GqaCases))]
    public void DenseMatchesGroupQueryAttention(int b, int hq, int hkv, int d, int p, int s, bool rotary, bool interleaved)
    {
        var c = new Shapes(b, hq, hkv, d, p, s);
        var rng = new Random(17 + 7 * hq + 13 * d + 31 * p + s);
        var inputs = RandomInputs(rng, c, rotary);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv), FloatAttr("scale", 0.9f / MathF.Sqrt(d)) };
        if (rotary) { attrs.Add(IntAttr("do_rotary", 1)); attrs.Add(IntAttr("rotary_interleaved", interleaved ? 1 : 0)); }
        var gqa = Run(Gqa(attrs, c, rotary), inputs);
        var la = Run(LongAttention(attrs, c, rotary, "dense"), inputs);

        double dOut = MaxAbsDiff(la["output"], gqa["output"]);
        double dK = MaxAbsDiff(la["present_key"], gqa["present_key"]);
        double dV = MaxAbsDiff(la["present_value"], gqa["present_value"]);
        TestContext.Out.WriteLine($"max|la-gqa| output={dOut:E3} present_key={dK:E3} present_value={dV:E3}");
        Assert.Multiple(() =>
        {
            Assert.That(dOut, Is.LessThanOrEqualTo(Tolerance), "output vs GroupQueryAttention");
            Assert.That(dK, Is.LessThanOrEqualTo(1e-6), "present_key (rotated keys) vs GroupQueryAttention");
            Assert.That(dV, Is.LessThanOrEqualTo(0.0), "present_value vs GroupQueryAttention");
        });
    }

    [TestCase("scalar")]
    [TestCase("avx2")]
    public void DenseMatchesGqa_ForcedIsa(string isa)
    {
        var c = new Shapes(1, 8, 2, 64, 40, 65);
        var inputs = RandomInputs(new Random(5), c, rotary: true);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 8), IntAttr("kv_num_heads", 2), IntAttr("do_rotary", 1) };
        var gqa = Run(Gqa(attrs, c, true), inputs);
        OnnxRuntimeException? error = null;
        Dictionary<string, float[]>? la = null;
        try { la = Run(LongAttention(attrs.Append(StringAttr("isa", isa)), c, true, "dense"), inputs); }
        catch (OnnxRuntimeException e) { error = e; }
        if (error is not null)
        {
            // Only acceptable failure: the CPU lacks the ISA, and the message says so.
            Assert.That(error.Message, Does.Contain("lacks"), error.Message);
            Assert.Ignore($"CPU lacks {isa}: {error.Message}");
        }
        Assert.That(MaxAbsDiff(la!["output"], gqa["output"]), Is.LessThanOrEqualTo(Tolerance));
    }

    /// <summary>
    /// The runtime binds one KV buffer of fixed capacity as both past and present (IOBinding); the new
    /// tokens are appended in place. Three decode steps after a prefill, against GQA doing the same.
    /// </summary>
    [Test]
    public void SharedBuffer_DecodeInPlace_MatchesGqa()
    {
        const int b = 1, hq = 4, hkv = 2, d = 32, capacity = 64, prompt = 9;
        var rng = new Random(99);
        var cos = CosSin(capacity, d, sin: false);
        var sin = CosSin(capacity, d, sin: true);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv), IntAttr("do_rotary", 1) };
        var kvLaK = new float[b * hkv * capacity * d];
        var kvLaV = new float[kvLaK.Length];
        var kvGqaK = new float[kvLaK.Length];
        var kvGqaV = new float[kvLaK.Length];
        int valid = 0;
        foreach (int s in new[] { prompt, 1, 1, 1 })
        {
            var c = new Shapes(b, hq, hkv, d, capacity, s);
            var q = RandomArray(rng, b * s * hq * d);
            var k = RandomArray(rng, b * s * hkv * d);
            var v = RandomArray(rng, b * s * hkv * d);
            valid += s;
            var outLa = RunShared(LongAttention(attrs, c, true, "dense"), q, k, v, kvLaK, kvLaV, c, valid, cos, sin);
            var outGqa = RunShared(Gqa(attrs, c, true), q, k, v, kvGqaK, kvGqaV, c, valid, cos, sin);
            Assert.That(MaxAbsDiff(outLa, outGqa), Is.LessThanOrEqualTo(Tolerance), $"output after {valid} tokens");
        }
        Assert.That(MaxAbsDiff(kvLaK, kvGqaK), Is.LessThanOrEqualTo(1e-6), "shared key buffer");
        Assert.That(MaxAbsDiff(kvLaV, kvGqaV), Is.LessThanOrEqualTo(0.0), "shared value buffer");
        // Rows past the valid length are untouched (still zero) in the shared buffer.
        for (int h = 0; h < hkv; h++)
            Assert.That(kvLaK.Skip((h * capacity + valid) * d).Take((capacity - valid) * d), Is.All.EqualTo(0f));
    }

    // ---------------------------------------------------------------- thread count from the session

    // The op sizes its work split from the session config entry longctx.intra_op_threads (set by the
    // runtime's SessionFactory). A decode over 600 keys is split 1 way for 1 thread and 3 ways for 7,
    // so the log-sum-exp merge runs or not; both must match GQA.
    [TestCase(1, TestName = "IntraOpThreadsEntry_1_DecodeMatchesGqa")]
    [TestCase(7, TestName = "IntraOpThreadsEntry_7_DecodeMatchesGqa")]
    public void IntraOpThreadsEntry_DecodeMatchesGqa(int threads)
    {
        var c = new Shapes(1, 4, 2, 32, 600, 1);
        var inputs = RandomInputs(new Random(40 + threads), c, rotary: true);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 4), IntAttr("kv_num_heads", 2), IntAttr("do_rotary", 1) };
        var config = new Dictionary<string, string> { ["longctx.intra_op_threads"] = threads.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        var gqa = Run(Gqa(attrs, c, true), inputs);
        var la = Run(LongAttention(attrs, c, true, "dense"), inputs, config: config, intraOpThreads: Math.Min(threads, 2));
        Assert.That(MaxAbsDiff(la["output"], gqa["output"]), Is.LessThanOrEqualTo(Tolerance));
    }

    [TestCase("two")]
    [TestCase("-1")]
    public void IntraOpThreadsEntry_Malformed_IsNamed(string value)
    {
        var c = new Shapes(1, 2, 2, 32, 0, 3);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 2), IntAttr("kv_num_heads", 2) };
        var config = new Dictionary<string, string> { ["longctx.intra_op_threads"] = value };
        var ex = Assert.Catch<OnnxRuntimeException>(() => Run(LongAttention(attrs, c, false, "dense"), RandomInputs(new Random(1), c, false), config: config));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("longctx.intra_op_threads").And.Contain($"'{value}'"));
    }

    // ---------------------------------------------------------------- float16

    [TestCase(0, 7, TestName = "Float16_Prefill_MatchesFloat32Gqa")]
    [TestCase(21, 1, TestName = "Float16_Decode_MatchesFloat32Gqa")]
    public void Float16MatchesFloat32(int p, int s)
    {
        var c = new Shapes(1, 4, 2, 64, p, s);
        var inputs = RandomInputs(new Random(3 + p), c, rotary: true);
        foreach (var key in inputs.Keys.Where(k => inputs[k].data is not null).ToList())
            inputs[key] = (inputs[key].data!.Select(x => (float)(Float16)x).ToArray(), inputs[key].ints, inputs[key].shape);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 4), IntAttr("kv_num_heads", 2), IntAttr("do_rotary", 1) };
        var gqa = Run(Gqa(attrs, c, true), inputs);
        var la16 = Run(LongAttention(attrs, c, true, "dense", half: true), inputs, half: true);
        double dOut = MaxAbsDiff(la16["output"], gqa["output"]);
        double dK = MaxAbsDiff(la16["present_key"], gqa["present_key"]);
        TestContext.Out.WriteLine($"float16: max|la16-gqa32| output={dOut:E3} present_key={dK:E3}");
        Assert.That(dOut, Is.LessThanOrEqualTo(3e-3), "fp16 output (fp32 accumulation, fp16 rounding of keys and output)");
        Assert.That(dK, Is.LessThanOrEqualTo(4e-3), "fp16 present_key");
    }

    // ---------------------------------------------------------------- streaming and dca

    [TestCase(0, 40, 4, 9, TestName = "Streaming_Prefill40_Sink4_Window9")]
    [TestCase(50, 7, 2, 16, TestName = "Streaming_ChunkWithPast_Sink2_Window16")]
    [TestCase(90, 1, 4, 32, TestName = "Streaming_Decode_Sink4_Window32")]
    public void StreamingMatchesMaskedReference(int p, int s, int sink, int window)
    {
        const int b = 1, hq = 4, hkv = 2, d = 32;
        var c = new Shapes(b, hq, hkv, d, p, s);
        var inputs = RandomInputs(new Random(11 + p + s), c, rotary: true);
        var attrs = new List<AttributeProto>
        {
            IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv), IntAttr("do_rotary", 1),
            IntAttr("sink", sink), IntAttr("window", window),
        };
        var la = Run(LongAttention(attrs, c, true, "streaming"), inputs);
        var reference = StreamingReference(inputs, c, sink, window);
        double diff = MaxAbsDiff(la["output"], reference);
        TestContext.Out.WriteLine($"max|streaming-reference|={diff:E3}");
        Assert.That(diff, Is.LessThanOrEqualTo(Tolerance));
        // Keys are cached un-rotated: present = concat(past, key) exactly.
        var expectedK = Concat(inputs["past_key"].data, inputs["key"].data!, c);
        Assert.That(MaxAbsDiff(la["present_key"], expectedK), Is.EqualTo(0.0), "streaming caches un-rotated keys");
    }

    [Test]
    public void DcaEqualsDenseWithinOneChunk()
    {
        // Prefill only: a dense past is cached rotated, a dca past un-rotated, so only fresh keys compare.
        var c = new Shapes(1, 4, 2, 64, 0, 50);
        var inputs = RandomInputs(new Random(8), c, rotary: true);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 4), IntAttr("kv_num_heads", 2), IntAttr("do_rotary", 1) };
        var dense = Run(LongAttention(attrs, c, true, "dense"), inputs);
        var dca = Run(LongAttention(attrs.Concat(new[] { IntAttr("chunk_size", 64), IntAttr("local_size", 8), IntAttr("trained_context", 64) }),
            c, true, "dca"), inputs);
        double diff = MaxAbsDiff(dca["output"], dense["output"]);
        TestContext.Out.WriteLine($"max|dca-dense| (50 tokens, chunk 56)={diff:E3}");
        Assert.That(diff, Is.LessThanOrEqualTo(1e-6));
    }

    /// <summary>Output 3 (lse) is log sum_j exp(scale q.k_j) over the allowed keys, [B, H, S], natural log.</summary>
    [Test]
    public void LseOutput_IsLogSumExpOfScaledScores()
    {
        var c = new Shapes(1, 2, 1, 16, 3, 2);
        var inputs = RandomInputs(new Random(21), c, rotary: false);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 2), IntAttr("kv_num_heads", 1), StringAttr("pattern", "dense") };
        var la = Run(SingleNode("longctx", "LongAttention", attrs, c, rotary: false, half: false, withLse: true), inputs);
        var keys = Concat(inputs["past_key"].data, inputs["key"].data!, c);
        var q = inputs["query"].data!;
        var expected = new float[c.Hq * c.S];
        for (int h = 0; h < c.Hq; h++)
        for (int i = 0; i < c.S; i++)
        {
            double sum = 0;
            for (int t = 0; t <= c.P + i; t++)
            {
                double dot = 0;
                for (int j = 0; j < c.D; j++) dot += q[(i * c.Hq + h) * c.D + j] * keys[t * c.D + j];
                sum += Math.Exp(dot / Math.Sqrt(c.D));
            }
            expected[h * c.S + i] = (float)Math.Log(sum);
        }
        Assert.That(MaxAbsDiff(la["lse"], expected), Is.LessThanOrEqualTo(Tolerance));
    }

    // ---------------------------------------------------------------- memory follows the tokens present

    [Test]
    public void ScratchPeakAt8kIsLessThanTwiceThatAt4k()
    {
        long at4k = PeakScratch(valid: 4096, capacity: 4096);
        long at8k = PeakScratch(valid: 8192, capacity: 8192);
        long at4kIn64k = PeakScratch(valid: 4096, capacity: 65536);
        TestContext.Out.WriteLine($"scratch peak bytes: 4k={at4k} 8k={at8k} 4k-in-64k-buffer={at4kIn64k}");
        Assert.Multiple(() =>
        {
            Assert.That(at4k, Is.GreaterThan(0), "the counter sees the kernel's scratch");
            Assert.That(at8k, Is.LessThan(2 * at4k), "peak scratch at 8k < 2x at 4k");
            Assert.That(at4kIn64k, Is.EqualTo(at4k), "the buffer's capacity does not change the scratch");
        });
    }

    private long PeakScratch(int valid, int capacity)
    {
        // A 64-token chunk appended to a shared cache of `capacity` rows holding valid - 64 tokens. One intra-op thread:
        // the peak is then one task's scratch, not a count of tasks that happened to overlap on a loaded machine
        // (with the pool, the three runs could see different overlaps and the comparisons below flaked under load).
        const int hq = 8, hkv = 2, d = 64, s = 64;
        var c = new Shapes(1, hq, hkv, d, capacity, s);
        var rng = new Random(1);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv) };
        var kvK = new float[hkv * capacity * d];
        var kvV = new float[kvK.Length];
        var model = LongAttention(attrs, c, false, "dense");
        var reset = Export<ResetFn>("LongCtxLaScratchReset");
        var peak = Export<PeakFn>("LongCtxLaScratchPeakBytes");
        lock (ScratchCounterLock)
        {
            reset();
            RunShared(model, RandomArray(rng, s * hq * d), RandomArray(rng, s * hkv * d), RandomArray(rng, s * hkv * d),
                kvK, kvV, c, valid, null, null, intraOpThreads: 1);
            return peak();
        }
    }

    private static readonly object ScratchCounterLock = new();
    private delegate long PeakFn();
    private delegate void ResetFn();

    private static T Export<T>(string name) where T : Delegate
    {
        var handle = NativeLibrary.Load(LibPath);
        return Marshal.GetDelegateForFunctionPointer<T>(NativeLibrary.GetExport(handle, name));
    }

    // ---------------------------------------------------------------- bad input

    [TestCase("pattern", "sparse", "dense, streaming, dca", TestName = "UnknownPattern_ListsValid")]
    [TestCase("isa", "sse9", "auto, scalar, avx2, avx512", TestName = "UnknownIsa_ListsValid")]
    public void UnknownStringAttribute_ListsValidValues(string name, string value, string valid)
    {
        var c = new Shapes(1, 2, 2, 32, 0, 3);
        var inputs = RandomInputs(new Random(1), c, rotary: false);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 2), IntAttr("kv_num_heads", 2) };
        var model = name == "pattern" ? LongAttention(attrs, c, false, value)
                                      : LongAttention(attrs.Append(StringAttr("isa", value)), c, false, "dense");
        var ex = Assert.Catch<OnnxRuntimeException>(() => Run(model, inputs));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("LongAttention").And.Contain(value).And.Contain(valid));
    }

    [Test]
    public void AttributeOfAnotherPattern_IsRejected()
    {
        var c = new Shapes(1, 2, 2, 32, 0, 3);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 2), IntAttr("kv_num_heads", 2), IntAttr("window", 8) };
        var ex = Assert.Catch<OnnxRuntimeException>(() => Run(LongAttention(attrs, c, false, "dense"), RandomInputs(new Random(1), c, false)));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("'window'").And.Contain("streaming: sink, window"));
    }

    [TestCase("local_window_size", 8L, TestName = "GqaLocalWindow_IsRefused")]
    [TestCase("smooth_softmax", 1L, TestName = "GqaSmoothSoftmax_IsRefused")]
    public void GqaAttributeItDoesNotImplement_IsRefused(string name, long value)
    {
        var c = new Shapes(1, 2, 2, 32, 0, 3);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 2), IntAttr("kv_num_heads", 2), IntAttr(name, value) };
        var ex = Assert.Catch<OnnxRuntimeException>(() => Run(LongAttention(attrs, c, false, "dense"), RandomInputs(new Random(1), c, false)));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain($"'{name}' is not supported"));
    }

    [Test]
    public void UnsupportedHeadDim_IsNamed()
    {
        var c = new Shapes(1, 2, 2, 24, 0, 3);
        var attrs = new List<AttributeProto> { IntAttr("num_heads", 2), IntAttr("kv_num_heads", 2) };
        var ex = Assert.Catch<OnnxRuntimeException>(() => Run(LongAttention(attrs, c, false, "dense"), RandomInputs(new Random(1), c, false)));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("head_dim 24").And.Contain("multiples of 16"));
    }

    // ---------------------------------------------------------------- reference

    /// <summary>StreamingLLM in double: keys rotated at their cache index, queries at theirs, mask k &lt; sink or q - window &lt; k &lt;= q.</summary>
    private static float[] StreamingReference(Dictionary<string, (float[]? data, int[]? ints, long[] shape)> inputs, Shapes c, int sink, int window)
    {
        int total = c.P + c.S, group = c.Hq / c.Hkv, d = c.D, half = d / 2;
        var keys = Concat(inputs["past_key"].data, inputs["key"].data!, c);
        var values = Concat(inputs["past_value"].data, inputs["value"].data!, c);
        var q = inputs["query"].data!;
        var cos = inputs["cos_cache"].data!;
        var sin = inputs["sin_cache"].data!;
        double[] Rot(Func<int, double> x, int pos)
        {
            var r = new double[d];
            for (int i = 0; i < half; i++)
            {
                double cc = cos[pos * half + i], ss = sin[pos * half + i];
                r[i] = x(i) * cc - x(i + half) * ss;
                r[i + half] = x(i + half) * cc + x(i) * ss;
            }
            return r;
        }
        var output = new float[c.B * c.S * c.Hq * d];
        double scale = 1.0 / Math.Sqrt(d);
        for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.Hq; h++)
        for (int i = 0; i < c.S; i++)
        {
            int pos = c.P + i, kvh = h / group;
            var qr = Rot(j => q[((b * c.S + i) * c.Hq + h) * d + j], pos);
            var allowed = Enumerable.Range(0, total).Where(t => t <= pos && (t < sink || t > pos - window)).ToArray();
            var logits = allowed.Select(t =>
            {
                var kr = Rot(j => keys[((b * c.Hkv + kvh) * total + t) * d + j], t);
                double dot = 0;
                for (int j = 0; j < d; j++) dot += qr[j] * kr[j];
                return dot * scale;
            }).ToArray();
            double max = logits.Max();
            var w = logits.Select(x => Math.Exp(x - max)).ToArray();
            double sum = w.Sum();
            for (int j = 0; j < d; j++)
            {
                double acc = 0;
                for (int n = 0; n < allowed.Length; n++) acc += w[n] * values[((b * c.Hkv + kvh) * total + allowed[n]) * d + j];
                output[((b * c.S + i) * c.Hq + h) * d + j] = (float)(acc / sum);
            }
        }
        return output;
    }

    /// <summary>present = concat(past, new) in [B, Hkv, P+S, D].</summary>
    private static float[] Concat(float[]? past, float[] fresh, Shapes c)
    {
        int total = c.P + c.S;
        var r = new float[c.B * c.Hkv * total * c.D];
        for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.Hkv; h++)
        for (int t = 0; t < total; t++)
        for (int j = 0; j < c.D; j++)
            r[((b * c.Hkv + h) * total + t) * c.D + j] = t < c.P
                ? past![((b * c.Hkv + h) * c.P + t) * c.D + j]
                : fresh[((b * c.S + t - c.P) * c.Hkv + h) * c.D + j];
        return r;
    }

    // ---------------------------------------------------------------- ONNX plumbing

    private sealed record Shapes(int B, int Hq, int Hkv, int D, int P, int S);

    private static Dictionary<string, (float[]? data, int[]? ints, long[] shape)> RandomInputs(Random rng, Shapes c, bool rotary)
    {
        int total = c.P + c.S;
        var r = new Dictionary<string, (float[]? data, int[]? ints, long[] shape)>
        {
            ["query"] = (RandomArray(rng, c.B * c.S * c.Hq * c.D), null, new long[] { c.B, c.S, c.Hq * c.D }),
            ["key"] = (RandomArray(rng, c.B * c.S * c.Hkv * c.D), null, new long[] { c.B, c.S, c.Hkv * c.D }),
            ["value"] = (RandomArray(rng, c.B * c.S * c.Hkv * c.D), null, new long[] { c.B, c.S, c.Hkv * c.D }),
            ["past_key"] = (RandomArray(rng, c.B * c.Hkv * c.P * c.D), null, new long[] { c.B, c.Hkv, c.P, c.D }),
            ["past_value"] = (RandomArray(rng, c.B * c.Hkv * c.P * c.D), null, new long[] { c.B, c.Hkv, c.P, c.D }),
            ["seqlens_k"] = (null, Enumerable.Repeat(total - 1, c.B).ToArray(), new long[] { c.B }),
            ["total_sequence_length"] = (null, new[] { total }, Array.Empty<long>()),
        };
        if (rotary)
        {
            int maxPos = total + 16;
            r["cos_cache"] = (CosSin(maxPos, c.D, sin: false), null, new long[] { maxPos, c.D / 2 });
            r["sin_cache"] = (CosSin(maxPos, c.D, sin: true), null, new long[] { maxPos, c.D / 2 });
        }
        return r;
    }

    private static float[] CosSin(int maxPos, int d, bool sin)
    {
        var r = new float[maxPos * d / 2];
        for (int p = 0; p < maxPos; p++)
        for (int i = 0; i < d / 2; i++)
        {
            double theta = p * Math.Pow(10000.0, -2.0 * i / d);
            r[p * d / 2 + i] = (float)(sin ? Math.Sin(theta) : Math.Cos(theta));
        }
        return r;
    }

    private static ModelProto Gqa(IEnumerable<AttributeProto> attrs, Shapes c, bool rotary) =>
        SingleNode("com.microsoft", "GroupQueryAttention", attrs, c, rotary, half: false, withLse: false);

    private static ModelProto LongAttention(IEnumerable<AttributeProto> attrs, Shapes c, bool rotary, string pattern, bool half = false) =>
        SingleNode("longctx", "LongAttention", attrs.Append(StringAttr("pattern", pattern)), c, rotary, half, withLse: false);

    private static ModelProto SingleNode(string domain, string opType, IEnumerable<AttributeProto> attrs, Shapes c, bool rotary, bool half, bool withLse)
    {
        var elem = half ? TensorProto.Types.DataType.Float16 : TensorProto.Types.DataType.Float;
        string past = c.P > 0 ? "past_key" : "", pastV = c.P > 0 ? "past_value" : "";
        var inputs = new List<string> { "query", "key", "value", past, pastV, "seqlens_k", "total_sequence_length" };
        if (rotary) inputs.AddRange(new[] { "cos_cache", "sin_cache" });
        var outputs = new List<string> { "output", "present_key", "present_value" };
        if (withLse) outputs.Add("lse");
        var node = new NodeProto { Name = opType + "_0", OpType = opType, Domain = domain };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attrs);
        var graph = new GraphProto { Name = "attn_test" };
        graph.Node.Add(node);
        foreach (var name in inputs.Where(n => n.Length > 0))
            graph.Input.Add(ValueInfo(name, name is "seqlens_k" or "total_sequence_length" ? TensorProto.Types.DataType.Int32 : elem));
        foreach (var name in outputs) graph.Output.Add(ValueInfo(name, name == "lse" ? TensorProto.Types.DataType.Float : elem));
        var model = new ModelProto { IrVersion = 10, ProducerName = "LongCtx.Tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "longctx", Version = 1 });
        return model;
    }

    private static InferenceSession Session(ModelProto model, IReadOnlyDictionary<string, string>? config = null, int intraOpThreads = 0)
    {
        using var options = new SessionOptions { IntraOpNumThreads = intraOpThreads };
        options.RegisterCustomOpLibrary(LibPath);
        foreach (var (key, value) in config ?? new Dictionary<string, string>()) options.AddSessionConfigEntry(key, value);
        return new InferenceSession(model.ToByteArray(), options);
    }

    private static OrtValue Tensor(float[] data, long[] shape, bool half) =>
        half ? OrtValue.CreateTensorValueFromMemory(data.Select(x => (Float16)x).ToArray(), shape)
             : OrtValue.CreateTensorValueFromMemory(data, shape);

    private static Dictionary<string, float[]> Run(ModelProto model, Dictionary<string, (float[]? data, int[]? ints, long[] shape)> inputs, bool half = false,
        IReadOnlyDictionary<string, string>? config = null, int intraOpThreads = 0)
    {
        using var session = Session(model, config, intraOpThreads);
        var feeds = new Dictionary<string, OrtValue>();
        try
        {
            foreach (var name in session.InputNames)
            {
                var (data, ints, shape) = inputs[name];
                feeds[name] = ints is not null ? OrtValue.CreateTensorValueFromMemory(ints, shape) : Tensor(data!, shape, half);
            }
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, feeds, session.OutputNames);
            var map = new Dictionary<string, float[]>();
            for (int i = 0; i < session.OutputNames.Count; i++)
            {
                map[session.OutputNames[i]] = half && session.OutputNames[i] != "lse"
                    ? results[i].GetTensorDataAsSpan<Float16>().ToArray().Select(x => (float)x).ToArray()
                    : results[i].GetTensorDataAsSpan<float>().ToArray();
            }
            return map;
        }
        finally
        {
            foreach (var f in feeds.Values) f.Dispose();
        }
    }

    /// <summary>One step with the KV buffers bound as both past (input) and present (output), as the runtime does.</summary>
    private static float[] RunShared(ModelProto model, float[] q, float[] k, float[] v, float[] kvK, float[] kvV, Shapes c, int valid,
        float[]? cos, float[]? sin, int intraOpThreads = 0)
    {
        using var session = Session(model, intraOpThreads: intraOpThreads);
        long[] kvShape = { c.B, c.Hkv, c.P, c.D };
        using var kK = OrtValue.CreateTensorValueFromMemory(kvK, kvShape);
        using var kV = OrtValue.CreateTensorValueFromMemory(kvV, kvShape);
        using var qv = OrtValue.CreateTensorValueFromMemory(q, new long[] { c.B, c.S, c.Hq * c.D });
        using var kn = OrtValue.CreateTensorValueFromMemory(k, new long[] { c.B, c.S, c.Hkv * c.D });
        using var vn = OrtValue.CreateTensorValueFromMemory(v, new long[] { c.B, c.S, c.Hkv * c.D });
        using var sl = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(valid - 1, c.B).ToArray(), new long[] { c.B });
        using var tl = OrtValue.CreateTensorValueFromMemory(new[] { valid }, Array.Empty<long>());
        var output = new float[c.B * c.S * c.Hq * c.D];
        using var ov = OrtValue.CreateTensorValueFromMemory(output, new long[] { c.B, c.S, c.Hq * c.D });
        using var binding = session.CreateIoBinding();
        binding.BindInput("query", qv);
        binding.BindInput("key", kn);
        binding.BindInput("value", vn);
        binding.BindInput("past_key", kK);
        binding.BindInput("past_value", kV);
        binding.BindInput("seqlens_k", sl);
        binding.BindInput("total_sequence_length", tl);
        OrtValue? cv = null, sv = null;
        if (cos is not null)
        {
            cv = OrtValue.CreateTensorValueFromMemory(cos, new long[] { cos.Length / (c.D / 2), c.D / 2 });
            sv = OrtValue.CreateTensorValueFromMemory(sin!, new long[] { sin!.Length / (c.D / 2), c.D / 2 });
            binding.BindInput("cos_cache", cv);
            binding.BindInput("sin_cache", sv);
        }
        binding.BindOutput("output", ov);
        binding.BindOutput("present_key", kK);
        binding.BindOutput("present_value", kV);
        using var runOptions = new RunOptions();
        session.RunWithBinding(runOptions, binding);
        cv?.Dispose();
        sv?.Dispose();
        return output;
    }

}

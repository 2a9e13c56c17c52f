using System.Text;
using LongCtx.Tests.CustomOps;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;
using static LongCtx.Tests.CustomOps.OpTestKit;
using static LongCtx.Tests.LongAttention.SparsePrefillTests;

namespace LongCtx.Tests.LongAttention;

/// <summary>
/// Per-KV-head sparse prefill on <c>longctx.LongAttention</c> (issue 10 item 2; custom-ops/ort/long_attention_heads.h), per
/// ISA path: a layer whose heads all carry the layer's settings as per-head attributes equals that layer run per layer
/// (bitwise); heads with different patterns (dense heads too) equal a masked dense reference (double) built from the index
/// the kernel selected for each head (<c>LongCtxLaSparseMaskHeads</c>), and each head's index is the one its pattern selects
/// per layer; bad per-head attributes are one-line errors.
/// </summary>
[TestFixture]
public sealed class PerHeadSparseTests
{
    [SetUp]
    public void RequireLib() => RequireLibrary();

    // The small budgets of SparsePrefillTests.SmallBudget_EqualsMaskedReference, so every pattern leaves keys out at S = 512.
    private const long Vertical = 2, Slash = 0, Sink = 4, Window = 24, Last = 20, Stride = 16, LocalBlocks = 2, VertStride = 3;
    private const float Threshold = 0.5f;

    private static long Id(string pattern) => pattern switch { "dense" => 0, "trishape" => 3, "vslash" => 4, "xattn" => 5, "block" => 6, _ => -1 };

    /// <summary>The layer attributes of <paramref name="pattern"/> with the small budgets, min_len 0.</summary>
    private static List<AttributeProto> LayerAttrs(string pattern, string isa) =>
    [
        IntAttr("min_len", 0), StringAttr("isa", isa),
        .. pattern switch
        {
            "vslash" => new[] { IntAttr("vertical", Vertical), IntAttr("slash", Slash) },
            "xattn" => [FloatAttr("threshold", Threshold), IntAttr("stride", Stride)],
            "block" => [IntAttr("local_blocks", LocalBlocks), IntAttr("vert_stride", VertStride)],
            _ => [IntAttr("sink", Sink), IntAttr("window", Window), IntAttr("last", Last)],
        },
    ];

    /// <summary>head_pattern and every per-head budget array, head h running heads[h] with the small budgets.</summary>
    private static IEnumerable<AttributeProto> HeadAttrs(string[] heads)
    {
        AttributeProto Ints(string name, Func<string, long> v)
        {
            var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
            a.Ints.AddRange(heads.Select(v));
            return a;
        }
        var th = new AttributeProto { Name = "head_threshold", Type = AttributeProto.Types.AttributeType.Floats };
        th.Floats.AddRange(heads.Select(_ => Threshold));
        return [Ints("head_pattern", Id), Ints("head_min_len", _ => 0), Ints("head_vertical", _ => Vertical), Ints("head_slash", _ => Slash), th,
            Ints("head_sink", _ => Sink), Ints("head_window", _ => Window), Ints("head_last", _ => Last)];
    }

    /// <summary>Runs the op, or ignores the test when the CPU lacks the forced ISA (the only acceptable failure).</summary>
    private static float[] RunOrIgnore(string pattern, IEnumerable<AttributeProto> attrs, Dictionary<string, float[]> x, string isa)
    {
        try { return RunOp(pattern, attrs, x); }
        catch (OnnxRuntimeException e) when (e.Message.Contains("lacks", StringComparison.Ordinal))
        {
            Assert.Ignore($"CPU lacks {isa}: {e.Message}");
            throw;
        }
    }

    private static IEnumerable<TestCaseData> UniformCases() =>
        from isa in new[] { "scalar", "avx2", "avx512" }
        from pattern in new[] { "vslash", "xattn", "trishape", "block" }
        select new TestCaseData(isa, pattern).SetName($"UniformHeads_EqualPerLayer_{pattern}_{isa}");

    [TestCaseSource(nameof(UniformCases))]
    public void UniformHeads_EqualPerLayer(string isa, string pattern)
    {
        var x = Inputs(new Random(7));
        var layer = RunOrIgnore(pattern, LayerAttrs(pattern, isa), x, isa);
        var perHead = RunOrIgnore(pattern, [.. LayerAttrs(pattern, isa), .. HeadAttrs([pattern, pattern])], x, isa);
        Assert.That(MaxAbsDiff(perHead, layer), Is.LessThanOrEqualTo(1e-6));
        Assert.That(MaxAbsDiff(layer, RunOp("dense", [StringAttr("isa", isa)], x)), Is.GreaterThan(1e-3), "the small budget leaves keys out");
    }

    private static IEnumerable<TestCaseData> MixedCases() =>
        from isa in new[] { "scalar", "avx2", "avx512" }
        from heads in new[] { new[] { "vslash", "trishape" }, ["xattn", "dense"], ["trishape", "xattn"], ["block", "vslash"] }
        select new TestCaseData(isa, heads).SetName($"MixedHeads_EqualMaskedReference_{heads[0]}_{heads[1]}_{isa}");

    [TestCaseSource(nameof(MixedCases))]
    public void MixedHeads_EqualMaskedReference(string isa, string[] heads)
    {
        var x = Inputs(new Random(9));
        string layer = heads[0];  // the layer pattern: its stride / local_blocks / vert_stride apply to every head
        var got = RunOrIgnore(layer, [.. LayerAttrs(layer, isa), .. HeadAttrs(heads)], x, isa);
        long stride = layer == "xattn" ? Stride : 8, local = layer == "block" ? LocalBlocks : 16, vstride = layer == "block" ? VertStride : 8;

        var mask = new byte[Hkv * S * S];
        var err = new byte[512];
        long[] Each(long v) => [.. heads.Select(_ => v)];
        int rc = Export<MaskHeadsFn>("LongCtxLaSparseMaskHeads")(S, Hq, Hkv, D, x["query"], x["key"], x["value"], x["cos_cache"], x["sin_cache"], MaxPos,
            [.. heads.Select(Id)], Each(Vertical), Each(Slash), [.. heads.Select(_ => Threshold)], Each(Sink), Each(Window), Each(Last),
            0, stride, local, vstride, mask, err, (nuint)err.Length);
        Assert.That(rc, Is.Zero, Encoding.UTF8.GetString(err).TrimEnd('\0'));
        for (int h = 0; h < Hkv; h++)
        {
            // head h's index is the one its pattern selects per layer
            var alone = new byte[Hkv * S * S];
            rc = Export<SparseMaskFn>("LongCtxLaSparseMask")(heads[h], S, Hq, Hkv, D, x["query"], x["key"], x["value"], x["cos_cache"], x["sin_cache"],
                MaxPos, 0, Vertical, Slash, Threshold, stride, Sink, Window, Last, local, vstride, alone, err, (nuint)err.Length);
            Assert.That(rc, Is.Zero, Encoding.UTF8.GetString(err).TrimEnd('\0'));
            Assert.That(mask.AsSpan(h * S * S, S * S).SequenceEqual(alone.AsSpan(h * S * S, S * S)), $"kv head {h} ({heads[h]}) selects as per layer");
        }
        int causal = S * (S + 1) / 2;
        var density = Enumerable.Range(0, Hkv).Select(h => (double)mask.AsSpan(h * S * S, S * S).Count((byte)1) / causal).ToArray();
        TestContext.Out.WriteLine($"{string.Join("+", heads)} ({isa}): density per kv head {string.Join(" ", density.Select(d => d.ToString("F3")))}");
        Assert.That(density.Where((_, h) => heads[h] != "dense"), Is.All.LessThan(0.8), "small budgets leave keys out");
        Assert.That(MaxAbsDiff(got, MaskedReference(x, mask)), Is.LessThanOrEqualTo(2e-5));
    }

    [Test]
    public void HeadBudgetOverTheSequence_RunsThatHeadDense()
    {
        // kv head 0: vslash with 100000 columns (larger than the 512-token prompt: dense, noted once); kv head 1: trishape
        var x = Inputs(new Random(4));
        var attrs = LayerAttrs("vslash", "auto");
        attrs.AddRange(HeadAttrs(["vslash", "trishape"]));
        var hv = attrs.Single(a => a.Name == "head_vertical");
        hv.Ints[0] = 100000;
        var got = RunOp("vslash", attrs, x);
        var dense = RunOp("dense", [], x);
        int G = Hq / Hkv;
        double Diff(int kvh) => Enumerable.Range(0, S * Hq).Where(r => r % Hq / G == kvh)
            .Max(r => Enumerable.Range(0, D).Max(d => Math.Abs(got[r * D + d] - dense[r * D + d])));
        Assert.That(Diff(0), Is.LessThanOrEqualTo(1e-5), "the covered head runs dense");
        Assert.That(Diff(1), Is.GreaterThan(1e-3), "the trishape head stays sparse");
    }

    [TestCase("vslash", "head_pattern", new long[] { 4 }, "attribute 'head_pattern' has 1 values, expected one per kv head (2)", TestName = "HeadPatternLength_IsNamed")]
    [TestCase("vslash", "head_pattern", new long[] { 4, 1 }, "kv head 1: head_pattern id 1 is unknown (valid: 0 dense, 3 trishape, 4 vslash, 5 xattn, 6 block)", TestName = "StreamingHead_IsRejected")]
    [TestCase("vslash", "head_vertical", new long[] { 4, 4 }, "attribute 'head_vertical' needs 'head_pattern'", TestName = "BudgetWithoutHeadPattern_IsRejected")]
    [TestCase("dense", "head_pattern", new long[] { 4, 0 }, "attribute 'head_pattern' needs a sparse layer pattern", TestName = "HeadPatternOnDenseLayer_IsRejected")]
    public void BadHeadAttribute_IsOneLineError(string pattern, string name, long[] values, string message)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        var ex = Assert.Catch<OnnxRuntimeException>(() => RunOp(pattern, [a], Inputs(new Random(1))))!;
        Assert.That(ex.Message, Does.Contain(message).And.Not.Contain("\n"));
    }

    [Test]
    public void HeadThresholdOutOfRange_IsOneLineError()
    {
        var th = new AttributeProto { Name = "head_threshold", Type = AttributeProto.Types.AttributeType.Floats };
        th.Floats.AddRange([0.5f, 1.5f]);
        var hp = new AttributeProto { Name = "head_pattern", Type = AttributeProto.Types.AttributeType.Ints };
        hp.Ints.AddRange([5L, 5L]);
        var ex = Assert.Catch<OnnxRuntimeException>(() => RunOp("xattn", [hp, th], Inputs(new Random(1))))!;
        Assert.That(ex.Message, Does.Contain("kv head 1: head_threshold must be in (0, 1], got 1.5").And.Not.Contain("\n"));
    }

    [System.Runtime.InteropServices.UnmanagedFunctionPointer(System.Runtime.InteropServices.CallingConvention.Cdecl)]
    private delegate int MaskHeadsFn(long s, long h, long hkv, long d, float[] q, float[] k, float[] v, float[] cos, float[] sin, long maxPos,
        long[] patterns, long[] vertical, long[] slash, float[] threshold, long[] sink, long[] window, long[] last, long minLen, long stride,
        long localBlocks, long vertStride, byte[] mask, byte[] err, nuint errLen);
}

using System.Runtime.InteropServices;
using System.Text;
using Google.Protobuf;
using LongCtx.Cli.Commands;
using LongCtx.Compiler;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Tests.CustomOps;
using LongCtx.Tests.Foundation;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;
using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.LongAttention;

/// <summary>
/// Sparse prefill (issue 10): <c>--attention trishape | vslash | xattn</c> parsing and lowering (attributes, longctx.json
/// record with expected density, <c>lcc inspect</c>), and the op through ONNX Runtime: budgets that select every key
/// equal the dense pattern within 1e-5; small budgets equal a masked dense reference (double, here) built from the
/// index the kernel library selected (its <c>LongCtxLaSparseMask</c> export); bad attributes are one-line errors.
/// </summary>
[TestFixture]
public sealed class SparsePrefillTests
{
    // ---------------------------------------------------------------- options and lowering

    [Test]
    public void ParsesSparsePatternOptions()
    {
        var s = AttentionOptions.Parse("vslash:vertical=500,slash=2000,min_len=4096,layers=0", null)!;
        Assert.That(s.Options, Is.EquivalentTo(new Dictionary<string, string>
        {
            ["pattern"] = "vslash", ["vertical"] = "500", ["slash"] = "2000", ["min_len"] = "4096", ["layers"] = "0",
        }));
        Assert.That(AttentionOptions.Parse("xattn:threshold=0.95,stride=16", null)!.Options["threshold"], Is.EqualTo("0.95"));
        var ex = Assert.Throws<ArgumentException>(() => AttentionOptions.Parse("vslash:window=4", null))!;
        Assert.That(ex.Message, Does.Contain("valid for vslash: vertical, slash, min_len, layers"));
    }

    [TestCase("xattn", "stride", "7", "stride=7 must divide the block of 64")]
    [TestCase("xattn", "threshold", "1.5", "threshold=1.5 must be a number in (0, 1]")]
    [TestCase("trishape", "window", "0", "window=0 must be at least 1")]
    [TestCase("vslash", "slash", "-3", "slash=-3 is not a non-negative integer")]
    public void BadSparseOptions_AreOneLineErrors(string pattern, string key, string value, string message)
    {
        var m = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
        var ex = Assert.Throws<CompileException>(() => LowerToLongAttentionTests.Lower(m, ("pattern", pattern), (key, value)))!;
        Assert.That(ex.Message, Does.Contain(message).And.Not.Contain("\n"));
    }

    [Test]
    public void Vslash_LowersWithAttributes_RecordsDensity()
    {
        var m = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
        var r = LowerToLongAttentionTests.Lower(m, ("pattern", "vslash"), ("vertical", "100"), ("slash", "200"), ("context", "4096"));
        var la = m.Graph.Nodes.Where(n => n.OpType == "LongAttention").ToList();
        Assert.That(la, Has.Count.EqualTo(2));
        Assert.That(la.Select(n => (n.StringAttr("pattern", ""), n.IntAttr("vertical", 0), n.IntAttr("slash", 0), n.IntAttr("min_len", 0))),
            Is.All.EqualTo(("vslash", 100L, 200L, 8192L)));
        var at = (Dictionary<string, object?>)r.RuntimeConfig["attention"]!;
        Assert.That(at["pattern"], Is.EqualTo("vslash"));
        Assert.That(at["density_at"], Is.EqualTo(4096));
        var rows = (IEnumerable<Dictionary<string, object?>>)at["layers"]!;
        // 4096 < min_len 8192: a prompt of the target context runs dense
        Assert.That(rows.Select(x => x["density"]), Is.All.EqualTo("1"));
        Assert.That(r.RuntimeConfig["max_context"], Is.EqualTo(512L), "sparse prefill reads RoPE rows by absolute position");

        var m2 = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
        var r2 = LowerToLongAttentionTests.Lower(m2, ("pattern", "vslash"), ("vertical", "100"), ("slash", "200"), ("min_len", "0"), ("context", "4096"));
        var rows2 = (IEnumerable<Dictionary<string, object?>>)((Dictionary<string, object?>)r2.RuntimeConfig["attention"]!)["layers"]!;
        // (30 + 100 + 100 + 200 + 64) keys per row over 4096 x 4097 / 2 causal pairs
        Assert.That(rows2.Select(x => x["density"]), Is.All.EqualTo((4096.0 * 494 / (4096.0 * 4097 / 2)).ToString("0.###", System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Test]
    public void Xattn_Trishape_Block_Lower()
    {
        var m = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
        var r = LowerToLongAttentionTests.Lower(m, ("pattern", "xattn"), ("stride", "16"));
        var la = m.Graph.Nodes.Where(n => n.OpType == "LongAttention").ToList();
        Assert.That(la.Select(n => (n.IntAttr("stride", 0), n.FloatAttr("threshold", 0))), Is.All.EqualTo((16L, 0.9f)));
        var rows = (IEnumerable<Dictionary<string, object?>>)((Dictionary<string, object?>)r.RuntimeConfig["attention"]!)["layers"]!;
        Assert.That(rows.Select(x => x["density"]), Is.All.EqualTo("dynamic"));

        var b = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
        var rb = LowerToLongAttentionTests.Lower(b, ("pattern", "block"), ("local", "4"), ("vert_stride", "2"));
        Assert.That(b.Graph.Nodes.Where(n => n.OpType == "LongAttention").Select(n => (n.IntAttr("local_blocks", 0), n.IntAttr("vert_stride", 0))),
            Is.All.EqualTo((4L, 2L)));
        Assert.That(rb.Passes.Single(p => p.Pass == "lower-attention").Notes,
            Has.Some.StartsWith("block: layers 0,1 run longctx.LongAttention, none com.microsoft.SparseAttention"));

        var t = Builders.Build("gqa", new DecoderConfig(Layers: 2, MaxPositions: 512));
        LowerToLongAttentionTests.Lower(t, ("pattern", "trishape"), ("sink", "8"), ("window", "64"), ("last", "16"));
        Assert.That(t.Graph.Nodes.Where(n => n.OpType == "LongAttention").Select(n => (n.IntAttr("sink", 0), n.IntAttr("window", 0), n.IntAttr("last", 0), n.IntAttr("min_len", 0))),
            Is.All.EqualTo((8L, 64L, 16L, 2048L)));
    }

    [Test]
    public void Cli_CompileVslash_InspectShowsPatternAndDensity()
    {
        var dir = Directory.CreateTempSubdirectory("lcc-sparse-cli-").FullName;
        try
        {
            var src = Path.Combine(dir, "torch.onnx");
            OnnxWriter.Save(Builders.Build("torch", new DecoderConfig(Layers: 2, Vocab: 32)), src);
            var outDir = Path.Combine(dir, "out");
            var c = CliRunner.Run("compile", src, "-o", outDir, "--attention", "vslash:vertical=100,slash=200,min_len=0");
            Assert.That(c.ExitCode, Is.Zero, c.Stderr);
            Assert.That(c.Stdout, Does.Contain("note: vslash: vertical=100 slash=200 min_len=0"));
            var i = CliRunner.Run("inspect", outDir);
            Assert.That(i.ExitCode, Is.Zero, i.Stderr);
            Assert.That(i.Stdout, Does.Contain("longctx.LongAttention              vslash (vertical=100 slash=200 min_len=0 density_at=32768)  expected density 0.03"));
        }
        finally { Directory.Delete(dir, true); }
    }

    // ---------------------------------------------------------------- the op through ONNX Runtime

    internal const int S = 512, Hq = 4, Hkv = 2, D = 32, MaxPos = S + 8;

    [SetUp]
    public void RequireLib() => RequireLibrary();

    [TestCase("vslash", "vertical", 482L, TestName = "Vslash_AllColumns_EqualsDense")]
    [TestCase("vslash", "slash", 412L, TestName = "Vslash_AllDiagonals_EqualsDense")]
    [TestCase("trishape", "last", 512L, TestName = "Trishape_AllRowsDense_EqualsDense")]
    [TestCase("xattn", "stride", 8L, TestName = "Xattn_Threshold1_EqualsDense")]
    [TestCase("block", "vert_stride", 1L, TestName = "Block_VertStride1_EqualsDense")]
    public void BudgetSelectingEveryKey_EqualsDense(string pattern, string key, long value)
    {
        var inputs = Inputs(new Random(3));
        var attrs = new List<AttributeProto> { IntAttr("min_len", 0), IntAttr(key, value) };
        if (pattern == "xattn") attrs.Add(FloatAttr("threshold", 1f));
        if (pattern == "vslash") attrs.Add(IntAttr(key == "vertical" ? "slash" : "vertical", 0));
        if (pattern == "trishape") attrs.AddRange([IntAttr("sink", 4), IntAttr("window", 8)]);  // not covering by themselves
        var sparse = RunOp(pattern, attrs, inputs);
        var dense = RunOp("dense", [], inputs);
        Assert.That(MaxAbsDiff(sparse, dense), Is.LessThanOrEqualTo(1e-5));
    }

    [TestCase("vslash", TestName = "Vslash_SmallBudget_EqualsMaskedReference")]
    [TestCase("xattn", TestName = "Xattn_SmallBudget_EqualsMaskedReference")]
    [TestCase("trishape", TestName = "Trishape_SmallBudget_EqualsMaskedReference")]
    [TestCase("block", TestName = "Block_Local2Stride3_EqualsMaskedReference")]
    public void SmallBudget_EqualsMaskedReference(string pattern)
    {
        var inputs = Inputs(new Random(5));
        var attrs = new List<AttributeProto> { IntAttr("min_len", 0) };
        long vertical = 2, slash = 0, stride = 16, sink = 4, window = 24, last = 20, localBlocks = 2, vertStride = 3;
        float threshold = 0.5f;
        attrs.AddRange(pattern switch
        {
            "vslash" => [IntAttr("vertical", vertical), IntAttr("slash", slash)],
            "xattn" => [FloatAttr("threshold", threshold), IntAttr("stride", stride)],
            "block" => [IntAttr("local_blocks", localBlocks), IntAttr("vert_stride", vertStride)],
            _ => [IntAttr("sink", sink), IntAttr("window", window), IntAttr("last", last)],
        });
        var got = RunOp(pattern, attrs, inputs);
        var mask = new byte[Hkv * S * S];
        var err = new byte[512];
        int rc = Export<SparseMaskFn>("LongCtxLaSparseMask")(pattern, S, Hq, Hkv, D, inputs["query"], inputs["key"], inputs["value"],
            inputs["cos_cache"], inputs["sin_cache"], MaxPos, 0, vertical, slash, threshold, stride, sink, window, last, localBlocks, vertStride,
            mask, err, (nuint)err.Length);
        Assert.That(rc, Is.Zero, Encoding.UTF8.GetString(err).TrimEnd('\0'));
        int selected = mask.Count(x => x == 1), causal = Hkv * S * (S + 1) / 2;
        Assert.That(selected, Is.LessThan(causal * 0.8), "a small budget must leave keys out");
        TestContext.Out.WriteLine($"{pattern}: density {(double)selected / causal:F3}");
        Assert.That(MaxAbsDiff(got, MaskedReference(inputs, mask)), Is.LessThanOrEqualTo(2e-5));
    }

    [TestCase("stride", 7L, "xattn stride must divide 64", TestName = "XattnStride7_IsNamed")]
    [TestCase("vertical", 10L, "attribute 'vertical' does not apply to pattern 'xattn'", TestName = "VslashAttributeOnXattn_IsRejected")]
    public void BadAttribute_IsOneLineError(string key, long value, string message)
    {
        var ex = Assert.Catch<OnnxRuntimeException>(() => RunOp("xattn", [IntAttr(key, value)], Inputs(new Random(1))))!;
        Assert.That(ex.Message, Does.Contain(message));
    }

    // ---------------------------------------------------------------- helpers

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate int SparseMaskFn([MarshalAs(UnmanagedType.LPStr)] string pattern, long s, long h, long hkv, long d,
        float[] q, float[] k, float[] v, float[] cos, float[] sin, long maxPos, long minLen, long vertical, long slash,
        float threshold, long stride, long sink, long window, long last, long localBlocks, long vertStride, byte[] mask, byte[] err, nuint errLen);

    internal static T Export<T>(string name) where T : Delegate =>
        Marshal.GetDelegateForFunctionPointer<T>(NativeLibrary.GetExport(NativeLibrary.Load(LibPath), name));

    internal static Dictionary<string, float[]> Inputs(Random rng)
    {
        var cos = new float[MaxPos * D / 2];
        var sin = new float[MaxPos * D / 2];
        for (int p = 0; p < MaxPos; p++)
            for (int i = 0; i < D / 2; i++)
            {
                double th = p * Math.Pow(10000.0, -2.0 * i / D);
                cos[p * D / 2 + i] = (float)Math.Cos(th);
                sin[p * D / 2 + i] = (float)Math.Sin(th);
            }
        return new()
        {
            ["query"] = RandomArray(rng, S * Hq * D, 2f), ["key"] = RandomArray(rng, S * Hkv * D, 2f),
            ["value"] = RandomArray(rng, S * Hkv * D), ["cos_cache"] = cos, ["sin_cache"] = sin,
        };
    }

    /// <summary>One LongAttention node (prefill, batch 1, no past, RoPE inside) run on ORT; returns the output.</summary>
    internal static float[] RunOp(string pattern, IEnumerable<AttributeProto> attrs, Dictionary<string, float[]> x)
    {
        using var options = new SessionOptions();
        options.RegisterCustomOpLibrary(LibPath);
        var model = RotaryPrefillModel("longctx", "LongAttention", Hq, Hkv, [StringAttr("pattern", pattern), .. attrs]);
        using var session = new InferenceSession(model.ToByteArray(), options);
        var feeds = RotaryPrefillFeeds(x["query"], x["key"], x["value"], x["cos_cache"], x["sin_cache"], S, Hq, Hkv, D);
        try
        {
            using var results = session.Run(new RunOptions(), feeds, ["output"]);
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally { foreach (var v in feeds.Values) v.Dispose(); }
    }

    /// <summary>Attention in double over the keys mask[kvh, i, k] selects; q and k rotated at their positions.</summary>
    internal static float[] MaskedReference(Dictionary<string, float[]> x, byte[] mask)
    {
        int half = D / 2;
        float[] q = x["query"], k = x["key"], v = x["value"], cos = x["cos_cache"], sin = x["sin_cache"];
        double[] Rot(float[] src, int off, int pos)
        {
            var r = new double[D];
            for (int i = 0; i < half; i++)
            {
                double a = src[off + i], b = src[off + i + half], c = cos[pos * half + i], s = sin[pos * half + i];
                r[i] = a * c - b * s;
                r[i + half] = b * c + a * s;
            }
            return r;
        }
        var output = new float[S * Hq * D];
        for (int h = 0; h < Hq; h++)
            for (int i = 0; i < S; i++)
            {
                int kvh = h / (Hq / Hkv);
                var qr = Rot(q, (i * Hq + h) * D, i);
                var keys = Enumerable.Range(0, S).Where(t => mask[(kvh * S + i) * S + t] == 1).ToArray();
                var logits = keys.Select(t => Rot(k, (t * Hkv + kvh) * D, t).Select((kv, j) => kv * qr[j]).Sum() / Math.Sqrt(D)).ToArray();
                double max = logits.Max();
                var w = logits.Select(l => Math.Exp(l - max)).ToArray();
                for (int j = 0; j < D; j++)
                    output[(i * Hq + h) * D + j] = (float)(keys.Select((t, n) => w[n] * v[(t * Hkv + kvh) * D + j]).Sum() / w.Sum());
            }
        return output;
    }
}

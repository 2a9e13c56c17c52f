using System.Globalization;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;

using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.CustomOps;

/// <summary>
/// Sparse prefill (issue 10) side by side: one attention layer's prefill as single-node ONNX models on the ORT CPU EP,
/// com.microsoft.GroupQueryAttention vs longctx.LongAttention dense vs trishape / vslash / xattn / block (all with RoPE inside,
/// min_len 0), interleaved in one run, on recall-public-shaped (4 layers, 4 q / 2 kv heads x 32) and Llama-shaped
/// (8 layers, hidden 1024, 16 q / 4 kv heads x 64) attention; model ms = layers x the layer's median. Then, per
/// pattern, one direct kernel call (LongCtxLaSparseStats) for the density and the share of the call spent estimating.
/// Inputs are synthetic with the structure sparse attention relies on: q, k = U(-0.5, 0.5) + u (a shared direction,
/// so RoPE makes scores depend on the distance), keys 0-3 are attention sinks (+3u). Not a unit test:
///   LONGCTX_TESTS=all LONGCTX_BENCH_LENGTHS=8192,16384,32768,65536 ./test.sh -c Release --no-build --filter "FullyQualifiedName~SparsePrefillBench" --logger "console;verbosity=detailed"
/// (LONGCTX_TESTS=all: test.sh otherwise adds a category filter, and NUnit then skips [Explicit] tests.)
/// LONGCTX_BENCH_LENGTHS defaults to 2048,4096; LONGCTX_BENCH_SHAPES (default both: recall-public,llama-8L-1024); LONGCTX_BENCH_REPS (default 3; 1 from 16k); GQA materialises
/// H*S*S float scores and is n/a above LONGCTX_BENCH_GQA_GIB (default 4) GiB of them. The log-log plot of model ms
/// against length per contestant, with O(L^2) and O(L) slopes through dense's first point, is written to
/// LONGCTX_BENCH_PLOT (default sparse-prefill.png in the test directory).
/// </summary>
[TestFixture, Explicit("timing benchmark; run by name"), Category("Bench")]
public sealed class SparsePrefillBench
{
    private sealed record Shape(string Name, int Layers, int Hq, int Hkv, int D);

    private sealed record Pattern(string Name, AttributeProto[] Attrs, long Vertical = 0, long Slash = 0, float Threshold = 0.9f,
        long Stride = 8, long Sink = 64, long Window = 1024, long Last = 64, long LocalBlocks = 16, long VertStride = 8);

    private static readonly Shape[] Shapes = [new("recall-public", 4, 4, 2, 32), new("llama-8L-1024", 8, 16, 4, 64)];

    private static readonly Pattern[] Patterns =
    [
        new("dense", []),
        new("trishape", [IntAttr("min_len", 0), IntAttr("sink", 64), IntAttr("window", 1024), IntAttr("last", 64)]),
        new("vslash", [IntAttr("min_len", 0), IntAttr("vertical", 1000), IntAttr("slash", 4096)], Vertical: 1000, Slash: 4096),
        new("xattn", [IntAttr("min_len", 0), FloatAttr("threshold", 0.9f), IntAttr("stride", 8)]),
        new("block", [IntAttr("min_len", 0), IntAttr("local_blocks", 16), IntAttr("vert_stride", 8)]),
    ];

    [Test]
    public void SparsePrefill()
    {
        var lengths = (Environment.GetEnvironmentVariable("LONGCTX_BENCH_LENGTHS") ?? "2048,4096")
            .Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        int reps = int.TryParse(Environment.GetEnvironmentVariable("LONGCTX_BENCH_REPS"), out var r) && r > 0 ? r : 3;
        double gqaGib = double.TryParse(Environment.GetEnvironmentVariable("LONGCTX_BENCH_GQA_GIB"), CultureInfo.InvariantCulture, out var g) ? g : 4;
        string plotPath = Environment.GetEnvironmentVariable("LONGCTX_BENCH_PLOT") is { Length: > 0 } pp ? pp
            : Path.Combine(TestContext.CurrentContext.WorkDirectory, "sparse-prefill.png");
        var inv = CultureInfo.InvariantCulture;
        var lines = new List<string> { "uptime: " + Uptime(), $"{"shape",-14} {"len",6} {"contestant",-10} {"model ms",10} {"vs GQA",8} {"vs dense",9} {"density",8} {"estimate",9}" };
        var points = new Dictionary<(string Shape, string Who), List<(double L, double Ms)>>();
        var shapes = Environment.GetEnvironmentVariable("LONGCTX_BENCH_SHAPES") is { Length: > 0 } want
            ? Shapes.Where(x => want.Split(',').Contains(x.Name)).ToArray() : Shapes;
        Assert.That(shapes, Is.Not.Empty, $"LONGCTX_BENCH_SHAPES: none of {string.Join(", ", Shapes.Select(x => x.Name))}");
        foreach (var sh in shapes)
            foreach (int len in lengths)
            {
                var x = Inputs(sh, len);
                var contestants = new List<(string Who, AttentionKernelBench.Contestant C)>();
                bool gqaFits = (double)sh.Hq * len * len * 4 <= gqaGib * (1L << 30);
                if (gqaFits) contestants.Add(("GQA", Prefill(sh, len, x, "com.microsoft", "GroupQueryAttention", [])));
                foreach (var p in Patterns) contestants.Add((p.Name, Prefill(sh, len, x, "longctx", "LongAttention", [StringAttr("pattern", p.Name), .. p.Attrs])));
                var ms = AttentionKernelBench.Interleaved(len >= 16384 ? 1 : reps, contestants.Select(c => c.C).ToList());
                double? gqa = gqaFits ? ms[0] : null;
                double dense = ms[contestants.FindIndex(c => c.Who == "dense")];
                for (int i = 0; i < contestants.Count; i++)
                {
                    string who = contestants[i].Who;
                    double model = ms[i] * sh.Layers;
                    var p = Patterns.FirstOrDefault(q => q.Name == who);
                    string density = "-", estimate = "-";
                    if (p is not null && p.Name != "dense")
                    {
                        var st = Stats(sh, len, x, p);
                        density = st.Causal > 0 ? ((double)st.Selected / st.Causal).ToString("F3", inv) : "dense";
                        estimate = (100.0 * st.EstimateNs / Math.Max(1, st.TotalNs)).ToString("F1", inv) + "%";
                    }
                    lines.Add(string.Create(inv, $"{sh.Name,-14} {len,6} {who,-10} {model,10:F1} {(gqa is null ? "n/a" : (gqa.Value / ms[i]).ToString("F2", inv) + "x"),8} {(dense / ms[i]).ToString("F2", inv) + "x",9} {density,8} {estimate,9}"));
                    (points.TryGetValue((sh.Name, who), out var l) ? l : points[(sh.Name, who)] = []).Add((len, model));
                }
            }
        Plot(points, plotPath);
        lines.Add("plot: " + plotPath);
        foreach (var line in lines) TestContext.Out.WriteLine(line);
        Assert.Pass(string.Join("\n", lines));
    }

    private static string Uptime()
    {
        try { return File.ReadAllText("/proc/loadavg").Trim() + $" (loadavg; {Environment.ProcessorCount} cpus)"; }
        catch (IOException) { return "n/a"; }
    }

    /// <summary>log10(model ms) against log10(length) per shape and contestant, with O(L^2) and O(L) through dense's first point.</summary>
    private static void Plot(Dictionary<(string Shape, string Who), List<(double L, double Ms)>> points, string path)
    {
        var plt = new ScottPlot.Plot();
        foreach (var ((shape, who), pts) in points)
        {
            var s = plt.Add.Scatter(pts.Select(p => Math.Log10(p.L)).ToArray(), pts.Select(p => Math.Log10(p.Ms)).ToArray());
            s.LegendText = $"{shape} {who}";
        }
        foreach (var shape in points.Keys.Select(k => k.Shape).Distinct())
        {
            if (!points.TryGetValue((shape, "dense"), out var d) || d.Count == 0) continue;
            var (l0, t0) = d[0];
            double l1 = points.Values.SelectMany(v => v).Max(p => p.L);
            foreach (var (slope, name) in new[] { (2.0, "O(L^2)"), (1.0, "O(L)") })
            {
                var line = plt.Add.Line(Math.Log10(l0), Math.Log10(t0), Math.Log10(l1), Math.Log10(t0) + slope * Math.Log10(l1 / l0));
                line.LegendText = $"{shape} {name}";
                line.LinePattern = ScottPlot.LinePattern.Dashed;
            }
        }
        plt.Axes.Bottom.Label.Text = "log10 prompt length (tokens)";
        plt.Axes.Left.Label.Text = "log10 attention prefill, model ms";
        plt.Title("sparse prefill: time vs length (log-log)");
        plt.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plt.SavePng(path, 1000, 650);
    }

    // ---------------------------------------------------------------- inputs and contestants

    private sealed record Data(float[] Q, float[] K, float[] V, float[] Cos, float[] Sin);

    private static Data Inputs(Shape sh, int len)
    {
        var rng = new Random(7);
        var u = RandomArray(rng, sh.D);
        float[] Biased(int heads, bool sinks)
        {
            var a = RandomArray(rng, len * heads * sh.D, 0.5f);
            for (int i = 0; i < a.Length; i++) a[i] += u[i % sh.D] * (sinks && i / (heads * sh.D) < 4 ? 4f : 1f);
            return a;
        }
        int half = sh.D / 2;
        var cos = new float[len * half];
        var sin = new float[len * half];
        for (int p = 0; p < len; p++)
            for (int i = 0; i < half; i++)
            {
                double th = p * Math.Pow(10000.0, -2.0 * i / sh.D);
                cos[p * half + i] = (float)Math.Cos(th);
                sin[p * half + i] = (float)Math.Sin(th);
            }
        return new(Biased(sh.Hq, false), Biased(sh.Hkv, true), RandomArray(rng, len * sh.Hkv * sh.D), cos, sin);
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int StatsFn([MarshalAs(UnmanagedType.LPStr)] string pattern, long s, long h, long hkv, long d,
        float[] q, float[] k, float[] v, float[] cos, float[] sin, long maxPos, long minLen, long vertical, long slash,
        float threshold, long stride, long sink, long window, long last, long localBlocks, long vertStride, int threads, long[] stats, byte[] err, nuint errLen);

    private static (long Selected, long Causal, long EstimateNs, long TotalNs) Stats(Shape sh, int len, Data x, Pattern p)
    {
        var fn = Marshal.GetDelegateForFunctionPointer<StatsFn>(NativeLibrary.GetExport(NativeLibrary.Load(LibPath), "LongCtxLaSparseStats"));
        var st = new long[7];
        var err = new byte[512];
        int rc = fn(p.Name, len, sh.Hq, sh.Hkv, sh.D, x.Q, x.K, x.V, x.Cos, x.Sin, len, 0, p.Vertical, p.Slash, p.Threshold, p.Stride,
            p.Sink, p.Window, p.Last, p.LocalBlocks, p.VertStride, Environment.ProcessorCount, st, err, (nuint)err.Length);
        Assert.That(rc, Is.Zero, System.Text.Encoding.UTF8.GetString(err).TrimEnd('\0'));
        return (st[3], st[4], st[5], st[6]);
    }

    private static AttentionKernelBench.Contestant Prefill(Shape sh, int len, Data x, string domain, string op, AttributeProto[] attrs)
    {
        using var options = new SessionOptions();
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");  // as AttentionKernelBench: no pool spins
        options.RegisterCustomOpLibrary(LibPath);
        var session = new InferenceSession(RotaryPrefillModel(domain, op, sh.Hq, sh.Hkv, attrs).ToByteArray(), options);
        var feeds = RotaryPrefillFeeds(x.Q, x.K, x.V, x.Cos, x.Sin, len, sh.Hq, sh.Hkv, sh.D);
        var ro = new RunOptions();
        return new AttentionKernelBench.Contestant(session, [.. feeds.Values, ro], () => { using var r = session.Run(ro, feeds, session.OutputNames); });
    }
}

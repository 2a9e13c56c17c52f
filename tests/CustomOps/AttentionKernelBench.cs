using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;

using static LongCtx.Tests.CustomOps.OpTestKit;

namespace LongCtx.Tests.CustomOps;

/// <summary>
/// Side-by-side timing of one attention layer, com.microsoft.GroupQueryAttention vs longctx.LongAttention
/// (dense), as single-node ONNX models on the ORT CPU EP in one run. Not a unit test: [Explicit], run by
/// name:  ./test.sh -c Release --no-build --filter "FullyQualifiedName~AttentionKernelBench" --logger "console;verbosity=detailed"
/// LONGCTX_BENCH_MAX caps the prefill length (default 8192). GQA materialises B*H*S*T float scores, so
/// lengths whose scores exceed 4 GiB are reported as n/a for it. The contestants run interleaved (one rep
/// each in turn, LONGCTX_BENCH_REPS reps, default 5; 1 at >= 8k prefill), so a busy box slows all alike;
/// the table gives the median. LONGCTX_BENCH_BASELINE_LIB names another build of liblongctx_ops.so
/// (e.g. main's) to time as a third contestant, for before/after in the same run.
/// </summary>
[TestFixture, Explicit("timing benchmark; run by name"), Category("Bench")]
public class AttentionKernelBench
{
    private static string LibPath => OpTestKit.LibPath;

    [Test]
    public void GqaVsLongAttention()
    {
        int max = int.TryParse(Environment.GetEnvironmentVariable("LONGCTX_BENCH_MAX"), out var m) ? m : 8192;
        int reps = int.TryParse(Environment.GetEnvironmentVariable("LONGCTX_BENCH_REPS"), out var r) && r > 0 ? r : 5;
        string? baseline = Environment.GetEnvironmentVariable("LONGCTX_BENCH_BASELINE_LIB");
        if (baseline is { Length: > 0 } && !File.Exists(baseline)) Assert.Fail($"LONGCTX_BENCH_BASELINE_LIB: no file {baseline}");
        bool withBase = baseline is { Length: > 0 };
        // The box's SGEMM peak in the same run: ORT's own MatMul (MLAS) on 2048^3 fp32, same pool settings.
        double sgemmMs = Interleaved(reps, [Sgemm(2048)])[0];
        double sgemm = 2.0 * 2048 * 2048 * 2048 / (sgemmMs / 1e3) / 1e9;
        TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"SGEMM peak (ORT MatMul 2048^3 fp32): {sgemm:F1} GFLOP/s"));
        var rows = new List<string> { $"{"layer",-12} {"phase",-8} {"len",6} {"GQA ms",10} {(withBase ? "LA0 ms" : ""),10} {"LA ms",10} {"LA/GQA speedup",15} {"LA GFLOP/s",11} {"% SGEMM",8}" };
        foreach (var (hq, hkv, d) in new[] { (8, 2, 64), (32, 8, 128) })
        {
            foreach (var s in new[] { 2048, 8192, 32768 }.Where(x => x <= max))
            {
                double flops = 4.0 * s * s * d * hq / 2;
                bool gqaFits = (double)hq * s * s * 4 <= 4.0 * (1L << 30);
                var contestants = new List<Contestant>();
                if (gqaFits) contestants.Add(Prefill("com.microsoft", "GroupQueryAttention", LibPath, hq, hkv, d, s));
                if (withBase) contestants.Add(Prefill("longctx", "LongAttention", baseline!, hq, hkv, d, s));
                contestants.Add(Prefill("longctx", "LongAttention", LibPath, hq, hkv, d, s));
                var t = Interleaved(s >= 8192 ? 1 : reps, contestants);
                double? gqa = gqaFits ? t[0] : null;
                double? la0 = withBase ? t[^2] : null;
                rows.Add(Row($"{hq}/{hkv}x{d}", "prefill", s, gqa, la0, t[^1], flops / (t[^1] / 1e3) / 1e9, sgemm));
            }
            foreach (var t in new[] { 8192, 32768 }.Where(x => x <= Math.Max(max, 8192)))
            {
                var contestants = new List<Contestant> { Decode("com.microsoft", "GroupQueryAttention", LibPath, hq, hkv, d, t) };
                if (withBase) contestants.Add(Decode("longctx", "LongAttention", baseline!, hq, hkv, d, t));
                contestants.Add(Decode("longctx", "LongAttention", LibPath, hq, hkv, d, t));
                var ms = Interleaved(2 * reps, contestants);
                rows.Add(Row($"{hq}/{hkv}x{d}", "decode", t, ms[0], withBase ? ms[^2] : null, ms[^1], null, sgemm));
            }
        }
        foreach (var row in rows) TestContext.Out.WriteLine(row);
        Assert.Pass(string.Join("\n", rows));
    }

    private static string Row(string layer, string phase, int len, double? gqa, double? la0, double la, double? gflops, double sgemm) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{layer,-12} {phase,-8} {len,6} {(gqa is null ? "n/a" : gqa.Value.ToString("F2")),10} {(la0 is null ? "" : la0.Value.ToString("F2")),10} {la,10:F2} {(gqa is null ? "-" : (gqa.Value / la).ToString("F2") + "x"),15} {(gflops is null ? "-" : gflops.Value.ToString("F1")),11} {(gflops is null ? "-" : (100 * gflops.Value / sgemm).ToString("F0") + "%"),8}");

    /// <summary>A session with its inputs, run by <see cref="Interleaved"/>; disposes both.</summary>
    internal sealed class Contestant(InferenceSession session, List<IDisposable> owned, Action run) : IDisposable
    {
        public void Run() => run();
        public void Dispose()
        {
            foreach (var o in owned) o.Dispose();
            session.Dispose();
        }
    }

    /// <summary>Median ms per contestant: one warm-up each, then reps rounds of one timed run each, in turn.</summary>
    internal static double[] Interleaved(int reps, List<Contestant> contestants)
    {
        try
        {
            foreach (var c in contestants) c.Run();
            var times = contestants.Select(_ => new List<double>()).ToArray();
            for (int i = 0; i < reps; i++)
                for (int c = 0; c < contestants.Count; c++)
                {
                    var sw = Stopwatch.StartNew();
                    contestants[c].Run();
                    times[c].Add(sw.Elapsed.TotalMilliseconds);
                }
            return times.Select(Median).ToArray();
        }
        finally
        {
            foreach (var c in contestants) c.Dispose();
        }
    }

    private static double Median(List<double> xs)
    {
        var s = xs.OrderBy(x => x).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    private static Contestant Prefill(string domain, string op, string lib, int hq, int hkv, int d, int s)
    {
        var session = Session(domain, op, lib, hq, hkv, d);
        var rng = new Random(1);
        var q = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, s * hq * d), new long[] { 1, s, hq * d });
        var k = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, s * hkv * d), new long[] { 1, s, hkv * d });
        var v = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, s * hkv * d), new long[] { 1, s, hkv * d });
        var pk = OrtValue.CreateTensorValueFromMemory(new float[0], new long[] { 1, hkv, 0, d });
        var pv = OrtValue.CreateTensorValueFromMemory(new float[0], new long[] { 1, hkv, 0, d });
        var sl = OrtValue.CreateTensorValueFromMemory(new[] { s - 1 }, new long[] { 1 });
        var tl = OrtValue.CreateTensorValueFromMemory(new[] { s }, Array.Empty<long>());
        var ro = new RunOptions();
        var feeds = new Dictionary<string, OrtValue> { ["query"] = q, ["key"] = k, ["value"] = v, ["past_key"] = pk, ["past_value"] = pv, ["seqlens_k"] = sl, ["total_sequence_length"] = tl };
        return new Contestant(session, new List<IDisposable> { q, k, v, pk, pv, sl, tl, ro },
            () => { using var r = session.Run(ro, feeds, session.OutputNames); });
    }

    private static Contestant Decode(string domain, string op, string lib, int hq, int hkv, int d, int t)
    {
        var session = Session(domain, op, lib, hq, hkv, d);
        var rng = new Random(2);
        var q = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, hq * d), new long[] { 1, 1, hq * d });
        var k = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, hkv * d), new long[] { 1, 1, hkv * d });
        var v = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, hkv * d), new long[] { 1, 1, hkv * d });
        var kvK = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, hkv * t * d), new long[] { 1, hkv, t, d });
        var kvV = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, hkv * t * d), new long[] { 1, hkv, t, d });
        var sl = OrtValue.CreateTensorValueFromMemory(new[] { t - 1 }, new long[] { 1 });
        var tl = OrtValue.CreateTensorValueFromMemory(new[] { t }, Array.Empty<long>());
        var binding = session.CreateIoBinding();
        binding.BindInput("query", q);
        binding.BindInput("key", k);
        binding.BindInput("value", v);
        binding.BindInput("past_key", kvK);
        binding.BindInput("past_value", kvV);
        binding.BindInput("seqlens_k", sl);
        binding.BindInput("total_sequence_length", tl);
        binding.BindOutputToDevice("output", OrtMemoryInfo.DefaultInstance);
        binding.BindOutput("present_key", kvK);
        binding.BindOutput("present_value", kvV);
        var ro = new RunOptions();
        return new Contestant(session, new List<IDisposable> { binding, ro, q, k, v, kvK, kvV, sl, tl },
            () => session.RunWithBinding(ro, binding));
    }

    private static Contestant Sgemm(int n)
    {
        var node = new NodeProto { Name = "mm", OpType = "MatMul" };
        node.Input.AddRange(new[] { "a", "b" });
        node.Output.Add("c");
        var graph = new GraphProto { Name = "sgemm" };
        graph.Node.Add(node);
        graph.Input.Add(ValueInfo("a", TensorProto.Types.DataType.Float));
        graph.Input.Add(ValueInfo("b", TensorProto.Types.DataType.Float));
        graph.Output.Add(ValueInfo("c", TensorProto.Types.DataType.Float));
        var model = new ModelProto { IrVersion = 10, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        using var options = new SessionOptions();
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        var session = new InferenceSession(model.ToByteArray(), options);
        var rng = new Random(3);
        var a = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, n * n), new long[] { n, n });
        var b = OrtValue.CreateTensorValueFromMemory(RandomArray(rng, n * n), new long[] { n, n });
        var ro = new RunOptions();
        var feeds = new Dictionary<string, OrtValue> { ["a"] = a, ["b"] = b };
        return new Contestant(session, new List<IDisposable> { a, b, ro }, () => { using var r = session.Run(ro, feeds, session.OutputNames); });
    }

    private static InferenceSession Session(string domain, string op, string lib, int hq, int hkv, int d)
    {
        var node = new NodeProto { Name = "attn", OpType = op, Domain = domain };
        node.Input.AddRange(new[] { "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length" });
        node.Output.AddRange(new[] { "output", "present_key", "present_value" });
        node.Attribute.Add(new AttributeProto { Name = "num_heads", Type = AttributeProto.Types.AttributeType.Int, I = hq });
        node.Attribute.Add(new AttributeProto { Name = "kv_num_heads", Type = AttributeProto.Types.AttributeType.Int, I = hkv });
        var graph = new GraphProto { Name = "bench" };
        graph.Node.Add(node);
        foreach (var n in node.Input)
            graph.Input.Add(ValueInfo(n, n is "seqlens_k" or "total_sequence_length" ? TensorProto.Types.DataType.Int32 : TensorProto.Types.DataType.Float));
        foreach (var n in node.Output) graph.Output.Add(ValueInfo(n, TensorProto.Types.DataType.Float));
        var model = new ModelProto { IrVersion = 10, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "longctx", Version = 1 });
        using var options = new SessionOptions();
        // Each contestant has its own session and intra-op pool; spinning workers of the one that just ran
        // would steal the cores of the next, so no pool spins (same rule for all contestants).
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        options.RegisterCustomOpLibrary(lib);
        return new InferenceSession(model.ToByteArray(), options);
    }
}

using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;
using Onnx;

namespace LongCtx.Tests.CustomOps;

/// <summary>
/// Side-by-side timing of one attention layer, com.microsoft.GroupQueryAttention vs longctx.LongAttention
/// (dense), as single-node ONNX models on the ORT CPU EP in one run. Not a unit test: [Explicit], run by
/// name:  ./test.sh -c Release --no-build --filter "FullyQualifiedName~AttentionKernelBench" --logger "console;verbosity=detailed"
/// LONGCTX_BENCH_MAX caps the prefill length (default 8192). GQA materialises B*H*S*T float scores, so
/// lengths whose scores exceed 4 GiB are reported as n/a for it.
/// </summary>
[TestFixture, Explicit("timing benchmark; run by name"), Category("Bench")]
public class AttentionKernelBench
{
    private static string LibPath => Path.Combine(AppContext.BaseDirectory, "liblongctx_ops.so");

    [Test]
    public void GqaVsLongAttention()
    {
        int max = int.TryParse(Environment.GetEnvironmentVariable("LONGCTX_BENCH_MAX"), out var m) ? m : 8192;
        var rows = new List<string> { $"{"layer",-12} {"phase",-8} {"len",6} {"GQA ms",10} {"LA ms",10} {"LA/GQA speedup",15} {"LA GFLOP/s",11}" };
        foreach (var (hq, hkv, d) in new[] { (8, 2, 64), (32, 8, 128) })
        {
            foreach (var s in new[] { 2048, 8192, 32768 }.Where(x => x <= max))
            {
                double flops = 4.0 * s * s * d * hq / 2;
                double? gqa = (double)hq * s * s * 4 > 4.0 * (1L << 30) ? null : TimePrefill("com.microsoft", "GroupQueryAttention", hq, hkv, d, s);
                double la = TimePrefill("longctx", "LongAttention", hq, hkv, d, s);
                rows.Add(Row($"{hq}/{hkv}x{d}", "prefill", s, gqa, la, flops / (la / 1e3) / 1e9));
            }
            foreach (var t in new[] { 8192, 32768 }.Where(x => x <= Math.Max(max, 8192)))
            {
                double gqa = TimeDecode("com.microsoft", "GroupQueryAttention", hq, hkv, d, t);
                double la = TimeDecode("longctx", "LongAttention", hq, hkv, d, t);
                rows.Add(Row($"{hq}/{hkv}x{d}", "decode", t, gqa, la, null));
            }
        }
        foreach (var r in rows) TestContext.Out.WriteLine(r);
        Assert.Pass(string.Join("\n", rows));
    }

    private static string Row(string layer, string phase, int len, double? gqa, double la, double? gflops) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{layer,-12} {phase,-8} {len,6} {(gqa is null ? "n/a" : gqa.Value.ToString("F2")),10} {la,10:F2} {(gqa is null ? "-" : (gqa.Value / la).ToString("F2") + "x"),15} {(gflops is null ? "-" : gflops.Value.ToString("F1")),11}");

    private static double TimePrefill(string domain, string op, int hq, int hkv, int d, int s)
    {
        using var session = Session(domain, op, hq, hkv, d);
        var rng = new Random(1);
        using var q = OrtValue.CreateTensorValueFromMemory(Rand(rng, s * hq * d), new long[] { 1, s, hq * d });
        using var k = OrtValue.CreateTensorValueFromMemory(Rand(rng, s * hkv * d), new long[] { 1, s, hkv * d });
        using var v = OrtValue.CreateTensorValueFromMemory(Rand(rng, s * hkv * d), new long[] { 1, s, hkv * d });
        using var pk = OrtValue.CreateTensorValueFromMemory(new float[0], new long[] { 1, hkv, 0, d });
        using var pv = OrtValue.CreateTensorValueFromMemory(new float[0], new long[] { 1, hkv, 0, d });
        using var sl = OrtValue.CreateTensorValueFromMemory(new[] { s - 1 }, new long[] { 1 });
        using var tl = OrtValue.CreateTensorValueFromMemory(new[] { s }, Array.Empty<long>());
        var feeds = new Dictionary<string, OrtValue> { ["query"] = q, ["key"] = k, ["value"] = v, ["past_key"] = pk, ["past_value"] = pv, ["seqlens_k"] = sl, ["total_sequence_length"] = tl };
        return Best(s >= 8192 ? 1 : 3, () => { using var r = session.Run(new RunOptions(), feeds, session.OutputNames); });
    }

    private static double TimeDecode(string domain, string op, int hq, int hkv, int d, int t)
    {
        using var session = Session(domain, op, hq, hkv, d);
        var rng = new Random(2);
        using var q = OrtValue.CreateTensorValueFromMemory(Rand(rng, hq * d), new long[] { 1, 1, hq * d });
        using var k = OrtValue.CreateTensorValueFromMemory(Rand(rng, hkv * d), new long[] { 1, 1, hkv * d });
        using var v = OrtValue.CreateTensorValueFromMemory(Rand(rng, hkv * d), new long[] { 1, 1, hkv * d });
        using var kvK = OrtValue.CreateTensorValueFromMemory(Rand(rng, hkv * t * d), new long[] { 1, hkv, t, d });
        using var kvV = OrtValue.CreateTensorValueFromMemory(Rand(rng, hkv * t * d), new long[] { 1, hkv, t, d });
        using var sl = OrtValue.CreateTensorValueFromMemory(new[] { t - 1 }, new long[] { 1 });
        using var tl = OrtValue.CreateTensorValueFromMemory(new[] { t }, Array.Empty<long>());
        using var binding = session.CreateIoBinding();
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
        using var ro = new RunOptions();
        return Best(10, () => session.RunWithBinding(ro, binding));
    }

    private static double Best(int reps, Action run)
    {
        run();  // warm-up
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            var sw = Stopwatch.StartNew();
            run();
            best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
        }
        return best;
    }

    private static InferenceSession Session(string domain, string op, int hq, int hkv, int d)
    {
        var node = new NodeProto { Name = "attn", OpType = op, Domain = domain };
        node.Input.AddRange(new[] { "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length" });
        node.Output.AddRange(new[] { "output", "present_key", "present_value" });
        node.Attribute.Add(new AttributeProto { Name = "num_heads", Type = AttributeProto.Types.AttributeType.Int, I = hq });
        node.Attribute.Add(new AttributeProto { Name = "kv_num_heads", Type = AttributeProto.Types.AttributeType.Int, I = hkv });
        var graph = new GraphProto { Name = "bench" };
        graph.Node.Add(node);
        foreach (var n in node.Input)
            graph.Input.Add(Info(n, n is "seqlens_k" or "total_sequence_length" ? TensorProto.Types.DataType.Int32 : TensorProto.Types.DataType.Float));
        foreach (var n in node.Output) graph.Output.Add(Info(n, TensorProto.Types.DataType.Float));
        var model = new ModelProto { IrVersion = 10, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "longctx", Version = 1 });
        using var options = new SessionOptions();
        options.RegisterCustomOpLibrary(LibPath);
        return new InferenceSession(model.ToByteArray(), options);
    }

    private static ValueInfoProto Info(string name, TensorProto.Types.DataType t) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)t } } };

    private static float[] Rand(Random rng, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }
}

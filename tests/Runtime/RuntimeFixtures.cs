using NUnit.Framework;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Runtime;

namespace LongCtx.Tests.Runtime;

/// <summary>Locates the shared fixture models; tests that need a missing one are ignored.</summary>
internal static class RuntimeFixtures
{
    public static string Models => TestSupport.SharedModels;
    public static string Recall => Path.Combine(Models, "recall-public");
    public static string RecallModel => Path.Combine(Recall, "model.onnx");
    public static string Llama => Path.Combine(Models, "genai", "llama-mha-rotary-fp16", "model.onnx");
    public static string Qwen => Path.Combine(Models, "genai", "qwen-gqa-fp16", "decoder.onnx");
    public static string Static24 => Path.Combine(Models, "genai", "opset24-attention-static-cache", "model.onnx");

    public static string Require(string path) => TestSupport.Require(path);

    /// <summary>CPU, quiet, collecting notes.</summary>
    public static RuntimeOptions Cpu(List<string>? log = null) => new()
    {
        ExecutionProvider = ExecutionProviderKind.Cpu,
        IntraOpThreads = 1,
        Log = s => { lock (log ?? []) log?.Add(s); },
    };

    public static LongCtxModel Load(string path, List<string>? log = null) => LongCtxModel.Load(Require(path), Cpu(log));

    /// <summary>
    /// Runs every request on each of <paramref name="workers"/> threads at once, each walking the requests in its own
    /// order (request r = (k * 7 + w * 13) mod n on worker w), and asserts every worker got the serial outputs.
    /// </summary>
    public static void AssertConcurrentEqualsSerial(int workers, IReadOnlyList<List<int>> serial, Func<int, List<int>> request)
    {
        int n = serial.Count;
        var results = new List<int>[workers][];
        var tasks = Enumerable.Range(0, workers).Select(w => Task.Run(() =>
        {
            var mine = new List<int>[n];
            for (int k = 0; k < n; k++)
            {
                int r = (k * 7 + w * 13) % n;
                mine[r] = request(r);
            }
            results[w] = mine;
        })).ToArray();
        Assert.That(Task.WaitAll(tasks, TimeSpan.FromMinutes(3)), Is.True, "timed out");
        for (int w = 0; w < workers; w++)
            for (int r = 0; r < n; r++)
                Assert.That(results[w][r], Is.EqualTo(serial[r]), $"worker {w}, request {r}");
    }

    /// <summary>Writes a tiny model to a temp folder: input_ids + <paramref name="extraInput"/> -> logits [1,S,1].</summary>
    public static string WriteTinyModel(string dir, string extraInput, string? customDomain = null)
    {
        var m = Model.Create("tiny", 17);
        var r = new Rewriter(m);
        var ids = r.AddInput(m.Graph, "input_ids", new TensorType(ElementType.Int64, new Shape(1, "s")));
        r.AddInput(m.Graph, extraInput, new TensorType(ElementType.Float, new Shape(1, 2, "p", 4)));
        var axes = r.AddInitializer(m.Graph, "axes", Tensor.FromInt64s([2], 1));
        var u = r.Op(m.Graph, "Unsqueeze", [ids, axes]);
        var f = r.Op(m.Graph, "Cast", [u], [Attr.Int("to", (long)ElementType.Float)], outputName: "logits");
        r.SetType(f, new TensorType(ElementType.Float, new Shape(1, "s", 1)));
        r.AddOutput(m.Graph, f);
        if (customDomain is not null) r.EnsureOpset(customDomain, 1);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "model.onnx");
        OnnxWriter.Save(m, path, new SaveOptions { AllInline = true });
        return path;
    }
}

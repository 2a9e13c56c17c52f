using NUnit.Framework;
using System.Text.Json;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;

namespace LongCtx.Tests.Rope;

/// <summary>Paths and helpers shared by the RoPE tests.</summary>
internal static class RopeFixture
{
    public static string Shared(string rel) => Path.Combine(TestSupport.SharedModels, rel);

    public static string RecallDir
    {
        get
        {
            var p = Shared("recall-public");
            if (!File.Exists(Path.Combine(p, "model.onnx"))) Assert.Ignore("recall-public fixture not found: " + p);
            return p;
        }
    }

    public static Model LoadRecall() => OnnxReader.Load(Path.Combine(RecallDir, "model.onnx"));

    public static JsonElement Baseline()
    {
        using var d = JsonDocument.Parse(File.ReadAllText(Path.Combine(RecallDir, "baseline.json")));
        return d.RootElement.Clone();
    }

    /// <summary>Runs one rope pass (verifying after it) and returns its report.</summary>
    public static PassReport Apply(Model m, string method, IReadOnlyDictionary<string, string> options)
    {
        var r = PassManager.Run(m, [(Pipelines.Create("rope-" + method), options)], new PassManagerOptions { Verify = true });
        return r.Passes.Single();
    }

    public static Dictionary<string, string> Opts(params (string k, string v)[] kv) => kv.ToDictionary(x => x.k, x => x.v);
}

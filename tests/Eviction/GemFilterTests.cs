using LongCtx.Compiler;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Contract;
using LongCtx.Passes;
using LongCtx.Passes.Eviction;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Runtime.Eviction;
using LongCtx.Tests.Runtime;
using Microsoft.ML.OnnxRuntime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>GemFilter (issue 12) on recall-public: the filter model, its selection against the original model's Softmax, keep-all == the full run, bad input.</summary>
[TestFixture]
public sealed class GemFilterTests : RecallCompileFixture
{
    [Test]
    public void FilterModel_HasTheFirstLayersOnly()
    {
        var dir = Compile("f1", null, "gemfilter:layer=1,keep=16,recent=4");
        var filter = OnnxReader.Load(Path.Combine(dir, GemFilterPass.FilterFile));
        Assert.That(AttentionDiscovery.Discover(filter).Blocks, Has.Count.EqualTo(2), "layers 0 and 1");
        Assert.That(filter.Graph.Outputs.Select(o => o.Name), Is.EquivalentTo(new[] { "logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value" }));
        Assert.That(filter.Graph.Inputs.Any(i => i.Name.StartsWith("past_key_values.2")), Is.False);
        var policy = TokenFilterPolicy.From(LongCtxManifest.TryReadFolder(dir)!.Runtime, "t")!;
        Assert.That((policy.Layer, policy.Keep, policy.Recent, policy.Pool), Is.EqualTo((1, 16.0, 4, 5)));
    }

    /// <summary>The kept tokens == top-k of the original model's layer-1 Softmax (last row, summed over heads, avg-pooled by 5) plus the last 4.</summary>
    [Test]
    public void Selection_MatchesTheOriginalSoftmax()
    {
        const int n = 96, keep = 16, recent = 4;
        var ids = Prompt(n);
        var original = OnnxReader.Load(RuntimeFixtures.Require(RuntimeFixtures.RecallModel));
        var softmax = original.Graph.Nodes.Where(AttentionDiscovery.IsAnchor).ToList()[1];
        new Rewriter(original).AddOutput(original.Graph, softmax.Output());
        var refPath = Path.Combine(Tmp, "softmax1.onnx");
        OnnxWriter.Save(original, refPath);
        using var s = new InferenceSession(refPath);
        var inputs = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids.Select(x => (long)x).ToArray(), [1, n]),
            ["attention_mask"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, n).ToArray(), [1, n]),
            ["position_ids"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, n).Select(x => (long)x).ToArray(), [1, n]),
        };
        foreach (var name in s.InputMetadata.Keys.Where(k => k.StartsWith("past_key_values")))
            inputs[name] = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, 2, 0, 32]);
        using var ro = new RunOptions();
        using var outs = s.Run(ro, inputs.Keys.ToList(), inputs.Values.ToList(), [softmax.Output().Name]);
        var p = outs[0].GetTensorDataAsSpan<float>().ToArray();
        var scores = new float[n];
        for (int h = 0; h < 4; h++) for (int j = 0; j < n; j++) scores[j] += p[(h * n + n - 1) * n + j];
        var pooled = GemFilter.AveragePool(scores, 5);
        var want = EvictionSelection.Top(pooled.AsSpan(0, n - recent), keep).Concat(Enumerable.Range(n - recent, recent)).Select(i => ids[i]).ToArray();

        using var m = LongCtxModel.Load(Compile("f1", null, "gemfilter:layer=1,keep=16,recent=4"), RuntimeFixtures.Cpu());
        var got = m.TokenFilter!.Select(ids, 32);
        Assert.That(got, Is.EqualTo(want));
        Assert.That(got, Has.Length.EqualTo(keep + recent));
    }

    /// <summary>Keep = every token: the filter runs, keeps the prompt as it is, and the logits equal the compiled model without a filter.</summary>
    [Test]
    public void KeepAll_EqualsTheFullRun()
    {
        var ids = Prompt(120);
        using var full = LongCtxModel.Load(Compile("full", null), RuntimeFixtures.Cpu());
        using var all = LongCtxModel.Load(Compile("all", null, "gemfilter:layer=2,keep=112,recent=8"), RuntimeFixtures.Cpu());
        Assert.That(all.TokenFilter!.Select(ids, 32), Is.EqualTo(ids));
        Assert.That(all.TokenFilter.LastFilterTime, Is.GreaterThan(TimeSpan.Zero), "the filter ran");
        using var gf = full.CreateGenerator();
        using var ga = all.CreateGenerator();
        var a = gf.Prefill(ids, 32);
        var b = ga.Prefill(ids, 32);
        Assert.That(TestSupport.MaxAbsDiff(a, b), Is.LessThan(1e-5f));
    }

    [Test]
    public void Filtered_PrefillsFewerTokensWithFreshPositions()
    {
        using var m = LongCtxModel.Load(Compile("f1", null, "gemfilter:layer=1,keep=16,recent=4"), RuntimeFixtures.Cpu());
        using var g = m.CreateGenerator();
        var logits = g.Prefill(Prompt(96), 32);
        Assert.That(g.Length, Is.EqualTo(20));
        Assert.That(g.Cache.NextPosition, Is.EqualTo(20), "fresh positions: the kept tokens sit at 0..19");
        Assert.That(logits.All(float.IsFinite));
    }

    [Test]
    public void Cli_CompileWritesTheFilter_InspectAndEvalUseIt()
    {
        var dir = Path.Combine(Tmp, "cli");
        var c = Foundation.CliRunner.Run("compile", RuntimeFixtures.Require(RuntimeFixtures.RecallModel), "-o", dir, "--token-filter", "gemfilter:layer=1,keep=1/8");
        Assert.That(c.ExitCode, Is.Zero, c.Stderr);
        Assert.That(File.Exists(Path.Combine(dir, GemFilterPass.FilterFile)));
        var inspect = Foundation.CliRunner.Run("inspect", dir);
        Assert.That(inspect.Stdout, Does.Contain("token filter: gemfilter layer=1 keep=12.5% recent=8 pool=5"));
        var file = Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl");
        foreach (var args in new[] { new[] { "eval", dir, "--needle", file, "--limit", "2" }, ["eval", dir, "--needle", file, "--limit", "2", "--evict-before-question"] })
        {
            var e = Foundation.CliRunner.Run(args);
            Assert.That(e.ExitCode, Is.Zero, e.Stderr);
            Assert.That(e.Stdout, Does.Contain("n=2"));
        }
    }

    [Test]
    public void Cli_WithoutLayer_SweepsTheLayersOnCalibrationPrompts()
    {
        var dir = Path.Combine(Tmp, "sweep");
        var calibration = Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl");
        var c = Foundation.CliRunner.Run("compile", RuntimeFixtures.Require(RuntimeFixtures.RecallModel), "-o", dir, "--token-filter", $"gemfilter:keep=1/4,calibration={calibration}");
        Assert.That(c.ExitCode, Is.Zero, c.Stderr);
        for (int r = 0; r < 4; r++) Assert.That(c.Stdout, Does.Contain($"gemfilter sweep: layer {r}: accuracy"));
        var policy = TokenFilterPolicy.From(LongCtxManifest.TryReadFolder(dir)!.Runtime, "t")!;
        Assert.That(c.Stdout, Does.Contain($"gemfilter sweep: layer {policy.Layer} (the earliest with the best accuracy"));
        Assert.That(File.Exists(Path.Combine(dir, GemFilterPass.FilterFile)));
    }

    [TestCase("gemfilter:layer=4", "layer=4 is beyond the model's depth (attention layers 0-3)")]
    [TestCase("gemfilter:keep=16", "give layer=R (0-based) or calibration=FILE.jsonl")]
    public void BadLayer_IsAnError(string spec, string message)
    {
        RuntimeFixtures.Require(RuntimeFixtures.RecallModel); // skip here, not inside Assert.Throws (it would catch the skip)
        var e = Assert.Throws<CompileException>(() => Compile("bad-" + spec.GetHashCode(), null, spec))!;
        Assert.That(e.Message, Does.Contain(message));
    }

    [Test]
    public void WithKvEvict_IsAnErrorNamingBoth()
    {
        RuntimeFixtures.Require(RuntimeFixtures.RecallModel); // skip here, not inside Assert.Throws (it would catch the skip)
        var e = Assert.Throws<CompileException>(() => Compile("both", "snapkv:budget=24", "gemfilter:layer=1"))!;
        Assert.That(e.Message, Does.Contain("--token-filter gemfilter").And.Contain("--kv-evict"));
    }

    [TestCase("gemfilter:keep=0", "keep=0 is neither")]
    [TestCase("gemfilter:layers=1", "option 'layers=1' is not one of")]
    [TestCase("snap", "--token-filter snap: unknown method")]
    public void BadSpec_IsOneLineError(string spec, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => GemFilterSettings.Parse(GemFilterSettings.FromSpec(spec)))!;
        Assert.That(e.Message, Does.Contain(message));
    }
}

using LongCtx.Compiler;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Contract;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using LongCtx.Tests.Foundation;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using NUnit.Framework;

namespace LongCtx.Tests.KvQuant;

/// <summary>
/// lcc calibrate --kv and lcc compile --kv on builder decoders: the scale file, the quantize-kv pass (I/O types,
/// attributes, longctx.json), the runtime binding int8 / uint8 caches (shared buffer and concat), and the bad inputs of
/// issue 11 (scale file for another model, int4 with an odd head_dim, an fp32 cache fed to a quantized model, prompts
/// longer than the context).
/// </summary>
[TestFixture]
public class KvQuantCompileTests
{
    private static readonly DecoderConfig Config = new(Layers: 2, Hidden: 64, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 96, MaxPositions: 128);

    private string _dir = "";
    [SetUp] public void SetUp() => _dir = TestSupport.TempDir("kvq");
    [TearDown] public void TearDown() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private static RuntimeOptions Cpu(KvCacheMode mode = KvCacheMode.Auto) => new()
    {
        ExecutionProvider = ExecutionProviderKind.Cpu, IntraOpThreads = 1, KvCache = mode, Log = _ => { },
    };

    private string Write(string name, DecoderConfig c, string form = "torch")
    {
        var dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "model.onnx");
        OnnxWriter.Save(Builders.Build(form, c), path, new SaveOptions { AllInline = true });
        return path;
    }

    private string CompileFloat(string model, string name) =>
        CompileJob.Run(model, Path.Combine(_dir, name), Pipelines.Instantiate(Pipelines.Default)).OutputDir;

    private string Calibrate(string model, string name, int samples = 3, int length = 24)
    {
        using var m = LongCtxModel.Load(model, Cpu(KvCacheMode.Concat));
        var c = m.Contract;
        var file = KvCalibration.Run(m, KvCalibration.BuiltIn(m.VocabSize, samples, length),
            new KvScaleModel(m.ModelPath, "test", c.Layers.Count, c.KvHeads, c.HeadDim), KvCalibration.BuiltInName);
        var path = Path.Combine(_dir, name + ".json");
        file.Write(path);
        return path;
    }

    private CompileResult CompileKv(string model, string name, string mode, string granularity, string scales) =>
        CompileJob.Run(model, Path.Combine(_dir, name), Pipelines.Instantiate([.. Pipelines.Default, new PipelineStep("quantize-kv",
            new Dictionary<string, string> { ["mode"] = mode, ["granularity"] = granularity, ["scales"] = scales })]));

    [Test]
    public void ScaleFile_RoundTrips()
    {
        var src = Write("a", Config);
        var path = Calibrate(CompileFloat(src, "a-fp"), "scales");
        var f = KvScaleFile.Read(path);
        Assert.That(f.Format, Is.EqualTo(KvScaleFile.CurrentFormat));
        Assert.That((f.Model.Layers, f.Model.KvHeads, f.Model.HeadDim), Is.EqualTo((2, 2, 16)));
        Assert.That((f.Samples, f.Tokens), Is.EqualTo((3, 72L)));
        Assert.That(f.Layers.All(l => l.Key.All(r => r.All(x => x > 0)) && l.Value.All(r => r.All(x => x > 0))), "every channel saw a non-zero value");
        var again = Path.Combine(_dir, "again.json");
        f.Write(again);
        Assert.That(File.ReadAllText(again), Is.EqualTo(File.ReadAllText(path)), "write(read(file)) == file");
        var g = KvScaleFile.Read(again);
        Assert.That(g.Layers[1].Value[1], Is.EqualTo(f.Layers[1].Value[1]));
    }

    [Test]
    public void ScaleFile_ForAnotherModel_ErrorNamesBoth()
    {
        var three = Write("three", Config with { Layers = 3 });
        var scales = Calibrate(three, "three");
        var two = Write("two", Config);
        var ex = Assert.Throws<CompileException>(() => CompileKv(two, "out", "int8", "channel", scales));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain(scales).And.Contain("3 layers").And.Contain("2 layers").And.Contain("model.onnx"));
    }

    [Test]
    public void ScaleFile_OfAnUnrotatedCache_RefusedForRotate()
    {
        var src = Write("m", Config);
        var scales = Calibrate(src, "plain");
        var ex = Assert.Throws<CompileException>(() => CompileJob.Run(src, Path.Combine(_dir, "out"), Pipelines.Instantiate([.. Pipelines.Default,
            new PipelineStep("hadamard-kv"), new PipelineStep("quantize-kv", new Dictionary<string, string> { ["mode"] = "int4", ["scales"] = scales, ["rotated"] = "true" })])));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("unrotated cache").And.Contain("drop --calib"));
    }

    [Test]
    public void CalibrationData_Jsonl_PromptsAndBadLines()
    {
        var data = Path.Combine(_dir, "cal.jsonl");
        File.WriteAllLines(data, ["{\"prompt\": [1, 2, 3], \"expected\": 4}", "", "{\"prompt\": [5, 6]}", "{\"prompt\": [7]}"]);
        var prompts = KvCalibration.ReadJsonl(data, null, samples: 2);
        Assert.That(prompts.Select(p => p.Length), Is.EqualTo(new[] { 3, 2 }), "the first --samples prompts, blank lines skipped");
        File.WriteAllLines(data, ["{\"prompt\": [1]}", "{\"text\": \"hello\"}"]);
        var ex = Assert.Throws<ArgumentException>(() => KvCalibration.ReadJsonl(data, null, 0));
        Assert.That(ex!.Message, Does.Contain("cal.jsonl:2").And.Contain("tokenizer"));
        File.WriteAllLines(data, ["[1, 2]"]);
        ex = Assert.Throws<ArgumentException>(() => KvCalibration.ReadJsonl(data, null, 0));
        Assert.That(ex!.Message, Does.Contain("cal.jsonl:1"));
    }

    [Test]
    public void Int4_OddHeadDim_IsAnError()
    {
        var c = Config with { Hidden = 60, HeadDim = 15, RotaryDim = 14 };
        var model = Write("odd", c, "gqa-norope"); // ORT's CPU GQA itself runs only head_dim % 8 == 0: no calibration run here
        var scales = Path.Combine(_dir, "odd.json");
        float[][] Ones() => [Enumerable.Repeat(1f, 15).ToArray(), Enumerable.Repeat(1f, 15).ToArray()];
        new KvScaleFile { Model = new KvScaleModel(model, "x", 2, 2, 15), Data = "by hand", Layers = [new(0, Ones(), Ones()), new(1, Ones(), Ones())] }.Write(scales);
        var ex = Assert.Throws<CompileException>(() => CompileKv(model, "out", "int4", "channel", scales));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("head_dim 15 is odd").And.Contain("int8"));
        Assert.That(CompileKv(model, "ok8", "int8", "channel", scales).Pipeline.Passes.Last().Counts.Values.Single(), Is.EqualTo(2), "int8 takes an odd head_dim");
    }

    public static IEnumerable<TestCaseData> Modes()
    {
        foreach (var mode in new[] { "int8", "int4" })
            foreach (var g in new[] { "tensor", "channel" })
                yield return new TestCaseData(mode, g).SetName($"Compiled_{mode}_{g}_BindsQuantizedCache");
    }

    [TestCaseSource(nameof(Modes))]
    public void CompiledModel_RunsPrefillAndDecode_OnTheQuantizedCache(string mode, string granularity)
    {
        var src = Write("m", Config);
        var fp = CompileFloat(src, "fp");
        var scales = Calibrate(fp, "scales", samples: 4, length: 48);
        var r = CompileKv(src, "q", mode, granularity, scales);
        var pass = r.Pipeline.Passes.Last();
        Assert.That(pass.Counts[$"layers quantized to {mode} per {granularity}"], Is.EqualTo(2));
        var kq = r.Manifest.Runtime.KvQuant!;
        Assert.That((kq.Mode, kq.Granularity, kq.ElementType, kq.HeadDim, kq.StoredHeadDim),
            Is.EqualTo((mode, granularity, mode == "int8" ? "int8" : "uint8", 16, mode == "int8" ? 16 : 8)));
        Assert.That(kq.ScaleBytes, Is.EqualTo(2 * 2 * (granularity == "channel" ? 2 * 16 : 1) * 4));
        Assert.That(LongCtxManifest.Read(Path.Combine(r.OutputDir, LongCtxFiles.Manifest)).Runtime.KvQuant, Is.EqualTo(kq), "longctx.json round trip");

        var prompt = Enumerable.Range(0, 20).Select(i => (i * 7 + 3) % Config.Vocab).ToArray();
        var expectType = mode == "int8" ? TensorElementType.Int8 : TensorElementType.UInt8;
        using var fpModel = LongCtxModel.Load(fp, Cpu(KvCacheMode.Concat));
        var reference = Steps(fpModel, prompt, null);
        var forced = reference.Select(ArgMax).ToArray(); // decode feeds fp32's greedy tokens to every model
        float[][]? shared = null;
        foreach (var cacheMode in new[] { KvCacheMode.Shared, KvCacheMode.Concat })
        {
            using var q = LongCtxModel.Load(r.OutputDir, Cpu(cacheMode));
            Assert.That(q.Contract.KvType, Is.EqualTo(expectType), "the runtime binds the quantized element type");
            Assert.That(q.Contract.HeadDim, Is.EqualTo(kq.StoredHeadDim), "bytes per head and token");
            Assert.That(q.KvCache, Is.EqualTo(cacheMode));
            var got = Steps(q, prompt, forced);
            if (shared is null) shared = got;
            else for (int i = 0; i < got.Length; i++) Assert.That(got[i], Is.EqualTo(shared[i]), $"step {i}: shared buffer == concat (one quantized cache, two bindings)");
            double worst = 0;
            int agree = 0;
            for (int i = 0; i < got.Length; i++)
            {
                worst = Math.Max(worst, TestSupport.MaxAbsDiff(got[i], reference[i]));
                if (ArgMax(got[i]) == ArgMax(reference[i])) agree++;
            }
            TestContext.Out.WriteLine($"{mode}/{granularity} {cacheMode}: max|logit - fp32| = {worst:E3}, top-1 agreement {agree}/{got.Length}");
            // random-weight builder model, logits ~3: int8 moves them by ~0.02, int4 by ~0.3 (measured 0.2-0.35)
            Assert.That(worst, Is.LessThan(mode == "int8" ? 0.06 : 0.8), $"{mode} stays near fp32");
            Assert.That(got.All(l => l.All(float.IsFinite)));
            Assert.That(agree, Is.GreaterThanOrEqualTo(mode == "int8" ? got.Length - 1 : got.Length / 2));
            Assert.That(worst, Is.GreaterThan(0), "the cache really is quantized");
        }
    }

    /// <summary>Prefill (two chunks: the second after a past) then 5 decode steps of <paramref name="forced"/> tokens (null:
    /// greedy): the logits after each call.</summary>
    private static float[][] Steps(LongCtxModel m, int[] prompt, int[]? forced)
    {
        using var g = m.CreateGenerator();
        var all = new List<float[]> { g.Prefill(prompt[..12], 0) };
        all.Add(g.Prefill(prompt[12..], 0));
        for (int i = 0; i < 5; i++) all.Add(g.Forward([forced?[i + 1] ?? ArgMax(all[^1])]));
        return all.ToArray();
    }

    private static int ArgMax(float[] x) => Array.IndexOf(x, x.Max());

    [Test]
    public void QuantizedModel_FedFp32Cache_ErrorNamesInputAndType()
    {
        var src = Write("m", Config);
        var r = CompileKv(src, "q", "int8", "channel", Calibrate(src, "s"));
        using var q = LongCtxModel.Load(r.OutputDir, Cpu(KvCacheMode.Concat));
        using var g = q.CreateGenerator(new Fp32Cache(q.Contract));
        var ex = Assert.Throws<RuntimeException>(() => g.Prefill([1, 2, 3]));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("'past_key_values.0.key' is float32").And.Contain("cache is int8"));
    }

    /// <summary>An old caller's cache: fp32 [1, Hkv, 0, D] past tensors whatever the model's cache type.</summary>
    private sealed class Fp32Cache(DecoderContract c) : KvCacheManager(c)
    {
        public override int Length => 0;
        public override int? Capacity => null;
        public override long Bytes => 0;
        public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens)
        {
            foreach (var l in Contract.Layers)
                foreach (var n in new[] { l.PastKey, l.PastValue })
                {
                    var v = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, Contract.KvHeads, 0, Contract.HeadDim]);
                    owned.Add(v); names.Add(n); values.Add(v);
                }
        }
        public override void Accept(IReadOnlyList<OrtValue> outputs, int newTokens) { foreach (var o in outputs) o.Dispose(); }
        public override void Clear() { }
        protected override void Dispose(bool disposing) { }
    }

    [Test]
    public void CalibrationPromptLongerThanTheContext_IsAnError()
    {
        var fp = CompileFloat(Write("m", Config), "fp");
        using var m = LongCtxModel.Load(fp, Cpu(KvCacheMode.Concat));
        Assume.That(m.MaxContext, Is.Not.Null, "the compiled model records max_context");
        int max = m.MaxContext!.Value;
        var ex = Assert.Throws<ArgumentException>(() => KvCalibration.Run(m, [new int[max + 2]], new KvScaleModel(fp, "x", 2, 2, 16), "prompts.jsonl"));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain($"{max + 2} tokens").And.Contain($"at most {max}").And.Contain("prompts.jsonl"));
    }

    [Test]
    public void Cli_CalibrateThenCompile_WritesScalesAndQuantizedModel()
    {
        var src = Write("m", Config);
        var scales = Path.Combine(_dir, "cli-scales.json");
        var cal = CliRunner.Run("calibrate", src, "--kv", "--samples", "2", "--length", "16", "--ep", "cpu", "-o", scales);
        Assert.That(cal.ExitCode, Is.EqualTo(0), cal.Stderr);
        Assert.That(cal.Stderr, Does.Contain("built-in synthetic set"), "says it used the built-in set");
        var out1 = Path.Combine(_dir, "cli-q");
        var comp = CliRunner.Run("compile", src, "-o", out1, "--kv", "int4", "--kv-granularity", "tensor", "--calib", scales);
        Assert.That(comp.ExitCode, Is.EqualTo(0), comp.Stderr);
        Assert.That(comp.Stdout, Does.Contain("quantize-kv").And.Contain("2 layers quantized to int4 per tensor"));
        var inspect = CliRunner.Run("inspect", out1);
        Assert.That(inspect.ExitCode, Is.EqualTo(0), inspect.Stderr);
        // 2 layers x K,V x 2 KV heads x 8 bytes (16 int4 channels); float32 2 x 2 x 2 x 16 x 4 = 512; scales 2 x 2 x 4 bytes
        Assert.That(inspect.Stdout, Does.Contain("kv cache  int4 per tensor: 64 bytes/token").And.Contain("+ 16 B of static scales").And.Contain("float32: 512 bytes/token (0.125x)"));
        Assert.That(inspect.Stdout, Does.Contain("at 32k").And.Contain("at 128k").And.Contain("at 1M"));
        // the architecture card and cost model read the real head_dim and mode from longctx.json, not the uint8 [.., 8] I/O
        Assert.That(inspect.Stdout, Does.Contain("head_dim 16").And.Contain("kv cache int4, 32 per layer per K/V")
            .And.Match(@"int4 \(model\)\s+64 B").And.Match(@"fp32\s+512 B"));
        var noCalib = CliRunner.Run("compile", src, "-o", Path.Combine(_dir, "cli-q2"), "--kv", "int8");
        Assert.That(noCalib.ExitCode, Is.EqualTo(0), noCalib.Stderr);
        Assert.That(noCalib.Stderr, Does.Contain("calibrating on the built-in synthetic set"));
        var bad = CliRunner.Run("compile", src, "-o", Path.Combine(_dir, "x"), "--kv", "int3");
        Assert.That((bad.ExitCode, bad.Stderr.Trim()), Is.EqualTo((1, "lcc: error: --kv int3: unknown mode; valid: int8, int4, int4:rotate, kivi2, kivi4")));
        var noKv = CliRunner.Run("calibrate", src);
        Assert.That(noKv.ExitCode, Is.EqualTo(1));
        Assert.That(noKv.Stderr, Does.StartWith("lcc: error: lcc calibrate needs one of --kv or --attention"));
    }
}

/// <summary>The hadamard-kv pass: exact with no quantization (fp32 logits within 1e-5), and what it refuses.</summary>
[TestFixture]
public class HadamardRotationTests
{
    private string _dir = "";
    [SetUp] public void SetUp() => _dir = TestSupport.TempDir("kvq-rot");
    [TearDown] public void TearDown() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    [Test]
    public void Sylvester_IsSymmetricOrthogonal()
    {
        const int d = 16;
        var h = LongCtx.Passes.Kv.HadamardRotateKv.Sylvester(d);
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
            {
                Assert.That(h[i * d + j], Is.EqualTo(h[j * d + i]), "symmetric");
                double dot = 0;
                for (int k = 0; k < d; k++) dot += h[i * d + k] * h[j * d + k];
                Assert.That(dot, Is.EqualTo(i == j ? 1.0 : 0.0).Within(1e-6), "H H^T = I");
            }
    }

    public static IEnumerable<TestCaseData> Models()
    {
        yield return new TestCaseData(new DecoderConfig(Layers: 2, Hidden: 64, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 96), "torch").SetName("Rotation_Exact_TorchBuilder");
        yield return new TestCaseData(new DecoderConfig(Layers: 2, Hidden: 64, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 96), "gqa").SetName("Rotation_Exact_GqaBuilder");
        yield return new TestCaseData(new DecoderConfig(Layers: 2, Hidden: 128, Heads: 4, KvHeads: 2, HeadDim: 32, Vocab: 96, RotaryDim: 16, Interleaved: true), "gqa").SetName("Rotation_Exact_PartialInterleavedRope");
    }

    [TestCaseSource(nameof(Models))]
    public void Rotation_LeavesFp32LogitsUnchanged(DecoderConfig c, string form)
    {
        var src = Path.Combine(_dir, "model.onnx");
        OnnxWriter.Save(Builders.Build(form, c), src, new SaveOptions { AllInline = true });
        var plain = CompileJob.Run(src, Path.Combine(_dir, "fp"), Pipelines.Instantiate(Pipelines.Default));
        var rot = CompileJob.Run(src, Path.Combine(_dir, "rot"), Pipelines.Instantiate([.. Pipelines.Default, new PipelineStep("hadamard-kv")]));
        Assert.That(rot.Pipeline.Passes.Last().Counts["attention layers rotated"], Is.EqualTo(c.Layers));
        AssertSameLogits(plain.OutputDir, rot.OutputDir, c.Vocab, 1e-5);
    }

    [Test]
    public void Rotation_Exact_RecallPublic()
    {
        var src = TestSupport.Fixture("recall-public/model.onnx");
        var plain = CompileJob.Run(src, Path.Combine(_dir, "fp"), Pipelines.Instantiate(Pipelines.Default));
        var rot = CompileJob.Run(src, Path.Combine(_dir, "rot"), Pipelines.Instantiate([.. Pipelines.Default, new PipelineStep("hadamard-kv")]));
        // the trained model's logits reach |12.7| and its attention is sharp: float32 rounding of the rotated q/k (one
        // extra D-term dot product) moves them by ~1.4e-5 absolute, ~1e-6 relative; the exact canonicalization itself
        // (original graph vs compiled, printed) moves them by the same order. Tolerance: 1e-5 relative to the logit scale.
        AssertSameLogits(src, plain.OutputDir, 256, 1e-4, concat: true);
        AssertSameLogits(plain.OutputDir, rot.OutputDir, 256, 1e-5, relative: true);
    }

    /// <summary>Prefill 24 tokens (two chunks) and 6 decode steps on both models, shared-buffer cache: max |logit difference|.</summary>
    private static void AssertSameLogits(string a, string b, int vocab, double tolerance, bool relative = false, bool concat = false)
    {
        var o = new RuntimeOptions { ExecutionProvider = ExecutionProviderKind.Cpu, IntraOpThreads = 1, Log = _ => { }, KvCache = concat ? KvCacheMode.Concat : KvCacheMode.Auto };
        using var ma = LongCtxModel.Load(a, o);
        using var mb = LongCtxModel.Load(b, o);
        using var ga = ma.CreateGenerator();
        using var gb = mb.CreateGenerator();
        var prompt = Enumerable.Range(0, 24).Select(i => (i * 37 + 11) % vocab).ToArray();
        double worst = 0, scale = 1;
        float[] la = ga.Prefill(prompt, concat ? 0 : 16), lb = gb.Prefill(prompt, concat ? 0 : 16);
        for (int i = 0; ; i++)
        {
            worst = Math.Max(worst, TestSupport.MaxAbsDiff(la, lb));
            scale = Math.Max(scale, la.Max(MathF.Abs));
            if (i == 6) break;
            int t = Array.IndexOf(la, la.Max());
            la = ga.Forward([t]); lb = gb.Forward([t]);
        }
        TestContext.Out.WriteLine($"{Path.GetFileName(a)} vs {Path.GetFileName(b)}: max |logit difference| = {worst:E3}; max |logit| = {scale:F2}");
        Assert.That(worst, Is.LessThanOrEqualTo(relative ? tolerance * scale : tolerance));
    }

    [Test]
    public void Rotation_NonPowerOfTwoHeadDim_IsAnError()
    {
        var src = Path.Combine(_dir, "model.onnx");
        OnnxWriter.Save(Builders.Build("gqa", new DecoderConfig(Layers: 1, Hidden: 48, Heads: 2, KvHeads: 1, HeadDim: 24, RotaryDim: 16, Vocab: 64)), src, new SaveOptions { AllInline = true });
        var ex = Assert.Throws<CompileException>(() => CompileJob.Run(src, Path.Combine(_dir, "rot"), Pipelines.Instantiate([.. Pipelines.Default, new PipelineStep("hadamard-kv")])));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("head_dim 24 is not a power of two"));
    }
}

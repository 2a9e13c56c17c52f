using LongCtx.Compiler;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Contract;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using LongCtx.Tests.Foundation;
using NUnit.Framework;

namespace LongCtx.Tests.KvQuant;

/// <summary>
/// lcc compile --kv kivi2|kivi4 on a builder decoder (2 layers, 2 KV heads x 16 channels): the kivi-kv pass (counts, I/O
/// types, runtime.kivi), the runtime's KiviKvCache (dtypes bound, the residual folded in groups at the token counts of
/// <see cref="KiviLayout.Split"/>), logits against the fp32 model, exactness while nothing is folded, lcc inspect's
/// footprint, and the bad inputs (head_dim vs group, --attention and --kv-evict named with --kv kivi*).
/// </summary>
[TestFixture]
public class KiviCompileTests
{
    private static readonly DecoderConfig Config = new(Layers: 2, Hidden: 64, Heads: 4, KvHeads: 2, HeadDim: 16, Vocab: 96, MaxPositions: 128);

    private string _dir = "";
    [SetUp] public void SetUp() => _dir = TestSupport.TempDir("kivi");
    [TearDown] public void TearDown() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private static RuntimeOptions Cpu() => new() { ExecutionProvider = ExecutionProviderKind.Cpu, IntraOpThreads = 1, Log = _ => { } };

    private string Write()
    {
        var dir = Path.Combine(_dir, "src");
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "model.onnx");
        OnnxWriter.Save(Builders.Build("torch", Config), path, new SaveOptions { AllInline = true });
        return path;
    }

    private CompileResult Compile(string src, string name, int bits, int group, int residual) =>
        CompileJob.Run(src, Path.Combine(_dir, name), Pipelines.Instantiate([.. Pipelines.Default, new PipelineStep("kivi-kv",
            new Dictionary<string, string> { ["bits"] = $"{bits}", ["group"] = $"{group}", ["residual"] = $"{residual}" })]));

    [TestCase(4, 0.25)] // measured 0.07, top-1 30/30
    [TestCase(2, 1.0)]  // measured 0.35, top-1 25/30
    public void Compiled_PrefillAndDecode_FoldsTheResidual(int bits, double tolerance)
    {
        const int group = 8, residual = 16;
        var src = Write();
        var fp = CompileJob.Run(src, Path.Combine(_dir, "fp"), Pipelines.Instantiate(Pipelines.Default)).OutputDir;
        var r = Compile(src, "kivi", bits, group, residual);
        Assert.That(r.Pipeline.Passes.Last().Counts[$"layers lowered to KiviAttention ({bits}-bit)"], Is.EqualTo(2));
        var k = r.Manifest.Runtime.Kivi!;
        Assert.That(k, Is.EqualTo(new KiviLayout(bits, group, residual, 16, 2, 2)));
        Assert.That(LongCtxManifest.Read(Path.Combine(r.OutputDir, LongCtxFiles.Manifest)).Runtime.Kivi, Is.EqualTo(k), "longctx.json round trip");

        using var fpModel = LongCtxModel.Load(fp, Cpu());
        using var q = LongCtxModel.Load(r.OutputDir, Cpu());
        Assert.That(q.Contract.KvType, Is.EqualTo(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float), "the residual is fp32");
        using var gf = fpModel.CreateGenerator();
        var cache = (KiviKvCache)q.CreateCache();
        using var gq = q.CreateGenerator(cache);
        var prompt = Enumerable.Range(0, 30).Select(i => (i * 7 + 3) % Config.Vocab).ToArray();
        var lf = gf.Prefill(prompt[..20]);
        var lq = gq.Prefill(prompt[..20]);
        Assert.That((cache.QuantizedLength, cache.ResidualLength), Is.EqualTo((0, 20)), "20 < R + G = 24: nothing folded yet");
        Assert.That(TestSupport.MaxAbsDiff(lq, lf), Is.LessThan(1e-4), "no token quantized yet: KiviAttention is exact attention");
        lf = gf.Prefill(prompt[20..]);
        lq = gq.Prefill(prompt[20..]);
        Assert.That((cache.QuantizedLength, cache.ResidualLength), Is.EqualTo((8, 22)), "30 tokens: one group of 8 folded, 22 left");
        double worst = 0;
        int agree = 0, steps = 30;
        for (int i = 0; i < steps; i++)
        {
            int next = Array.IndexOf(lf, lf.Max()); // both models are fed fp32's greedy tokens
            if (Array.IndexOf(lq, lq.Max()) == next) agree++;
            worst = Math.Max(worst, TestSupport.MaxAbsDiff(lq, lf));
            lf = gf.Forward([next]);
            lq = gq.Forward([next]);
            int n = 31 + i;
            var (qn, rn) = k.Split(n);
            Assert.That((cache.QuantizedLength, cache.ResidualLength), Is.EqualTo(((int)qn, (int)rn)), $"after {n} tokens");
            Assert.That(cache.ResidualLength, Is.InRange(residual, residual + group - 1));
        }
        Assert.That(cache.Length, Is.EqualTo(60));
        Assert.That(cache.QuantizedLength, Is.EqualTo(40));
        TestContext.Out.WriteLine($"kivi{bits}: max|logit - fp32| = {worst:E3}, top-1 agreement {agree}/{steps}, cache {cache.Bytes} bytes");
        Assert.That(worst, Is.GreaterThan(0), "the store really is quantized");
        Assert.That(worst, Is.LessThan(tolerance), $"kivi{bits} stays near fp32 (random-weight builder model, logits ~3)");
        Assert.That(agree, Is.GreaterThanOrEqualTo(steps / 2));
        long fp32Bytes = 2L * 2 * 2 * 60 * 16 * 4;
        Assert.That(cache.Bytes, Is.EqualTo(k.Bytes(60)), "the manager holds what KiviLayout.Bytes says");
        Assert.That(cache.Bytes, Is.LessThan(fp32Bytes));
    }

    [Test]
    public void Inspect_ShowsBytesPerTokenAndAtLengths()
    {
        var r = Compile(Write(), "kivi", 2, 8, 16);
        var (rc, stdout, stderr) = CliRunner.Run("inspect", r.ModelPath);
        Assert.That(rc, Is.Zero, stderr);
        // per head and token: codes 2 x 16*2/8 = 8, key params 2*16*4/8 = 16, value params 2*2*4 = 16 => 40 bytes x 2 layers x 2 heads
        Assert.That(stdout, Does.Contain("KIVI 2-bit").And.Contain("160.0 bytes/token quantized").And.Contain("float32: 512 bytes/token"));
        Assert.That(stdout, Does.Contain("at 32k").And.Contain("at 1M"));
        Assert.That(new KiviLayout(2, 8, 16, 16, 2, 2).Bytes(1 << 20), Is.EqualTo(160L * ((1 << 20) - 16) + 16 * 512));
    }

    [Test]
    public void HeadDimNotAMultipleOfTheGroup_IsOneLineError()
    {
        var ex = Assert.Throws<CompileException>(() => Compile(Write(), "bad", 2, 32, 128));
        Assert.That(ex!.Message, Does.Contain("layer 0: head_dim 16 is not a multiple of 8 and of --kv-group 32"));
        Assert.That(ex.Message, Does.Not.Contain("\n"));
    }

    [Test]
    public void Cli_KiviOptionWithoutKivi_IsOneLineError()
    {
        var (rc, _, stderr) = CliRunner.Run("compile", Write(), "-o", Path.Combine(_dir, "out"), "--kv-group", "16");
        Assert.That(rc, Is.Not.Zero);
        Assert.That(stderr.Trim(), Is.EqualTo("lcc: error: --kv-group applies to --kv kivi2|kivi4 only; add --kv kivi2 or --kv kivi4, or drop --kv-group"));
    }

    [TestCase("--attention", "dense", "does not combine with --attention")]
    [TestCase("--kv-evict", "snapkv", "does not combine with --kv-evict")]
    public void Cli_KiviWithAnotherCacheOption_NamesBoth(string option, string value, string message)
    {
        var src = Write();
        var (rc, _, stderr) = CliRunner.Run("compile", src, "-o", Path.Combine(_dir, "out"), "--kv", "kivi2", option, value);
        Assert.That(rc, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("--kv kivi2").And.Contain(message));
        Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1), stderr);
    }
}

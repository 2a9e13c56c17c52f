using System.Diagnostics;
using System.Globalization;
using LongCtx.Runtime;
using LongCtx.Runtime.Bench;
using LongCtx.Runtime.Eval;
using LongCtx.Tests.Foundation;
using NUnit.Framework;

namespace LongCtx.Tests.KvQuant;

/// <summary>
/// Issue 11's measurements, side by side and interleaved in one run (explicit: CPU-heavy, run by hand on a quiet box).
/// For each eval length, recall-public is compiled once per KV variant through the CLI (YaRN --context L above the
/// trained 256; each --kv variant calibrates itself on the built-in synthetic set, no eval data), then every variant is
/// evaluated on the same prompts: accuracy, points against fp32, logit KL / top-1 agreement against fp32 on a random
/// prompt of length L, KV bytes per token. Then decode ms/token, KV MiB and peak RSS (reset before each measurement) at
/// the decode lengths, models compiled for the longest. Environment:
/// LONGCTX_KVQ_LENGTHS (default 256,512,1024,2048,4096,16384), LONGCTX_KVQ_LIMIT (prompts per set, 0 = all; default 20),
/// LONGCTX_KVQ_DECODE (default 8k,32k), LONGCTX_KVQ_DECODE_STEPS (default 16), LONGCTX_KVQ_VARIANTS (default all, e.g. fp32,int8/channel,fp32/long-attention,kivi4,kivi2).
/// <code>LONGCTX_TESTS=all LONGCTX_KVQ_LIMIT=0 ./test.sh -c Release --no-build --filter "FullyQualifiedName~KvQuantBench" --logger "console;verbosity=detailed"</code>
/// (LONGCTX_TESTS=all: without it test.sh adds a category clause and NUnit skips the explicit fixture).
/// LONGCTX_KVQ_DECODE=none measures accuracy only (decode and memory side by side: lcc bench with repeated --baseline).
/// </summary>
[TestFixture, Explicit("benchmark: minutes of CPU; run by hand"), Category("Bench")]
public class KvQuantBench
{
    private static readonly (string Name, string[] Args)[] AllVariants =
    [
        ("fp32", []),
        ("int8/tensor", ["--kv", "int8", "--kv-granularity", "tensor"]),
        ("int8/channel", ["--kv", "int8", "--kv-granularity", "channel"]),
        ("int4/tensor", ["--kv", "int4", "--kv-granularity", "tensor"]),
        ("int4/channel", ["--kv", "int4", "--kv-granularity", "channel"]),
        ("int4:rotate/tensor", ["--kv", "int4:rotate", "--kv-granularity", "tensor"]),
        ("int4:rotate/channel", ["--kv", "int4:rotate", "--kv-granularity", "channel"]),
        ("fp32/long-attention", ["--attention", "dense"]), // the fp32 LongAttention kernel KIVI is compared with at decode
        ("kivi4", ["--kv", "kivi4"]),                       // KIVI: residual 128, group 32 (the paper's defaults)
        ("kivi2", ["--kv", "kivi2"]),
    ];

    private static string Env(string name, string dflt) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : dflt;

    private string _dir = "";
    [SetUp] public void SetUp() => _dir = TestSupport.TempDir("kvq-bench");
    [TearDown] public void TearDown() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private (string Name, string[] Args)[] Variants()
    {
        var want = Env("LONGCTX_KVQ_VARIANTS", "all");
        return want == "all" ? AllVariants : AllVariants.Where(v => want.Split(',').Contains(v.Name)).ToArray();
    }

    private string Compile(string src, string name, string[] args, int context)
    {
        var dir = Path.Combine(_dir, name);
        string[] rope = context > 256 ? ["--rope", "yarn", "--context", context.ToString(CultureInfo.InvariantCulture)] : [];
        var r = CliRunner.Run(["compile", src, "-o", dir, "--force", .. rope, .. args]);
        Assert.That(r.ExitCode, Is.EqualTo(0), $"compile {name}: {r.Stderr}");
        return dir;
    }

    private static RuntimeOptions Cpu => new() { ExecutionProvider = ExecutionProviderKind.Cpu, Log = _ => { } };

    [Test]
    public void Accuracy_Fidelity_Memory_Decode()
    {
        var src = TestSupport.Fixture("recall-public/model.onnx");
        int limit = int.Parse(Env("LONGCTX_KVQ_LIMIT", "20"), CultureInfo.InvariantCulture);
        var variants = Variants();
        Assert.That(variants[0].Name, Is.EqualTo("fp32"), "fp32 first: the others are compared with it");
        TestContext.Out.WriteLine("uptime: " + Uptime());
        TestContext.Out.WriteLine($"{"length",6}  {"variant",-20}  {"accuracy",8}  {"vs fp32",7}  {"KL",9}  {"top1",5}  {"KV B/token",10}");
        foreach (int len in RuntimeCliOptionsLengths(Env("LONGCTX_KVQ_LENGTHS", "256,512,1024,2048,4096,16384")))
        {
            var file = Path.Combine(TestSupport.SharedModels, "recall-public", $"eval_{len}.jsonl");
            if (!File.Exists(file)) { TestContext.Out.WriteLine($"{len,6}  (no {Path.GetFileName(file)})"); continue; }
            var items = NeedleEval.Read(file, limit);
            var models = variants.Select(v => (v.Name, Model: LongCtxModel.Load(Compile(src, $"{v.Name.Replace('/', '-').Replace(':', '-')}-{len}", v.Args, len), Cpu))).ToList();
            try
            {
                double fpAcc = 0;
                foreach (var (name, m) in models)
                {
                    var acc = NeedleEval.Run(m, file, items, 2048).Accuracy;
                    if (name == "fp32") fpAcc = acc;
                    var f = name == "fp32" ? null : Benchmark.Compare(models[0].Model, m, len, 8, 2048);
                    TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{len,6}  {name,-20}  {acc,8:F3}  {(acc - fpAcc) * 100,7:+0.0;-0.0;0.0}  {(f is null ? "-" : f.MeanKl.ToString("G3")),9}  {(f is null ? "-" : f.Top1Agreement.ToString("F3")),5}  {KvBytesPerToken(m),10:F0}"));
                }
            }
            finally { foreach (var (_, m) in models) m.Dispose(); }
        }

        if (Env("LONGCTX_KVQ_DECODE", "8k,32k") == "none") return; // accuracy only; decode and memory: lcc bench --baseline ... (docs/results.md)
        var decode = RuntimeCliOptionsLengths(Env("LONGCTX_KVQ_DECODE", "8k,32k"));
        int steps = int.Parse(Env("LONGCTX_KVQ_DECODE_STEPS", "16"), CultureInfo.InvariantCulture);
        int top = decode.Max();
        TestContext.Out.WriteLine($"decode (models compiled with --rope yarn --context {top}; shared KV buffer; {steps} steps after a one-piece-chunked prefill); uptime: {Uptime()}");
        TestContext.Out.WriteLine($"{"length",6}  {"variant",-20}  {"decode ms/tok",13}  {"prefill ms",10}  {"KV MiB",8}  {"peak RSS MiB",12}");
        var dec = variants.Select(v => (v.Name, Model: LongCtxModel.Load(Compile(src, $"dec-{v.Name.Replace('/', '-').Replace(':', '-')}", v.Args, top), Cpu with { MaxContext = top + steps + 8 }))).ToList();
        try
        {
            foreach (int len in decode)
                foreach (var (name, m) in dec) // interleaved: every variant at one length before the next length
                {
                    var r = Benchmark.Measure(m, len, steps, 1, 2048);
                    TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{len,6}  {name,-20}  {r.DecodeMsPerToken.Median,13:F2}  {r.PrefillMs.Median,10:F0}  {r.KvBytes / 1048576.0,8:F2}  {r.PeakRssBytes / 1048576.0,12:F0}"));
                }
        }
        finally { foreach (var (_, m) in dec) m.Dispose(); }
    }

    /// <summary>Stored KV bytes per token: KIVI's quantized store with scales and zeros amortised (the fp32 residual is a
    /// constant R..R+G-1 tokens), else the cache tensors' element size.</summary>
    private static double KvBytesPerToken(LongCtxModel m) => m.Runtime.Kivi is { } k ? k.QuantizedBytesPerToken : m.Contract.KvBytesPerToken;

    private static int[] RuntimeCliOptionsLengths(string s) => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(t => t.EndsWith('k') ? 1024 * int.Parse(t[..^1], CultureInfo.InvariantCulture) : int.Parse(t, CultureInfo.InvariantCulture)).ToArray();

    private static string Uptime()
    {
        try { return File.ReadAllText("/proc/loadavg").Trim() + " (loadavg)"; }
        catch (IOException) { return "?"; }
    }
}

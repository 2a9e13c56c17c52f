using System.Diagnostics;
using System.Text;
using NUnit.Framework;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Runtime;
using LongCtx.Runtime.KvStore;
using LongCtx.Runtime.Sessions;
using LongCtx.Tests.Rope;
using LongCtx.Tests.Runtime;

namespace LongCtx.Tests.KvStore;

/// <summary>
/// KV-store benchmark on recall-public (YaRN-scaled to the prompt length, where the PyTorch baseline is 1.0): per
/// prompt, prefill the haystack (prompt minus QUERY KEY ANSWER), export, answer with the live cache, then for each codec
/// (order rotated per prompt, so the codecs are interleaved) save, load into a fresh cache (the model's default kind) and answer. Prints bytes per
/// token, save / load (file to cache) time against the prefill, accuracy and logit / KV error. Settings from the
/// environment: LONGCTX_KVBENCH_N (prompts, 10), LONGCTX_KVBENCH_LEN (256..4096, 4096), LONGCTX_KVBENCH_CODECS
/// (';'-separated --kv-codec specs, "raw;int8;cachegen"), LONGCTX_KVBENCH_MODEL (a model or compiled folder to use
/// instead, e.g. <c>lcc compile recall-public/model.onnx -o OUT --context 4096 --rope yarn</c>).
/// <code>LONGCTX_KVBENCH_N=20 ./test.sh -c Release --no-build --filter "FullyQualifiedName~KvStoreBench"</code>
/// </summary>
[TestFixture, Explicit("benchmark: minutes of CPU; run on a quiet machine")]
public sealed class KvStoreBench
{
    private static string Env(string name, string fallback) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : fallback;

    private sealed class Row(string spec)
    {
        public string Spec { get; } = spec;
        public long Bytes, Tokens, Correct;
        public double SaveMs, LoadMs, MaxLogit, ErrSq, RefSq;
    }

    [Test]
    public void Measure()
    {
        int n = int.Parse(Env("LONGCTX_KVBENCH_N", "10")), len = int.Parse(Env("LONGCTX_KVBENCH_LEN", "4096"));
        var specs = Env("LONGCTX_KVBENCH_CODECS", "raw;int8;cachegen").Split(';', StringSplitOptions.RemoveEmptyEntries);
        var dir = TestSupport.TempDir("kvbench");
        try
        {
            string modelPath = Env("LONGCTX_KVBENCH_MODEL", "");
            if (modelPath.Length == 0)
            {
                var graph = RopeFixture.LoadRecall();
                if (len > 256) RopeFixture.Apply(graph, "yarn", RopeFixture.Opts(("context", len.ToString())));
                modelPath = Path.Combine(dir, "model.onnx");
                OnnxWriter.Save(graph, modelPath, new SaveOptions { AllInline = true });
            }
            using var model = LongCtxModel.Load(modelPath, RuntimeFixtures.Cpu() with { IntraOpThreads = 0 });
            string hash = model.ModelHash;
            var items = LongCtx.Runtime.Eval.NeedleEval.Read(Path.Combine(RuntimeFixtures.Recall, $"eval_{len}.jsonl"), n);
            var rows = specs.Select(s => new Row(s)).ToArray();
            long fullCorrect = 0;
            double prefillMs = 0;
            using var g = model.CreateGenerator();
            for (int i = 0; i < items.Count; i++)
            {
                var hay = items[i].Prompt[..^3];
                var question = items[i].Prompt[^3..];
                g.Reset();
                var sw = Stopwatch.StartNew();
                g.Prefill(hay, 2048);
                prefillMs += sw.Elapsed.TotalMilliseconds;
                var snap = KvTransfer.Export(g.Cache, hash, 0, hay, hay.Length);
                var want = g.Forward(question);
                fullCorrect += Sampler.ArgMax(want) == items[i].Expected ? 1 : 0;
                for (int k = 0; k < rows.Length; k++)
                {
                    var r = rows[(i + k) % rows.Length];
                    var path = Path.Combine(dir, "kv.lckv");
                    sw.Restart();
                    KvStoreFile.Save(path, snap, KvCodecs.Get(r.Spec));
                    r.SaveMs += sw.Elapsed.TotalMilliseconds;
                    r.Bytes += new FileInfo(path).Length;
                    r.Tokens += hay.Length;
                    sw.Restart();
                    var back = KvStoreFile.Load(path, hash);
                    using var g2 = model.CreateGenerator(); // the model's default cache, as lcc run --load-kv
                    KvTransfer.Import(g2.Cache, [back], back.NextPosition);
                    r.LoadMs += sw.Elapsed.TotalMilliseconds;
                    var got = g2.Forward(question);
                    r.Correct += Sampler.ArgMax(got) == items[i].Expected ? 1 : 0;
                    r.MaxLogit = Math.Max(r.MaxLogit, got.Zip(want, (a, b) => Math.Abs(a - b)).Max());
                    for (int l = 0; l < snap.Layers; l++)
                        foreach (var (a, b) in new[] { (snap.Keys[l], back.Keys[l]), (snap.Values[l], back.Values[l]) })
                            for (int e = 0; e < a.Length; e++) { r.ErrSq += (a[e] - b[e]) * (double)(a[e] - b[e]); r.RefSq += a[e] * (double)a[e]; }
                }
            }
            var int8 = rows.FirstOrDefault(r => r.Spec == "int8");
            var o = new StringBuilder();
            o.AppendLine($"uptime: {Uptime()}");
            o.AppendLine($"{(Env("LONGCTX_KVBENCH_MODEL", "") is { Length: > 0 } given ? given : $"recall-public + YaRN({len})")} ({model.KvCache} cache), {items.Count} prompts of {len} tokens, haystack = prompt minus QUERY KEY ANSWER; {Environment.ProcessorCount} cores");
            o.AppendLine($"live cache: accuracy {fullCorrect}/{items.Count}, prefill {prefillMs / items.Count:F0} ms per haystack");
            o.AppendLine($"{"codec",-44} {"B/token",9} {"x int8",7} {"save ms",8} {"load ms",8} {"load/prefill",12} {"acc",7} {"max|dlogit|",11} {"rel rms KV err",14}");
            foreach (var r in rows)
                o.AppendLine($"{r.Spec,-44} {(double)r.Bytes / r.Tokens,9:F1} {(int8 is null ? "-" : ((double)r.Bytes / int8.Bytes).ToString("F3")),7} {r.SaveMs / items.Count,8:F1} {r.LoadMs / items.Count,8:F1} {r.LoadMs / prefillMs,12:F4} {r.Correct + "/" + items.Count,7} {r.MaxLogit,11:G3} {Math.Sqrt(r.ErrSq / Math.Max(r.RefSq, 1e-30)),14:G3}");
            foreach (var spec in specs) o.AppendLine($"  {spec}: {KvCodecs.Get(spec).ErrorBound}");
            TestContext.Out.Write(o.ToString());
            Console.Write(o.ToString());
        }
        finally { Directory.Delete(dir, true); }
    }

    private static string Uptime()
    {
        try { return File.ReadAllText("/proc/loadavg").Trim(); }
        catch (IOException) { return "unknown"; }
    }
}

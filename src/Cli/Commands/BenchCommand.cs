using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using LongCtx.Runtime;
using LongCtx.Runtime.Bench;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc bench MODEL [--baseline OTHER]... --lengths 256,512,1k,4k [--decode 32] [--reps 3]</c>:
/// prefill time, decode ms/token, KV bytes, peak RSS; with a baseline, logit fidelity. Table + JSON + PNG.
/// <c>--baseline</c> repeats: every model is measured at one length before the next length (baselines in the order
/// given, then MODEL), so load drift on a shared box hits all of them alike; fidelity is against the first baseline.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "model .onnx or compiled folder" };
        var baseline = new Option<string[]>("--baseline") { Description = "a model measured side by side, interleaved per length; repeat for several (fidelity is reported against the first)", Arity = ArgumentArity.ZeroOrMore };
        var noFidelity = new Option<bool>("--no-fidelity") { Description = "skip the logit comparison with the first baseline (it prefills both models once more per length)" };
        var baselineKv = new Option<string?>("--baseline-kv-cache") { Description = "KV cache of the baseline (auto|concat|shared; default: --kv-cache); e.g. the same model with --baseline-kv-cache concat" };
        var lengths = new Option<string>("--lengths") { Description = "prompt lengths, e.g. 256,512,1k,4k", DefaultValueFactory = _ => "256,512,1k,4k" };
        var decode = new Option<int>("--decode") { Description = "decode steps timed per length", DefaultValueFactory = _ => 32 };
        var reps = new Option<int>("--reps") { Description = "repetitions per length (median and min-max are reported)", DefaultValueFactory = _ => 3 };
        var chunk = new Option<int>("--chunk") { Description = "prefill chunk size (0 = one piece)", DefaultValueFactory = _ => 2048 };
        var seed = new Option<int>("--seed") { Description = "seed of the random prompts", DefaultValueFactory = _ => 0 };
        var jsonOut = new Option<FileInfo?>("--json-out") { Description = "JSON results (default: bench.json)" };
        var plot = new Option<FileInfo?>("--plot") { Description = "PNG plot of prefill time and peak memory against length (default: bench.png)" };
        var rt = new RuntimeCliOptions();
        var cmd = new Command("bench", "Prefill/decode speed, KV bytes, peak memory and (with --baseline) logit fidelity per prompt length")
            { model, baseline, baselineKv, noFidelity, lengths, decode, reps, chunk, seed, jsonOut, plot };
        rt.AddTo(cmd);
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() =>
        {
            var lens = RuntimeCliOptions.ParseLengths(pr.GetValue(lengths)!);
            var json = OutputFiles.Check(pr.GetValue(jsonOut)?.FullName ?? "bench.json", "--json-out");
            var png = OutputFiles.Check(pr.GetValue(plot)?.FullName ?? "bench.png", "--plot");
            int nDecode = pr.GetValue(decode), nReps = Math.Max(1, pr.GetValue(reps)), nChunk = pr.GetValue(chunk), s = pr.GetValue(seed);
            var opts = rt.Build(pr);
            using var cand = RuntimeCliOptions.Load(pr.GetValue(model)!, opts);
            var baseOpts = pr.GetValue(baselineKv) is { } bk ? opts with { KvCache = RuntimeOptions.ParseKvCache(bk) } : opts;
            var bases = new List<LongCtxModel>();
            using var disposeBases = new Disposer(bases);
            foreach (var b in pr.GetValue(baseline) ?? []) bases.Add(RuntimeCliOptions.Load(b, baseOpts));
            var basem = bases.FirstOrDefault();
            bool fidelity = !pr.GetValue(noFidelity);
            // rows name the KV cache when the two sides differ in it
            string Tag(LongCtxModel m) => basem is not null && basem.KvCache != cand.KvCache ? $" [{m.KvCache.ToString().ToLowerInvariant()} kv]" : "";
            var rows = new List<BenchRow>();
            string load = Uptime();
            Console.Error.WriteLine("bench: load average " + load);
            foreach (var len in lens)
            {
                foreach (var (bm, i) in bases.Select((m, i) => (m, i)))
                {
                    var br = Benchmark.Measure(bm, len, nDecode, nReps, nChunk, s, ct);
                    br = br with { Model = (bases.Count == 1 ? "baseline " : $"baseline{i + 1} ") + br.Model + Tag(bm) };
                    if (i > 0 && fidelity) br = br with { VsBaseline = Benchmark.Compare(basem!, bm, len, Math.Min(nDecode, 8), nChunk, s, ct) };
                    rows.Add(br);
                    Console.Error.WriteLine(Line(br));
                }
                var row = Benchmark.Measure(cand, len, nDecode, nReps, nChunk, s, ct);
                row = row with { Model = row.Model + Tag(cand) };
                if (basem is not null && fidelity) row = row with { VsBaseline = Benchmark.Compare(basem, cand, len, Math.Min(nDecode, 8), nChunk, s, ct) };
                rows.Add(row);
                Console.Error.WriteLine(Line(row));
            }
            load += " -> " + Uptime();
            Console.Out.Write(Table(rows, cand.Provider));
            Console.Out.WriteLine($"(load average at start -> end: {load})");
            OutputFiles.Write(json, tmp => File.WriteAllText(tmp, JsonSerializer.Serialize(new { provider = cand.Provider.ToString(), chunk = nChunk, rows }, Cli.Json) + "\n"));
            OutputFiles.Write(png, tmp => Plot(rows, tmp));
            Console.Out.WriteLine($"wrote {json}, {png}");
            return Cli.Ok;
        })));
        return cmd;
    }

    /// <summary>The 1/5/15-minute load averages (/proc/loadavg), or "n/a" off Linux.</summary>
    private static string Uptime()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "n/a"; }
        catch (UnauthorizedAccessException) { return "n/a"; }
    }

    /// <summary>Disposes the baselines loaded so far, also when a later one fails to load.</summary>
    private sealed class Disposer(List<LongCtxModel> models) : IDisposable
    {
        public void Dispose() { foreach (var m in models) m.Dispose(); }
    }

    private static string Line(BenchRow r) => $"bench: {r.Model} L={r.Length} prefill {r.PrefillMs.Median:F1} ms, decode {r.DecodeMsPerToken.Median:F2} ms/token";

    private static string Mib(long b) => (b / 1048576.0).ToString("F1", CultureInfo.InvariantCulture);

    public static string Table(IReadOnlyList<BenchRow> rows, ExecutionProviderKind ep)
    {
        var sb = new StringBuilder();
        int w = Math.Max(5, rows.Max(r => r.Model.Length));
        sb.AppendLine($"{"model".PadRight(w)}  {"length",6}  {"prefill ms (min-max)",24}  {"decode ms/tok (min-max)",24}  {"KV MiB",7}  {"peak RSS MiB",12}  {"max|dlogit|",11}  {"KL",9}  {"top1",5}");
        foreach (var r in rows)
        {
            var f = r.VsBaseline;
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Model.PadRight(w)}  {r.Length,6}  {$"{r.PrefillMs.Median:F1} ({r.PrefillMs.Min:F1}-{r.PrefillMs.Max:F1})",24}  {$"{r.DecodeMsPerToken.Median:F2} ({r.DecodeMsPerToken.Min:F2}-{r.DecodeMsPerToken.Max:F2})",24}  {Mib(r.KvBytes),7}  {Mib(r.PeakRssBytes),12}  {(f is null ? "-" : f.MaxAbsDiff.ToString("G3")),11}  {(f is null ? "-" : f.MeanKl.ToString("G3")),9}  {(f is null ? "-" : f.Top1Agreement.ToString("F3")),5}"));
        }
        sb.AppendLine($"({SessionFactoryName(ep)}; {rows[0].Reps} reps, {rows[0].DecodeTokens} decode tokens; median (min-max))");
        return sb.ToString();
    }

    private static string SessionFactoryName(ExecutionProviderKind ep) => ep.ToString().ToUpperInvariant() + " EP";

    private static void Plot(IReadOnlyList<BenchRow> rows, string path)
    {
        var plt = new ScottPlot.Plot();
        foreach (var group in rows.GroupBy(r => r.Model))
        {
            var xs = group.Select(r => (double)r.Length).ToArray();
            var t = plt.Add.Scatter(xs, group.Select(r => r.PrefillMs.Median).ToArray());
            t.LegendText = $"{group.Key} prefill ms";
            var m = plt.Add.Scatter(xs, group.Select(r => r.PeakRssBytes / 1048576.0).ToArray());
            m.LegendText = $"{group.Key} peak RSS MiB";
            m.LinePattern = ScottPlot.LinePattern.Dashed;
            m.Axes.YAxis = plt.Axes.Right;
        }
        plt.Axes.Bottom.Label.Text = "prompt length (tokens)";
        plt.Axes.Left.Label.Text = "prefill time (ms)";
        plt.Axes.Right.Label.Text = "peak RSS (MiB)";
        plt.Title("lcc bench");
        plt.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plt.SavePng(path, 900, 550);
    }
}

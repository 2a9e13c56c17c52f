using System.Diagnostics;

namespace LongCtx.Runtime.Bench;

/// <summary>Median and spread of repeated measurements.</summary>
public sealed record Stat(double Median, double Min, double Max)
{
    public static Stat Of(IReadOnlyList<double> xs)
    {
        var s = xs.Order().ToArray();
        double med = s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
        return new Stat(Math.Round(med, 3), Math.Round(s[0], 3), Math.Round(s[^1], 3));
    }
}

/// <summary>Logit agreement of a candidate with a baseline on the same token stream.</summary>
public sealed record Fidelity(int Positions, double MaxAbsDiff, double MeanKl, double Top1Agreement);

/// <summary>One model at one prompt length.</summary>
public sealed record BenchRow(string Model, int Length, int Reps, int DecodeTokens, Stat PrefillMs, Stat DecodeMsPerToken,
    long KvBytes, long PeakRssBytes, Fidelity? VsBaseline);

/// <summary>
/// Prefill time, decode ms/token, KV-cache bytes and process peak RSS per prompt length; with a
/// baseline, logit fidelity (max |diff|, KL(baseline || candidate), top-1 agreement) on the
/// baseline's greedy continuation (teacher-forced into both models).
/// </summary>
public static class Benchmark
{
    public static int[] Prompt(int length, int vocab, int seed)
    {
        var rng = new Random(seed + length);
        // avoid the lowest ids: special tokens in most vocabularies
        int lo = Math.Min(8, vocab - 1);
        return Enumerable.Range(0, length).Select(_ => rng.Next(lo, vocab)).ToArray();
    }

    public static BenchRow Measure(LongCtxModel model, int length, int decode, int reps, int chunk, int seed = 0,
        CancellationToken ct = default)
    {
        var prompt = Prompt(length, model.VocabSize, seed);
        var prefill = new List<double>();
        var perToken = new List<double>();
        long kv = 0, peak = 0;
        using (var warm = model.CreateGenerator()) warm.Forward(prompt.AsSpan(0, Math.Min(8, prompt.Length)), ct); // untimed warm-up
        for (int r = 0; r < reps; r++)
        {
            ct.ThrowIfCancellationRequested();
            GC.Collect();
            ProcessMemory.ResetPeak();
            using var g = model.CreateGenerator();
            var sw = Stopwatch.StartNew();
            var logits = g.Prefill(prompt, chunk, null, ct);
            prefill.Add(sw.Elapsed.TotalMilliseconds);
            int tok = Sampler.ArgMax(logits);
            sw.Restart();
            int steps = 0;
            for (int i = 0; i < decode && (model.MaxContext is not { } m || g.Length < m); i++, steps++)
                tok = Sampler.ArgMax(g.Forward([tok], ct));
            if (steps > 0) perToken.Add(sw.Elapsed.TotalMilliseconds / steps);
            kv = Math.Max(kv, g.PeakKvBytes);
            peak = Math.Max(peak, ProcessMemory.PeakRss());
        }
        return new BenchRow(model.Name, length, reps, decode, Stat.Of(prefill),
            perToken.Count > 0 ? Stat.Of(perToken) : new Stat(0, 0, 0), kv, peak, null);
    }

    /// <summary>Compares last-position logits after the prompt and at each of <paramref name="decode"/> greedy steps of the baseline.</summary>
    public static Fidelity Compare(LongCtxModel baseline, LongCtxModel candidate, int length, int decode, int chunk, int seed = 0,
        CancellationToken ct = default)
    {
        if (baseline.VocabSize != candidate.VocabSize)
            throw new ArgumentException($"baseline {baseline.Name} has vocabulary {baseline.VocabSize}, candidate {candidate.Name} has {candidate.VocabSize}");
        var prompt = Prompt(length, baseline.VocabSize, seed);
        using var gb = baseline.CreateGenerator();
        using var gc = candidate.CreateGenerator();
        var lb = gb.Prefill(prompt, chunk, null, ct);
        var lc = gc.Prefill(prompt, chunk, null, ct);
        double maxDiff = 0, kl = 0;
        int agree = 0, n = 0;
        for (int i = 0; ; i++)
        {
            maxDiff = Math.Max(maxDiff, lb.Zip(lc, (a, b) => Math.Abs((double)a - b)).Max());
            kl += Kl(lb, lc);
            int tb = Sampler.ArgMax(lb);
            agree += tb == Sampler.ArgMax(lc) ? 1 : 0;
            n++;
            if (i >= decode) break;
            if (baseline.MaxContext is { } mb && gb.Length >= mb) break;
            if (candidate.MaxContext is { } mc && gc.Length >= mc) break;
            lb = gb.Forward([tb], ct);
            lc = gc.Forward([tb], ct);
        }
        return new Fidelity(n, Math.Round(maxDiff, 6), Math.Round(kl / n, 8), Math.Round((double)agree / n, 4));
    }

    /// <summary>KL(p || q) of the softmaxes of two logit rows, in nats.</summary>
    public static double Kl(float[] p, float[] q)
    {
        double[] lp = LogSoftmax(p), lq = LogSoftmax(q);
        double kl = 0;
        for (int i = 0; i < lp.Length; i++) kl += Math.Exp(lp[i]) * (lp[i] - lq[i]);
        return Math.Max(0, kl);
    }

    private static double[] LogSoftmax(float[] x)
    {
        double max = x.Max(), sum = 0;
        foreach (var v in x) sum += Math.Exp(v - max);
        double lse = max + Math.Log(sum);
        return x.Select(v => v - lse).ToArray();
    }
}

/// <summary>Process peak resident memory (Linux VmHWM, resettable via /proc/self/clear_refs).</summary>
public static class ProcessMemory
{
    public static void ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public static long PeakRss()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:"))
                    return long.Parse(line[6..].Trim().Split(' ')[0]) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return Process.GetCurrentProcess().PeakWorkingSet64;
    }
}

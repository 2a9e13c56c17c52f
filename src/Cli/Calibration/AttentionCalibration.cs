using System.Globalization;
using System.Runtime.InteropServices;
using LongCtx.Passes.Attention;

namespace LongCtx.Cli.Calibration;

/// <summary>One candidate sparse prefill pattern: <c>--attention PATTERN:k=v,...</c> options.</summary>
public sealed record AttentionCandidate(string Pattern, IReadOnlyDictionary<string, string> Options)
{
    public static AttentionCandidate Of(string pattern, params (string Key, string Value)[] options) =>
        new(pattern, options.ToDictionary(o => o.Key, o => o.Value, StringComparer.Ordinal));

    public override string ToString() =>
        Pattern + ":" + string.Join(",", Options.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}"));
}

/// <summary>One layer's attention inputs for one prompt, as the op receives them: q [S, H*D], k and v [S, Hkv*D] (not yet
/// rotated), cos/sin [MaxPos, D/2] (null when RoPE is applied outside the op), and the softmax scale.</summary>
public sealed record LayerInputs(int Layer, int Heads, int KvHeads, int HeadDim, int Length, float[] Q, float[] K, float[] V,
    float[]? Cos, float[]? Sin, int MaxPos, double Scale);

/// <summary>One candidate measured on one layer: per KV head, the share of causal pairs attended and the relative L2
/// error of the attention output (over the query heads sharing the KV head) against dense attention.</summary>
public sealed record CandidateScore(AttentionCandidate Candidate, double[] HeadDensity, double[] HeadError)
{
    public double Density => HeadDensity.Average();
    public double Error => HeadError.Average();
}

/// <summary>
/// Per-layer choice of the sparse prefill pattern (issue 10 item 2, after MInference's offline kernel-aware search, Jiang et
/// al. 2024, arXiv:2407.02490 sec. 3.2, and its candidate budgets): every candidate runs the kernel's own index selection
/// (the <c>LongCtxLaSparseMask</c> export, min_len 0) on the captured q/k of each layer; the sparse output is the masked
/// dense attention over exactly those keys, computed in double (natively, the <c>LongCtxLaMaskErrors</c> export; the
/// managed loop here is its reference), and its error is
/// <c>||O_sparse - O_dense||_2 / ||O_dense||_2</c> per KV head. Per layer the candidate with the least mean error among
/// those whose mean density (attended pairs / causal pairs, the FLOP share) is within the budget wins; when none is, the
/// sparsest one (the report says so). Ties keep the earlier candidate, so the result is a pure function of the inputs.
/// That is the <c>--per-layer</c> choice; by default the choice is per layer and KV head (<see cref="PerHeadChoice"/>).
/// </summary>
public static class AttentionCalibration
{
    /// <summary>MInference's candidates (A-shape (100, 800) as trishape sink/window; vertical-slash budgets) and XAttention's
    /// thresholds, plus a dense-at-last-rows-free local band (trishape last=64 is the kernel's default).</summary>
    public static IReadOnlyList<AttentionCandidate> DefaultCandidates { get; } =
    [
        AttentionCandidate.Of("trishape", ("sink", "100"), ("window", "800")),
        AttentionCandidate.Of("vslash", ("vertical", "30"), ("slash", "800")),
        AttentionCandidate.Of("vslash", ("vertical", "100"), ("slash", "800")),
        AttentionCandidate.Of("vslash", ("vertical", "500"), ("slash", "700")),
        AttentionCandidate.Of("vslash", ("vertical", "1000"), ("slash", "4096")),
        AttentionCandidate.Of("vslash", ("vertical", "3500"), ("slash", "100")),
        AttentionCandidate.Of("xattn", ("threshold", "0.8")),
        AttentionCandidate.Of("xattn", ("threshold", "0.9")),
        AttentionCandidate.Of("xattn", ("threshold", "0.95")),
    ];

    /// <summary>Scores every candidate on every layer, summed over the prompts (<paramref name="samples"/>[prompt][layer]).</summary>
    public static IReadOnlyList<IReadOnlyList<CandidateScore>> Score(IReadOnlyList<IReadOnlyList<LayerInputs>> samples,
        IReadOnlyList<AttentionCandidate> candidates, string library, CancellationToken ct = default)
    {
        int layers = samples[0].Count;
        var result = new List<IReadOnlyList<CandidateScore>>();
        for (int l = 0; l < layers; l++)
        {
            var perPrompt = samples.Select(s => ScoreLayer(s[l], candidates, library, ct)).ToList();
            result.Add(candidates.Select((c, i) => new CandidateScore(c,
                Mean(perPrompt.Select(p => p[i].HeadDensity)), Mean(perPrompt.Select(p => p[i].HeadError)))).ToList());
        }
        return result;
    }

    /// <summary>The least-error candidate within <paramref name="density"/>, else the sparsest (with a note).</summary>
    public static (CandidateScore Best, string? Note) Choose(IReadOnlyList<CandidateScore> scores, double density)
    {
        var within = scores.Where(s => s.Density <= density).ToList();
        if (within.Count > 0) return (within.Aggregate((a, b) => b.Error < a.Error ? b : a), null);
        var sparsest = scores.Aggregate((a, b) => b.Density < a.Density ? b : a);
        return (sparsest, $"no candidate within density {density.ToString("0.###", CultureInfo.InvariantCulture)}; took the sparsest, {sparsest.Candidate} "
            + $"(density {sparsest.Density.ToString("0.###", CultureInfo.InvariantCulture)}); calibrate with longer prompts (--length) or a larger --density");
    }

    /// <summary>One layer, one prompt: every candidate's per-KV-head density and error. The sums run natively
    /// (<see cref="MaskErrors"/>, the kernel library's <c>LongCtxLaMaskErrors</c>); <paramref name="managed"/> runs the same
    /// sums here instead (the reference the native scorer is tested and timed against).</summary>
    public static IReadOnlyList<CandidateScore> ScoreLayer(LayerInputs x, IReadOnlyList<AttentionCandidate> candidates, string library, CancellationToken ct = default,
        bool managed = false)
    {
        int S = x.Length, H = x.Heads, Hkv = x.KvHeads, group = H / Hkv;
        var masks = candidates.Select(c => SparseMask.Select(library, c, x)).ToList();
        var q = Rotate(x.Q, x, H);
        var k = Rotate(x.K, x, Hkv);
        var (err2, norm2) = managed ? ManagedErrors(x, q, k, masks, ct) : MaskErrors.Run(library, x, q, k, masks);
        double causal = S * (S + 1.0) / 2;
        return candidates.Select((c, ci) => new CandidateScore(c,
            Enumerable.Range(0, Hkv).Select(g => masks[ci].AsSpan(g * S * S, S * S).Count((byte)1) / causal).ToArray(),
            Enumerable.Range(0, Hkv).Select(g =>
            {
                double e = 0, n = 0;
                for (int h = g * group; h < (g + 1) * group; h++) { e += err2[ci * H + h]; n += norm2[h]; }
                return n > 0 ? Math.Sqrt(e / n) : 0;
            }).ToArray())).ToList();
    }

    /// <summary>err2[c * H + h] = sum_i ||O_c(i) - O(i)||^2 and norm2[h] = sum_i ||O(i)||^2 for query head h, in double, here.</summary>
    private static (double[] Err2, double[] Norm2) ManagedErrors(LayerInputs x, double[] q, double[] k, IReadOnlyList<byte[]> masks, CancellationToken ct)
    {
        int S = x.Length, H = x.Heads, Hkv = x.KvHeads, D = x.HeadDim, group = H / Hkv;
        var err2 = new double[masks.Count * H];
        var norm2 = new double[H];
        Parallel.For(0, H, new ParallelOptions { CancellationToken = ct }, h =>
        {
            int kvh = h / group;
            var logits = new double[S];
            var dense = new double[D];
            var sparse = new double[D];
            for (int i = 0; i < S; i++)
            {
                double max = double.NegativeInfinity;
                for (int t = 0; t <= i; t++)
                {
                    double dot = 0;
                    for (int j = 0; j < D; j++) dot += q[(i * H + h) * D + j] * k[(t * Hkv + kvh) * D + j];
                    logits[t] = dot * x.Scale;
                    max = Math.Max(max, logits[t]);
                }
                for (int t = 0; t <= i; t++) logits[t] = Math.Exp(logits[t] - max);
                Weighted(logits, null, 0, i, x.V, Hkv, kvh, D, dense);
                for (int j = 0; j < D; j++) norm2[h] += dense[j] * dense[j];
                for (int c = 0; c < masks.Count; c++)
                {
                    Weighted(logits, masks[c], (kvh * S + i) * S, i, x.V, Hkv, kvh, D, sparse);
                    double e = 0;
                    for (int j = 0; j < D; j++) e += (sparse[j] - dense[j]) * (sparse[j] - dense[j]);
                    err2[c * H + h] += e;
                }
            }
        });
        return (err2, norm2);
    }

    /// <summary>out = sum_t w_t v_t / sum_t w_t over t &lt;= i (and mask[off + t] == 1 when a mask is given).</summary>
    private static void Weighted(double[] w, byte[]? mask, int off, int i, float[] v, int Hkv, int kvh, int D, double[] output)
    {
        Array.Clear(output);
        double sum = 0;
        for (int t = 0; t <= i; t++)
        {
            if (mask is not null && mask[off + t] == 0) continue;
            sum += w[t];
            int vo = (t * Hkv + kvh) * D;
            for (int j = 0; j < D; j++) output[j] += w[t] * v[vo + j];
        }
        if (sum > 0) for (int j = 0; j < D; j++) output[j] /= sum;
    }

    /// <summary>x [S, heads*D] rotated at its positions (rotate_half, the op's non-interleaved RoPE), in double.</summary>
    private static double[] Rotate(float[] src, LayerInputs x, int heads)
    {
        int D = x.HeadDim, half = D / 2;
        var r = new double[src.Length];
        for (int p = 0; p < x.Length; p++)
            for (int h = 0; h < heads; h++)
            {
                int o = (p * heads + h) * D;
                for (int i = 0; i < half; i++)
                {
                    double a = src[o + i], b = src[o + i + half];
                    double c = x.Cos?[p * half + i] ?? 1, s = x.Sin?[p * half + i] ?? 0;
                    r[o + i] = a * c - b * s;
                    r[o + i + half] = b * c + a * s;
                }
            }
        return r;
    }

    private static double[] Mean(IEnumerable<double[]> rows)
    {
        var list = rows.ToList();
        return Enumerable.Range(0, list[0].Length).Select(i => list.Average(r => r[i])).ToArray();
    }
}

/// <summary>The kernel library's <c>LongCtxLaSparseMask</c> export: the keys a pattern selects, [Hkv, S, S] bytes.</summary>
internal static class SparseMask
{
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int SparseMaskFn([MarshalAs(UnmanagedType.LPStr)] string pattern, long s, long h, long hkv, long d,
        float[] q, float[] k, float[] v, float[]? cos, float[]? sin, long maxPos, long minLen, long vertical, long slash,
        float threshold, long stride, long sink, long window, long last, long localBlocks, long vertStride, byte[] mask, byte[] err, nuint errLen);

    public static byte[] Select(string library, AttentionCandidate c, LayerInputs x)
    {
        var opts = new Dictionary<string, string>(c.Options, StringComparer.Ordinal) { ["pattern"] = c.Pattern, ["min_len"] = "0" };
        var s = LongAttentionSettings.Parse(opts, null, "calibration");
        var sp = s.Sparse ?? throw new ArgumentException($"calibration candidate {c}: not a sparse prefill pattern");
        var fn = Marshal.GetDelegateForFunctionPointer<SparseMaskFn>(NativeLibrary.GetExport(NativeLibrary.Load(library), "LongCtxLaSparseMask"));
        var mask = new byte[(long)x.KvHeads * x.Length * x.Length];
        var err = new byte[512];
        int rc = fn(c.Pattern, x.Length, x.Heads, x.KvHeads, x.HeadDim, x.Q, x.K, x.V, x.Cos, x.Sin, x.MaxPos, 0, sp.Vertical, sp.Slash,
            (float)sp.Threshold, sp.Stride, s.Sink, s.Window, sp.Last, sp.LocalBlocks, sp.VertStride, mask, err, (nuint)err.Length);
        if (rc != 0)
            throw new InvalidOperationException($"calibration candidate {c} on layer {x.Layer}: {System.Text.Encoding.UTF8.GetString(err).TrimEnd('\0')}");
        return mask;
    }
}

/// <summary>The kernel library's <c>LongCtxLaMaskErrors</c> export: the calibration scorer's sums, natively (sparse_exports.cc).</summary>
internal static class MaskErrors
{
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int MaskErrorsFn(long s, long h, long hkv, long d, double[] q, double[] k, float[] v, double scale, IntPtr[] masks, long c,
        int threads, double[] err2, double[] norm2);

    public static (double[] Err2, double[] Norm2) Run(string library, LayerInputs x, double[] q, double[] k, IReadOnlyList<byte[]> masks)
    {
        var fn = Marshal.GetDelegateForFunctionPointer<MaskErrorsFn>(NativeLibrary.GetExport(NativeLibrary.Load(library), "LongCtxLaMaskErrors"));
        var handles = masks.Select(m => GCHandle.Alloc(m, GCHandleType.Pinned)).ToList();
        try
        {
            var err2 = new double[masks.Count * x.Heads];
            var norm2 = new double[x.Heads];
            int rc = fn(x.Length, x.Heads, x.KvHeads, x.HeadDim, q, k, x.V, x.Scale, handles.Select(h => h.AddrOfPinnedObject()).ToArray(), masks.Count,
                Environment.ProcessorCount, err2, norm2);
            if (rc != 0) throw new InvalidOperationException($"calibration scorer on layer {x.Layer}: LongCtxLaMaskErrors rejected the shapes (S={x.Length}, H={x.Heads}, Hkv={x.KvHeads}, D={x.HeadDim})");
            return (err2, norm2);
        }
        finally { foreach (var h in handles) h.Free(); }
    }
}

using System.Globalization;
using LongCtx.Compiler.Passes;

namespace LongCtx.Passes.Eviction;

/// <summary>
/// Options of <c>--kv-evict METHOD[:k=v,...]</c> (pass <c>kv-evict</c>), as data: each method's keys with defaults and
/// meaning. Sizes take a token count (<c>budget=512</c>) or a fraction of the prompt (<c>budget=10%</c> or <c>0.1</c>).
/// <list type="bullet">
/// <item><c>snapkv</c> (Li et al. 2024, arXiv:2404.14469): budget (tokens per KV head, window included), window (the
/// observation window: last queries that vote, always kept), pool (max-pool kernel over the votes).</item>
/// <item><c>pyramidkv</c> (Cai et al. 2024, arXiv:2406.02069): as snapkv, with the selected part of the budget falling
/// linearly from the first to the last layer (mean = budget - window, top layer = (budget - window) / beta).</item>
/// <item><c>h2o</c> (Zhang et al. 2023, arXiv:2306.14048): heavy (heavy hitters by accumulated attention mass) and
/// recent (most recent tokens), a fixed budget kept at every decode step.</item>
/// <item><c>actqkv</c> (Xiao et al. 2025, arXiv:2502.13542; runtime: <c>ActQkv</c>): budget (upper bound per KV head,
/// window included), window (the rows the activation-aware probe query is built from, always kept), mass (the
/// per-layer cut-off: the fewest keys whose share of the probe's attention over the prefix reaches it).</item>
/// <item><c>adakv</c> (Feng et al. 2024, arXiv:2407.11550; runtime: <c>AdaKv</c>): snapkv's scores, the layer's budget
/// shared by its KV heads (joint top over all heads, each head keeping at least floor · (budget - window)); heads hold
/// different lengths, masked through GroupQueryAttention's attention_bias. <c>pyramidkv:ada=1</c> shares each layer's
/// pyramid budget the same way (Ada-PyramidKV, as in the AdaKV paper).</item>
/// <item><c>lemo</c> (after Wang et al. 2025, arXiv:2501.09767; runtime: <c>LeMo</c>): token elimination during chunked
/// prefill: before each further prompt chunk and at the end of the prompt, each layer drops the tokens its window's
/// queries attend to least (a token leaves every head), those under tau x the mean informativeness first, keeping at
/// most budget (a fraction counts the tokens seen so far), so a long prompt prefills against a bounded cache.</item>
/// </list>
/// </summary>
public sealed record KvEvictSettings(string Method, double Budget, int Window, int Pool, double Beta, double Heavy, double Recent, double Mass = 0, double Floor = 0, bool Ada = false, double Tau = 0)
{
    /// <summary>Method -> (option, default, help).</summary>
    public static IReadOnlyDictionary<string, IReadOnlyList<(string Key, string Default, string Help)>> Methods { get; } =
        new Dictionary<string, IReadOnlyList<(string, string, string)>>(StringComparer.Ordinal)
        {
            ["snapkv"] = [("budget", "20%", "tokens kept per KV head, window included"), ("window", "32", "observation window"), ("pool", "7", "max-pool kernel")],
            ["pyramidkv"] = [("budget", "20%", "mean tokens kept per KV head over layers, window included"), ("window", "32", "observation window"), ("pool", "7", "max-pool kernel"), ("beta", "20", "bottom/top layer ratio of the selected part"), ("ada", "0", "1: a layer's heads share its budget as adakv (Ada-PyramidKV)"), ("floor", "0.2", "with ada=1: least share of the selected budget each head keeps")],
            ["h2o"] = [("heavy", "10%", "heavy hitters kept"), ("recent", "10%", "recent tokens kept")],
            ["actqkv"] = [("budget", "20%", "most tokens kept per KV head, window included"), ("window", "32", "rows the probe query is built from"), ("mass", "0.9", "share of the probe's attention the kept keys reach (per layer)")],
            ["lemo"] = [("budget", "20%", "most tokens a layer keeps, window included (a fraction: of the tokens seen so far)"), ("window", "32", "the chunk's last queries that score informativeness, always kept"), ("tau", "0.1", "tokens under tau x the layer's mean informativeness are dropped even under budget (0: budget only)")],
            ["adakv"] = [("budget", "20%", "mean tokens kept per KV head, window included; a layer's heads share its budget"), ("window", "32", "observation window"), ("pool", "7", "max-pool kernel"), ("floor", "0.2", "least share of the selected budget each head keeps (alpha-safeguard, 0-1)")],
        };

    /// <summary>The pass options of a CLI spec <c>METHOD[:k=v,...]</c>; unknown methods and keys are one-line errors.</summary>
    public static IReadOnlyDictionary<string, string> FromSpec(string spec)
        => MethodSpec.Parse(spec, "--kv-evict", m => Methods.GetValueOrDefault(m), Methods.Keys, "snapkv:budget=10%,window=32,pool=7");

    /// <summary>The settings from pass options (defaults filled in); bad values are one-line errors naming the option.</summary>
    public static KvEvictSettings Parse(IReadOnlyDictionary<string, string> options)
    {
        string method = options.GetValueOrDefault("method") ?? throw new ArgumentException("kv-evict: option 'method' is missing ({string.Join(", ", Methods.Keys)})");
        if (!Methods.TryGetValue(method, out var keys)) throw new ArgumentException($"--kv-evict {method}: unknown method; valid: {string.Join(", ", Methods.Keys)}");
        string Get(string k) => options.GetValueOrDefault(k) ?? keys.FirstOrDefault(x => x.Key == k).Default ?? "0";
        int Int(string k, int min)
        {
            var s = Get(k);
            return int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min ? v
                : throw new ArgumentException($"--kv-evict {method}: {k}={s} is not an integer >= {min}");
        }
        double Size(string k)
        {
            var s = Get(k);
            bool pct = s.EndsWith('%');
            if (!double.TryParse(pct ? s[..^1] : s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || double.IsNaN(v)) v = -1;
            if (pct) v /= 100;
            bool ok = v > 0 && (v < 1 || v == Math.Floor(v));
            return ok ? v : throw new ArgumentException($"--kv-evict {method}: {k}={s} is neither a token count (>= 1) nor a fraction of the prompt (0-100% or 0-1)");
        }
        return method switch
        {
            "h2o" => new(method, 0, 0, 1, 1, Size("heavy"), Size("recent")),
            "actqkv" => new(method, Size("budget"), Int("window", 1), 1, 1, 0, 0, ParseMass(Get("mass"), method)),
            "adakv" => new(method, Size("budget"), Int("window", 1), Int("pool", 1), 1, 0, 0, Floor: ParseFloor(Get("floor"), method), Ada: true),
            "lemo" => new(method, Size("budget"), Int("window", 1), 1, 1, 0, 0, Tau: ParseTau(Get("tau"), method)),
            "pyramidkv" when ParseAda(Get("ada"), method) => new(method, Size("budget"), Int("window", 1), Int("pool", 1), ParseBeta(Get("beta"), method), 0, 0, Floor: ParseFloor(Get("floor"), method), Ada: true),
            _ => new(method, Size("budget"), Int("window", 1), Int("pool", 1), method == "pyramidkv" ? ParseBeta(Get("beta"), method) : 1, 0, 0),
        };
    }

    private static double ParseBeta(string s, string method) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double b) && b >= 1 ? b
        : throw new ArgumentException($"--kv-evict {method}: beta={s} must be a number >= 1");

    private static double ParseMass(string s, string method) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double m) && m > 0 && m <= 1 ? m
        : throw new ArgumentException($"--kv-evict {method}: mass={s} must be a fraction in (0, 1] (the share of the probe's attention the kept keys reach)");

    private static double ParseTau(string s, string method) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double t) && t >= 0 && t <= 10 ? t
        : throw new ArgumentException($"--kv-evict {method}: tau={s} must be a number in [0, 10] (tokens under tau x the layer's mean informativeness are dropped)");

    private static bool ParseAda(string s, string method) => s switch
    {
        "1" => true,
        "0" => false,
        _ => throw new ArgumentException($"--kv-evict {method}: ada={s} must be 0 or 1 (1: a layer's KV heads share its budget, as adakv)"),
    };

    private static double ParseFloor(string s, string method) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) && f >= 0 && f <= 1 ? f
        : throw new ArgumentException($"--kv-evict {method}: floor={s} must be a fraction in [0, 1] (the least share of the selected budget each KV head keeps)");

    /// <summary>How the method reads in notes and <c>lcc inspect</c>.</summary>
    public override string ToString()
    {
        static string S(double v) => v < 1 ? (v * 100).ToString("0.##", CultureInfo.InvariantCulture) + "%" : v.ToString(CultureInfo.InvariantCulture);
        if (Method == "lemo") return $"lemo budget={S(Budget)} window={Window} tau={Tau.ToString(CultureInfo.InvariantCulture)}";
        if (Method == "adakv") return $"adakv budget={S(Budget)} window={Window} pool={Pool} floor={Floor.ToString(CultureInfo.InvariantCulture)}";
        if (Method == "actqkv") return $"actqkv budget={S(Budget)} window={Window} mass={Mass.ToString(CultureInfo.InvariantCulture)}";
        return Method == "h2o" ? $"h2o heavy={S(Heavy)} recent={S(Recent)}"
            : $"{Method} budget={S(Budget)} window={Window} pool={Pool}" + (Method == "pyramidkv" ? $" beta={Beta.ToString(CultureInfo.InvariantCulture)}" : "")
                + (Ada ? $" ada=1 floor={Floor.ToString(CultureInfo.InvariantCulture)}" : "");
    }

    /// <summary>The pipeline step for a CLI spec.</summary>
    public static PipelineStep Step(string spec) => new("kv-evict", FromSpec(spec));
}

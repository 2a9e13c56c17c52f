using System.Globalization;

namespace LongCtx.Passes.Rope;

/// <summary>
/// Spellings and valid ranges of <c>--rope METHOD:k=v</c> options (issue 14, "RoPE options"). Hugging Face writes
/// <c>rope_scaling</c> keys with underscores (<c>attention_factor</c>, <c>beta_fast</c>, <c>low_freq_factor</c>,
/// <c>original_max_position_embeddings</c>); they are accepted as aliases of ours. A value outside its range would make
/// NaN, infinite or all-zero cos/sin tables (ntk factor 1e-300: base' = base * s^(d/(d-2)) underflows to 0; attention
/// factor 0 zeroes cos and sin; original-max-position 0 divides by zero; a negative Giraffe power or
/// high-freq-factor == low-freq-factor divides by zero), so it is refused with the valid range instead.
/// </summary>
public static class RopeOptionRules
{
    /// <summary>Largest context a RoPE method builds tables for (2^24 tokens; cos/sin tables grow linearly with it).</summary>
    public const double MaxContext = 1 << 24;

    private sealed record Range(double Min, bool MinExclusive, double Max, bool Integer, string Meaning)
    {
        public bool Contains(double v) => double.IsFinite(v) && (MinExclusive ? v > Min : v >= Min) && v <= Max && (!Integer || v == Math.Floor(v));
        public string Text(string name) =>
            $"{(Integer ? "an integer, " : "")}{Fmt(Min)} {(MinExclusive ? "<" : "<=")} {name} <= {Fmt(Max)} ({Meaning})";
        private static string Fmt(double d) => d.ToString("G", CultureInfo.InvariantCulture);
    }

    private static readonly Dictionary<string, Range> Ranges = new(StringComparer.Ordinal)
    {
        ["factor"] = new(1, false, 1e6, false, "the scale s = context / trained context"),
        ["attention-factor"] = new(0, true, 100, false, "the cos/sin multiplier"),
        ["beta-fast"] = new(0, true, 1e4, false, "rotations"),
        ["beta-slow"] = new(0, true, 1e4, false, "rotations"),
        ["low-freq-factor"] = new(0, true, 1e4, false, "Llama 3 low-frequency factor"),
        ["high-freq-factor"] = new(0, true, 1e4, false, "Llama 3 high-frequency factor"),
        ["original-max-position"] = new(1, false, MaxContext, false, "the trained context in tokens"),
        ["context"] = new(1, false, MaxContext, true, "the target context in tokens"),
        ["trained-context"] = new(1, false, MaxContext, true, "the trained context in tokens"),
        ["truncate"] = new(0, false, MaxContext, false, "T in tokens, 0 disables"),
        ["z"] = new(1, false, 1e6, false, "Giraffe z"),
        ["rho-div"] = new(0, true, 1e6, false, "Giraffe rho divisor"),
        ["scale"] = new(0, true, 1e6, false, "linear scale"),
        ["power"] = new(0, false, 100, false, "Giraffe power k"),
        ["theta"] = new(1, true, 1e12, false, "the RoPE base"),
    };

    private static readonly Dictionary<string, string> Aliases = new(StringComparer.Ordinal)
    {
        ["original-max-position-embeddings"] = "original-max-position",
        ["rope-theta"] = "theta",
    };

    /// <summary>Our spelling of an option key: underscores become dashes (the HF spellings), then the alias table.</summary>
    public static string Normalize(string key)
    {
        var k = key.Trim().Replace('_', '-').ToLowerInvariant();
        return Aliases.GetValueOrDefault(k, k);
    }

    /// <summary>Throws a one-line <see cref="ArgumentException"/> for a value outside its range (naming the range), or for
    /// a pair that divides by zero (Llama 3: high-freq-factor must exceed low-freq-factor).</summary>
    public static void Check(RopeMethod method, IReadOnlyDictionary<string, string> options)
    {
        foreach (var (key, text) in options)
        {
            if (!Ranges.TryGetValue(key, out var range) || method.Parameter(key) is { IsNumber: false }) continue;
            if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !range.Contains(v))
                throw new ArgumentException($"--rope {method.Name}: {key}={text} is out of range; valid: {range.Text(key)}");
        }
        double Value(string k) => options.TryGetValue(k, out var s) && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
            ? v : method.Parameter(k)?.Default ?? double.NaN;
        if (method.Parameter("high-freq-factor") is not null && !(Value("high-freq-factor") > Value("low-freq-factor")))
            throw new ArgumentException($"--rope {method.Name}: high-freq-factor ({Value("high-freq-factor")}) must be larger than low-freq-factor ({Value("low-freq-factor")}); the blend divides by their difference");
    }
}

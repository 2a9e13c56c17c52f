using System.Globalization;
using System.Text;

namespace LongCtx.Passes.Rope;

/// <summary>
/// One option of a RoPE method (<c>--rope METHOD:name=value</c>). <paramref name="Default"/> is the value used when the
/// option is absent; null when the default is computed from the model or the target (then <paramref name="DefaultText"/>
/// says how) or when the option has no default (<paramref name="Required"/>).
/// </summary>
public sealed record RopeParameter(string Name, double? Default, string DefaultText, string Meaning, bool Required = false, bool IsNumber = true)
{
    public static RopeParameter Num(string name, double dflt, string meaning) => new(name, dflt, dflt.ToString(CultureInfo.InvariantCulture), meaning);
    public static RopeParameter Computed(string name, string dflt, string meaning) => new(name, null, dflt, meaning);

    public override string ToString() => Required ? $"{Name} (required)" : Default is not null ? $"{Name}={DefaultText}" : $"{Name} (default {DefaultText})";
}

/// <summary>
/// One RoPE context-extension method: its <c>--rope</c> name, the formula (theta_i = base^(-2i/d) the plain
/// frequencies, s = context / trained context), the parameters with defaults, the source, and the pass that applies it
/// (whose file holds the formula code, in <see cref="RopeFrequencies"/>).
/// </summary>
public sealed record RopeMethod(string Name, string Description, string Formula, string Source, IReadOnlyList<RopeParameter> Parameters, Func<RopeScalingPass> Create)
{
    /// <summary>Pipeline pass name: <c>rope-</c> + method.</summary>
    public string PassName => RopeMethods.PassPrefix + Name;

    /// <summary>The method's own parameters followed by the ones every method takes.</summary>
    public IEnumerable<RopeParameter> AllParameters => Parameters.Concat(RopeMethods.Common);

    public RopeParameter? Parameter(string name) => AllParameters.FirstOrDefault(p => p.Name == name);

    /// <summary>Throws <see cref="ArgumentException"/> for an option the method does not take (listing the valid ones) or a missing required one.</summary>
    public void CheckOptions(IEnumerable<string> names)
    {
        var given = names.ToList();
        foreach (var n in given)
            if (Parameter(n) is null)
                throw new ArgumentException($"--rope {Name}: unknown option '{n}'; valid options: {string.Join(", ", AllParameters.Select(p => p.Name))}");
        foreach (var p in Parameters.Where(p => p.Required && !given.Contains(p.Name)))
            throw new ArgumentException($"--rope {Name} needs {p.Name}=...: {p.Meaning}");
    }
}

/// <summary>
/// THE table of RoPE methods: it drives the pass registry (<see cref="Pipelines"/>), <c>lcc compile --rope</c> parsing,
/// validation and help, and <c>--list-passes</c>. A new method is one row here plus one pass file with its formula.
/// </summary>
public static class RopeMethods
{
    public const string PassPrefix = "rope-";

    /// <summary>Options every method takes (the CLI fills <c>context</c>, <c>trained-context</c> and <c>force</c> from its flags).</summary>
    public static IReadOnlyList<RopeParameter> Common { get; } =
    [
        RopeParameter.Computed("context", "lcc compile --context", "target context length (the pipeline's target context wins; both must agree)"),
        RopeParameter.Computed("trained-context", "config.json, lcc metadata or cos-cache rows", "context the model was trained at"),
        new("force", null, "false", "apply even when context <= trained context, or to a model lcc already scaled", IsNumber: false),
        RopeParameter.Computed("theta", "recovered from the model", "RoPE base override"),
    ];

    private static readonly RopeParameter Factor = RopeParameter.Computed("factor", "context / trained", "scale s");

    public static IReadOnlyList<RopeMethod> All { get; } =
    [
        new("linear", "RoPE position interpolation (Chen et al. 2023): theta_i / s",
            "theta_i' = theta_i / s",
            "Chen et al. 2023, arXiv 2306.15595 (position interpolation)",
            [Factor], () => new LinearRope()),
        new("ntk", "NTK-aware RoPE base change (bloc97 2023): base * s^(d/(d-2))",
            "base' = base * s^(d/(d-2)); theta_i' = base'^(-2i/d)",
            "bloc97, r/LocalLLaMA 2023 (NTK-aware scaling)",
            [Factor], () => new NtkRope()),
        new("dynamic-ntk", "dynamic NTK RoPE (emozilla 2023): base recomputed from the current length, in the graph",
            "alpha = max(1, f L / L_train - (f - 1)), L the current length; base' = base * alpha^(d/(d-2))",
            "emozilla, r/LocalLLaMA 2023; HF _compute_dynamic_ntk_parameters",
            [RopeParameter.Num("factor", 1, "f")], () => new DynamicNtkRope()),
        new("yarn", "YaRN (Peng et al. 2023): NTK-by-parts ramp + cos/sin x (0.1 ln s + 1)",
            "theta_i' = (theta_i / s)(1 - mask_i) + theta_i mask_i, ramp over [floor(corr(beta_fast)), ceil(corr(beta_slow))]; cos, sin x (0.1 ln s + 1)",
            "Peng et al. 2023, arXiv 2309.00071; HF _compute_yarn_parameters",
            [Factor, RopeParameter.Num("beta-fast", 32, "rotations where extrapolation ends"), RopeParameter.Num("beta-slow", 1, "rotations where interpolation starts"),
             RopeParameter.Computed("attention-factor", "0.1 ln s + 1", "cos/sin multiplier")], () => new YarnRope()),
        new("longrope", "LongRoPE (Ding et al. 2024): per-dimension short/long factors + magnitude scaling",
            "theta_i' = theta_i / lambda_i (short list while L <= L_train, long beyond); cos, sin x sqrt(1 + ln s / ln L_train)",
            "Ding et al. 2024, arXiv 2402.13753; HF _compute_longrope_parameters",
            [new("factors", null, "", "JSON file with short_factor and long_factor (top level or rope_scaling), rotary_dim/2 each", Required: true, IsNumber: false),
             RopeParameter.Computed("attention-factor", "sqrt(1 + ln s / ln L_train)", "cos/sin multiplier")], () => new LongRope()),
        new("llama3", "Llama 3.1 RoPE scaling: low/high frequency factors with a smooth blend",
            "w_i = 2 pi / theta_i: w_i < L_o/high: theta_i; w_i > L_o/low: theta_i / s; else blend (1 - g) theta_i / s + g theta_i, g = (L_o / w_i - low)/(high - low)",
            "Meta 2024 (Llama 3.1); HF _compute_llama3_parameters",
            [Factor, RopeParameter.Num("low-freq-factor", 1, "low"), RopeParameter.Num("high-freq-factor", 4, "high"),
             RopeParameter.Computed("original-max-position", "trained context", "L_o")], () => new Llama3Rope()),
        new("giraffe-truncate", "Giraffe truncated RoPE basis (Pal et al. 2023): keep high, rho for mid, 0 for low frequencies",
            "b = 2 pi / T: theta_i' = theta_i (theta_i >= b), rho = 2 pi / (rho_div T) (b/z <= theta_i < b), 0 (theta_i < b/z); theta_i / scale first",
            "Pal et al. 2023, arXiv 2308.10882, sec. 3.2; abacusai/Long-Context truncate_frequency",
            [RopeParameter.Computed("truncate", "trained context", "T (0 disables)"), RopeParameter.Num("z", 8, "z"), RopeParameter.Num("rho-div", 16, "rho divisor"),
             RopeParameter.Num("scale", 1, "linear scale applied first")], () => new GiraffeTruncateRope()),
        new("giraffe-power", "Giraffe power-scaled RoPE basis (Pal et al. 2023): theta_i (1 - 2i/d)^k",
            "theta_i' = theta_i / scale * (1 - 2i/d)^k",
            "Pal et al. 2023, arXiv 2308.10882, sec. 3.2; abacusai/Long-Context scale_power",
            [RopeParameter.Num("power", 1, "k (0: identity)"), RopeParameter.Num("scale", 1, "linear scale")], () => new GiraffePowerRope()),
    ];

    public static IEnumerable<string> Names => All.Select(m => m.Name);

    public static RopeMethod? Find(string name) => All.FirstOrDefault(m => m.Name == name);

    /// <summary>The row for <paramref name="name"/>; an unknown name is an <see cref="ArgumentException"/> listing the known ones.</summary>
    public static RopeMethod Get(string name) =>
        Find(name) ?? throw new ArgumentException($"--rope {name}: unknown method; known: {string.Join(", ", Names)}");

    /// <summary>The row of a pass named <c>rope-METHOD</c>.</summary>
    public static RopeMethod ForPass(string passName) =>
        passName.StartsWith(PassPrefix, StringComparison.Ordinal) && Find(passName[PassPrefix.Length..]) is { } m ? m
            : throw new ArgumentException($"pass '{passName}' is not a RoPE method pass; known: {string.Join(", ", All.Select(x => x.PassName))}");

    /// <summary>The table as text (<c>lcc compile --list-passes</c>, <c>--rope</c> help).</summary>
    public static string Describe()
    {
        var sb = new StringBuilder();
        foreach (var m in All)
        {
            sb.Append($"  {m.Name,-17} {m.Formula}\n");
            sb.Append($"  {"",-17} options: {(m.Parameters.Count == 0 ? "none" : string.Join(", ", m.Parameters))}\n");
            sb.Append($"  {"",-17} source: {m.Source}\n");
        }
        sb.Append($"  every method also takes: {string.Join(", ", Common.Select(p => $"{p.Name} ({p.DefaultText})"))}\n");
        return sb.ToString();
    }
}

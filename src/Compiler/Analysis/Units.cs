using System.Globalization;
using System.Text.RegularExpressions;

namespace LongCtx.Compiler.Analysis;

/// <summary>Human units for CLI options: sizes ("24GiB", "512 MB"), bandwidths ("50GB/s"), token counts ("32k", "1M").</summary>
public static partial class Units
{
    [GeneratedRegex(@"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")]
    private static partial Regex NumberUnit();

    private static readonly Dictionary<string, double> ByteUnits = new(StringComparer.OrdinalIgnoreCase)
    {
        [""] = 1, ["B"] = 1,
        ["KB"] = 1e3, ["MB"] = 1e6, ["GB"] = 1e9, ["TB"] = 1e12,
        ["KiB"] = 1L << 10, ["MiB"] = 1L << 20, ["GiB"] = 1L << 30, ["TiB"] = 1L << 40,
    };

    /// <summary>Bytes: B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (powers of 1024). "24GiB" -> 25769803776.</summary>
    public static long ParseBytes(string text, string option = "size")
    {
        var (n, unit) = Split(text, option, "24GiB");
        if (!ByteUnits.TryGetValue(unit, out var mult))
            throw new ArgumentException($"{option}: unknown unit '{unit}' in '{text}'; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB (e.g. 24GiB)");
        double v = Math.Round(n * mult);
        if (v > MaxBytes) throw new ArgumentException($"{option}: '{text}' is too large (at most {Bytes(MaxBytes)})");
        return (long)v;
    }

    /// <summary>Largest size accepted (2^60 bytes = 1 EiB): far above any machine, far below a 64-bit overflow.</summary>
    public const long MaxBytes = 1L << 60;

    /// <summary>Bytes per second: a size unit followed by "/s" ("50GB/s", "1.5 TB/s", "800MiB/s").</summary>
    public static double ParseBandwidth(string text, string option = "bandwidth")
    {
        var t = text.Trim();
        int slash = t.LastIndexOf('/');
        if (slash < 0 || !t[(slash + 1)..].Trim().Equals("s", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"{option}: '{text}' is not a bandwidth; write a size per second, e.g. 50GB/s or 800MiB/s");
        var bytes = ParseBytes(t[..slash], option);
        if (bytes <= 0) throw new ArgumentException($"{option}: '{text}' must be positive");
        return bytes;
    }

    /// <summary>Token counts: plain integers or k/M/G suffixes meaning 2^10, 2^20, 2^30 ("32k" = 32768, "1M" = 1048576).</summary>
    public static long ParseTokens(string text, string option = "context")
    {
        var (n, unit) = Split(text, option, "32k");
        double mult = unit.ToLowerInvariant() switch
        {
            "" => 1, "k" => 1 << 10, "m" => 1 << 20, "g" => 1 << 30,
            _ => throw new ArgumentException($"{option}: unknown unit '{unit}' in '{text}'; use a token count like 4096, 32k or 1M (k = 1024)"),
        };
        double v = Math.Round(n * mult);
        if (v < 1) throw new ArgumentException($"{option}: '{text}' must be at least one token");
        if (v > int.MaxValue) throw new ArgumentException($"{option}: '{text}' is too large (at most {int.MaxValue} tokens, 2^31 - 1)");
        return (long)v;
    }

    private static (double N, string Unit) Split(string text, string option, string example)
    {
        var m = NumberUnit().Match(text ?? "");
        if (!m.Success) throw new ArgumentException($"{option}: cannot read '{text}'; expected a number with a unit, e.g. {example}");
        return (double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), m.Groups[2].Value);
    }

    /// <summary>Binary-prefixed size ("1.5 GiB").</summary>
    public static string Bytes(double b) =>
        b >= 1L << 40 ? $"{b / (1L << 40):0.##} TiB" : b >= 1L << 30 ? $"{b / (1L << 30):0.##} GiB" : b >= 1L << 20 ? $"{b / (1L << 20):0.##} MiB" : b >= 1 << 10 ? $"{b / 1024:0.##} KiB" : $"{b:0.##} B";

    /// <summary>Token count with binary suffix when exact ("32k", "1M").</summary>
    public static string Tokens(long t) =>
        t >= 1 << 20 && t % (1 << 20) == 0 ? $"{t >> 20}M" : t >= 1 << 10 && t % (1 << 10) == 0 ? $"{t >> 10}k" : t.ToString(CultureInfo.InvariantCulture);

    /// <summary>FLOP count with an SI prefix ("3.4 PFLOP").</summary>
    public static string Flops(double f) =>
        f >= 1e18 ? $"{f / 1e18:0.##} EFLOP" : f >= 1e15 ? $"{f / 1e15:0.##} PFLOP" : f >= 1e12 ? $"{f / 1e12:0.##} TFLOP" : f >= 1e9 ? $"{f / 1e9:0.##} GFLOP" : f >= 1e6 ? $"{f / 1e6:0.##} MFLOP" : $"{f:0} FLOP";

    /// <summary>Decimal-prefixed rate ("50 GB/s"), matching how bandwidths are quoted.</summary>
    public static string Rate(double bytesPerSecond) =>
        bytesPerSecond >= 1e12 ? $"{bytesPerSecond / 1e12:0.##} TB/s" : bytesPerSecond >= 1e9 ? $"{bytesPerSecond / 1e9:0.##} GB/s" : bytesPerSecond >= 1e6 ? $"{bytesPerSecond / 1e6:0.##} MB/s" : $"{bytesPerSecond:0.##} B/s";

    public static string Seconds(double s) =>
        s >= 1 ? $"{s:0.###} s" : s >= 1e-3 ? $"{s * 1e3:0.###} ms" : $"{s * 1e6:0.###} us";
}

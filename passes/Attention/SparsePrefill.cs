using System.Globalization;
using LongCtx.Compiler;
using LongCtx.Compiler.IR;

namespace LongCtx.Passes.Attention;

/// <summary>
/// The sparse PREFILL patterns of <c>longctx.LongAttention</c> (issue 10) and their settings; the kernel side is
/// custom-ops/kernels/attention/la_pattern_trishape.cc and la_sparse_{vslash,xattn}.cc. Decode and short prompts run
/// dense over the same (rotated) cache: a call runs sparse only with at least 64 query rows and <c>min_len</c> tokens.
/// <list type="bullet">
/// <item><c>trishape</c> (SCBench, Li et al. 2024, arXiv:2412.10319): allowed(q, k) = k &lt;= q and (k &lt; sink or
/// q - window &lt; k or q is one of the last <c>last</c> rows of the prompt).</item>
/// <item><c>vslash</c> (MInference, Jiang et al. 2024, arXiv:2407.02490): from the last 64 queries, the first 30 columns
/// and last 100 diagonals plus the top <c>vertical</c> columns and top <c>slash</c> diagonals; per query block the
/// diagonals become contiguous key ranges and the columns outside them are gathered.</item>
/// <item><c>block</c>: a static layout of 64-key blocks, Phi-3-small's local + vertical stride (query block qb attends
/// key block j &lt;= qb iff qb - j &lt; <c>local</c> or (j + 1) mod <c>vert_stride</c> = 0); every layer runs it on
/// longctx.LongAttention (see <see cref="SparsePrefillRecord"/> for why not com.microsoft.SparseAttention).</item>
/// <item><c>xattn</c> (XAttention, Xu et al. 2025, arXiv:2503.16428): antidiagonal block scores at <c>stride</c>, block 64;
/// each query block keeps the fewest key blocks reaching <c>threshold</c> of its mass, plus the first and diagonal.</item>
/// </list>
/// Defaults: trishape sink 64, window 1024, last 64 (SCBench's tri-shape with A-shape (64, 1024)); vslash vertical 1000,
/// slash 4096 (one of MInference's candidate budgets, issue 10); xattn threshold 0.9, stride 8 (XAttention's defaults).
/// min_len by measurement (SparsePrefillBench, one layer, synthetic RoPE inputs, 2-core shared box): xattn ran 0.63-0.91x
/// dense at 2k-4k and 0.93-1.13x at 8k, vslash's default budget covers every key below ~8k, so both gate at 8192;
/// trishape and block have no estimate and won from 2k (trishape 1.1-1.3x at 2k, 3-3.8x at 8k), so they gate at 2048.
/// Re-measure on a quiet box with <c>SparsePrefillBench</c> (its doc comment has the command line).
/// </summary>
public sealed record SparsePrefill(int MinLen, int Vertical, int Slash, double Threshold, int Stride, int Last, int LocalBlocks = SparsePrefill.DefaultLocalBlocks,
    int VertStride = SparsePrefill.DefaultVertStride)
{
    public const int DefaultTriSink = 64, DefaultTriWindow = 1024, DefaultLast = 64;
    public const int DefaultVertical = 1000, DefaultSlash = 4096, DefaultStride = 8;
    public const double DefaultThreshold = 0.9;
    public const int DefaultMinLen = 8192, DefaultTriMinLen = 2048;
    public const int DefaultLocalBlocks = 16, DefaultVertStride = 8;
    /// <summary>Columns and diagonals vslash always keeps (MInference), on top of the budgets.</summary>
    public const int VslashSinkCols = 30, VslashLocalDiags = 100;

    /// <summary>The option keys of each sparse pattern (merged into <see cref="LongAttentionSettings.Keys"/>).</summary>
    public static readonly IReadOnlyDictionary<string, string[]> Keys = new Dictionary<string, string[]>(StringComparer.Ordinal)
    {
        ["trishape"] = ["sink", "window", "last", "min_len", "layers"],
        ["vslash"] = ["vertical", "slash", "min_len", "layers"],
        ["xattn"] = ["threshold", "stride", "min_len", "layers"],
        ["block"] = ["local", "vert_stride", "min_len", "layers"],
    };

    /// <summary>Reads a sparse pattern's options (Int: the non-negative integer option or null).</summary>
    internal static LongAttentionSettings Parse(string pattern, IReadOnlyDictionary<string, string> options, Func<string, int?> Int,
        IReadOnlySet<int>? layers, int? trained, int? context, string model)
    {
        string where = $"{model}: --attention {pattern}";
        double threshold = DefaultThreshold;
        if (options.TryGetValue("threshold", out var ts)
            && !(double.TryParse(ts, NumberStyles.Float, CultureInfo.InvariantCulture, out threshold) && threshold > 0 && threshold <= 1))
            throw new CompileException($"{where}: threshold={ts} must be a number in (0, 1], e.g. threshold=0.9");
        int stride = Int("stride") ?? DefaultStride;
        if (stride < 1 || 64 % stride != 0) throw new CompileException($"{where}: stride={stride} must divide the block of 64 (e.g. stride=8 or 16)");
        int minLen = Int("min_len") ?? (pattern is "trishape" or "block" ? DefaultTriMinLen : DefaultMinLen);
        var sp = new SparsePrefill(minLen, Int("vertical") ?? DefaultVertical, Int("slash") ?? DefaultSlash, threshold, stride, Int("last") ?? DefaultLast,
            Int("local") ?? DefaultLocalBlocks, Int("vert_stride") ?? DefaultVertStride);
        if (pattern == "block" && (sp.LocalBlocks < 1 || sp.VertStride < 1))
            throw new CompileException($"{where}: local={sp.LocalBlocks} and vert_stride={sp.VertStride} must be at least 1");
        int sink = Int("sink") ?? DefaultTriSink, window = Int("window") ?? DefaultTriWindow;
        if (pattern == "trishape" && window < 1) throw new CompileException($"{where}: window={window} must be at least 1");
        var p = pattern switch
        {
            "trishape" => AttentionPattern.Trishape, "vslash" => AttentionPattern.Vslash, "block" => AttentionPattern.Block, _ => AttentionPattern.Xattn,
        };
        string said = $"{pattern}: {sp.Describe(p, sink, window)} (unset options are defaults; prompts under {minLen} tokens and decode run dense)";
        return new LongAttentionSettings(p, pattern == "trishape" ? sink : 0, pattern == "trishape" ? window : 0, 0, 0, layers, trained, context, said) { Sparse = sp };
    }

    /// <summary>The parameters as one phrase ("vertical=1000 slash=4096 min_len=8192").</summary>
    public string Describe(AttentionPattern p, int sink, int window) => p switch
    {
        AttentionPattern.Trishape => $"sink={sink} window={window} last={Last} min_len={MinLen}",
        AttentionPattern.Vslash => $"vertical={Vertical} slash={Slash} min_len={MinLen}",
        AttentionPattern.Block => $"local={LocalBlocks} vert_stride={VertStride} min_len={MinLen}",
        _ => $"threshold={Threshold.ToString(CultureInfo.InvariantCulture)} stride={Stride} min_len={MinLen}",
    };

    /// <summary>The op attributes of the pattern (besides <c>pattern</c>).</summary>
    public IEnumerable<Attr> Attrs(AttentionPattern p, int sink, int window)
    {
        yield return Attr.Int("min_len", MinLen);
        switch (p)
        {
            case AttentionPattern.Trishape:
                yield return Attr.Int("sink", sink);
                yield return Attr.Int("window", window);
                yield return Attr.Int("last", Last);
                break;
            case AttentionPattern.Vslash:
                yield return Attr.Int("vertical", Vertical);
                yield return Attr.Int("slash", Slash);
                break;
            case AttentionPattern.Xattn:
                yield return Attr.Float("threshold", (float)Threshold);
                yield return Attr.Int("stride", Stride);
                break;
            case AttentionPattern.Block:
                yield return Attr.Int("local_blocks", LocalBlocks);
                yield return Attr.Int("vert_stride", VertStride);
                break;
        }
    }

    /// <summary>
    /// The share of causal (query, key) pairs a prompt of <paramref name="length"/> tokens attends, from the budget
    /// (an upper estimate: vslash keys per row &lt;= 30 + vertical + 100 + slash + 64, since a query block's diagonals
    /// widen to 64-key ranges; trishape exact up to the block edges); null for xattn, whose density depends on the data.
    /// </summary>
    public double? ExpectedDensity(AttentionPattern p, int sink, int window, int length)
    {
        double L = length, causal = L * (L + 1) / 2;
        if (length < MinLen || length < 64) return 1.0;
        return p switch
        {
            AttentionPattern.Vslash => Math.Min(1.0, L * (VslashSinkCols + Vertical + VslashLocalDiags + Slash + 64) / causal),
            AttentionPattern.Trishape => Math.Min(1.0, ((L - Math.Min(Last, L)) * Math.Min(L, sink + window) + Math.Min(Last, L) * L) / causal),
            // per row: the local blocks plus one block in vert_stride of the rest (on average half the row)
            AttentionPattern.Block => Math.Min(1.0, L * (64.0 * LocalBlocks + L / 2 / VertStride) / causal),
            _ => null,
        };
    }
}

using LongCtx.Compiler.IR;

namespace LongCtx.Passes.Rope;

/// <summary>Where a model keeps its rotary tables.</summary>
public abstract record RopeSite(string Where, double Theta, int RotaryDim, ElementType Element);

/// <summary>
/// Exported (torch) form: a float constant <c>inv_freq</c> (values base^(-2i/d)) multiplied by the positions, then Cos
/// and Sin. <see cref="FreqUse"/> is the node slot that reads the constant.
/// <code>
///   position_ids ─ Unsqueeze ─ Cast ─ Mul(inv_freq) ─ Concat(x,x) ─┬─ Cos ─ ...
///                                                                └─ Sin ─ ...
/// </code>
/// </summary>
public sealed record InvFreqSite(string Where, double Theta, int RotaryDim, ElementType Element,
    Value InvFreq, Node? ConstantNode, Use FreqUse, IReadOnlyList<Node> Cos, IReadOnlyList<Node> Sin, float[] Values)
    : RopeSite(Where, Theta, RotaryDim, Element);

/// <summary>
/// Cache form: cos/sin cache initializers [max_pos, rotary_dim/2] read by com.microsoft RotaryEmbedding, com.microsoft
/// GroupQueryAttention (do_rotary=1) or ONNX RotaryEmbedding (opset 23).
/// </summary>
public sealed record CacheSite(string Where, double Theta, int RotaryDim, ElementType Element,
    Value CosCache, Value SinCache, IReadOnlyList<Node> Consumers, int Rows)
    : RopeSite(Where, Theta, RotaryDim, Element);

/// <summary>The sites found and what was examined (for the "no RoPE" error).</summary>
public sealed record RopeSearch(IReadOnlyList<RopeSite> Sites, IReadOnlyList<string> Checked, IReadOnlyList<string> Rejected);

/// <summary>
/// Finds rotary tables without the attention-discovery pass (kept in one file so it can be swapped for its RopeInfo).
/// Check first, never mutate: returns sites with the recovered base theta and rotary dimension.
/// </summary>
public static class RopeLocator
{
    private static readonly HashSet<string> Transparent = new(StringComparer.Ordinal) { "Concat", "Mul", "MatMul", "Transpose", "Reshape", "Unsqueeze", "Expand", "Cast", "Squeeze" };

    /// <summary>Shape-only ops the locator walks through between Cos/Sin and the inv_freq multiply.</summary>
    public static bool IsTransparent(string opType) => Transparent.Contains(opType);

    public static RopeSearch Find(Model model)
    {
        var sites = new List<RopeSite>();
        var checkedNodes = new List<string>();
        var rejected = new List<string>();
        var g = model.Graph;

        // Exported form: Cos/Sin whose argument is (positions x constant).
        var byConst = new Dictionary<Value, (Value v, Node? cn, Use use, List<Node> cos, List<Node> sin, float[] vals, double theta, ElementType et)>();
        foreach (var n in g.Nodes.Where(n => n.Domain.Length == 0 && n.OpType is "Cos" or "Sin"))
        {
            checkedNodes.Add($"{n.OpType} '{n.Name}'");
            var found = FindInvFreq(n.Input(0), 0);
            if (found is not { } f) { rejected.Add($"{n.OpType} '{n.Name}': no inv_freq constant upstream"); continue; }
            var (t, et) = ConstOf(f.v)!.Value;
            var vals = t.ToFloats();
            // fp16 constants carry a relative rounding of up to 2^-12: fit and snap within 1e-3 (fp32: 1e-4 / 1e-5).
            bool half = et is ElementType.Float16 or ElementType.BFloat16;
            var why = FitTheta(vals, out double theta, tolerance: half ? (et == ElementType.BFloat16 ? 8e-3 : 1e-3) : 1e-4);
            if (why is not null) { rejected.Add($"{n.OpType} '{n.Name}': {why}"); continue; }
            theta = Snap(theta, half ? 1e-3 : 1e-5);
            if (!byConst.TryGetValue(f.v, out var e))
                byConst[f.v] = e = (f.v, f.v.Producer is { OpType: "Constant" } p ? p : null, f.use, [], [], vals, theta, et);
            (n.OpType == "Cos" ? e.cos : e.sin).Add(n);
        }
        foreach (var e in byConst.Values)
        {
            if (e.cos.Count == 0 || e.sin.Count == 0) { rejected.Add($"constant '{e.v.Name}': feeds only {(e.cos.Count == 0 ? "Sin" : "Cos")}"); continue; }
            sites.Add(new InvFreqSite($"inv_freq '{e.v.Name}' -> {string.Join(", ", e.cos.Concat(e.sin).Select(x => x.Name))}", e.theta, 2 * e.vals.Length, e.et,
                e.v, e.cn, e.use, e.cos, e.sin, e.vals));
        }

        // Cache form.
        var byCache = new Dictionary<(Value, Value), List<Node>>();
        foreach (var n in g.Nodes)
        {
            (int c, int s)? slots = (n.Domain, n.OpType) switch
            {
                ("com.microsoft", "RotaryEmbedding") => (2, 3),
                ("com.microsoft", "GroupQueryAttention") when n.IntAttr("do_rotary", 0) == 1 => (7, 8),
                ("", "RotaryEmbedding") => (1, 2),
                _ => null,
            };
            if (n.OpType is "RotaryEmbedding" or "GroupQueryAttention") checkedNodes.Add($"{n.QualifiedOp} '{n.Name}'");
            if (slots is not { } sl) continue;
            if (n.Input(sl.c) is not { } cv || n.Input(sl.s) is not { } sv || !cv.IsInitializer || !sv.IsInitializer)
            {
                rejected.Add($"{n.QualifiedOp} '{n.Name}': cos/sin caches are not initializers");
                continue;
            }
            if (!byCache.TryGetValue((cv, sv), out var list)) byCache[(cv, sv)] = list = [];
            list.Add(n);
        }
        foreach (var ((cv, sv), users) in byCache)
        {
            var ct = cv.Const!;
            if (ct.Dims.Length != 2 || ct.Dims[0] < 2 || !sv.Const!.Dims.SequenceEqual(ct.Dims))
            {
                rejected.Add($"cache '{cv.Name}': shape [{string.Join(",", ct.Dims)}] is not [max_pos, rotary_dim/2]");
                continue;
            }
            int half = (int)ct.Dims[1];
            float[] c = ct.ToFloats(), s = sv.Const.ToFloats();
            // Row 1 holds (cos, sin)(1 * theta_i): the angle is theta_i (all theta_i < pi).
            var inv = new float[half];
            for (int i = 0; i < half; i++) inv[i] = (float)Math.Atan2(s[half + i], c[half + i]);
            var why = FitTheta(inv, out double theta, tolerance: ct.Element == ElementType.Float ? 1e-3 : 2e-2);
            if (why is not null) { rejected.Add($"cache '{cv.Name}': {why}"); continue; }
            theta = Snap(theta, ct.Element == ElementType.Float ? 1e-4 : 2e-3);
            sites.Add(new CacheSite($"cos/sin caches '{cv.Name}', '{sv.Name}' -> {string.Join(", ", users.Select(u => u.Name))}", theta, 2 * half, ct.Element, cv, sv, users, (int)ct.Dims[0]));
        }
        return new RopeSearch(sites, checkedNodes, rejected);
    }

    private static (Value v, Use use)? FindInvFreq(Value? v, int depth)
    {
        if (v?.Producer is not { } p || depth > 8 || !Transparent.Contains(p.OpType) || p.Domain.Length != 0) return null;
        for (int i = 0; i < p.Inputs.Count; i++)
        {
            var x = p.Inputs[i];
            if (x is null) continue;
            if (p.OpType is "Mul" or "MatMul" && ConstOf(x) is { } c && c.t.ElementCount >= 2 && c.et is ElementType.Float or ElementType.Float16 or ElementType.BFloat16 or ElementType.Double)
                return (x, new Use(p, i));
        }
        foreach (var x in p.Inputs)
            if (FindInvFreq(x, depth + 1) is { } r) return r;
        return null;
    }

    /// <summary>Constant data of an initializer or of a Constant node's output.</summary>
    public static (Tensor t, ElementType et)? ConstOf(Value v)
    {
        if (v.Const is { } t) return (t, t.Element);
        if (v.Producer is { OpType: "Constant", Domain: "" } cn && cn.Attribute("value") is { Kind: AttrKind.Tensor } a)
        {
            var ct = a.AsTensor();
            return (ct, ct.Element);
        }
        return null;
    }

    /// <summary>
    /// Caches store cos/sin, not the frequencies, so the fitted base carries the table's rounding (fp16: ~1e-3); bases are
    /// round numbers in practice (1e4, 5e5, 1e6), so a fit within <paramref name="relTol"/> of a 2-significant-digit
    /// value is snapped to it (exported fp32 inv_freq: 1e-5; fp32 caches 1e-4; fp16 caches 2e-3).
    /// </summary>
    public static double Snap(double theta, double relTol)
    {
        double mag = Math.Pow(10, Math.Floor(Math.Log10(theta)) - 1);
        double r = Math.Round(theta / mag) * mag;
        return Math.Abs(r - theta) <= relTol * theta ? r : theta;
    }

    /// <summary>
    /// Checks that <paramref name="f"/> is theta^(-2i/d) (d = 2 len) and recovers theta by least squares on
    /// ln f_i = -(2i/d) ln theta. Returns the failure reason, or null.
    /// </summary>
    public static string? FitTheta(float[] f, out double theta, double tolerance = 1e-4)
    {
        theta = 0;
        if (f.Length < 2) return "fewer than 2 frequencies";
        if (Math.Abs(f[0] - 1) > tolerance) return $"first frequency is {f[0]}, not 1";
        int d = 2 * f.Length;
        double num = 0, den = 0;
        for (int i = 1; i < f.Length; i++)
        {
            if (!(f[i] > 0)) return $"frequency {i} is {f[i]}";
            double x = 2.0 * i / d;
            num += x * -Math.Log(f[i]);
            den += x * x;
        }
        theta = Math.Exp(num / den);
        if (!(theta > 1)) return $"fitted base {theta} is not above 1";
        for (int i = 0; i < f.Length; i++)
        {
            double want = Math.Pow(theta, -2.0 * i / d);
            if (Math.Abs(f[i] - want) > tolerance * want + 1e-7) return $"frequency {i} is {f[i]}, base {theta:G6} predicts {want:G6}";
        }
        return null;
    }
}

using LongCtx.Compiler.Analysis.Rope;
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
/// Finds rotary tables without the attention-discovery pass: the sites (which constant, which caches, which nodes read
/// them) are found here; theta and the rotary dimension are recovered by <see cref="RopeAnalysis"/>, the same fit and
/// rounding attention discovery and the architecture card use. Check first, never mutate.
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
            var fit = RopeAnalysis.Fit(vals, RopePrecision.Of(et, fromCache: false));
            if (!fit.IsPlain) { rejected.Add($"{n.OpType} '{n.Name}': {fit.Mismatch}"); continue; }
            double theta = fit.Theta!.Value;
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
            var fit = RopeAnalysis.Fit(RopeAnalysis.CacheFrequencies(ct, sv.Const, CacheLayout.Half)!, RopePrecision.Of(ct.Element, fromCache: true));
            if (!fit.IsPlain) { rejected.Add($"cache '{cv.Name}': {fit.Mismatch}"); continue; }
            sites.Add(new CacheSite($"cos/sin caches '{cv.Name}', '{sv.Name}' -> {string.Join(", ", users.Select(u => u.Name))}", fit.Theta!.Value, 2 * half, ct.Element, cv, sv, users, (int)ct.Dims[0]));
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
}

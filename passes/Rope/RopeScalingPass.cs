using System.Globalization;
using LongCtx.Compiler;
using LongCtx.Compiler.Analysis.Rope;
using LongCtx.Compiler.Config;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;

namespace LongCtx.Passes.Rope;

/// <summary>What a method gets to compute its tables: the recovered rotary parameters and the options.</summary>
public sealed record RopeSetting(double Theta, int RotaryDim, double Scale, double TrainedContext, double Context, PassContext Ctx)
{
    /// <summary>The method's row in <see cref="RopeMethods"/>: the options it may read and their defaults.</summary>
    public required RopeMethod Method { get; init; }

    /// <summary>Option <paramref name="name"/>, else its default from the method table.</summary>
    public double Num(string name) =>
        Num(name, Declared(name).Default ?? throw new InvalidOperationException($"rope-{Method.Name}: option {name} has a computed default; pass it"));

    /// <summary>Option <paramref name="name"/>, else the computed default <paramref name="dflt"/>.</summary>
    public double Num(string name, double dflt)
    {
        Declared(name);
        var s = Ctx.Option(name, "");
        if (s.Length == 0) return dflt;
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v
            : throw new ArgumentException($"rope option {name}={s} is not a number");
    }
    public double? OptNum(string name) => Ctx.Option(name, "").Length == 0 ? null : Num(name, 0);

    /// <summary>Reading an option the method table does not declare is a bug in the method's pass.</summary>
    private RopeParameter Declared(string name) =>
        Method.Parameter(name) ?? throw new InvalidOperationException($"rope-{Method.Name} reads option '{name}', which its row in RopeMethods does not declare");
}

/// <summary>
/// Shared driver of the RoPE context-extension passes (one subclass per method, each in its own file, with the formula
/// in <see cref="RopeFrequencies"/>). The target length comes from the pipeline (<see cref="PassContext.TargetContext"/>,
/// <c>lcc compile --context N</c>) or, for a pass run on its own, its option <c>context</c>; one is required. Options
/// (strings, from <c>lcc compile --rope METHOD:k=v</c>): <c>trained-context</c> (else: cos-cache length, else config.json beside the
/// model), <c>force</c> (apply even when context &lt;= trained), <c>factor</c> (override s = context / trained),
/// <c>theta</c> (override the recovered base).
/// Rewrites: exported form — the inv_freq constant is replaced by theta_i' (computed as the original float value times
/// theta_i'/theta_i, so s = 1 reproduces the original bit for bit) and, when the method's cos/sin multiplier is not 1,
/// a Mul by it is inserted after every Cos and Sin; cache form — cos/sin caches are recomputed (in double) at
/// max(context, rows) rows with the scaled frequencies and the multiplier.
/// fp16 exported chains whose angles (context - 1) x max(theta_i') exceed 65504 (fp16 max) are noted and computed in
/// fp32: float32 inv_freq (from the recovered base), positions cast to float, Cast to fp16 after Cos/Sin (before any
/// multiplier, kept fp16). Cache-form tables are computed in double, so they cannot overflow that way.
/// </summary>
public abstract class RopeScalingPass : IPass
{
    /// <summary>The method's name in <see cref="RopeMethods"/>, whose row gives the pass name, description and options.</summary>
    protected abstract string MethodName { get; }
    public RopeMethod Method => RopeMethods.Get(MethodName);
    public string Name => Method.PassName;
    public string Description => Method.Description;
    public bool IsExact => false;

    /// <summary>The method's tables at the compile-time scale.</summary>
    protected abstract RopeTables Compute(RopeSetting p);

    /// <summary>
    /// Methods whose frequencies depend on the current length (dynamic NTK, LongRoPE's short/long switch) override this
    /// to build the frequencies in the graph; return null to use the static tables.
    /// </summary>
    protected virtual Value? BuildDynamicFrequencies(InvFreqSite site, RopeSetting p, RopeTables tables, Rewriter rw, Node before) => null;

    /// <summary>Cache-form models: a method may refuse (with the reason) when static caches cannot express it.</summary>
    protected virtual string? CacheFormUnsupported(RopeSetting p) => null;

    public void Run(Model model, PassContext ctx)
    {
        Method.CheckOptions(ctx.Options.Keys);
        RopeOptionRules.Check(Method, ctx.Options);
        var search = RopeLocator.Find(model);
        if (search.Sites.Count == 0)
            throw new CompileException($"{model.DisplayName}: no rotary embedding found for --rope {Name}: checked " +
                (search.Checked.Count == 0 ? "no Cos/Sin, RotaryEmbedding or GroupQueryAttention nodes (none in the graph)" : string.Join(", ", search.Checked.Take(12)) + (search.Checked.Count > 12 ? $" and {search.Checked.Count - 12} more" : "")) +
                (search.Rejected.Count > 0 ? "; rejected: " + string.Join("; ", search.Rejected.Take(4)) : "") + "; remove --rope for models without RoPE");

        if (model.MetadataProps.FirstOrDefault(kv => kv.Key == AppliedKey) is { Key: not null } prev && ctx.Option("force", "false") is not ("true" or "1"))
            throw new CompileException($"{model.DisplayName}: RoPE was already scaled by lcc ({prev.Value}); scaling again would compound the factors: compile the original model instead (or add --force-rope)");
        // The model's own statement of its trained length wins over cache sizes: a cache may be longer than training
        // (lcc's canonical caches are 32k rows), while config.json / lcc metadata say what the model was trained at.
        double? trained = ReadInt(ctx, "trained-context") ?? MetadataTrainedContext(model) ?? ConfigTrainedContext(model)
            ?? search.Sites.OfType<CacheSite>().Select(c => (double?)c.Rows).FirstOrDefault();
        if (trained is not { } lt)
            throw new CompileException($"{model.DisplayName}: cannot tell the trained context of {search.Sites[0].Where} (no cos/sin cache, no config.json); give --trained-context N");
        double context = TargetContext(ctx) ?? throw new CompileException($"{model.DisplayName}: --rope {Name} needs --context N (the target context length)");
        bool force = ctx.Option("force", "false") is "true" or "1";
        if (context <= lt && !force)
        {
            ctx.Note($"context {context} is not larger than the trained context {lt}: RoPE left unchanged (use --force-rope to apply {Name} anyway)");
            ctx.Log($"lcc: warning: --context {context} <= trained context {lt}: --rope {Name} applies nothing (use --force-rope)");
            return;
        }

        var applied = new List<Dictionary<string, object?>>();
        foreach (var site in search.Sites)
        {
            double theta = ReadDouble(ctx, "theta") ?? site.Theta;
            var p = new RopeSetting(theta, site.RotaryDim, ReadDouble(ctx, "factor") ?? context / lt, lt, context, ctx) { Method = Method };
            RopeTables tables;
            try { tables = Compute(p); }
            catch (ArgumentException e) { throw new ArgumentException($"{model.DisplayName}: {site.Where}: {e.Message}", e); }
            switch (site)
            {
                case InvFreqSite f: RewriteInvFreq(model, f, p, tables, ctx); break;
                case CacheSite c: RewriteCaches(model, c, p, tables, ctx); break;
            }
            applied.Add(new()
            {
                ["site"] = site.Where, ["theta"] = theta, ["rotary_dim"] = site.RotaryDim, ["scale"] = tables.Scale,
                ["cos_sin_multiplier"] = tables.CosSinMultiplier, ["inv_freq"] = tables.InvFreq,
                ["extra"] = tables.Extra.Count == 0 ? null : tables.Extra,
            });
        }
        ctx.RuntimeConfig["rope"] = new Dictionary<string, object?>
        {
            ["method"] = Name, ["context"] = (long)context, ["trained_context"] = (long)lt,
            ["options"] = ctx.Options.Where(kv => kv.Key is not ("context" or "trained-context")).ToDictionary(kv => kv.Key, kv => kv.Value),
            ["sites"] = applied,
        };
        ctx.Rewriter.SetMetadata(AppliedKey, $"{Name} context={context} trained={lt}");
        ctx.Note($"{Name}: context {context} / trained {lt} (s = {applied[0]["scale"]:G6}), cos/sin x {applied[0]["cos_sin_multiplier"]:G6}");
    }

    /// <summary>Model metadata key recording that RoPE was scaled (guards against compounding a second scaling).</summary>
    public const string AppliedKey = LongCtx.Contract.MetadataKeys.RopeApplied;

    /// <summary>The trained length recorded by canonicalize-attention (longctx.original_max_positions), if any.</summary>
    internal static double? MetadataTrainedContext(Model model) =>
        model.MetadataProps.FirstOrDefault(kv => kv.Key == LongCtx.Compiler.Analysis.ArchitectureCard.OriginalMaxPositionsKey) is { Key: not null } kv
        && double.TryParse(kv.Value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v) && v > 0 ? v : null;

    private void RewriteInvFreq(Model model, InvFreqSite f, RopeSetting p, RopeTables tables, PassContext ctx)
    {
        var rw = ctx.Rewriter;
        // fp16 angle overflow: positions x frequency computed in the table's type. Say so and promote the chain to fp32.
        double maxAngle = (p.Context - 1) * tables.InvFreq.Max();
        bool promote = f.Element == ElementType.Float16 && maxAngle > 65504;
        if (promote)
        {
            ctx.Note($"{f.Where}: angles up to {maxAngle:G6} rad at context {p.Context} overflow fp16 (max 65504): rotary chain computed in fp32 (inv_freq float32, Cast to fp16 after Cos/Sin)");
            ctx.Count("fp16 rotary chains promoted to fp32");
        }
        Node first = FirstUser(f);
        var chain = promote ? Fp16Chain(f) : null;
        if (promote)
        {
            // fp32 inv_freq from the recovered base, not from the fp16 constant: its rounding (up to 2^-12 relative)
            // times positions near 1e5 would move the angles by radians.
            var plain = RopeFrequencies.Plain(p.Theta, p.RotaryDim).Select(x => (float)x).ToArray();
            var pt = MakeTable(f, plain, ElementType.Float);
            if (f.ConstantNode is { } pc) rw.SetAttribute(pc, Attr.TensorValue("value", pt));
            else rw.SetInitializerData(f.InvFreq, pt);
            if (f.InvFreq.Type is { } it) rw.SetType(f.InvFreq, it with { Element = ElementType.Float });
            f = f with { Element = ElementType.Float, Values = plain };
        }
        var dyn = BuildDynamicFrequencies(f, p, tables, rw, first);
        if (dyn is not null)
        {
            rw.SetInput(f.FreqUse.Node, f.FreqUse.Index, dyn);
            if (f.ConstantNode is { } cn0 && !f.InvFreq.IsUsed) rw.RemoveNode(cn0);
            ctx.Count("inv_freq computed in graph");
        }
        else
        {
            var t = MakeTable(f, Scaled(f, p, tables.InvFreq));
            if (f.ConstantNode is { } cn) rw.SetAttribute(cn, Attr.TensorValue("value", t));
            else rw.SetInitializerData(f.InvFreq, t);
            ctx.Count("inv_freq tables rescaled");
        }
        var outs = f.Cos.Concat(f.Sin).Select(n => n.Output()).ToList();
        if (chain is not null) outs = PromoteChain(f, chain, outs, rw);
        if (tables.CosSinMultiplier != 1.0)
        {
            foreach (var outV in outs)
            {
                var n = outV.Producer!;
                var uses = outV.Uses.ToList();
                var et = chain is not null ? ElementType.Float16 : outV.Type?.Element ?? f.Element;
                var m = rw.AddInitializer(model.Graph, "rope_mscale", et == ElementType.Float16
                    ? Tensor.FromHalves([(Half)tables.CosSinMultiplier]) : Tensor.FromFloats([(float)tables.CosSinMultiplier]));
                var scaled = rw.Op(n.Graph, "Mul", [outV, m], outputName: outV.Name + "_mscaled", before: NodeAfter(n));
                if (outV.Type is { } ty) rw.SetType(scaled, ty);
                foreach (var u in uses) rw.SetInput(u.Node, u.Index, scaled);
                if (outV.IsGraphOutput) rw.ReplaceAllUsesWith(outV, scaled);
                ctx.Count("cos/sin multipliers inserted");
            }
        }
    }

    /// <summary>
    /// The values between the positions x inv_freq node and the Cos/Sin inputs (that node's output included), found by
    /// walking back from each Cos/Sin through the locator's shape-only ops.
    /// </summary>
    private static HashSet<Value> Fp16Chain(InvFreqSite f)
    {
        var mul = f.FreqUse.Node;
        var set = new HashSet<Value>();
        bool Reach(Value? v, int depth)
        {
            if (v?.Producer is not { } p || depth > 8) return false;
            if (set.Contains(v)) return true;
            if (p == mul) { set.Add(v); return true; }
            if (p.Domain.Length != 0 || !RopeLocator.IsTransparent(p.OpType)) return false;
            bool any = false;
            foreach (var x in p.Inputs) any |= Reach(x, depth + 1);
            if (any) set.Add(v);
            return any;
        }
        foreach (var n in f.Cos.Concat(f.Sin)) Reach(n.Input(0), 0);
        return set;
    }

    /// <summary>
    /// Computes the fp16 rotary chain in fp32: chain values typed float32, Cast(to=float16) chain nodes retargeted to
    /// float, fp16 inputs from outside the chain (the positions) read through Cast(to=float) — from the Cast's own input
    /// when they come from a Cast to fp16 (positions above 65504 are inf in fp16) — and Cast(to=float16) after every
    /// Cos/Sin so the rest of the graph still sees fp16. Returns the values the rest of the graph now reads.
    /// </summary>
    private static List<Value> PromoteChain(InvFreqSite f, HashSet<Value> chain, List<Value> outs, Rewriter rw)
    {
        static TensorType? AsFloat(TensorType? t) => t is null ? null : t with { Element = ElementType.Float };
        static bool IsHalf(Value v) => v.Type?.Element == ElementType.Float16 || RopeLocator.ConstOf(v)?.et == ElementType.Float16
            || v.Producer is { OpType: "Cast", Domain: "" } c && c.IntAttr("to", 0) == (long)ElementType.Float16;
        var nodes = chain.Select(v => v.Producer!).Distinct().ToList();
        foreach (var v in chain) if (v.Type is not null) rw.SetType(v, AsFloat(v.Type));
        foreach (var n in nodes)
        {
            if (n.OpType == "Cast" && n.IntAttr("to", 0) == (long)ElementType.Float16) rw.SetAttribute(n, Attr.Int("to", (long)ElementType.Float));
            for (int i = 0; i < n.Inputs.Count; i++)
            {
                if (n.Inputs[i] is not { } x || chain.Contains(x) || x == f.InvFreq || (n == f.FreqUse.Node && i == f.FreqUse.Index) || !IsHalf(x)) continue;
                var src = x.Producer is { OpType: "Cast", Domain: "" } c && c.IntAttr("to", 0) == (long)ElementType.Float16
                    && c.Input(0) is { } ci && !IsHalf(ci) ? ci : x;
                var cast = rw.Op(n.Graph, "Cast", [src], [Attr.Int("to", (long)ElementType.Float)], outputName: x.Name + "_f32", before: n);
                if (x.Type is { } xt) rw.SetType(cast, AsFloat(xt));
                rw.SetInput(n, i, cast);
                if (src != x && !x.IsUsed && !x.IsGraphOutput && x.Producer is { } old) rw.RemoveNode(old);
            }
        }
        var result = new List<Value>();
        foreach (var outV in outs)
        {
            var n = outV.Producer!;
            var uses = outV.Uses.ToList();
            var half = rw.Op(n.Graph, "Cast", [outV], [Attr.Int("to", (long)ElementType.Float16)], outputName: outV.Name + "_f16", before: NodeAfter(n));
            rw.SetType(half, outV.Type is { } ot ? ot with { Element = ElementType.Float16 } : null);
            if (outV.Type is not null) rw.SetType(outV, AsFloat(outV.Type));
            foreach (var u in uses) rw.SetInput(u.Node, u.Index, half);
            if (outV.IsGraphOutput) rw.ReplaceAllUsesWith(outV, half);
            result.Add(half);
        }
        return result;
    }

    /// <summary>The node after <paramref name="n"/> (null: end), so an insertion there keeps topological order.</summary>
    private static Node? NodeAfter(Node n)
    {
        var list = n.Graph.Nodes;
        for (int i = 0; i < list.Count - 1; i++) if (list[i] == n) return list[i + 1];
        return null;
    }

    private static Node FirstUser(InvFreqSite f) => f.FreqUse.Node;

    /// <summary>theta_i' as floats: original float value x theta_i'/theta_i (identity at s = 1, whatever the fit).</summary>
    internal static float[] Scaled(InvFreqSite f, RopeSetting p, double[] target)
    {
        var plain = RopeFrequencies.Plain(p.Theta, p.RotaryDim);
        var r = new float[target.Length];
        for (int i = 0; i < r.Length; i++) r[i] = target[i] == plain[i] ? f.Values[i] : (float)(f.Values[i] * (target[i] / plain[i]));
        return r;
    }

    internal static Tensor MakeTable(InvFreqSite f, float[] values, ElementType? element = null)
    {
        var (orig, _) = RopeLocator.ConstOf(f.InvFreq)!.Value;
        var dims = orig.Dims.ToArray();
        return (element ?? orig.Element) switch
        {
            ElementType.Float16 => Tensor.FromHalves(values.Select(v => (Half)v).ToArray(), dims),
            ElementType.Float => Tensor.FromFloats(values, dims),
            _ => throw new NotSupportedException($"{f.Where}: inv_freq of type {orig.Element.ShortName()} is not supported (float or float16)"),
        };
    }

    private void RewriteCaches(Model model, CacheSite c, RopeSetting p, RopeTables tables, PassContext ctx)
    {
        if (CacheFormUnsupported(p) is { } why)
            throw new CompileException($"{model.DisplayName}: {c.Where}: --rope {Name} {why}");
        int rows = (int)Math.Max(c.Rows, p.Context);
        var et = c.Element;
        if (et == ElementType.Float16 && tables.CosSinMultiplier > 65504)
        {
            ctx.Note($"{c.Where}: cos/sin multiplier {tables.CosSinMultiplier} overflows fp16: tables kept in fp32");
            et = ElementType.Float;
        }
        var (cos, sin) = RopeCacheTables.Double(tables.InvFreq, rows, et, tables.CosSinMultiplier);
        ctx.Rewriter.SetInitializerData(c.CosCache, cos);
        ctx.Rewriter.SetInitializerData(c.SinCache, sin);
        ctx.Count("cos/sin caches recomputed");
        if (rows != c.Rows) ctx.Note($"{c.Where}: caches grown from {c.Rows} to {rows} rows");
    }

    /// <summary>
    /// The target context: the pipeline's typed <see cref="PassContext.TargetContext"/> (<c>lcc compile --context</c>),
    /// else this step's <c>context</c> option (a pass run on its own); both given and different is an error.
    /// </summary>
    private static double? TargetContext(PassContext ctx)
    {
        var own = ReadInt(ctx, "context");
        if (ctx.TargetContext is int t)
            return own is { } o && o != t ? throw new ArgumentException($"rope option context={o} differs from the pipeline's target context {t}; give one --context") : t;
        return own;
    }

    private static double? ReadInt(PassContext ctx, string name) => ReadDouble(ctx, name) is { } v
        ? (v > 0 && v == Math.Floor(v) ? v : throw new ArgumentException($"--{name} {v}: must be a positive integer")) : null;

    private static double? ReadDouble(PassContext ctx, string name)
    {
        var s = ctx.Option(name, "");
        if (s.Length == 0) return null;
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0 ? v
            : throw new ArgumentException($"rope option {name}={s}: expected a positive number");
    }

    /// <summary>The trained context config.json beside the model states (<see cref="ModelConfig.TrainedContext"/>).</summary>
    internal static double? ConfigTrainedContext(Model model) => ModelConfig.Beside(model.SourcePath)?.TrainedContext;
}

using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Analysis.Rope;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;

namespace LongCtx.Compiler.Attention;

/// <summary>
/// Form a: attention as torch.onnx.export writes HF-style modules (Vaswani et al. 2017, softmax(QK^T/sqrt(d) + M) V),
/// anchored on the Softmax:
/// <code>
///   q = Transpose(Reshape(x @ Wq), [0,2,1,3])          k, v likewise (Hkv heads)
///   q' = q * cos + rotate_half(q) * sin                 rotate_half(x) = Concat(-x[..., d/2:], x[..., :d/2])
///   K = Concat(past_key, k', axis=2) -> present.N.key   (cache, optional)
///   K* = Reshape(Expand(Unsqueeze(K, 2)))               (repeat_kv when Hkv &lt; Hq, optional)
///   o = Reshape(Transpose(Softmax((q' @ Transpose(K*)) / s + mask) @ V*, [0,2,1,3]))  -> o @ Wo
/// </code>
/// cos/sin = Cos/Sin(Concat(f, f)) with f = positions * inv_freq, or rows of a constant cos cache gathered by position.
/// </summary>
public static class TorchAttentionForm
{
    public const string Name = "torch-matmul-softmax";
    public const string EncoderName = "bert-encoder";

    private static Pattern Projection(string proj, string weight) =>
        P.OneOf(
            P.Op("Add", P.Op("MatMul", P.Any(proj + "_x"), P.Any(weight)), P.Const()).Commutative().Named(proj),
            P.Op("MatMul", P.Any(proj + "_x"), P.Any(weight)).Named(proj));

    /// <summary>[B,S,H*D] -> [B,H,S,D].</summary>
    private static OpPattern Heads(string prefix) =>
        P.Op("Transpose", P.Op("Reshape", Projection(prefix + "_proj", prefix + "_w"), P.Any(prefix + "_shape")).ExtraInputs())
            .Attr("perm", [0L, 2, 1, 3]).Named(prefix + "_heads");

    private static OpPattern RotateHalf(string x) =>
        P.Op("Concat",
            P.Op("Neg", P.Op("Slice", P.Any(x)).ExtraInputs().Named(x + "_hi")),
            P.Op("Slice", P.Any(x)).ExtraInputs().Named(x + "_lo"))
         .Attr("axis", a => a is { Kind: AttrKind.Int } && a.AsInt() is -1 or 3, "-1");

    /// <summary>GPT-J rotate_every_two: stack(-x[..., 1::2], x[..., ::2], -1).flatten(-2), as Slice(step 2)/Neg/Unsqueeze/Concat/Reshape.</summary>
    private static OpPattern RotateEveryTwo(string x) =>
        P.Op("Reshape",
            P.Op("Concat",
                P.Op("Unsqueeze", P.Op("Neg", P.Op("Slice", P.Any(x)).ExtraInputs().Named(x + "_odd"))).ExtraInputs(),
                P.Op("Unsqueeze", P.Op("Slice", P.Any(x)).ExtraInputs().Named(x + "_even")).ExtraInputs())
             .Attr("axis", a => a is { Kind: AttrKind.Int } && a.AsInt() is -1 or 4, "-1"))
         .ExtraInputs().Named(x + "_interleaved");

    /// <summary>x * cos + rotate(x) * sin (rotate_half, or rotate_every_two when interleaved); cos and sin captured (shared by all layers).</summary>
    private static Pattern Rope(Pattern x, string name) =>
        P.Op("Add",
            P.Op("Mul", x, P.Any("cos")).Commutative(),
            P.Op("Mul", P.OneOf(RotateHalf(name), RotateEveryTwo(name)), P.Any("sin")).Commutative()).Commutative().Named(name + "_rope");

    /// <summary>
    /// Partial rotary (GPT-NeoX, Phi): Concat(rope(x[..., :R]), x[..., R:]) along the head dim. Captures
    /// <c>{prefix}_rot</c> (the rotated slice) and <c>{prefix}_pass</c>.
    /// </summary>
    private static Pattern PartialRope(Pattern heads, string prefix) =>
        P.Op("Concat",
            Rope(P.Op("Slice", heads).ExtraInputs().Named(prefix + "_rot"), prefix + "_rot"),
            P.Op("Slice", heads).ExtraInputs().Named(prefix + "_pass"))
         .Attr("axis", a => a is { Kind: AttrKind.Int } && a.AsInt() is -1 or 3, "-1").Named(prefix + "_partial");

    private static OpPattern RepeatKv(Pattern kv) =>
        P.Op("Reshape", P.Op("Expand", P.Op("Unsqueeze", kv, P.Const(null, t => t.ElementCount == 1 && t.ToInt64s()[0] == 2, "axis 2"))).ExtraInputs()).ExtraInputs();

    /// <summary>Softmax anchored pattern; k/v chains are matched separately from the captured present values.</summary>
    private static readonly Pattern Core =
        P.Op("MatMul",
            P.Opt("Cast", P.Op("Softmax",
                P.Opt("Cast", P.Opt(P.Op("Add", P.Any("scaled"), P.Any("mask")).Commutative().Named("masked"), P.Any("scaled"))))
             .Attr("axis", a => a is null || a.AsInt() is -1 or 3, "-1").Named("probs", "softmax")),
            P.Opt(RepeatKv(P.Any("v_all")), P.Any("v_all")))
        .Named("attn");

    /// <summary>
    /// q @ K^T with K^T = Transpose(K, [0,1,3,2]) of the BHSD keys (decoders), or K^T taken straight from the head split
    /// as Transpose(Reshape(x @ Wk), [0,2,3,1]) (HF BERT's key_layer.transpose(-1, -2), exported as one Transpose).
    /// </summary>
    private static readonly Pattern Scores =
        P.OneOf(
            P.Op("MatMul", P.Any("q_in"),
                P.Op("Transpose", P.Opt(RepeatKv(P.Any("k_all")), P.Any("k_all")))
                 .Attr("perm", [0L, 1, 3, 2]))
            .Named("scores"),
            P.Op("MatMul", P.Any("q_in"),
                P.Op("Transpose", P.Op("Reshape", Projection("k_proj", "k_w"), P.Any("k_shape")).ExtraInputs())
                 .Attr("perm", [0L, 2, 3, 1]).Named("k_direct"))
            .Named("scores"));

    private static readonly Pattern Query = P.OneOf(PartialRope(Heads("q"), "q"), Rope(Heads("q"), "q_heads"), Heads("q"));
    private static readonly Pattern KeyFresh = P.OneOf(PartialRope(Heads("k"), "k"), Rope(Heads("k"), "k_heads"), Heads("k"));
    private static readonly Pattern ValueFresh = Heads("v");
    private static readonly Pattern Merge = P.Op("Reshape", P.Op("Transpose", P.Any("attn")).Attr("perm", [0L, 2, 1, 3])).ExtraInputs().Named("merged");

    private static readonly Pattern Freqs =
        P.Op("Mul", P.Opt("Cast", P.Opt("Unsqueeze", P.Opt("Cast", P.Any("positions")))), P.Const("inv_freq")).Commutative();
    /// <summary>emb = Concat(f, f) (half-split), or repeat_interleave(f, 2) = Reshape(Concat(Unsqueeze(f, -1) x2, -1)) (interleaved).</summary>
    private static readonly Pattern CosCore =
        P.Op("Cos", P.OneOf(
            P.Op("Concat", P.Opt("Cast", Freqs), P.Any()),
            P.Op("Reshape", P.Op("Concat", P.Op("Unsqueeze", P.Opt("Cast", Freqs)).ExtraInputs(), P.Any())).ExtraInputs().Named("emb_interleaved")));
    /// <summary>Cos of the frequencies, optionally times a scalar (the cos/sin multiplier of YaRN/LongRoPE, inserted by the rope passes).</summary>
    private static readonly Pattern CosFromFreqs =
        P.Opt("Unsqueeze", P.Opt("Cast", P.OneOf(P.Op("Mul", CosCore, P.Const("cos_mult", t => t.ElementCount == 1, "scalar")).Commutative(), CosCore)));
    private static readonly Pattern CosFromCache =
        P.Opt("Unsqueeze", P.Opt("Cast", P.Op("Gather", P.Const("cos_cache"), P.Any("positions"))));

    /// <summary>Tries form a at <paramref name="softmax"/>. Failures say where the pattern stopped.</summary>
    public static (AttentionBlock? Block, MatchResult Failure) Match(Node softmax, int layer)
    {
        var attnValue = softmax.Output().Uses.Select(u => u.Node).FirstOrDefault(n => n.OpType == "MatMul")?.Output()
            ?? softmax.Output().Uses.Select(u => u.Node).FirstOrDefault(n => n.OpType == "Cast")?.Output().Uses.Select(u => u.Node).FirstOrDefault(n => n.OpType == "MatMul")?.Output();
        if (attnValue is null) return (null, MatchResult.Fail("Softmax output does not feed a MatMul with V", softmax.Output(), 0));
        var core = Core.Match(attnValue);
        if (!core.Ok) return (null, core);
        var b = core.Bindings!;

        // scale: Div by c, Mul by c, or none
        var scaledV = b["scaled"];
        double scale = 1.0;
        Value scoresV = scaledV;
        if (Noise.Skip(scaledV)?.Producer is { OpType: "Div" or "Mul" } sp && sp.Inputs.Count == 2)
        {
            int ci = Consts.Scalar(sp.Input(1)) is not null ? 1 : sp.OpType == "Mul" && Consts.Scalar(sp.Input(0)) is not null ? 0 : -1;
            if (ci < 0) return (null, MatchResult.Fail("attention scale is not a constant", scaledV, 3));
            double c = Consts.Scalar(sp.Input(ci))!.Value;
            scale = sp.OpType == "Div" ? 1.0 / c : c;
            scoresV = sp.Input(1 - ci)!;
        }
        var sc = Scores.Match(scoresV, b, 3);
        if (!sc.Ok) return (null, sc);
        b = sc.Bindings!;
        var q = Query.Match(b["q_in"], b, 4);
        if (!q.Ok) return (null, q);
        b = q.Bindings!;

        // keys: present = Concat(past, fresh) or fresh (or, BERT-style, already matched as K^T straight from the head split)
        Value? pastK = null, presentK = null;
        if (!b.Has("k_direct"))
        {
            var kAll = b["k_all"];
            Value kFresh = kAll;
            if (Noise.Skip(kAll)?.Producer is { OpType: "Concat" } kc && kc.Inputs.Count == 2 && kc.Input(0)!.IsGraphInput)
            {
                pastK = kc.Input(0); presentK = kAll; kFresh = kc.Input(1)!;
            }
            var kr = KeyFresh.Match(kFresh, b, 5);
            if (!kr.Ok) return (null, kr);
            b = kr.Bindings!;
        }
        var vAll = b["v_all"];
        Value? pastV = null, presentV = null;
        Value vFresh = vAll;
        if (Noise.Skip(vAll)?.Producer is { OpType: "Concat" } vc && vc.Inputs.Count == 2 && vc.Input(0)!.IsGraphInput)
        {
            pastV = vc.Input(0); presentV = vAll; vFresh = vc.Input(1)!;
        }
        var vr = ValueFresh.Match(vFresh, b, 5);
        if (!vr.Ok) return (null, vr);
        b = vr.Bindings!;
        if ((pastK is null) != (pastV is null)) return (null, MatchResult.Fail("key and value caches disagree", b.Get("k_all") ?? b["k_direct"], 5));

        // head merge and output projection
        var merged = b["attn"].Uses.Select(u => u.Node).Where(n => n.OpType == "Transpose").SelectMany(t => t.Output().Uses).Select(u => u.Node).FirstOrDefault(n => n.OpType == "Reshape")?.Output();
        var mr = Merge.Match(merged, b, 6);
        if (!mr.Ok) return (null, mr with { Reason = "attention output is not merged back to [B,S,H*D]: " + mr.Reason, At = mr.At ?? b["attn"] });
        b = mr.Bindings!;
        var output = b["merged"];
        var oProj = output.Uses.Select(u => u.Node).FirstOrDefault(n => n.OpType == "MatMul" && n.Inputs.Count == 2 && n.Input(0) == output);
        var oWeight = oProj?.Input(1) is { } ow && Consts.IsConst(ow) ? ow : null;

        // heads and head_dim
        var qShape = GraphFacts.ShapeElements(b["q_shape"]);
        var kShape = GraphFacts.ShapeElements(b["k_shape"]);
        if (qShape is not { Length: 4 } || qShape[3] is not long headDim || headDim <= 0)
            return (null, MatchResult.Fail("cannot read head_dim from the query reshape", b["q_shape"], 6));
        var qW = Consts.Of(b["q_w"]); var kW = Consts.Of(b["k_w"]);
        long? qCols = qW is { Dims.Length: 2 } ? qW.Dims[1] : null, kCols = kW is { Dims.Length: 2 } ? kW.Dims[1] : null;
        long numHeads = qShape[2] is long qh and > 0 ? qh : qCols is long qc ? qc / headDim : -1;
        long kvHeads = kShape is { Length: 4 } && kShape[2] is long kh and > 0 ? kh : kCols is long kcols ? kcols / headDim : -1;
        if (numHeads <= 0 || kvHeads <= 0) return (null, MatchResult.Fail("cannot read the number of heads from reshapes or weights", b["q_shape"], 6));
        if (numHeads % kvHeads != 0) return (null, MatchResult.Fail($"{numHeads} query heads are not a multiple of {kvHeads} kv heads", b["k_shape"], 6));
        int hidden = qW is { Dims.Length: 2 } ? (int)qW.Dims[0] : (int)(numHeads * headDim);

        // RoPE
        var rope = RopeInfo.None;
        Value? positions = null;
        float[]? invFreq = null;
        double ropeMultiplier = 1.0;
        Value? cosCache = null;
        bool qRope = b.Has("q_heads_rope") || b.Has("q_rot_rope"), kRope = b.Has("k_heads_rope") || b.Has("k_rot_rope");
        if (qRope != kRope) return (null, MatchResult.Fail("RoPE applied to only one of q and k", b["q_in"], 6));
        if (qRope)
        {
            bool interleaved = b.Has("q_heads_interleaved") || b.Has("q_rot_interleaved");
            if (interleaved != (b.Has("k_heads_interleaved") || b.Has("k_rot_interleaved")))
                return (null, MatchResult.Fail("q and k rotated differently (one interleaved, one half-split)", b["q_in"], 6));
            if (interleaved && (SliceStep(b.Get("q_heads_odd") ?? b.Get("q_rot_odd")) != 2 || SliceStep(b.Get("q_heads_even") ?? b.Get("q_rot_even")) != 2))
                return (null, MatchResult.Fail("rotate_every_two slices do not step by 2", b["q_in"], 6));
            var cosV = b["cos"];
            var f = CosFromFreqs.Match(cosV, b, 7);
            if (f.Ok)
            {
                invFreq = Consts.Floats(f.Bindings!["inv_freq"]);
                if (f.Bindings!.Has("cos_mult"))
                {
                    ropeMultiplier = Consts.Scalar(f.Bindings!["cos_mult"])!.Value;
                    // sin must carry the same multiplier: Mul(Sin(...), c) with the same c
                    var sinMul = Noise.Skip(b["sin"]);
                    while (sinMul?.Producer is { OpType: "Unsqueeze" or "Cast" } up) sinMul = up.Input(0);
                    double? sm = sinMul?.Producer is { OpType: "Mul" } smn ? (Consts.Scalar(smn.Input(1)) ?? Consts.Scalar(smn.Input(0))) : null;
                    if (sm != ropeMultiplier)
                        return (null, MatchResult.Fail($"cos is scaled by {ropeMultiplier} but sin is not scaled alike", b["sin"], 7));
                }
                positions = GraphFacts.AncestorInputs(f.Bindings!["positions"]).FirstOrDefault();
                if (f.Bindings.Has("emb_interleaved") != interleaved)
                    return (null, MatchResult.Fail($"cos table layout ({(interleaved ? "half-split" : "repeat-interleaved")}) does not match the rotation ({(interleaved ? "interleaved" : "half-split")})", cosV, 7));
                rope = invFreq is null ? new RopeInfo(true, null, 0, interleaved, null, "inv_freq")
                    : RopeAnalysis.FromInvFreq(invFreq, Consts.Of(f.Bindings!["inv_freq"])!.Element, interleaved);
            }
            else if (CosFromCache.Match(cosV, b, 7) is { Ok: true } cc)
            {
                cosCache = cc.Bindings!["cos_cache"];
                var t = Consts.Of(cosCache)!;
                // the cache holds Concat(f, f) (or f repeated pairwise when interleaved); cos alone: f_i = acos(cos[1, i])
                var layout = interleaved ? CacheLayout.RepeatInterleaved : CacheLayout.Duplicated;
                invFreq = RopeAnalysis.CacheFrequencies(t, null, layout)?.Select(x => (float)x).ToArray();
                positions = GraphFacts.AncestorInputs(cc.Bindings!["positions"]).FirstOrDefault();
                rope = RopeAnalysis.FromCache(t, null, layout, interleaved);
            }
            else return (null, f with { Reason = "RoPE cos is neither Cos(positions * inv_freq) nor a gathered cos cache: " + f.Reason });
            if (b.Has("q_rot_rope"))
            {
                // partial rotary: x[..., :R] rotated, x[..., R:] passed through; R must be what the frequencies say
                if (SliceRange(b["q_rot"]) is not (0, long rEnd) || SliceRange(b["q_pass"]) is not (long pStart, _) || rEnd != rope.RotaryDim || pStart != rope.RotaryDim
                    || SliceRange(b["k_rot"]) is not (0, long kEnd) || kEnd != rope.RotaryDim)
                    return (null, MatchResult.Fail($"partial-rotary slices do not split the head at the rotary dim {rope.RotaryDim}", b["q_rot"], 7));
                if (rope.RotaryDim >= headDim) return (null, MatchResult.Fail($"partial rotary dim {rope.RotaryDim} is not below head_dim {headDim}", b["q_rot"], 7));
            }
            else if (rope.RotaryDim != headDim)
                return (null, MatchResult.Fail($"rotary dim {rope.RotaryDim} differs from head_dim {headDim} without a partial-rotary split", cosV, 7));
        }

        var mask = b.Get("mask");
        bool causal = mask is not null && GraphFacts.AncestorOps(mask).Overlaps(["Trilu", "LessOrEqual", "Less", "Greater", "GreaterOrEqual"]);
        var nodes = CollectBetween(output, [b["q_proj"], b["k_proj"], b["v_proj"], b["q_proj_x"], b["k_proj_x"], b["v_proj_x"], .. new[] { pastK, pastV, mask, b.Get("cos"), b.Get("sin") }.OfType<Value>()]);
        var match = new AttentionMatch(softmax, b["q_proj"], b["k_proj"], b["v_proj"], output,
            Consts.IsConst(b["q_w"]) ? b["q_w"] : null, Consts.IsConst(b["k_w"]) ? b["k_w"] : null, Consts.IsConst(b["v_w"]) ? b["v_w"] : null, oWeight,
            pastK, pastV, presentK, presentV, positions, invFreq, cosCache, null, mask, nodes, ropeMultiplier);
        // an encoder: no cache, no causal mask (BERT-style self-attention, Devlin et al. 2019)
        string form = pastK is null && !causal ? EncoderName : Name;
        var block = new AttentionBlock(layer, form, (int)numHeads, (int)kvHeads, (int)headDim, hidden, causal, scale, rope,
            pastK?.Name, pastV?.Name, presentK?.Name, presentV?.Name, "BHSD", GraphFacts.MaskInput(mask), match);
        return (block, MatchResult.Success(b, 8));
    }

    /// <summary>(start, end) of a one-axis Slice on the last (head) axis with step 1, when constant.</summary>
    private static (long, long)? SliceRange(Value v)
    {
        if (Noise.Skip(v)?.Producer is not { OpType: "Slice" } s || Consts.Ints(s.Input(1)) is not [long start] || Consts.Ints(s.Input(2)) is not [long end]) return null;
        if (s.Input(3) is { } ax && Consts.Ints(ax) is not ([3] or [-1])) return null;
        if (s.Input(4) is { } st && Consts.Ints(st) is not [1]) return null;
        return (start, end);
    }

    /// <summary>Step of a Slice (1 when omitted; null when not constant).</summary>
    private static long? SliceStep(Value? v) =>
        Noise.Skip(v)?.Producer is { OpType: "Slice" } s ? (s.Input(4) is { } st ? Consts.Ints(st) is [long x] ? x : null : 1) : null;

    /// <summary>Nodes on paths from the <paramref name="stops"/> to <paramref name="output"/> (exclusive of the stops' producers).</summary>
    private static List<Node> CollectBetween(Value output, IEnumerable<Value> stops)
    {
        var stop = stops.ToHashSet();
        var seen = new HashSet<Node>();
        var stack = new Stack<Value>([output]);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (stop.Contains(v) || v.Producer is not { } p || !seen.Add(p)) continue;
            foreach (var i in p.Inputs) if (i is not null) stack.Push(i);
        }
        var g = output.Graph;
        return g.Nodes.Where(seen.Contains).ToList();
    }
}

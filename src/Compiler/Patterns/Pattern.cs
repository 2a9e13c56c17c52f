using System.Collections.Immutable;
using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Patterns;

/// <summary>
/// A declarative pattern over the value-centric IR, written like forward code and matched backwards from a value
/// (after onnxscript's rewriter patterns and tinygrad's UPat). Matching is pure: it reads the graph, never changes it,
/// and a failure says where it stopped and why.
/// <code>
///   var scores = P.Op("MatMul", P.Any("q"), P.Op("Transpose", P.Any("k")).Attr("perm", [0, 1, 3, 2]));
///   var probs  = P.Op("Softmax", P.OneOf(P.Op("Div", scores, P.Const("scale")), P.Op("Mul", scores, P.Const("scale")).Commutative()));
///   MatchResult r = probs.Match(value);   // r.Bindings["q"], r.Reason, r.Where
/// </code>
/// </summary>
public abstract record Pattern
{
    /// <summary>Matches at <paramref name="v"/> with no prior bindings.</summary>
    public MatchResult Match(Value? v) => Match(v, Bindings.Empty, 0);

    /// <summary>Matches at the first output of <paramref name="n"/>.</summary>
    public MatchResult Match(Node n) => Match(n.Outputs.Count > 0 ? n.Outputs[0] : null, Bindings.Empty, 0);

    internal abstract MatchResult Match(Value? v, Bindings b, int depth);

    /// <summary>Adds a constraint checked after the pattern matched; <paramref name="check"/> returns null when it holds, else the reason.</summary>
    public Pattern Where(Func<Bindings, string?> check) => new CheckPattern(this, check);
}

/// <summary>Any value (optionally captured; a name bound twice must be the same value).</summary>
public sealed record AnyPattern(string? Capture) : Pattern
{
    internal override MatchResult Match(Value? v, Bindings b, int depth)
    {
        if (v is null) return MatchResult.Fail("input is omitted", null, depth);
        if (Capture is null) return MatchResult.Success(b, depth);
        return b.Bind(Capture, v) is { } nb ? MatchResult.Success(nb, depth) : MatchResult.Fail($"'{Capture}' must be the same value as before ({b[Capture].Name})", v, depth);
    }
}

/// <summary>A constant (initializer or Constant node), optionally satisfying a predicate.</summary>
public sealed record ConstPattern(string? Capture, Func<Tensor, bool>? Predicate, string? What) : Pattern
{
    internal override MatchResult Match(Value? v, Bindings b, int depth)
    {
        var t = Consts.Of(v);
        if (t is null) return MatchResult.Fail($"expected a constant{(What is null ? "" : " " + What)}", v, depth);
        if (Predicate is not null && !Predicate(t)) return MatchResult.Fail($"constant is not {What ?? "as expected"}", v, depth);
        if (Capture is null) return MatchResult.Success(b, depth);
        return b.Bind(Capture, v!) is { } nb ? MatchResult.Success(nb, depth) : MatchResult.Fail($"'{Capture}' bound twice", v, depth);
    }
}

/// <summary>A graph input (optionally captured).</summary>
public sealed record InputPattern(string? Capture) : Pattern
{
    internal override MatchResult Match(Value? v, Bindings b, int depth)
    {
        v = Noise.Skip(v);
        if (v is null || !v.IsGraphInput) return MatchResult.Fail("expected a graph input", v, depth);
        if (Capture is null) return MatchResult.Success(b, depth);
        return b.Bind(Capture, v) is { } nb ? MatchResult.Success(nb, depth) : MatchResult.Fail($"'{Capture}' bound twice", v, depth);
    }
}

/// <summary>
/// An operator application: op type(s), domain, input patterns by position, optional attribute checks. Identity and
/// no-op Casts in front of the value are skipped. <see cref="IsCommutative"/> tries both orders of a two-input op.
/// <see cref="OutputIndex"/> restricts which output of the node the value must be.
/// </summary>
public sealed record OpPattern(ImmutableArray<string> OpTypes, string Domain, ImmutableArray<Pattern> Inputs) : Pattern
{
    public bool IsCommutative { get; init; }
    public int? OutputIndex { get; init; }
    public string? CaptureValue { get; init; }
    public string? CaptureNode { get; init; }
    /// <summary>When false (default), the node must have exactly as many non-trailing inputs as patterns; when true, extra inputs are ignored.</summary>
    public bool AllowExtraInputs { get; init; }
    public ImmutableArray<(string Attr, Func<Attr?, bool> Ok, string Expect)> AttrChecks { get; init; } = [];

    public OpPattern Commutative() => this with { IsCommutative = true };
    public OpPattern Named(string value, string? node = null) => this with { CaptureValue = value, CaptureNode = node ?? CaptureNode };
    public OpPattern NodeNamed(string node) => this with { CaptureNode = node };
    public OpPattern Output(int index) => this with { OutputIndex = index };
    public OpPattern ExtraInputs() => this with { AllowExtraInputs = true };
    public OpPattern Attr(string name, Func<Attr?, bool> ok, string expect) => this with { AttrChecks = AttrChecks.Add((name, ok, expect)) };
    public OpPattern Attr(string name, long value) => Attr(name, a => a is { Kind: AttrKind.Int } && a.AsInt() == value, value.ToString());
    public OpPattern Attr(string name, long[] ints) => Attr(name, a => a is { Kind: AttrKind.Ints } && a.AsInts().SequenceEqual(ints), "[" + string.Join(",", ints) + "]");

    private string OpName => string.Join("|", OpTypes.Select(o => Domain.Length == 0 ? o : Domain + "." + o));

    internal override MatchResult Match(Value? v, Bindings b, int depth)
    {
        v = Noise.Skip(v);
        if (v is null) return MatchResult.Fail($"expected {OpName}, input is omitted", null, depth);
        var n = v.Producer;
        if (n is null || !OpTypes.Contains(n.OpType) || n.Domain != Domain)
            return MatchResult.Fail($"expected {OpName}, found {(n is null ? (v.IsGraphInput ? "graph input" : v.IsInitializer ? "initializer" : "value") + $" '{v.Name}'" : n.QualifiedOp)}", v, depth);
        if (OutputIndex is int oi && v.OutputIndex != oi) return MatchResult.Fail($"expected output {oi} of {OpName}", v, depth);
        int present = n.Inputs.Count;
        while (present > 0 && n.Inputs[present - 1] is null) present--;
        if (present < Inputs.Length || (!AllowExtraInputs && present > Inputs.Length))
            return MatchResult.Fail($"{OpName} has {present} inputs, pattern expects {Inputs.Length}", v, depth);
        foreach (var (attr, ok, expect) in AttrChecks)
            if (!ok(n.Attribute(attr))) return MatchResult.Fail($"{OpName} attribute {attr} is {n.Attribute(attr)?.Render() ?? "absent"}, expected {expect}", v, depth);
        if (CaptureValue is not null)
        {
            if (b.Bind(CaptureValue, v) is not { } b1) return MatchResult.Fail($"'{CaptureValue}' must be the same value as before", v, depth);
            b = b1;
        }
        if (CaptureNode is not null)
        {
            if (b.BindNode(CaptureNode, n) is not { } b2) return MatchResult.Fail($"node '{CaptureNode}' must be the same as before", v, depth);
            b = b2;
        }
        var first = MatchInputs(n, [.. Enumerable.Range(0, Inputs.Length)], b, depth + 1);
        if (first.Ok || !IsCommutative || Inputs.Length != 2) return first;
        var swapped = MatchInputs(n, [1, 0], b, depth + 1);
        return swapped.Ok ? swapped : MatchResult.Deeper(first, swapped);
    }

    private MatchResult MatchInputs(Node n, int[] order, Bindings b, int depth)
    {
        int reached = depth;
        for (int i = 0; i < Inputs.Length; i++)
        {
            var r = Inputs[i].Match(n.Inputs[order[i]], b, depth);
            if (!r.Ok) return r with { Depth = Math.Max(r.Depth, reached) };
            reached = Math.Max(reached, r.Depth);
            b = r.Bindings!;
        }
        return MatchResult.Success(b, reached);
    }
}

/// <summary>The first alternative that matches; otherwise the failure that got furthest.</summary>
public sealed record OneOfPattern(ImmutableArray<Pattern> Alternatives) : Pattern
{
    internal override MatchResult Match(Value? v, Bindings b, int depth)
    {
        MatchResult? best = null;
        foreach (var p in Alternatives)
        {
            var r = p.Match(v, b, depth);
            if (r.Ok) return r;
            best = best is null ? r
                : best.Depth == r.Depth && best.At == r.At && best.Reason != r.Reason ? best with { Reason = best.Reason + "; or " + r.Reason }
                : MatchResult.Deeper(best, r);
        }
        return best ?? MatchResult.Fail("no alternatives", v, depth);
    }
}

/// <summary>An optional unary wrapper: <c>Op(inner)</c> or just <c>inner</c> (e.g. an optional Cast or bias Add).</summary>
public sealed record OptionalPattern(OpPattern Wrapper, Pattern Inner) : Pattern
{
    internal override MatchResult Match(Value? v, Bindings b, int depth)
    {
        var w = Wrapper.Match(v, b, depth);
        if (w.Ok) return w;
        var r = Inner.Match(v, b, depth);
        return r.Ok ? r : MatchResult.Deeper(w, r);
    }
}

/// <summary>A pattern plus a constraint over its bindings.</summary>
public sealed record CheckPattern(Pattern Inner, Func<Bindings, string?> Check) : Pattern
{
    internal override MatchResult Match(Value? v, Bindings b, int depth)
    {
        var r = Inner.Match(v, b, depth);
        if (!r.Ok) return r;
        return Check(r.Bindings!) is { } reason ? MatchResult.Fail(reason, v, r.Depth) : r;
    }
}

/// <summary>Pattern constructors: <c>P.Op("MatMul", P.Any("x"), P.Const("w"))</c>.</summary>
public static class P
{
    public static AnyPattern Any(string? capture = null) => new(capture);
    public static InputPattern Input(string? capture = null) => new(capture);
    public static ConstPattern Const(string? capture = null) => new(capture, null, null);
    public static ConstPattern Const(string? capture, Func<Tensor, bool> predicate, string what) => new(capture, predicate, what);
    /// <summary>A scalar constant (one element) satisfying <paramref name="ok"/>.</summary>
    public static ConstPattern Scalar(string? capture, Func<double, bool> ok, string what) =>
        new(capture, t => t.ElementCount == 1 && ok(t.Element is ElementType.Float or ElementType.Float16 or ElementType.Double or ElementType.BFloat16 ? t.ToFloats()[0] : t.ToInt64s()[0]), what);
    public static OpPattern Op(string opType, params Pattern[] inputs) => new([opType], "", [.. inputs]);
    public static OpPattern Op(string[] opTypes, params Pattern[] inputs) => new([.. opTypes], "", [.. inputs]);
    public static OpPattern MsOp(string opType, params Pattern[] inputs) => new([opType], "com.microsoft", [.. inputs]);
    public static OneOfPattern OneOf(params Pattern[] alternatives) => new([.. alternatives]);
    /// <summary><c>op(inner, ...)</c> or <c>inner</c>: an optional unary wrapper, e.g. <c>P.Opt("Cast", x)</c>.</summary>
    public static OptionalPattern Opt(string opType, Pattern inner) => new(Op(opType, inner).ExtraInputs(), inner);
    public static OptionalPattern Opt(OpPattern wrapper, Pattern inner) => new(wrapper, inner);
}

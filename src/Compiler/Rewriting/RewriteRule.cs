using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;

namespace LongCtx.Compiler.Rewriting;

/// <summary>An operator a rule is rooted at: the driver dispatches by it.</summary>
public readonly record struct OpKey(string Domain, string OpType)
{
    public static OpKey Of(Node n) => new(n.Domain, n.OpType);
    public override string ToString() => Domain.Length == 0 ? OpType : Domain + "." + OpType;
}

/// <summary>
/// Why a rule did not apply at a root. <paramref name="Why"/> says where matching stopped (its depth ranks failures for
/// <c>--explain</c>); <paramref name="Note"/> and <paramref name="Count"/> are what the pass reports for a root of the
/// input model that no rule rewrote (null: nothing); <paramref name="Recognised"/> is false when the root was not even
/// recognised (such notes are listed first).
/// </summary>
public sealed record RuleFailure(MatchResult Why, string? Note = null, string? Count = null, bool Recognised = true);

/// <summary>The result of <see cref="RewriteRule{TMatch}.Check"/>: a typed match record, or a failure with its reason.</summary>
public readonly record struct Checked<TMatch>(TMatch? Match, RuleFailure? Failure) where TMatch : class
{
    public static implicit operator Checked<TMatch>(TMatch match) => new(match, null);
    public static implicit operator Checked<TMatch>(RuleFailure failure) => new(null, failure);
    public static implicit operator Checked<TMatch>(MatchResult failure) => new(null, new RuleFailure(failure));
}

/// <summary>Read-only inputs of a rule's Check: the model and the pass options.</summary>
public sealed record RuleContext(Model Model, IReadOnlyDictionary<string, string> Options)
{
    /// <summary>The pipeline's target context (<see cref="Passes.PassContext.TargetContext"/>); null when not given.</summary>
    public int? TargetContext { get; init; }

    public string Option(string name, string dflt) => Options.TryGetValue(name, out var v) ? v : dflt;
}

/// <summary>The untyped face of a rule, for the driver. Implement <see cref="RewriteRule{TMatch}"/>.</summary>
public interface IRewriteRule
{
    /// <summary>Short kebab-case name: traces, <c>--explain</c>, per-rule application counts.</summary>
    string Name { get; }
    /// <summary>The pass count one application adds to (several rules may share one).</summary>
    string Counter { get; }
    /// <summary>Root operators the driver offers this rule.</summary>
    IReadOnlyList<OpKey> Roots { get; }
    /// <summary>Pure: reads the graph, changes nothing. Returns the match record (object) or the failure.</summary>
    (object? Match, RuleFailure? Failure) TryMatch(Node root, RuleContext ctx);
    /// <summary>Applies a match returned by <see cref="TryMatch"/> (same model, nothing changed in between).</summary>
    void Apply(IRewriter rw, object match);
}

/// <summary>
/// One rewrite rule = one file = pattern + check + rewrite (STYLE principles 2 and 4; MLIR's RewritePattern,
/// onnxscript's RewriteRule). <see cref="Pattern"/> (optional) is matched at the root's first output;
/// <see cref="Check"/> reads the graph and returns <c>MatchResult.Fail(reason, value)</c> or a typed match record
/// holding everything <see cref="Rewrite"/> needs; <see cref="Rewrite"/> changes the model only through the
/// <see cref="IRewriter"/>. Rules are stateless (sealed classes without fields).
/// </summary>
public abstract class RewriteRule<TMatch> : IRewriteRule where TMatch : class
{
    public abstract string Name { get; }
    public abstract string Counter { get; }
    public abstract IReadOnlyList<OpKey> Roots { get; }
    /// <summary>Matched at the root's first output before <see cref="Check"/>; null when Check reads the root itself.</summary>
    public virtual Pattern? Pattern => null;

    /// <summary>Pure. <paramref name="bindings"/> are the captures of <see cref="Pattern"/> (empty when there is none).</summary>
    public abstract Checked<TMatch> Check(Node root, Bindings bindings, RuleContext ctx);

    /// <summary>Performs the rewrite <paramref name="match"/> describes; mutates only through <paramref name="rw"/>.</summary>
    public abstract void Rewrite(IRewriter rw, TMatch match);

    (object? Match, RuleFailure? Failure) IRewriteRule.TryMatch(Node root, RuleContext ctx)
    {
        var bindings = Bindings.Empty;
        if (Pattern is { } p)
        {
            var r = p.Match(root);
            if (!r.Ok) return (null, new RuleFailure(r));
            bindings = r.Bindings!;
        }
        var c = Check(root, bindings, ctx);
        return c.Match is not null ? (c.Match, null) : (null, c.Failure ?? new RuleFailure(MatchResult.Fail("Check returned neither a match nor a failure", root.Outputs.FirstOrDefault(), 0)));
    }

    void IRewriteRule.Apply(IRewriter rw, object match) => Rewrite(rw, (TMatch)match);
}

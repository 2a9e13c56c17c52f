using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;
using LongCtx.Compiler.Rewriting;

namespace LongCtx.Passes.Cleanup;

/// <summary>The node of a table row and the value its output is replaced by.</summary>
internal sealed record ValueMatch(Node Node, Value Replacement);

/// <summary>
/// A one-line identity as a rule (tinygrad's PatternMatcher rows, STYLE principle 7): at a <paramref name="op"/> node
/// of the default domain, <paramref name="replace"/> returns the value the node's output equals (or null when the row
/// does not apply); the output's uses move to it and the node dies. Outputs that are graph outputs are left alone
/// (their names are the model's contract).
/// </summary>
internal sealed class ValueRule(string name, string op, Func<Node, Value?> replace, string counter) : RewriteRule<ValueMatch>
{
    public override string Name => name;
    public override string Counter => counter;
    public override IReadOnlyList<OpKey> Roots { get; } = [new("", op)];

    public override Checked<ValueMatch> Check(Node root, Bindings bindings, RuleContext ctx)
    {
        if (root.Outputs.Count != 1 || root.Outputs[0] is not { } o) return MatchResult.Fail($"{op} does not have exactly one output", null, 0);
        if (o.IsGraphOutput) return MatchResult.Fail($"{op} output '{o.Name}' is a graph output", o, 0);
        return replace(root) is { } r ? new ValueMatch(root, r) : MatchResult.Fail($"{op} '{root.Name}' is not an identity here", o, 1);
    }

    public override void Rewrite(IRewriter rw, ValueMatch m) => rw.ReplaceAllUsesWith(m.Node.Output(), m.Replacement);
}

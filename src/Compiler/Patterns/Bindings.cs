using System.Collections.Immutable;
using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Patterns;

/// <summary>Captured values and nodes of a (partial) match. Immutable: a failed branch leaves its parent's bindings untouched.</summary>
public sealed record Bindings(ImmutableDictionary<string, Value> Values, ImmutableDictionary<string, Node> Nodes)
{
    public static readonly Bindings Empty = new(ImmutableDictionary<string, Value>.Empty, ImmutableDictionary<string, Node>.Empty);

    public Value this[string name] => Values.TryGetValue(name, out var v) ? v : throw new KeyNotFoundException($"pattern captured no value '{name}'");
    public Value? Get(string name) => Values.GetValueOrDefault(name);
    public Node Node(string name) => Nodes.TryGetValue(name, out var n) ? n : throw new KeyNotFoundException($"pattern captured no node '{name}'");
    public Node? NodeOrNull(string name) => Nodes.GetValueOrDefault(name);
    public bool Has(string name) => Values.ContainsKey(name) || Nodes.ContainsKey(name);

    /// <summary>Binds <paramref name="name"/> to <paramref name="v"/>; null when it is already bound to a different value (a repeated name means "the same value").</summary>
    public Bindings? Bind(string name, Value v) =>
        Values.TryGetValue(name, out var have) ? (have == v ? this : null) : this with { Values = Values.SetItem(name, v) };

    public Bindings? BindNode(string name, Node n) =>
        Nodes.TryGetValue(name, out var have) ? (have == n ? this : null) : this with { Nodes = Nodes.SetItem(name, n) };
}

/// <summary>Outcome of matching a pattern at a value: the bindings, or the reason and the place matching stopped.</summary>
public sealed record MatchResult(Bindings? Bindings, string? Reason, Value? At, int Depth)
{
    public bool Ok => Bindings is not null;
    public static MatchResult Success(Bindings b, int depth) => new(b, null, null, depth);
    public static MatchResult Fail(string reason, Value? at, int depth) => new(null, reason, at, depth);

    /// <summary>Where matching stopped, for reports: the producing node of the value, or the value itself.</summary>
    public string Where => At is null ? "?" : At.Producer is { } p ? $"{p.QualifiedOp} '{p.Name}'" : $"value '{At.Name}'";

    /// <summary>Of two failures, the one that got further (more matched operators) is the more useful explanation.</summary>
    public static MatchResult Deeper(MatchResult a, MatchResult b) => b.Depth > a.Depth ? b : a;

    public override string ToString() => Ok ? "matched" : $"stopped at {Where}: {Reason}";
}

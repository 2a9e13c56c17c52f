using System.Collections.Immutable;

namespace LongCtx.Compiler.IR;

/// <summary>One dimension: a known size, a symbolic name, or unknown (both null).</summary>
public readonly record struct Dim(long? Value, string? Param)
{
    public static Dim Of(long v) => new(v, null);
    public static Dim Sym(string p) => new(null, p);
    public static readonly Dim Unknown = new(null, null);
    public bool IsKnown => Value.HasValue;
    public override string ToString() => Value?.ToString() ?? Param ?? "?";
    public static implicit operator Dim(long v) => Of(v);
    public static implicit operator Dim(string p) => Sym(p);
}

/// <summary>A tensor shape with possibly symbolic dimensions. Value equality over the dims.</summary>
public sealed record Shape(ImmutableArray<Dim> Dims)
{
    public Shape(params Dim[] dims) : this(dims.ToImmutableArray()) { }
    public int Rank => Dims.Length;
    public Dim this[int i] => Dims[i];
    public bool IsFullyKnown => Dims.All(d => d.IsKnown);
    public long ElementCount() => Dims.Aggregate(1L, (a, d) => a * (d.Value ?? throw new InvalidOperationException($"shape {this} is not fully known")));
    public bool Equals(Shape? other) => other is not null && Dims.SequenceEqual(other.Dims);
    public override int GetHashCode() => Dims.Aggregate(17, (h, d) => HashCode.Combine(h, d));
    public override string ToString() => "[" + string.Join(",", Dims) + "]";
}

/// <summary>The type of a tensor value: element type and optional shape (null = rank unknown).</summary>
public sealed record TensorType(ElementType Element, Shape? Shape)
{
    public override string ToString() => Element.ShortName() + (Shape?.ToString() ?? "[*]");
}

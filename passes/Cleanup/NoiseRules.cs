using LongCtx.Compiler.IR;
using LongCtx.Compiler.Rewriting;

namespace LongCtx.Passes.Cleanup;

/// <summary>
/// Exporter noise as a table of one-line identities (tinygrad's symbolic.py style: each row a pattern -> replacement
/// with its reason). Every row is exact: the replaced value holds the same elements of the same type.
/// </summary>
internal static class NoiseRules
{
    public const string Counter = "noise nodes removed";

    private static ElementType? Known(Value? v) => v?.Type?.Element is { } e && e != ElementType.Undefined ? e : null;
    private static ElementType To(Node cast) => (ElementType)cast.IntAttr("to", 0);

    /// <summary>Casting a value of type S to W and back to S is exact when W holds every value of S.</summary>
    private static bool Widens(ElementType s, ElementType w) => (s, w) switch
    {
        (ElementType.Float16 or ElementType.BFloat16, ElementType.Float or ElementType.Double) => true,
        (ElementType.Float, ElementType.Double) => true,
        (ElementType.Int8 or ElementType.Int16 or ElementType.Int32, ElementType.Int64) => true,
        (ElementType.Int8 or ElementType.Int16, ElementType.Int32) => true,
        (ElementType.UInt8 or ElementType.UInt16 or ElementType.UInt32, ElementType.Int64 or ElementType.UInt64) => true,
        (ElementType.Bool, ElementType.Int32 or ElementType.Int64 or ElementType.Float) => true,
        _ => s == w,
    };

    public static IReadOnlyList<IRewriteRule> Table { get; } =
    [
        // Identity(x) -> x
        new ValueRule("identity", "Identity", n => n.Input(0), Counter),
        // Cast(x, to=T) -> x when x is already T (torch exports cast int64 shape arithmetic to int64)
        new ValueRule("no-op-cast", "Cast", n => Known(n.Input(0)) is { } t && t == To(n) ? n.Input(0) : null, Counter),
        // Cast(Cast(x, to=W), to=type(x)) -> x when W holds every value of type(x) (fp16 -> fp32 -> fp16, int32 -> int64 -> int32)
        new ValueRule("cast-round-trip", "Cast", n =>
            n.Input(0)?.Producer is { OpType: "Cast", Domain: "" } inner && inner.Input(0) is { } x && Known(x) is { } s && s == To(n) && Widens(s, To(inner)) ? x : null, Counter),
    ];
}

using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Patterns;

/// <summary>Reads constants however the exporter wrote them: initializers, Constant nodes (any value_* form), behind Identity.</summary>
public static class Consts
{
    public static Tensor? Of(Value? v)
    {
        v = Noise.Skip(v);
        if (v is null) return null;
        if (v.Const is { } t && !v.IsGraphInput) return t;
        if (v.Producer is { OpType: "Constant", Domain: "" } c)
        {
            foreach (var a in c.Attributes)
            {
                switch (a.Name)
                {
                    case "value": return a.AsTensor();
                    case "value_float": return Tensor.FromFloats([a.AsFloat()]);
                    case "value_floats": return Tensor.FromFloats(a.AsFloats().ToArray(), a.AsFloats().Length);
                    case "value_int": return Tensor.FromInt64s([a.AsInt()]);
                    case "value_ints": return Tensor.FromInt64s(a.AsInts().ToArray(), a.AsInts().Length);
                }
            }
        }
        return null;
    }

    public static bool IsConst(Value? v) => Of(v) is not null;

    /// <summary>A one-element constant as double (float or integer), else null.</summary>
    public static double? Scalar(Value? v) => Of(v) is { ElementCount: 1 } t
        ? (t.Element is ElementType.Float or ElementType.Float16 or ElementType.BFloat16 or ElementType.Double ? t.ToFloats()[0] : t.ToInt64s()[0])
        : null;

    public static long[]? Ints(Value? v) => Of(v) is { } t && t.Element is ElementType.Int64 or ElementType.Int32 ? t.ToInt64s() : null;
    public static float[]? Floats(Value? v) => Of(v) is { } t && t.Element is ElementType.Float or ElementType.Float16 or ElementType.BFloat16 or ElementType.Double ? t.ToFloats() : null;
}

/// <summary>
/// Exporter noise that patterns look through: Identity always; Cast when it provably changes nothing
/// (the target type equals the known source type).
/// </summary>
public static class Noise
{
    public static Value? Skip(Value? v)
    {
        while (v?.Producer is { } p && p.Domain.Length == 0 && p.Inputs.Count > 0 && p.Input(0) is { } x &&
               (p.OpType == "Identity" || (p.OpType == "Cast" && x.Type is { } t && t.Element == (ElementType)p.IntAttr("to", 0))))
            v = x;
        return v;
    }
}

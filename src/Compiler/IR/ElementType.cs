namespace LongCtx.Compiler.IR;

/// <summary>ONNX tensor element types (values are the TensorProto.DataType numbers).</summary>
public enum ElementType
{
    Undefined = 0, Float = 1, UInt8 = 2, Int8 = 3, UInt16 = 4, Int16 = 5, Int32 = 6, Int64 = 7,
    String = 8, Bool = 9, Float16 = 10, Double = 11, UInt32 = 12, UInt64 = 13, Complex64 = 14,
    Complex128 = 15, BFloat16 = 16, Float8E4M3FN = 17, Float8E4M3FNUZ = 18, Float8E5M2 = 19,
    Float8E5M2FNUZ = 20, UInt4 = 21, Int4 = 22, Float4E2M1 = 23,
}

public static class ElementTypes
{
    /// <summary>Bits per element; 0 for strings and unknown types.</summary>
    public static int BitWidth(this ElementType t) => t switch
    {
        ElementType.Float or ElementType.Int32 or ElementType.UInt32 => 32,
        ElementType.Double or ElementType.Int64 or ElementType.UInt64 or ElementType.Complex64 => 64,
        ElementType.Complex128 => 128,
        ElementType.Float16 or ElementType.BFloat16 or ElementType.Int16 or ElementType.UInt16 => 16,
        ElementType.Int8 or ElementType.UInt8 or ElementType.Bool or ElementType.Float8E4M3FN
            or ElementType.Float8E4M3FNUZ or ElementType.Float8E5M2 or ElementType.Float8E5M2FNUZ => 8,
        ElementType.Int4 or ElementType.UInt4 or ElementType.Float4E2M1 => 4,
        _ => 0,
    };

    /// <summary>Bytes needed for <paramref name="count"/> elements (sub-byte types packed).</summary>
    public static long ByteCount(this ElementType t, long count) => (count * t.BitWidth() + 7) / 8;

    /// <summary>Short lower-case name used in diffs and inspect output (float32, float16, int64, ...).</summary>
    public static string ShortName(this ElementType t) => t switch
    {
        ElementType.Float => "float32",
        ElementType.Double => "float64",
        ElementType.Float16 => "float16",
        ElementType.BFloat16 => "bfloat16",
        ElementType.Undefined => "?",
        _ => t.ToString().ToLowerInvariant(),
    };
}

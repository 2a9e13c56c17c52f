using Google.Protobuf;
using NUnit.Framework;
using Onnx;

namespace LongCtx.Tests.CustomOps;

/// <summary>
/// What the custom-op tests share: where liblongctx_ops.so is, the check that the build produced it, and the small
/// ONNX and array helpers their single-node models use.
/// </summary>
internal static class OpTestKit
{
    public const string LibName = "liblongctx_ops.so";

    public static string LibPath => Path.Combine(AppContext.BaseDirectory, LibName);

    /// <summary>Fails (never skips) when the native library is missing: the build must have produced it.</summary>
    public static void RequireLibrary()
    {
        if (!File.Exists(LibPath))
            Assert.Fail($"{LibName} not found next to the test assembly ({LibPath}). It is built by " +
                        "custom-ops/CustomOps.targets (imported by src/Runtime) during 'dotnet build'; " +
                        "check the build log for cmake/g++ errors or LongCtxSkipCustomOps=true.");
    }

    public static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type) => new()
    {
        Name = name,
        Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type } },
    };

    public static AttributeProto IntAttr(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto FloatAttr(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto StringAttr(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    /// <summary>Uniform values in [-amplitude, amplitude).</summary>
    public static float[] RandomArray(Random rng, int n, float amplitude = 1f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * amplitude;
        return a;
    }

    public static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.That(a.Length, Is.EqualTo(b.Length), "length mismatch");
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        return m;
    }
}

using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
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

    /// <summary>
    /// One attention node (GQA's nine inputs, no past, RoPE inside: do_rotary=1) as a model: a prefill of
    /// <paramref name="hq"/> / <paramref name="hkv"/> heads in float32 with outputs output, present_key, present_value.
    /// </summary>
    public static ModelProto RotaryPrefillModel(string domain, string op, int hq, int hkv, IEnumerable<AttributeProto> attrs)
    {
        string[] ins = ["query", "key", "value", "", "", "seqlens_k", "total_sequence_length", "cos_cache", "sin_cache"];
        var node = new NodeProto { Name = "attn", OpType = op, Domain = domain };
        node.Input.AddRange(ins);
        node.Output.AddRange(["output", "present_key", "present_value"]);
        node.Attribute.AddRange([IntAttr("num_heads", hq), IntAttr("kv_num_heads", hkv), IntAttr("do_rotary", 1), .. attrs]);
        var graph = new GraphProto { Name = "attn_prefill" };
        graph.Node.Add(node);
        foreach (var n in ins.Where(n => n.Length > 0))
            graph.Input.Add(ValueInfo(n, n is "seqlens_k" or "total_sequence_length" ? TensorProto.Types.DataType.Int32 : TensorProto.Types.DataType.Float));
        foreach (var n in node.Output) graph.Output.Add(ValueInfo(n, TensorProto.Types.DataType.Float));
        var model = new ModelProto { IrVersion = 10, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "longctx", Version = 1 });
        return model;
    }

    /// <summary>The feeds of <see cref="RotaryPrefillModel"/> for a prompt of <paramref name="len"/> tokens (caller disposes).</summary>
    public static Dictionary<string, OrtValue> RotaryPrefillFeeds(float[] q, float[] k, float[] v, float[] cos, float[] sin, int len, int hq, int hkv, int d) => new()
    {
        ["query"] = OrtValue.CreateTensorValueFromMemory(q, [1, len, hq * d]),
        ["key"] = OrtValue.CreateTensorValueFromMemory(k, [1, len, hkv * d]),
        ["value"] = OrtValue.CreateTensorValueFromMemory(v, [1, len, hkv * d]),
        ["seqlens_k"] = OrtValue.CreateTensorValueFromMemory(new[] { len - 1 }, [1]),
        ["total_sequence_length"] = OrtValue.CreateTensorValueFromMemory(new[] { len }, []),
        ["cos_cache"] = OrtValue.CreateTensorValueFromMemory(cos, [cos.Length / (d / 2), d / 2]),
        ["sin_cache"] = OrtValue.CreateTensorValueFromMemory(sin, [sin.Length / (d / 2), d / 2]),
    };

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

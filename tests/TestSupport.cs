using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using NUnit.Framework;

namespace LongCtx.Tests;

/// <summary>Paths to the repo and the shared fixtures, and small ORT helpers used across test areas.</summary>
public static class TestSupport
{
    public static string RepoRoot { get; } = FindRepoRoot();

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LongCtx.sln"))) return d.FullName;
        throw new InvalidOperationException("cannot find LongCtx.sln above " + AppContext.BaseDirectory);
    }

    /// <summary>Environment variable naming another shared folder (instead of ../shared beside the repo), e.g. to check
    /// that every test skips cleanly when the shared fixtures are absent: LONGCTX_SHARED=/nonexistent ./test.sh.</summary>
    public const string SharedEnvironmentVariable = "LONGCTX_SHARED";

    /// <summary>The shared folder: $LONGCTX_SHARED, else ../shared next to the repo root.</summary>
    public static string Shared => Environment.GetEnvironmentVariable(SharedEnvironmentVariable) is { Length: > 0 } s
        ? Path.GetFullPath(s)
        : Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));

    /// <summary>The shared fixture models (<see cref="Shared"/>/models).</summary>
    public static string SharedModels => Path.Combine(Shared, "models");

    /// <summary>Path of a shared fixture (file or folder), or Assert.Ignore with a clear message when it is absent.</summary>
    public static string Fixture(string relative) => Require(Path.Combine(SharedModels, relative));

    /// <summary><paramref name="path"/> when it exists, else Assert.Ignore naming it (fixtures are optional on a machine).</summary>
    public static string Require(string path)
    {
        if (!File.Exists(path) && !Directory.Exists(path))
            Assert.Ignore($"shared fixture not found: {path} (the ../shared folder beside the repo, or ${SharedEnvironmentVariable}, holds the real exported models)");
        return path;
    }

    public static IEnumerable<string> DecoderFixtures =>
    [
        "recall-public/model.onnx",
        "genai/llama-mha-rotary-fp16/model.onnx",
        "genai/qwen-gqa-fp16/decoder.onnx",
        "genai/opset24-attention-static-cache/model.onnx",
    ];

    /// <summary>A fresh temp folder removed by the caller (or left in /tmp on failure for inspection).</summary>
    public static string TempDir(string prefix = "longctx")
    {
        var d = Path.Combine(Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}"[..(prefix.Length + 13)]);
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>
    /// Deterministic inputs for any decoder-like model from its ORT metadata: batch 1, 4 new tokens, 3 past tokens;
    /// ids in [0, 100); masks of ones; positions past..past+seq-1; floats from a seeded generator.
    /// </summary>
    public static Dictionary<string, OrtValue> MakeInputs(InferenceSession s, int seq = 4, int past = 3, int seed = 1)
    {
        var rng = new Random(seed);
        var r = new Dictionary<string, OrtValue>();
        foreach (var (name, meta) in s.InputMetadata)
        {
            var shape = new long[meta.Dimensions.Length];
            for (int i = 0; i < shape.Length; i++)
            {
                if (meta.Dimensions[i] > 0) { shape[i] = meta.Dimensions[i]; continue; }
                string sym = meta.SymbolicDimensions[i].ToLowerInvariant();
                shape[i] = sym.Contains("batch") ? 1 : sym.Contains("past") ? past : sym.Contains("total") ? seq + past : seq;
            }
            long n = shape.Aggregate(1L, (a, b) => a * b);
            string lname = name.ToLowerInvariant();
            switch (meta.ElementDataType)
            {
                case TensorElementType.Int64:
                {
                    var d = new long[n];
                    for (int i = 0; i < n; i++)
                        d[i] = lname.Contains("mask") ? 1 : lname.Contains("position") ? past + i % seq : lname.Contains("write_indices") ? 0 : lname.Contains("seqlen") ? seq : rng.Next(0, 100);
                    r[name] = OrtValue.CreateTensorValueFromMemory(d, shape);
                    break;
                }
                case TensorElementType.Int32:
                {
                    var d = new int[n];
                    for (int i = 0; i < n; i++) d[i] = lname.Contains("mask") ? 1 : lname.Contains("position") ? past + i % seq : rng.Next(0, 100);
                    r[name] = OrtValue.CreateTensorValueFromMemory(d, shape);
                    break;
                }
                case TensorElementType.Float:
                {
                    var d = new float[n];
                    for (int i = 0; i < n; i++) d[i] = (float)(rng.NextDouble() * 2 - 1);
                    r[name] = OrtValue.CreateTensorValueFromMemory(d, shape);
                    break;
                }
                case TensorElementType.Float16:
                {
                    var d = new Float16[n];
                    for (int i = 0; i < n; i++) d[i] = (Float16)(float)(rng.NextDouble() * 2 - 1);
                    r[name] = OrtValue.CreateTensorValueFromMemory(d, shape);
                    break;
                }
                default:
                    throw new NotSupportedException($"test input {name} has type {meta.ElementDataType}");
            }
        }
        return r;
    }

    /// <summary>Runs a session and returns every output as float32 values (fp16 converted) with its name.</summary>
    public static Dictionary<string, float[]> RunAll(InferenceSession s, IReadOnlyDictionary<string, OrtValue> inputs)
    {
        using var opts = new RunOptions();
        var names = s.OutputMetadata.Keys.ToList();
        using var outs = s.Run(opts, inputs.Keys.ToList(), inputs.Values.ToList(), names);
        var r = new Dictionary<string, float[]>();
        for (int i = 0; i < names.Count; i++)
        {
            var v = outs[i];
            var info = v.GetTensorTypeAndShape();
            r[names[i]] = info.ElementDataType switch
            {
                TensorElementType.Float => v.GetTensorDataAsSpan<float>().ToArray(),
                TensorElementType.Float16 => v.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray(),
                TensorElementType.Int64 => v.GetTensorDataAsSpan<long>().ToArray().Select(x => (float)x).ToArray(),
                TensorElementType.Int32 => v.GetTensorDataAsSpan<int>().ToArray().Select(x => (float)x).ToArray(),
                _ => throw new NotSupportedException($"output {names[i]}: {info.ElementDataType}"),
            };
        }
        return r;
    }

    public static float MaxAbsDiff(float[] a, float[] b)
    {
        Assert.That(b.Length, Is.EqualTo(a.Length), "output lengths differ");
        float m = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (float.IsNaN(a[i]) && float.IsNaN(b[i])) continue;
            m = Math.Max(m, Math.Abs(a[i] - b[i]));
            if (float.IsNaN(a[i]) != float.IsNaN(b[i])) return float.PositiveInfinity;
        }
        return m;
    }
}

namespace LongCtx.Runtime;

/// <summary>Which execution provider a session runs on.</summary>
public enum ExecutionProviderKind
{
    /// <summary>TensorRT, then CUDA, then CPU; one log line per fallback.</summary>
    Auto,
    Cpu,
    Cuda,
    TensorRT,
}

/// <summary>How <see cref="LongCtxModel.Load"/> builds its ONNX Runtime session.</summary>
public sealed record RuntimeOptions
{
    public ExecutionProviderKind ExecutionProvider { get; init; } = ExecutionProviderKind.Auto;

    /// <summary>GPU ordinal for CUDA/TensorRT.</summary>
    public int DeviceId { get; init; }

    /// <summary>Intra-op threads; 0 lets ONNX Runtime choose (one per physical core).</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>ONNX Runtime CPU memory arena (faster repeated allocation, higher resident memory).</summary>
    public bool MemoryArena { get; init; } = true;

    /// <summary>Path of liblongctx_ops.so; null looks next to the LongCtx.Runtime assembly.</summary>
    public string? CustomOpsLibrary { get; init; }

    /// <summary>Probe on load whether the graph accepts a multi-token chunk after a non-empty past (bare .onnx files; a
    /// compiled folder's longctx.json records it).</summary>
    public bool ProbeChunkedPrefill { get; init; } = true;

    /// <summary>
    /// Run through an IOBinding that leaves the KV-cache outputs in the execution provider's memory
    /// (GPU memory on CUDA/TensorRT), so the cache is not copied to the host and back every step;
    /// logits are bound to host memory. Null: on for GPU providers, off on CPU (no copy to save there).
    /// </summary>
    public bool? IoBinding { get; init; }

    /// <summary>
    /// KV-cache manager: Auto uses one shared past/present buffer per layer when every attention is a
    /// GroupQueryAttention fed directly by the past inputs (checked on load, else concat with a note).
    /// </summary>
    public KvCacheMode KvCache { get; init; } = KvCacheMode.Auto;

    /// <summary>
    /// Length in tokens of the shared KV buffer (a prompt plus generated tokens beyond it is an error). Null: 4096
    /// (or the model's max context when smaller), doubled on demand up to the model's max context (host memory only).
    /// </summary>
    public int? MaxContext { get; init; }

    /// <summary>Receives one-line notes (EP fallbacks, prefill mode). Null: written to stderr.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// Also log which providers <see cref="ExecutionProviderKind.Auto"/> tried and skipped (TensorRT/CUDA missing on a
    /// machine without a GPU is the normal case, so by default auto says nothing about it; lcc's -v sets this).
    /// </summary>
    public bool Verbose { get; init; }

    /// <summary>
    /// Attaches an execution provider to session options (null: ONNX Runtime's own AppendExecutionProvider_*). A setup
    /// that finds its provider missing throws <see cref="ExecutionProviderUnavailableException"/> (ORT's own throw an
    /// OnnxRuntimeException); either way Auto falls back to the next provider. Lets tests fail a provider on any machine.
    /// </summary>
    internal Action<Microsoft.ML.OnnxRuntime.SessionOptions, ExecutionProviderKind, int>? ProviderSetup { get; init; }

    public static RuntimeOptions Default { get; } = new();

    public static KvCacheMode ParseKvCache(string s) => s.Trim().ToLowerInvariant() switch
    {
        "auto" => KvCacheMode.Auto,
        "concat" => KvCacheMode.Concat,
        "shared" => KvCacheMode.Shared,
        _ => throw new ArgumentException($"unknown KV cache '{s}': use auto, concat or shared"),
    };

    public static ExecutionProviderKind ParseProvider(string s) => s.Trim().ToLowerInvariant() switch
    {
        "auto" => ExecutionProviderKind.Auto,
        "cpu" => ExecutionProviderKind.Cpu,
        "cuda" => ExecutionProviderKind.Cuda,
        "tensorrt" or "trt" => ExecutionProviderKind.TensorRT,
        _ => throw new ArgumentException($"unknown execution provider '{s}': use auto, cpu, cuda or tensorrt"),
    };
}

/// <summary>A user-facing runtime failure: the message is one line naming the model and what to do.</summary>
public sealed class RuntimeException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

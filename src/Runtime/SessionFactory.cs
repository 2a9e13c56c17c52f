using Microsoft.ML.OnnxRuntime;

namespace LongCtx.Runtime;

/// <summary>
/// Builds an <see cref="InferenceSession"/> on the requested execution provider. Each attempt
/// uses fresh <see cref="SessionOptions"/>: appending CUDA/TensorRT throws when their libraries or
/// device are missing (OrtEnv.GetAvailableProviders lists them anyway, so it is no detector).
/// </summary>
internal static class SessionFactory
{
    public const string CustomOpDomain = "longctx";
    public const string CustomOpLibraryName = "liblongctx_ops.so";

    public sealed record Built(InferenceSession Session, ExecutionProviderKind Provider);

    /// <summary>The provider chain <see cref="Create"/> tries for a requested provider.</summary>
    public static IReadOnlyList<ExecutionProviderKind> Chain(ExecutionProviderKind requested) => requested switch
    {
        ExecutionProviderKind.Auto => [ExecutionProviderKind.TensorRT, ExecutionProviderKind.Cuda, ExecutionProviderKind.Cpu],
        var k => [k],
    };

    public static Built Create(string modelName, Func<SessionOptions, InferenceSession> open, RuntimeOptions options,
        string? customOpLibrary, Action<string> log)
    {
        EnsureQuietEnvironment();
        var order = Chain(options.ExecutionProvider);
        var setup = options.ProviderSetup ?? Append;
        for (int i = 0; i < order.Count; i++)
        {
            var ep = order[i];
            var so = NewOptions(options, customOpLibrary, modelName);
            try
            {
                setup(so, ep, options.DeviceId);
                return new Built(open(so), ep);
            }
            catch (Exception e) when (ep != ExecutionProviderKind.Cpu && e is OnnxRuntimeException or ExecutionProviderUnavailableException)
            {
                var why = FirstLine(e.Message).Replace("[ErrorCode:Fail] ", "");
                if (why.Contains("Failed to load shared library")) why += ": its CUDA libraries or device are missing";
                if (options.ExecutionProvider != ExecutionProviderKind.Auto)
                    throw new RuntimeException($"{modelName}: execution provider {Name(ep)} is not available ({why}); use --ep cpu or --ep auto");
                if (options.Verbose) log($"ep: {Name(ep)} unavailable ({why}); falling back to {Name(order[i + 1])}");
            }
            catch (Exception e) when (e is OnnxRuntimeException or ExecutionProviderUnavailableException)
            {
                throw new RuntimeException($"{modelName}: ONNX Runtime cannot load the model: {FirstLine(e.Message)}", e);
            }
            finally { so.Dispose(); }
        }
        throw new InvalidOperationException("unreachable");
    }

    /// <summary>
    /// ONNX Runtime logs provider-library load failures at ERROR level on stderr before throwing;
    /// the runtime reports them itself (one line per fallback), so the process-wide environment is
    /// created at FATAL level unless someone created it first.
    /// </summary>
    private static void EnsureQuietEnvironment()
    {
        if (OrtEnv.IsCreated) return;
        var o = new EnvironmentCreationOptions { logLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, logId = "longctx" };
        try { OrtEnv.CreateInstanceWithOptions(ref o); }
        catch (OnnxRuntimeException) { /* created concurrently by another thread: keep that one */ }
    }

    public static string Name(ExecutionProviderKind k) => k switch
    {
        ExecutionProviderKind.TensorRT => "TensorRT",
        ExecutionProviderKind.Cuda => "CUDA",
        ExecutionProviderKind.Cpu => "CPU",
        _ => "auto",
    };

    /// <summary>Session config entry read by longctx.LongAttention (custom-ops/ort/long_attention_op.cc).</summary>
    public const string IntraOpThreadsConfigKey = "longctx.intra_op_threads";

    private static SessionOptions NewOptions(RuntimeOptions o, string? customOpLibrary, string modelName)
    {
        var so = new SessionOptions
        {
            IntraOpNumThreads = o.IntraOpThreads,
            EnableCpuMemArena = o.MemoryArena,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, // failures come back as exceptions
        };
        // longctx.LongAttention sizes its work split from this entry (ORT's intra-op pool size);
        // absent (0 = ORT's default pool), the op falls back to the hardware concurrency.
        if (o.IntraOpThreads > 0)
            so.AddSessionConfigEntry(IntraOpThreadsConfigKey, o.IntraOpThreads.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (customOpLibrary is not null)
        {
            try { so.RegisterCustomOpLibrary(customOpLibrary); }
            catch (OnnxRuntimeException e)
            {
                so.Dispose();
                throw new RuntimeException($"{modelName}: cannot register custom-op library {customOpLibrary}: {FirstLine(e.Message)}", e);
            }
        }
        return so;
    }

    private static void Append(SessionOptions so, ExecutionProviderKind ep, int device)
    {
        switch (ep)
        {
            case ExecutionProviderKind.TensorRT: so.AppendExecutionProvider_Tensorrt(device); so.AppendExecutionProvider_CUDA(device); break;
            case ExecutionProviderKind.Cuda: so.AppendExecutionProvider_CUDA(device); break;
            case ExecutionProviderKind.Cpu: break;
        }
    }

    public static string FirstLine(string s)
    {
        var line = s.ReplaceLineEndings("\n").Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? s;
        return line.Length > 300 ? line[..300] + "..." : line.Trim();
    }
}

/// <summary>Thrown by a <see cref="RuntimeOptions.ProviderSetup"/> whose execution provider cannot be used here.</summary>
internal sealed class ExecutionProviderUnavailableException(string message) : Exception(message);

namespace LongCtx.Runtime;

/// <summary>
/// Issue 14, "--max-context that allocates 8 GB eagerly or throws bad_alloc": an explicit shared-buffer length is
/// checked against the memory this process may use before anything is allocated. The buffers hold
/// <c>tokens x <see cref="DecoderContract.KvBytesPerToken"/></c> bytes (K and V of every layer); when that exceeds the
/// available memory (<see cref="GC.GetGCMemoryInfo()"/>: physical memory or the container limit) the load fails with one
/// line naming both sizes and the largest length that fits. The buffers themselves are allocated on the first step and
/// never zeroed, so a length that fits costs resident memory only as tokens arrive.
/// </summary>
public static class KvBufferBudget
{
    /// <summary>Bytes this process may use (physical memory or the cgroup limit).</summary>
    public static long AvailableBytes => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    public static void Check(string model, DecoderContract contract, int tokens, long? available = null)
    {
        long avail = available ?? AvailableBytes;
        long perToken = Math.Max(1, contract.KvBytesPerToken);
        double need = (double)perToken * tokens;
        if (avail > 0 && need > avail)
            throw new RuntimeException($"{model}: --max-context {tokens} needs {need / (1L << 30):0.##} GiB of KV buffers ({perToken} bytes per token), more than the {avail / (double)(1L << 30):0.##} GiB of memory available; give at most --max-context {avail / perToken}");
    }
}

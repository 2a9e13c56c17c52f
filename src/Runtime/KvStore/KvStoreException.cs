namespace LongCtx.Runtime.KvStore;

/// <summary>What is wrong with a stored KV file.</summary>
public enum KvStoreError
{
    /// <summary>Not a KV-store file, or a field out of range.</summary>
    Format,
    /// <summary>Written by another format version.</summary>
    Version,
    /// <summary>Written for another model (its hash differs).</summary>
    ModelMismatch,
    /// <summary>The file ends before its last section.</summary>
    Truncated,
    /// <summary>A section's checksum does not match its bytes.</summary>
    Corrupted,
}

/// <summary>A KV-store file that cannot be loaded; the message is one line naming the file and what to do.</summary>
public sealed class KvStoreException(string message, KvStoreError error, Exception? inner = null) : InvalidOperationException(message, inner)
{
    public KvStoreError Error { get; } = error;
}

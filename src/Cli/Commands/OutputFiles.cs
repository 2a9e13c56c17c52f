using LongCtx.Contract;

namespace LongCtx.Cli.Commands;

/// <summary>
/// Result files a command writes at the end of long work (<c>eval --json-out</c>, <c>bench --json-out/--plot</c>;
/// issue 14): checked before the work starts (the folder exists and takes a new file; the path is not a folder, a FIFO
/// or a device), and written through a temp file renamed into place, so a failure leaves nothing behind.
/// </summary>
internal static class OutputFiles
{
    /// <summary>Throws a one-line error when <paramref name="path"/> cannot be written; writes nothing that stays.</summary>
    public static string Check(string path, string option)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full) ?? throw new ArgumentException($"{option} {path}: not a file path");
        if (!Directory.Exists(dir)) throw new ArgumentException($"{option} {path}: folder {dir} does not exist; create it first");
        var (kind, _) = SafeFile.Stat(full);
        if (kind is not (FileKind.Missing or FileKind.Regular))
            throw new ArgumentException($"{option} {path}: exists and is not a regular file; give a file path");
        string probe = Path.Combine(dir, $".lcc-write-check-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try { using var _ = new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"{option} {path}: cannot write in {dir} ({e.Message.TrimEnd('.')})");
        }
        return full;
    }

    /// <summary>Writes via a temp file in the same folder, renamed over <paramref name="path"/> when complete.</summary>
    public static void Write(string path, Action<string> writeTo)
    {
        string tmp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileNameWithoutExtension(path)}.tmp-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}{Path.GetExtension(path)}");
        try
        {
            writeTo(tmp);
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }
}

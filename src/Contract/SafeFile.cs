using System.Runtime.InteropServices;

namespace LongCtx.Contract;

/// <summary>A file lcc refuses to read or touch: outside the folder it must live in, not a regular file, too large,
/// or an output folder that would destroy an input. The message is one line naming the path and what to do.</summary>
public sealed class UnsafeFileException(string message) : IOException(message);

/// <summary>What <see cref="SafeFile.Stat"/> found at a path (symlinks followed).</summary>
public enum FileKind { Missing, Regular, Directory, Fifo, CharDevice, BlockDevice, Socket, Other }

/// <summary>
/// The one gate for every file lcc reads that a model folder or a user names (external data, sidecars, longctx.json,
/// tokenizer.json, prompt and eval files). Threat model (issue 14): a crafted model folder whose data location or
/// sidecar is a symlink to a file elsewhere (/proc/self/environ copied into the weights), a FIFO (open() blocks
/// forever), or an endless device (/dev/zero, /dev/urandom). The rules:
/// <list type="number">
/// <item>resolve the real path (every symlink in every component, as realpath(3));</item>
/// <item>when a folder is given, the real path must lie inside the folder's real path;</item>
/// <item>the file type is checked with stat BEFORE any open: only regular files are opened (a FIFO is never opened);</item>
/// <item>the size from stat must cover what the caller needs and stay under a cap; reads are bounded by that size.</item>
/// </list>
/// </summary>
public static class SafeFile
{
    /// <summary>Resolves every symlink in <paramref name="path"/> (like realpath(3)); a path that does not exist yet
    /// resolves its longest existing prefix and appends the rest, so output folders can be checked before they exist.</summary>
    public static string RealPath(string path)
    {
        string full = Path.GetFullPath(path);
        string root = Path.GetPathRoot(full) ?? "/";
        var pending = new Stack<string>(full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries).Reverse());
        string current = root;
        int hops = 0;
        while (pending.Count > 0)
        {
            string part = pending.Pop();
            if (part == ".") continue;
            if (part == "..") { current = Path.GetDirectoryName(current) ?? root; continue; }
            string next = Path.Combine(current, part);
            string? target = LinkTarget(next);
            if (target is null) { current = next; continue; }
            if (++hops > 40) throw new UnsafeFileException($"{path}: too many levels of symbolic links");
            if (Path.IsPathRooted(target)) current = Path.GetPathRoot(target) ?? root;
            foreach (var p in target.Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries).Reverse()) pending.Push(p);
        }
        return current;
    }

    private static string? LinkTarget(string path)
    {
        try { return new FileInfo(path).LinkTarget; }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>True when <paramref name="path"/> (a real path) is <paramref name="folder"/> (a real path) or lies below it.</summary>
    public static bool IsWithin(string path, string folder)
    {
        string f = folder.EndsWith(Path.DirectorySeparatorChar) ? folder : folder + Path.DirectorySeparatorChar;
        return path == folder || path.StartsWith(f, StringComparison.Ordinal);
    }

    /// <summary>The type and size of what <paramref name="path"/> finally points to, from stat(2); never opens it.</summary>
    public static (FileKind Kind, long Size) Stat(string path)
    {
        if (!OperatingSystem.IsWindows())
        {
            var st = new byte[256];
            int rc;
            try { rc = NativeStat(path, st); }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return ManagedStat(path); }
            if (rc != 0) return (File.Exists(path) || Directory.Exists(path) ? FileKind.Other : FileKind.Missing, 0);
            int mode = BitConverter.ToInt32(st, 4);
            long size = BitConverter.ToInt64(st, 16);
            var kind = (mode & 0xF000) switch
            {
                0x8000 => FileKind.Regular,
                0x4000 => FileKind.Directory,
                0x1000 => FileKind.Fifo,
                0x2000 => FileKind.CharDevice,
                0x6000 => FileKind.BlockDevice,
                0xC000 => FileKind.Socket,
                _ => FileKind.Other,
            };
            return (kind, size);
        }
        return ManagedStat(path);
    }

    private static (FileKind, long) ManagedStat(string path) =>
        Directory.Exists(path) ? (FileKind.Directory, 0)
        : File.Exists(path) ? (FileKind.Regular, new FileInfo(path).Length)
        : (FileKind.Missing, 0);

    // The .NET runtime's own stat shim (ships with every .NET on Unix): int SystemNative_Stat(const char*, FileStatus*),
    // FileStatus = { int32 Flags; int32 Mode; uint32 Uid; uint32 Gid; int64 Size; ... } with portable S_IF* values.
    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat", CharSet = CharSet.Ansi, BestFitMapping = false)]
    private static extern int NativeStat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] status);

    private static string Describe(FileKind k) => k switch
    {
        FileKind.Directory => "a folder",
        FileKind.Fifo => "a FIFO (named pipe)",
        FileKind.CharDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Socket => "a socket",
        _ => "not a regular file",
    };

    /// <summary>
    /// Checks <paramref name="path"/> under the rules above without opening it and returns its real path and size.
    /// <paramref name="folder"/>: the real file must lie inside it (null: anywhere). <paramref name="need"/>: bytes the
    /// caller will read (the file must have at least that many). <paramref name="cap"/>: the largest size accepted.
    /// <paramref name="what"/> names the file in errors ("external data 'w.bin' of model.onnx").
    /// </summary>
    public static (string RealPath, long Size) Check(string path, string? folder = null, long need = 0, long cap = long.MaxValue, string? what = null)
    {
        what ??= path;
        string real = RealPath(path);
        if (folder is not null)
        {
            string realFolder = RealPath(folder);
            if (!IsWithin(real, realFolder))
                throw new UnsafeFileException($"{what}: resolves to {real}, outside the folder {realFolder}; refusing it (symlinks must stay inside the model's folder): copy the file into the folder");
        }
        var (kind, size) = Stat(real);
        if (kind == FileKind.Missing) throw new UnsafeFileException($"{what}: file not found ({real})");
        if (kind != FileKind.Regular)
            throw new UnsafeFileException($"{what}: {real} is {Describe(kind)}, not a regular file; refusing to read it");
        if (size < need)
            throw new UnsafeFileException($"{what}: {real} has {size} bytes, fewer than the {need} needed (truncated or wrong file)");
        if (size > cap)
            throw new UnsafeFileException($"{what}: {real} is {size} bytes, larger than {FormatCap(cap)} (the limit for this file); refusing to read it");
        return (real, size);
    }

    private static string FormatCap(long cap) => cap >= 1 << 20 ? $"{cap >> 20} MiB" : cap >= 1 << 10 ? $"{cap >> 10} KiB" : $"{cap} bytes";

    /// <summary>Opens a checked regular file for reading (see <see cref="Check"/>).</summary>
    public static FileStream OpenRead(string path, string? folder = null, long need = 0, long cap = long.MaxValue, string? what = null)
    {
        var (real, _) = Check(path, folder, need, cap, what);
        return new FileStream(real, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
    }

    /// <summary>Reads a checked UTF-8 text file of at most <paramref name="cap"/> bytes; never reads past the cap even
    /// if the file grows meanwhile.</summary>
    public static string ReadText(string path, long cap, string? folder = null, string? what = null)
    {
        using var fs = OpenRead(path, folder, 0, cap, what);
        var bytes = ReadBounded(fs, cap, what ?? path);
        return System.Text.Encoding.UTF8.GetString(bytes);
    }

    private static byte[] ReadBounded(Stream s, long cap, string what)
    {
        var buffer = new MemoryStream();
        var chunk = new byte[1 << 16];
        int n;
        while ((n = s.Read(chunk, 0, chunk.Length)) > 0)
        {
            buffer.Write(chunk, 0, n);
            if (buffer.Length > cap)
                throw new UnsafeFileException($"{what}: larger than {FormatCap(cap)} (the limit for this file); refusing to read it");
        }
        return buffer.ToArray();
    }

    /// <summary>Copies a checked regular file (inside <paramref name="folder"/>, at most <paramref name="cap"/> bytes) to
    /// <paramref name="destination"/>, which must not exist; a symlink is copied as the file's bytes, never as a link.</summary>
    public static void Copy(string path, string destination, string folder, long cap, string? what = null)
    {
        using var src = OpenRead(path, folder, 0, cap, what);
        using var dst = new FileStream(destination, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        var chunk = new byte[1 << 16];
        long total = 0;
        int n;
        while ((n = src.Read(chunk, 0, chunk.Length)) > 0)
        {
            total += n;
            if (total > cap) throw new UnsafeFileException($"{what ?? path}: grew past the {FormatCap(cap)} limit while being copied; refusing it");
            dst.Write(chunk, 0, n);
        }
    }

    /// <summary>Reads a checked text file line by line; a line longer than <paramref name="lineCap"/> characters is an
    /// error naming the line (a JSONL file that is one endless line cannot exhaust memory).</summary>
    public static IEnumerable<(int LineNo, string Line)> ReadLines(string path, long fileCap, int lineCap, string? what = null)
    {
        what ??= path;
        using var fs = OpenRead(path, null, 0, fileCap, what);
        using var reader = new StreamReader(fs, System.Text.Encoding.UTF8);
        var sb = new System.Text.StringBuilder();
        int lineNo = 0;
        while (true)
        {
            sb.Clear();
            int c;
            bool any = false;
            while ((c = reader.Read()) >= 0)
            {
                any = true;
                if (c == '\n') break;
                if (sb.Length >= lineCap)
                    throw new UnsafeFileException($"{what}:{lineNo + 1}: line longer than {lineCap} characters; refusing to read it");
                sb.Append((char)c);
            }
            if (!any) yield break;
            lineNo++;
            if (sb.Length > 0 && sb[^1] == '\r') sb.Length--;
            yield return (lineNo, sb.ToString());
            if (c < 0) yield break;
        }
    }
}

using System.Diagnostics;
using LongCtx.Contract;

namespace LongCtx.Compiler;

/// <summary>
/// The one place that decides whether lcc may delete or replace a folder, and that claims it (issue 14, "--force
/// deletes the input", "two compiles racing for one -o").
/// <list type="bullet">
/// <item><see cref="Guard"/>: a folder that equals or contains (real paths, symlinks resolved) any input of the job
/// (the model, its external data, its sidecars), the working directory, the home folder or the filesystem root is
/// never replaced, whatever the flags.</item>
/// <item><see cref="Claim"/>: an exclusive advisory lock on a hidden <c>.OUT.lock</c> beside OUTDIR (flock, released by
/// the kernel when the process dies, even by SIGKILL), held from before the emptiness check until the output is in
/// place; a second lcc writing the same OUTDIR fails at once with a one-line error. Temp folders are named
/// <c>.OUT.tmp-PID-TAG</c>; under the lock, those of dead PIDs are removed (and a <c>.OUT.old-PID-TAG</c> left by a
/// compile killed between its two renames is put back when OUTDIR is missing).</item>
/// </list>
/// </summary>
public static class OutputFolder
{
    /// <summary>Refuses <paramref name="folder"/> when it equals or contains any of <paramref name="inputs"/> or the
    /// working directory, home folder or root. <paramref name="what"/> names the option ("output folder (-o)").</summary>
    public static void Guard(string folder, IEnumerable<string> inputs, string what)
    {
        string real = SafeFile.RealPath(folder);
        if (Path.GetDirectoryName(real) is null)
            throw new CompileException($"{what} {folder} is the filesystem root; refusing to replace it: give a new, dedicated folder");
        foreach (var input in inputs)
        {
            string r = SafeFile.RealPath(input);
            if (SafeFile.IsWithin(r, real))
                throw new CompileException($"{what} {folder} {(r == real ? "is" : "contains")} the input {input}; refusing to replace it (whatever the flags): give a new, dedicated folder");
        }
        foreach (var (name, path) in new[] { ("the working directory", Environment.CurrentDirectory), ("your home folder", Environment.GetFolderPath(Environment.SpecialFolder.UserProfile)) })
        {
            if (string.IsNullOrEmpty(path)) continue;
            string r = SafeFile.RealPath(path);
            if (SafeFile.IsWithin(r, real))
                throw new CompileException($"{what} {folder} {(r == real ? "is" : "contains")} {name}; refusing to replace it (whatever the flags): give a new, dedicated folder");
        }
    }

    /// <summary>Takes the lock for <paramref name="outDir"/> (a full path), cleans stale temp folders and returns the
    /// claim; dispose it to release. Throws a one-line <see cref="CompileException"/> when another process holds it.</summary>
    public static OutputClaim Claim(string outDir)
    {
        string parent = Path.GetDirectoryName(outDir) ?? throw new CompileException($"output folder {outDir} has no parent; give a new, dedicated folder");
        string name = Path.GetFileName(outDir);
        Directory.CreateDirectory(parent);
        string lockPath = Path.Combine(parent, $".{name}.lock");
        FileStream lck;
        for (int attempt = 0; ; attempt++)
        {
            try { lck = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException)
            {
                var owners = TempFolders(parent, name).Select(t => t.Pid).Where(p => p > 0 && IsAlive(p)).Distinct().ToList();
                string who = owners.Count > 0 ? $" (pid {string.Join(", ", owners)})" : "";
                throw new CompileException($"output folder {outDir} is being written by another lcc{who} (lock {lockPath}); wait for it to finish or give another -o");
            }
            // The holder unlinks the lock file before releasing it; a lock taken on a file that was unlinked meanwhile
            // guards nothing, so take it again on the file now at that path.
            if (File.Exists(lockPath) || attempt >= 3) break;
            lck.Dispose();
        }
        try
        {
            lck.SetLength(0);
            using (var w = new StreamWriter(lck, leaveOpen: true)) w.Write($"{Environment.ProcessId}\n");
            int cleaned = CleanStale(outDir, parent, name);
            return new OutputClaim(outDir, parent, name, lck, cleaned);
        }
        catch
        {
            lck.Dispose();
            throw;
        }
    }

    internal static IEnumerable<(string Path, bool IsOld, int Pid)> TempFolders(string parent, string name)
    {
        if (!Directory.Exists(parent)) yield break;
        foreach (var d in Directory.EnumerateDirectories(parent, $".{name}.*-*"))
        {
            string rest = Path.GetFileName(d)[(name.Length + 2)..];
            bool isOld = rest.StartsWith("old-", StringComparison.Ordinal);
            if (!isOld && !rest.StartsWith("tmp-", StringComparison.Ordinal)) continue;
            var parts = rest[4..].Split('-');
            int pid = parts.Length == 2 && int.TryParse(parts[0], out var p) ? p : 0;
            yield return (d, isOld, pid);
        }
    }

    /// <summary>Removes temp folders of dead owners; puts back an old output that a killed compile had moved aside.</summary>
    private static int CleanStale(string outDir, string parent, string name)
    {
        int n = 0;
        foreach (var (path, isOld, pid) in TempFolders(parent, name).ToList())
        {
            if (pid <= 0 || IsAlive(pid)) continue;
            if (isOld && !Directory.Exists(outDir)) Directory.Move(path, outDir);
            else Directory.Delete(path, true);
            n++;
        }
        return n;
    }

    internal static bool IsAlive(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }
}

/// <summary>A held claim on an output folder (see <see cref="OutputFolder.Claim"/>).</summary>
public sealed class OutputClaim : IDisposable
{
    private readonly FileStream _lock;
    private readonly string _parent, _name;

    internal OutputClaim(string outDir, string parent, string name, FileStream lck, int cleaned)
    {
        OutputDir = outDir;
        _parent = parent;
        _name = name;
        _lock = lck;
        StaleCleaned = cleaned;
    }

    public string OutputDir { get; }
    /// <summary>Stale temp folders (dead owner) removed or put back when the claim was taken.</summary>
    public int StaleCleaned { get; }

    /// <summary>A new temp folder beside OUTDIR, named with this process's pid.</summary>
    public string CreateTemp()
    {
        string tmp = Path.Combine(_parent, $".{_name}.tmp-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(tmp);
        return tmp;
    }

    /// <summary>Moves <paramref name="tmp"/> into place. An existing OUTDIR is replaced only when <paramref name="force"/>
    /// (an empty one always); rename fails if another process created OUTDIR meanwhile, so nothing is lost.</summary>
    public void Commit(string tmp, bool force)
    {
        string outDir = OutputDir;
        string? old = null;
        if (Directory.Exists(outDir))
        {
            if (!Directory.EnumerateFileSystemEntries(outDir).Any()) Directory.Delete(outDir, false);
            else if (!force) throw new CompileException($"output folder {outDir} appeared and is not empty; nothing replaced: use --force to replace it");
            else
            {
                old = Path.Combine(_parent, $".{_name}.old-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
                Directory.Move(outDir, old);
            }
        }
        try { Directory.Move(tmp, outDir); }
        catch (IOException e)
        {
            if (old is not null && !Directory.Exists(outDir)) Directory.Move(old, outDir);
            throw new CompileException($"could not move the output into {outDir} ({e.Message.TrimEnd('.')}); another process may have created it: nothing replaced");
        }
        if (old is not null) Directory.Delete(old, true);
    }

    /// <summary>Releases the claim: the lock file is removed while still held, then closed.</summary>
    public void Dispose()
    {
        try { File.Delete(_lock.Name); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        _lock.Dispose();
    }
}

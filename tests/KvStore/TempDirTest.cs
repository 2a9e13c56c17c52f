using NUnit.Framework;

namespace LongCtx.Tests.KvStore;

/// <summary>A fresh temp folder per test (<see cref="Dir"/>), removed after it.</summary>
public abstract class TempDirTest(string prefix)
{
    protected string Dir { get; private set; } = "";

    [SetUp] public void MakeDir() => Dir = TestSupport.TempDir(prefix);

    [TearDown] public void RemoveDir()
    {
        try { Directory.Delete(Dir, true); }
        catch (IOException) { } // a file still open on a failed test: leave it in /tmp
    }
}

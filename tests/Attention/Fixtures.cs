using NUnit.Framework;

namespace LongCtx.Tests.Attention;

internal static class Fixtures
{
    public static string RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "LongCtx.sln"))) return d.FullName;
            throw new InvalidOperationException("LongCtx.sln not found above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>Path of a fixture under ../shared/models, or Assert.Ignore when it is absent.</summary>
    public static string Require(string relative)
    {
        var p = Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared", "models", relative));
        if (!File.Exists(p)) Assert.Ignore("fixture not found: " + p);
        return p;
    }
}

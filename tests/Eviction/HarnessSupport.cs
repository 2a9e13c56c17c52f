using System.Diagnostics;
using System.Globalization;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>What the issue-12 harnesses share: settings from the environment, the box's load.</summary>
internal static class HarnessSupport
{
    public static string Env(string name, string dflt) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : dflt;

    /// <summary>The output of uptime (load averages): timings from a shared box are noisy, the table says how busy it was.</summary>
    public static string Uptime()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("uptime") { RedirectStandardOutput = true })!;
            return p.StandardOutput.ReadToEnd().Trim();
        }
        catch (System.ComponentModel.Win32Exception) { return "(uptime unavailable)"; }
    }

    /// <summary>recall-public compiled by lcc into <paramref name="tmp"/>/L-<paramref name="name"/> for prompts of <paramref name="len"/> tokens (YaRN past 256) plus <paramref name="extra"/>.</summary>
    public static string CompileRecall(string tmp, int len, string name, params string[] extra)
    {
        var dir = Path.Combine(tmp, $"{len}-{name}");
        string[] rope = len > 256 ? ["--rope", "yarn", "--context", len.ToString(CultureInfo.InvariantCulture)] : [];
        var r = Foundation.CliRunner.Run(["compile", RuntimeFixtures.RecallModel, "-o", dir, .. rope, .. extra]);
        Assert.That(r.ExitCode, Is.Zero, r.Stderr);
        return dir;
    }

    public static double Median(IEnumerable<double> v) { var s = v.Order().ToList(); return s[s.Count / 2]; }
}

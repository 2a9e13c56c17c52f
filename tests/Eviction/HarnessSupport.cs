using System.Diagnostics;

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
}

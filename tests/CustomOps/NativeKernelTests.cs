using System.Diagnostics;
using NUnit.Framework;

namespace LongCtx.Tests.CustomOps;

/// <summary>
/// Runs the native kernel test executable (custom-ops/tests, built by CMake next to liblongctx_ops.so
/// during 'dotnet build') so its checks — every LongAttention pattern against a double-precision masked
/// reference, for every ISA path the CPU has — are part of this suite.
/// </summary>
[TestFixture]
public class NativeKernelTests
{
    [Test]
    public void LongctxKernelTestsPass()
    {
        var buildDir = Path.Combine(TestSupport.RepoRoot, "custom-ops", "build");
        var exe = Path.Combine(buildDir, "longctx_kernel_tests");
        if (!File.Exists(exe))
        {
            if (File.Exists(Path.Combine(buildDir, "liblongctx_ops.so")))
                Assert.Fail($"{exe} is missing although liblongctx_ops.so was built there; rebuild (dotnet build) and check the cmake log.");
            Assert.Ignore($"native tests not built at {buildDir} (custom ops built elsewhere via LongCtxOpsBuildDir)");
        }
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment.Remove("LONGCTX_ISA");  // the executable forces each ISA itself
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.That(p.WaitForExit(TimeSpan.FromMinutes(5)), Is.True, "longctx_kernel_tests did not finish in 5 minutes");
        TestContext.Out.WriteLine(stdout.Result);
        Assert.That(p.ExitCode, Is.EqualTo(0), "longctx_kernel_tests failed:\n" + stdout.Result + stderr.Result);
        Assert.That(stdout.Result, Does.Contain("0 failures").And.Contain("isa scalar:"));
    }
}

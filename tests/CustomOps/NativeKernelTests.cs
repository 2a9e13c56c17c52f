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

    /// <summary>
    /// ISA hygiene of liblongctx_ops.so (objdump): the AVX-512 path really uses zmm registers, and no zmm /
    /// ymm / FMA instruction sits in a function outside the ISA-specific tile loops. Inline or template
    /// code with external linkage compiled under -mavx512f could otherwise be picked by the linker for
    /// baseline callers and crash (SIGILL) on CPUs without it.
    /// </summary>
    [Test]
    public void IsaSpecificInstructionsStayInTheirPaths()
    {
        var lib = Path.Combine(AppContext.BaseDirectory, "liblongctx_ops.so");
        Assert.That(File.Exists(lib), Is.True, $"{lib} missing");
        string listing;
        try
        {
            var psi = new ProcessStartInfo("objdump", $"-d --no-show-raw-insn -C \"{lib}\"") { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            listing = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
        }
        catch (System.ComponentModel.Win32Exception)
        {
            Assert.Ignore("objdump (binutils) not found on PATH");
            return;
        }
        var zmm = new HashSet<string>();
        var simd = new HashSet<string>();
        string fn = "";
        foreach (var line in listing.Split('\n'))
        {
            if (line.EndsWith(">:", StringComparison.Ordinal)) { fn = line; continue; }
            if (line.Contains("%zmm", StringComparison.Ordinal)) zmm.Add(fn);
            if (line.Contains("%ymm", StringComparison.Ordinal) || line.Contains("vfmadd", StringComparison.Ordinal)) simd.Add(fn);
        }
        Assert.Multiple(() =>
        {
            Assert.That(zmm, Is.Not.Empty, "the AVX-512 tile loop uses zmm registers");
            Assert.That(zmm.Where(f => !f.Contains("Avx512Traits", StringComparison.Ordinal)), Is.Empty, "zmm outside the AVX-512 path");
            Assert.That(simd.Where(f => !f.Contains("Avx2Traits", StringComparison.Ordinal) && !f.Contains("Avx512Traits", StringComparison.Ordinal)
                                     && !f.Contains("PackTransposedAvx", StringComparison.Ordinal)), Is.Empty, "ymm/FMA outside the AVX2/AVX-512 paths");
        });
    }
}

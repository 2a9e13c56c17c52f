using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using LongCtx.Tests.Foundation;
using NUnit.Framework;

namespace LongCtx.Tests.CustomOps;

/// <summary>
/// The native kernel library (custom-ops/kernels): runs longctx_kernel_tests once per ISA path through the
/// LONGCTX_ISA override (paths this CPU lacks are ignored with the reason), checks that the override refuses
/// what it cannot do, that the per-ISA objects really hold the instructions their file names promise
/// (objdump), and that <c>lcc kernels-bench</c> runs the microbenchmark.
/// </summary>
[TestFixture]
public class KernelLibraryTests
{
    private const string TestsExe = "longctx_kernel_tests";
    private const string BenchExe = "longctx_kernel_bench";
    private static readonly string[] IsaPaths = ["scalar", "avx2", "avx512"];

    private static string ExePath(string name) => Path.Combine(AppContext.BaseDirectory, name);

    /// <summary>Per path: null when this CPU runs it, else what it lacks (from <c>longctx_kernel_tests --list-isas</c>).</summary>
    private Dictionary<string, string?> _missing = new();

    [OneTimeSetUp]
    public void RequireExecutables()
    {
        foreach (var exe in new[] { TestsExe, BenchExe })
        {
            if (!File.Exists(ExePath(exe)))
            {
                Assert.Fail($"{exe} not found next to the test assembly ({ExePath(exe)}). It is built with liblongctx_ops.so by " +
                            "custom-ops/CustomOps.targets (imported by src/Runtime) during 'dotnet build'; check the build log " +
                            "for cmake/g++ errors or LongCtxSkipCustomOps=true.");
            }
        }
        var list = Run(TestsExe, ["--list-isas"]);
        Assert.That(list.ExitCode, Is.EqualTo(0), list.Stderr);
        foreach (var line in list.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var m = Regex.Match(line, @"^(\w+) (supported|unsupported: lacks (.+))$");
            Assert.That(m.Success, $"unexpected --list-isas line '{line}'");
            _missing[m.Groups[1].Value] = m.Groups[2].Value == "supported" ? null : m.Groups[3].Value;
        }
        Assert.That(_missing.Keys, Is.EquivalentTo(IsaPaths));
        Assert.That(_missing["scalar"], Is.Null, "the scalar path runs everywhere");
    }

    [TestCase("scalar")]
    [TestCase("avx2")]
    [TestCase("avx512")]
    public void NativeKernelTestsPassOnIsaPath(string isa)
    {
        if (_missing[isa] is { } lacks)
            Assert.Ignore($"this CPU lacks {lacks}: the {isa} path of {TestsExe} cannot run here (it is still compiled and checked by objdump)");
        var r = Run(TestsExe, [], ("LONGCTX_ISA", isa));
        Assert.That(r.ExitCode, Is.EqualTo(0), $"{TestsExe} with LONGCTX_ISA={isa} failed:\n{r.Stdout}\n{r.Stderr}");
        // The summary names the path actually run: the override reached the library's dispatch.
        Assert.That(r.Stdout, Does.Contain("PASS").And.Contain($"ISA paths run: {isa} (forced by LONGCTX_ISA)"));
        Assert.That(r.Stderr, Does.Contain($"ok [{isa}] kvquant"));
    }

    [Test]
    public void NativeKernelTestsLoopOverEverySupportedPath()
    {
        var r = Run(TestsExe, []);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Stdout + "\n" + r.Stderr);
        var supported = IsaPaths.Where(i => _missing[i] is null).ToArray();
        Assert.That(r.Stdout, Does.Contain("ISA paths run: " + string.Join(' ', supported) + ";"));
        foreach (var isa in IsaPaths.Where(i => _missing[i] is not null))
            Assert.That(r.Stdout, Does.Contain($"{isa} (CPU lacks {_missing[isa]})"), "skipped paths are reported");
    }

    [Test]
    public void UnknownIsaNameIsRefused()
    {
        var r = Run(TestsExe, [], ("LONGCTX_ISA", "sse9"));
        Assert.That(r.ExitCode, Is.EqualTo(3));
        Assert.That(r.Stdout, Does.Contain("LONGCTX_ISA='sse9' is not an ISA path").And.Contain("scalar avx2 avx512"));
    }

    [Test]
    public void IsaTheCpuLacksIsRefused()
    {
        var lacking = IsaPaths.FirstOrDefault(i => _missing[i] is not null);
        if (lacking is null) Assert.Ignore("this CPU supports every ISA path (scalar, avx2, avx512): nothing to refuse");
        var r = Run(TestsExe, [], ("LONGCTX_ISA", lacking));
        Assert.That(r.ExitCode, Is.EqualTo(3), "forcing a path the CPU lacks must not silently fall back");
        Assert.That(r.Stdout, Does.Contain($"LONGCTX_ISA={lacking} asks for a path this CPU cannot run (it lacks {_missing[lacking]})"));
    }

    /// <summary>
    /// Through ORT: with a refused LONGCTX_ISA, RegisterCustomOps fails with the library's message instead of
    /// running on another path. A child lcc process, since the choice is made once per process.
    /// </summary>
    [Test]
    public void CustomOpRegistrationRefusesABadIsaChoice()
    {
        var tmp = TestSupport.TempDir("kernlib");
        try
        {
            var model = LongCtx.Tests.Runtime.RuntimeFixtures.WriteTinyModel(tmp, "past_key_values.0.key", customDomain: "longctx");
            var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? FindOnPath("dotnet");
            if (dotnet is null) Assert.Ignore("no dotnet host to start lcc with (DOTNET_HOST_PATH unset, dotnet not on PATH)");
            var r = Run(dotnet!, [ExePath("lcc.dll"), "run", model, "--prompt-ids", "1", "--ep", "cpu"], ("LONGCTX_ISA", "sse9"));
            Assert.That(r.ExitCode, Is.EqualTo(1), r.Stdout + r.Stderr);
            Assert.That(r.Stderr, Does.StartWith("lcc: error: ").And.Contain("cannot register custom-op library")
                .And.Contain("LONGCTX_ISA='sse9' is not an ISA path"));
        }
        finally { Directory.Delete(tmp, recursive: true); }
    }

    /// <summary>
    /// One file per ISA variant, compiled with its own flags: *_avx512.cc objects must use zmm registers,
    /// *_avx2.cc objects ymm and no zmm, and every other object neither (no ISA leaks into baseline code).
    /// ISA objects must also define no weak symbols (nm W/V/u): an inline function instantiated there could be
    /// the copy the linker keeps for every caller, and fault on a CPU without that ISA.
    /// </summary>
    [Test]
    public void IsaObjectsUseTheirRegisters()
    {
        var objdump = FindOnPath("objdump");
        if (objdump is null) Assert.Ignore("objdump not found on PATH (binutils): cannot disassemble the kernel objects");
        var objDir = Path.Combine(TestSupport.RepoRoot, "custom-ops", "build", "CMakeFiles");
        if (!Directory.Exists(objDir)) Assert.Ignore($"{objDir} not found (LongCtxOpsBuildDir moved the CMake build elsewhere)");
        var objects = Directory.GetFiles(objDir, "*.o", SearchOption.AllDirectories);
        int avx512 = 0, avx2 = 0, baseline = 0;
        foreach (var o in objects)
        {
            var r = Run(objdump!, ["-d", "--no-show-raw-insn", o]);
            Assert.That(r.ExitCode, Is.EqualTo(0), $"objdump -d {o}: {r.Stderr}");
            bool zmm = r.Stdout.Contains("%zmm"), ymm = r.Stdout.Contains("%ymm");
            var name = Path.GetFileName(o);
            if (name.EndsWith("_avx512.cc.o", StringComparison.Ordinal) || name.EndsWith("_avx2.cc.o", StringComparison.Ordinal))
            {
                var nm = Run(Path.Combine(Path.GetDirectoryName(objdump!)!, "nm"), [o]);
                var weak = nm.Stdout.Split('\n').Where(l => Regex.IsMatch(l, @"^\S*\s+[WVu]\s")).ToArray();
                Assert.That(weak, Is.Empty, $"{o} defines weak symbols (inline code built with ISA flags): {string.Join("; ", weak)}");
            }
            if (name.EndsWith("_avx512.cc.o", StringComparison.Ordinal)) { avx512++; Assert.That(zmm, $"{o} (AVX-512 variant) uses no zmm register"); }
            else if (name.EndsWith("_avx2.cc.o", StringComparison.Ordinal)) { avx2++; Assert.That(ymm && !zmm, $"{o} (AVX2 variant): ymm={ymm} zmm={zmm}, want ymm only"); }
            else { baseline++; Assert.That(!ymm && !zmm, $"{o} is compiled for baseline x86-64 but uses ymm={ymm} zmm={zmm}"); }
        }
        Assert.That(avx512, Is.GreaterThanOrEqualTo(2), "kernels/kvquant and bench/peak have AVX-512 variants");
        Assert.That(avx2, Is.GreaterThanOrEqualTo(2), "kernels/kvquant and bench/peak have AVX2 variants");
        Assert.That(baseline, Is.GreaterThan(0));
    }

    [Test]
    public void LccKernelsBenchPrintsTheTable()
    {
        if (Environment.GetEnvironmentVariable("LONGCTX_ISA") is { Length: > 0 } forced)
            Assert.Ignore($"LONGCTX_ISA={forced} is set in this environment: lcc kernels-bench would bench only that path");
        var r = CliRunner.Run("kernels-bench", "--quick");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Stderr);
        Assert.That(r.Stdout, Does.Contain("stream triad").And.Contain("attention_reference decode"));
        foreach (var isa in IsaPaths.Where(i => _missing[i] is null))
            Assert.That(r.Stdout, Does.Match($@"kv_quantize_int8\s+{isa}\s"), $"a kvquant row for the {isa} path");
    }

    [Test]
    public void LccKernelsBenchJsonHasRowsForTheChosenPath()
    {
        var r = CliRunner.Run("kernels-bench", "--quick", "--json", "--isa", "scalar");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.That(doc.RootElement.GetProperty("isa_paths").GetString(), Is.EqualTo("scalar"));
        var rows = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
        var kvIsas = rows.Where(x => x.GetProperty("kernel").GetString()!.StartsWith("kv_")).Select(x => x.GetProperty("isa").GetString()).Distinct();
        Assert.That(kvIsas, Is.EqualTo(new[] { "scalar" }));
        Assert.That(rows.All(x => x.GetProperty("rate").GetDouble() > 0), "every measured rate is positive");
    }

    [Test]
    public void LccKernelsBenchReportsAMissingExecutableOnOneLine()
    {
        var r = CliRunner.Run("kernels-bench", "--exe", "/nonexistent/longctx_kernel_bench");
        Assert.That(r.ExitCode, Is.EqualTo(1));
        Assert.That(r.Stderr.Trim(), Does.StartWith("lcc: error: /nonexistent/longctx_kernel_bench not found").And.Not.Contain("\n"));
    }

    private sealed record ProcResult(int ExitCode, string Stdout, string Stderr);

    private static ProcResult Run(string exe, string[] args, params (string Name, string Value)[] env)
    {
        var psi = new ProcessStartInfo(exe.Contains('/') ? exe : ExePath(exe))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment.Remove("LONGCTX_ISA");  // the test decides, not the caller's shell
        foreach (var (name, value) in env) psi.Environment[name] = value;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{exe} did not finish within 2 minutes");
        }
        return new ProcResult(p.ExitCode, stdout, stderr.Result);
    }

    private static string? FindOnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);
}

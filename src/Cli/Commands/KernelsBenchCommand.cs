using System.CommandLine;
using System.Diagnostics;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc kernels-bench [--json] [--quick] [--isa scalar|avx2|avx512]</c>: runs the native microbenchmark
/// longctx_kernel_bench (custom-ops/bench, built and copied next to lcc by custom-ops/CustomOps.targets) and
/// prints its table: each kernel per ISA path against this box's measured FMA peak and STREAM-triad bandwidth.
/// </summary>
internal static class KernelsBenchCommand
{
    public const string ExecutableName = "longctx_kernel_bench";

    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "print the benchmark's JSON instead of the table" };
        var quick = new Option<bool>("--quick") { Description = "small sizes: a smoke run of a second or so (arrays fit in cache, so ratios exceed 100%)" };
        var isa = new Option<string?>("--isa") { Description = "only this ISA path (scalar|avx2|avx512; sets LONGCTX_ISA for the benchmark)" };
        var exe = new Option<string?>("--exe") { Description = $"path of {ExecutableName} (default: next to lcc)" };
        var cmd = new Command("kernels-bench", "Microbenchmark of the native kernels (custom-ops/) per ISA path, against measured FMA and memory-bandwidth peaks")
            { json, quick, isa, exe };
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() =>
        {
            var path = pr.GetValue(exe) ?? Path.Combine(AppContext.BaseDirectory, ExecutableName);
            if (!File.Exists(path))
                throw new FileNotFoundException($"{path} not found; it is built with liblongctx_ops.so by 'dotnet build' (custom-ops/CustomOps.targets), or pass --exe");
            var psi = new ProcessStartInfo(path) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            if (pr.GetValue(json)) psi.ArgumentList.Add("--json");
            if (pr.GetValue(quick)) psi.ArgumentList.Add("--quick");
            // An explicit --isa wins; otherwise the caller's LONGCTX_ISA (inherited) applies.
            if (pr.GetValue(isa) is { } name) psi.Environment["LONGCTX_ISA"] = name;
            using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {path}");
            using var cancel = ct.Register(() => { try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } });
            var stderr = p.StandardError.ReadToEndAsync(ct);
            var stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            ct.ThrowIfCancellationRequested();
            if (p.ExitCode != 0)
            {
                var why = stderr.Result.Trim().Split('\n').LastOrDefault(l => l.Length > 0) ?? "no message";
                throw new InvalidOperationException($"{ExecutableName} exited with {p.ExitCode}: {why}");
            }
            Console.Out.Write(stdout);
            return Cli.Ok;
        })));
        return cmd;
    }
}

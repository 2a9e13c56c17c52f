using System.Diagnostics;
using LongCtx.Compiler;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Samples;

/// <summary>
/// samples/Embed (the README's "Embed the runtime" example as a console app, built with the solution): run as its own
/// process against the bundled demo model compiled by lcc, it streams the same greedy tokens the runtime gives in
/// process, and cancelling from the consumer stops it after the asked number of tokens.
/// </summary>
[TestFixture]
public sealed class EmbedSampleTests
{
    private static string SampleDll()
    {
        // the sample is built by the solution build in the same configuration as these tests
        string config = AppContext.BaseDirectory.Contains("/bin/Debug/", StringComparison.Ordinal) ? "Debug" : "Release";
        var dll = Path.Combine(TestSupport.RepoRoot, "samples", "Embed", "bin", config, "net10.0", "LongCtx.Samples.Embed.dll");
        Assert.That(File.Exists(dll), $"{dll} is missing: build the solution (dotnet build LongCtx.sln -c {config}) first");
        return dll;
    }

    private static (int Rc, string Stdout, string Stderr) Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(SampleDll());
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3))) { p.Kill(true); Assert.Fail("the sample did not finish in 3 minutes"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Test]
    public void Sample_StreamsTheRuntimesTokens_AndCancels()
    {
        var dir = TestSupport.TempDir("embed");
        try
        {
            var src = Path.Combine(dir, "original");
            DemoModel.WriteTo(src);
            var compiled = Path.Combine(dir, "compiled");
            CompileJob.Run(Path.Combine(src, "model.onnx"), compiled, Pipelines.Instantiate(Pipelines.Default), new CompileOptions { Force = true });

            List<int> expected;
            using (var m = LongCtxModel.Load(compiled, RuntimeOptions.Default with { ExecutionProvider = ExecutionProviderKind.Cpu, Log = _ => { } }))
            using (var g = m.CreateGenerator())
                expected = g.Generate([1, 17, 42, 5, 99, 23, 8, 64], new GenerationOptions { MaxNewTokens = 8 });

            var full = Run(compiled, "8");
            TestContext.Out.WriteLine(full.Stdout);
            Assert.That(full.Rc, Is.EqualTo(0), full.Stderr);
            Assert.That(full.Stderr, Does.Not.Contain("TensorRT").And.Not.Contain("CUDA"), "auto says nothing about missing GPU providers");
            Assert.That(full.Stdout, Does.Contain("model: compiled on ").And.Contain("2 layers"));
            Assert.That(full.Stdout, Does.Contain($"tokens: {string.Join(" ", expected)}\n"));
            Assert.That(full.Stdout, Does.Contain("done: 8 tokens (MaxNewTokens)"));

            var cancelled = Run(compiled, "8", "3");
            TestContext.Out.WriteLine(cancelled.Stdout);
            Assert.That(cancelled.Rc, Is.EqualTo(0), cancelled.Stderr);
            Assert.That(cancelled.Stdout, Does.Contain($"tokens: {string.Join(" ", expected.Take(3))}\n").And.Contain("cancelled after 3 tokens"));

            var missing = Run(Path.Combine(dir, "nope"));
            Assert.That(missing.Rc, Is.EqualTo(1));
            Assert.That(missing.Stderr.Trim().Split('\n'), Has.Length.EqualTo(1), "one line, no stack trace");
        }
        finally { Directory.Delete(dir, true); }
    }
}

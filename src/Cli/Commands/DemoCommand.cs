using System.CommandLine;
using System.Diagnostics;
using LongCtx.Compiler;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Runtime;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc demo</c>: the README's first command. Builds the bundled tiny decoder (models/DemoModel), shows what
/// discovery finds, compiles it with the default pipeline, runs original and compiled on CPU with greedy decoding,
/// and checks that both produce the same tokens; then lowers attention to our own kernel (longctx.LongAttention, dense)
/// and checks that too.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var outDir = new Option<DirectoryInfo>("--out") { Description = "working folder for the demo model and its compiled forms (its original/, compiled/ and compiled-longattention/ are replaced only with --force)", DefaultValueFactory = _ => new DirectoryInfo("demo-out") };
        var force = new Option<bool>("--force") { Description = "replace the demo's folders inside --out if they exist" };
        var tokens = new Option<int>("--max-new-tokens") { Description = "tokens to generate", DefaultValueFactory = _ => 16 };
        var cmd = new Command("demo", "Build the bundled tiny decoder, compile it, and run it on CPU (original vs compiled)") { outDir, tokens, force };
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() =>
        {
            var root = pr.GetValue(outDir)!.FullName;
            var srcDir = Path.Combine(root, "original");
            var compiledDir = Path.Combine(root, "compiled");
            var longDir = Path.Combine(root, "compiled-longattention");
            foreach (var d in new[] { srcDir, compiledDir, longDir })
            {
                if (File.Exists(d)) throw new ArgumentException($"{d} is a file; give another --out");
                if (!Directory.Exists(d) || !Directory.EnumerateFileSystemEntries(d).Any()) continue;
                if (!pr.GetValue(force)) throw new ArgumentException($"{d} exists and is not empty; use --force to replace the demo's folders, or give another --out");
                OutputFolder.Guard(d, [], "demo folder");
            }
            if (Directory.Exists(srcDir)) Directory.Delete(srcDir, true);
            Directory.CreateDirectory(srcDir);
            var sw = Stopwatch.StartNew();
            DemoModel.WriteTo(srcDir);
            var src = Path.Combine(srcDir, "model.onnx");
            var c = DemoModel.Config;
            Console.WriteLine($"1. built the demo decoder: {c.Layers} layers, hidden {c.Hidden}, {c.Heads} heads / {c.KvHeads} kv heads, head_dim {c.HeadDim}, vocab {c.Vocab} -> {src}");
            var discovery = AttentionDiscovery.Discover(OnnxReader.Load(src));
            Console.WriteLine($"2. attention discovery: {discovery.Blocks.Count} blocks ({string.Join(", ", discovery.Blocks.Select(b => b.Form).Distinct())}), {discovery.Unrecognised.Count} unrecognised");
            var r = CompileJob.Run(src, compiledDir, Pipelines.Instantiate(Pipelines.Default), new CompileOptions { Force = true }, ct);
            Console.WriteLine($"3. compiled -> {r.OutputDir}");
            foreach (var p in r.Pipeline.Passes)
                Console.WriteLine($"     {p.Pass,-24} {(p.Counts.Count == 0 ? "no change" : string.Join(", ", p.Counts.Select(kv => $"{kv.Value} {kv.Key}")))}");
            int[] prompt = [1, 17, 42, 5, 99, 23, 8, 64];
            var opts = new GenerationOptions { MaxNewTokens = pr.GetValue(tokens) };
            List<int> Run(string path, out string ep)
            {
                using var m = LongCtxModel.Load(path, new RuntimeOptions { ExecutionProvider = ExecutionProviderKind.Cpu });
                ep = m.Provider.ToString();
                using var g = m.CreateGenerator();
                return g.Generate(prompt, opts, ct);
            }
            var a = Run(src, out var epA);
            var b = Run(compiledDir, out _);
            Console.WriteLine($"4. greedy decode on {epA}, prompt [{string.Join(",", prompt)}]:");
            Console.WriteLine($"     original: {string.Join(" ", a)}");
            Console.WriteLine($"     compiled: {string.Join(" ", b)}");
            var lowered = CompileJob.Run(src, longDir, Pipelines.Instantiate(Pipelines.WithMethods([], AttentionOptions.Parse("dense", null))), new CompileOptions { Force = true }, ct);
            var lower = lowered.Pipeline.Passes.Last(p => p.Pass == "lower-attention");
            var l = Run(longDir, out _);
            Console.WriteLine($"5. attention lowered to our kernel (longctx.LongAttention, dense: {string.Join(", ", lower.Counts.Select(kv => $"{kv.Value} {kv.Key}"))}) -> {lowered.OutputDir}");
            Console.WriteLine($"     lowered:  {string.Join(" ", l)}");
            bool same = a.SequenceEqual(b) && a.SequenceEqual(l);
            Console.WriteLine(same ? $"OK: both compiled models produce the same tokens ({sw.Elapsed.TotalSeconds:0.0} s)" : "MISMATCH: a compiled model's tokens differ from the original's");
            return same ? Cli.Ok : Cli.Failure;
        })));
        return cmd;
    }
}

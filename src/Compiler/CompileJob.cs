using System.Security.Cryptography;
using System.Text.Json;
using LongCtx.Compiler.Capabilities;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Contract;

namespace LongCtx.Compiler;

/// <summary>A user-facing failure of a compile (bad output folder, bad model): one line, names what and what to do.</summary>
public sealed class CompileException(string message) : Exception(message);

public sealed record CompileOptions
{
    public bool Force { get; init; }
    public PassManagerOptions Passes { get; init; } = new();
    public SaveOptions Save { get; init; } = new();
    /// <summary>Extra top-level sections for longctx.json (method options, CLI arguments).</summary>
    public IReadOnlyDictionary<string, object?>? Extra { get; init; }
    /// <summary>Further models written beside model.onnx, each made from the compiled model (e.g. GemFilter's filter.onnx).</summary>
    public IReadOnlyList<CompanionModel> Companions { get; init; } = [];
}

/// <summary>A model written beside the compiled one: <paramref name="Transform"/> turns a fresh copy of the compiled model into it.</summary>
public sealed record CompanionModel(string File, Action<Model> Transform);

public sealed record CompileResult(string OutputDir, string ModelPath, SaveResult Saved, LongCtxManifest Manifest, PipelineResult Pipeline);

/// <summary>
/// <c>lcc compile</c>: load, run a pipeline (verifying after every pass), write OUTDIR/model.onnx (+ model.onnx.data)
/// and OUTDIR/longctx.json (<see cref="LongCtxManifest"/>: the pass reports, the passes' runtime values and the
/// <see cref="RuntimeCapabilityAnalysis"/> of the compiled graph, which the runtime trusts instead of probing). Everything is written to a temp folder beside OUTDIR and renamed into place at the end,
/// so a failure leaves no partial output (and an existing OUTDIR untouched).
/// </summary>
public static class CompileJob
{
    public static CompileResult Run(string input, string outDir, IEnumerable<(IPass, IReadOnlyDictionary<string, string>)> pipeline, CompileOptions? options = null, CancellationToken ct = default)
    {
        options ??= new CompileOptions();
        outDir = Path.GetFullPath(outDir.TrimEnd('/', '\\'));
        if (File.Exists(outDir)) throw new CompileException($"output path {outDir} is a file; give a folder");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any() && !options.Force)
            throw new CompileException($"output folder {outDir} exists and is not empty; use --force to replace it");
        var model = OnnxReader.Load(input);
        var source = HashSource(model, input);
        var result = PassManager.Run(model, pipeline, options.Passes, ct);
        ct.ThrowIfCancellationRequested();

        string parent = Path.GetDirectoryName(outDir)!;
        Directory.CreateDirectory(parent);
        string tag = Guid.NewGuid().ToString("N")[..8];
        string tmp = Path.Combine(parent, $".{Path.GetFileName(outDir)}.tmp-{tag}");
        Directory.CreateDirectory(tmp);
        try
        {
            var saved = OnnxWriter.Save(model, Path.Combine(tmp, LongCtxFiles.Model), options.Save);
            var copied = CopySidecars(Path.GetDirectoryName(Path.GetFullPath(input))!, tmp);
            var manifest = Manifest(model, source, result, options.Extra, copied);
            manifest.Write(Path.Combine(tmp, LongCtxFiles.Manifest));
            foreach (var c in options.Companions)
            {
                var companion = OnnxReader.Load(Path.Combine(tmp, LongCtxFiles.Model));
                c.Transform(companion);
                OnnxWriter.Save(companion, Path.Combine(tmp, c.File), options.Save);
            }
            ct.ThrowIfCancellationRequested();
            string? old = null;
            if (Directory.Exists(outDir))
            {
                old = Path.Combine(parent, $".{Path.GetFileName(outDir)}.old-{tag}");
                Directory.Move(outDir, old);
            }
            try { Directory.Move(tmp, outDir); }
            catch
            {
                if (old is not null) Directory.Move(old, outDir);
                throw;
            }
            if (old is not null) Directory.Delete(old, true);
            string modelPath = Path.Combine(outDir, LongCtxFiles.Model);
            var finalSaved = saved with { ModelPath = modelPath, DataPath = saved.DataPath is null ? null : Path.Combine(outDir, Path.GetFileName(saved.DataPath)) };
            return new CompileResult(outDir, modelPath, finalSaved, manifest, result);
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        }
    }

    /// <summary>The longctx.json record of a compile: pass reports as written by the pass manager (fields a newer
    /// report adds travel through), the runtime values passes set, and what the compiled graph lets the runtime do.</summary>
    public static LongCtxManifest Manifest(Model compiled, ManifestSource source, PipelineResult result,
        IReadOnlyDictionary<string, object?>? extra = null, IReadOnlyList<string>? copied = null) => new()
    {
        Tool = "lcc " + Version,
        Source = source,
        Pipeline = result.Passes.Select(p => JsonSerializer.SerializeToElement(p, LongCtxManifest.JsonOptions).Deserialize<PassRecord>(LongCtxManifest.JsonOptions)!).ToList(),
        Runtime = RuntimeSection.FromValues(result.RuntimeConfig) with
        {
            Capabilities = RuntimeCapabilityAnalysis.Analyze(compiled),
            Opsets = new SortedDictionary<string, long>(compiled.Opsets, StringComparer.Ordinal),
        },
        Extra = extra?.ToDictionary(kv => kv.Key, kv => JsonSerializer.SerializeToElement(kv.Value, LongCtxManifest.JsonOptions)),
        Copied = copied is { Count: > 0 } ? copied : null,
    };

    private static List<string> CopySidecars(string sourceDir, string destDir)
    {
        var copied = new List<string>();
        foreach (var f in LongCtxFiles.Sidecars)
        {
            var src = Path.Combine(sourceDir, f);
            if (!File.Exists(src)) continue;
            File.Copy(src, Path.Combine(destDir, f));
            copied.Add(f);
        }
        return copied;
    }

    public static string Version => typeof(CompileJob).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>SHA-256 over the model file and the external data files it references (streamed).</summary>
    public static ManifestSource HashSource(Model model, string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long bytes = 0;
        var files = new List<string> { Path.GetFullPath(path) };
        files.AddRange(ExternalFiles(model.Graph).Distinct().Order(StringComparer.Ordinal));
        var buf = new byte[1 << 20];
        foreach (var f in files.Distinct())
        {
            using var fs = File.OpenRead(f);
            int n;
            while ((n = fs.Read(buf)) > 0) { sha.AppendData(buf, 0, n); bytes += n; }
        }
        return new ManifestSource(Path.GetFullPath(path), Convert.ToHexStringLower(sha.GetHashAndReset()), bytes);
    }

    private static IEnumerable<string> ExternalFiles(Graph g)
    {
        foreach (var v in g.Initializers) if (v.Const?.Source is ExternalSource es) yield return es.Path;
        foreach (var n in g.Nodes) foreach (var sg in n.Subgraphs) foreach (var f in ExternalFiles(sg)) yield return f;
    }
}

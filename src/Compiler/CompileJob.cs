using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;

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
}

public sealed record SourceInfo(string Path, string Sha256, long Bytes);

/// <summary>The manifest written next to a compiled model (longctx.json).</summary>
public sealed record CompileManifest(
    string Format, string Tool, SourceInfo Source, IReadOnlyList<PassReport> Pipeline,
    IReadOnlyDictionary<string, object?> Runtime, IReadOnlyDictionary<string, object?>? Extra, IReadOnlyList<string>? Copied = null)
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };
}

public sealed record CompileResult(string OutputDir, string ModelPath, SaveResult Saved, CompileManifest Manifest, PipelineResult Pipeline);

/// <summary>
/// <c>lcc compile</c>: load, run a pipeline (verifying after every pass), write OUTDIR/model.onnx (+ model.onnx.data)
/// and OUTDIR/longctx.json. Everything is written to a temp folder beside OUTDIR and renamed into place at the end,
/// so a failure leaves no partial output (and an existing OUTDIR untouched).
/// </summary>
public static class CompileJob
{
    public const string ManifestName = "longctx.json";
    public const string ModelFileName = "model.onnx";

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
            var saved = OnnxWriter.Save(model, Path.Combine(tmp, ModelFileName), options.Save);
            var copied = CopySidecars(Path.GetDirectoryName(Path.GetFullPath(input))!, tmp);
            var manifest = new CompileManifest("longctx/1", "lcc " + Version, source, result.Passes, result.RuntimeConfig, options.Extra, copied.Count > 0 ? copied : null);
            File.WriteAllText(Path.Combine(tmp, ManifestName), JsonSerializer.Serialize(manifest, CompileManifest.Json) + "\n");
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
            string modelPath = Path.Combine(outDir, ModelFileName);
            var finalSaved = saved with { ModelPath = modelPath, DataPath = saved.DataPath is null ? null : Path.Combine(outDir, Path.GetFileName(saved.DataPath)) };
            return new CompileResult(outDir, modelPath, finalSaved, manifest, result);
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        }
    }

    /// <summary>Files that describe the model rather than its graph: they travel with the compiled model so that the
    /// runtime finds the tokenizer and tools find the trained context (config.json) in the output folder too.</summary>
    public static readonly IReadOnlyList<string> SidecarFiles =
    [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
        "special_tokens_map.json", "vocab.json", "merges.txt", "vocab.txt", "genai_config.json",
    ];

    private static List<string> CopySidecars(string sourceDir, string destDir)
    {
        var copied = new List<string>();
        foreach (var f in SidecarFiles)
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
    public static SourceInfo HashSource(Model model, string path)
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
        return new SourceInfo(Path.GetFullPath(path), Convert.ToHexStringLower(sha.GetHashAndReset()), bytes);
    }

    private static IEnumerable<string> ExternalFiles(Graph g)
    {
        foreach (var v in g.Initializers) if (v.Const?.Source is ExternalSource es) yield return es.Path;
        foreach (var n in g.Nodes) foreach (var sg in n.Subgraphs) foreach (var f in ExternalFiles(sg)) yield return f;
    }
}

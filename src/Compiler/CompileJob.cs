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
/// so a failure leaves no partial output (and an existing OUTDIR untouched). <see cref="OutputFolder"/> guards and
/// claims OUTDIR: a folder holding the input is never replaced, and a second compile into the same OUTDIR fails at once.
/// </summary>
public static class CompileJob
{
    public static CompileResult Run(string input, string outDir, IEnumerable<(IPass, IReadOnlyDictionary<string, string>)> pipeline, CompileOptions? options = null, CancellationToken ct = default)
    {
        options ??= new CompileOptions();
        outDir = Path.GetFullPath(outDir.TrimEnd('/', '\\'));
        if (File.Exists(outDir)) throw new CompileException($"output path {outDir} is a file; give a folder");
        // Never replace a folder holding the input, whatever the flags (checked again with the data files once loaded).
        OutputFolder.Guard(outDir, [input, .. SidecarPaths(input)], "output folder");
        using var claim = OutputFolder.Claim(outDir);
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any() && !options.Force)
            throw new CompileException($"output folder {outDir} exists and is not empty; use --force to replace it");
        var model = OnnxReader.Load(input);
        OutputFolder.Guard(outDir, ExternalRanges(model.Graph).Select(es => es.Path).Distinct(), "output folder");
        var source = HashSource(model, input);
        var result = PassManager.Run(model, pipeline, options.Passes, ct);
        ct.ThrowIfCancellationRequested();

        string tmp = claim.CreateTemp();
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
            claim.Commit(tmp, options.Force);
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

    /// <summary>Largest sidecar lcc copies (a tokenizer.json or tokenizer.model is tens of MiB; this is a guard against
    /// a sidecar that links to something huge, not a format limit).</summary>
    public const long SidecarCap = 512L << 20;

    /// <summary>Copies the sidecars that exist in <paramref name="sourceDir"/> through <see cref="SafeFile"/>: each must be
    /// a regular file whose real path is inside the model's folder (a sidecar linking to /proc/self/environ, a FIFO or
    /// /dev/zero is a one-line error, never read).</summary>
    private static List<string> CopySidecars(string sourceDir, string destDir)
    {
        var copied = new List<string>();
        foreach (var f in LongCtxFiles.Sidecars)
        {
            var src = Path.Combine(sourceDir, f);
            if (!File.Exists(src) && new FileInfo(src).LinkTarget is null) continue;
            SafeFile.Copy(src, Path.Combine(destDir, f), sourceDir, SidecarCap, $"sidecar {f} of the model");
            copied.Add(f);
        }
        return copied;
    }

    /// <summary>The sidecars that exist next to <paramref name="input"/>, as real paths (for the output-folder guard).</summary>
    private static IEnumerable<string> SidecarPaths(string input)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(input))!;
        foreach (var f in LongCtxFiles.Sidecars)
        {
            var p = Path.Combine(dir, f);
            if (File.Exists(p)) yield return SafeFile.RealPath(p);
        }
    }

    public static string Version => typeof(CompileJob).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>SHA-256 over the model file and the byte ranges of external data its tensors use (streamed): each
    /// distinct (file, offset, length) once, in order of file then offset. Only the ranges, never whole data files: a
    /// zero-element tensor whose location names a huge or endless file reads nothing.</summary>
    public static ManifestSource HashSource(Model model, string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var sink = new HashSink(sha);
        using (var fs = SafeFile.OpenRead(path)) fs.CopyTo(sink);
        var ranges = ExternalRanges(model.Graph)
            .DistinctBy(es => (es.Path, es.Offset, es.ByteLength))
            .OrderBy(es => es.Path, StringComparer.Ordinal).ThenBy(es => es.Offset).ThenBy(es => es.ByteLength);
        foreach (var es in ranges) es.CopyTo(sink);
        return new ManifestSource(Path.GetFullPath(path), Convert.ToHexStringLower(sha.GetHashAndReset()), sink.Bytes);
    }

    private sealed class HashSink(IncrementalHash sha) : Stream
    {
        public long Bytes { get; private set; }
        public override void Write(byte[] buffer, int offset, int count) { sha.AppendData(buffer, offset, count); Bytes += count; }
        public override void Write(ReadOnlySpan<byte> buffer) { sha.AppendData(buffer); Bytes += buffer.Length; }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => Bytes;
        public override long Position { get => Bytes; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    private static IEnumerable<ExternalSource> ExternalRanges(Graph g)
    {
        foreach (var v in g.Initializers) if (v.Const?.Source is ExternalSource es) yield return es;
        foreach (var n in g.Nodes) foreach (var sg in n.Subgraphs) foreach (var es in ExternalRanges(sg)) yield return es;
    }

}

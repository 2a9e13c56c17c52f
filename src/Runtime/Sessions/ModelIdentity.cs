using System.Security.Cryptography;
using System.Text;
using LongCtx.Contract;

namespace LongCtx.Runtime.Sessions;

/// <summary>
/// The one model hash (<see cref="LongCtxModel.ModelHash"/>) that KV snapshots carry (<see cref="KvStore.KvSnapshot.ModelHash"/>):
/// sessions' restore, the prefix cache's keys and the KV-store file all compare it. "sha256:" + the SHA-256 over the bytes
/// of the loaded graph file (model.onnx or the bare .onnx), then of its external-data companions (files in the same
/// folder named after it and a '.' or '_', e.g. model.onnx.data, model.onnx_data; in ordinal name order), each preceded
/// by its file name. Companions are read through the SafeFile gate (regular files inside the model's folder: a FIFO or a
/// symlink out of the folder is refused). Cached KV depends on every weight and on what the compiler did to the graph
/// (RoPE scaling, streaming keys cached un-rotated), so the hash covers the compiled bytes, not the source model's hash
/// in longctx.json: two compiles of one source with different pipelines get different hashes. Computed once per loaded
/// model, on first use (a streaming read: about a second per GB).
/// </summary>
public static class ModelIdentity
{
    public static string Compute(string modelPath)
    {
        string file = Path.GetFileName(modelPath);
        var dir = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        var companions = Directory.EnumerateFiles(dir)
            .Where(f => Path.GetFileName(f) is var n && n.Length > file.Length && n.StartsWith(file, StringComparison.Ordinal) && n[file.Length] is '.' or '_')
            .Order(StringComparer.Ordinal);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (var f in companions.Prepend(modelPath))
        {
            sha.AppendData(Encoding.UTF8.GetBytes(Path.GetFileName(f) + "\n"));
            // the model file was opened by the loader already; its companions must be regular files inside its folder
            using var fs = SafeFile.OpenRead(f, folder: f == modelPath ? null : dir, what: $"model hash: {Path.GetFileName(f)} of {modelPath}");
            for (int n; (n = fs.Read(buffer)) > 0;) sha.AppendData(buffer, 0, n);
        }
        return "sha256:" + Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}

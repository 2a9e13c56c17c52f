using System.Security.Cryptography;

namespace LongCtx.Runtime.Sessions;

/// <summary>
/// The model hash that KV snapshots carry (<see cref="KvStore.KvSnapshot.ModelHash"/>): "sha256:" + the SHA-256 over
/// the bytes of the loaded graph file (model.onnx or the bare .onnx) followed by its external data file
/// (&lt;model&gt;.data, when present). Cached KV depends on every weight and on what the compiler did to the graph (RoPE
/// scaling, streaming keys cached un-rotated), so the hash covers the compiled bytes, not the source model's hash in
/// longctx.json: two compiles of one source with different pipelines get different hashes. Computed once per loaded
/// model, on first use (a streaming read: about a second per GB).
/// </summary>
public static class ModelIdentity
{
    public static string Compute(string modelPath)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (var file in new[] { modelPath, modelPath + ".data" })
        {
            if (!File.Exists(file)) continue;
            using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            int n;
            while ((n = fs.Read(buffer)) > 0) sha.AppendData(buffer, 0, n);
        }
        return "sha256:" + Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}

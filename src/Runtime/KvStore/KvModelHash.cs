using System.Security.Cryptography;
using System.Text;
using LongCtx.Contract;

namespace LongCtx.Runtime.KvStore;

/// <summary>
/// The identity a KV-store file records: SHA-256 (first 16 bytes, hex) over the decoder contract's cache geometry and the
/// bytes of the model file and its external-data companions (files in the same folder named after it, e.g.
/// model.onnx.data), each read through the SafeFile gate (regular files inside the model's folder). Same weights and graph = same hash; any change to either is another model, whose KV is refused.
/// </summary>
public static class KvModelHash
{
    public static string Of(LongCtxModel model)
    {
        var c = model.Contract;
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(Encoding.UTF8.GetBytes($"lcc-kv/1 layers={c.Layers.Count} kv_heads={c.KvHeads} head_dim={c.HeadDim} kv_type={c.KvType} vocab={c.VocabSize}\n"));
        string file = Path.GetFileName(model.ModelPath);
        var dir = Path.GetDirectoryName(model.ModelPath)!;
        var companions = Directory.EnumerateFiles(dir)
            .Where(f => Path.GetFileName(f) is var n && n.Length > file.Length && n.StartsWith(file, StringComparison.Ordinal) && n[file.Length] is '.' or '_')
            .Order(StringComparer.Ordinal);
        var buffer = new byte[1 << 20];
        foreach (var f in companions.Prepend(model.ModelPath))
        {
            sha.AppendData(Encoding.UTF8.GetBytes(Path.GetFileName(f) + "\n"));
            // the model file was opened by the loader already; its companions must be regular files inside its folder
            using var fs = SafeFile.OpenRead(f, folder: f == model.ModelPath ? null : dir, what: $"KV model hash: {Path.GetFileName(f)} of {model.Name}");
            for (int n; (n = fs.Read(buffer)) > 0;) sha.AppendData(buffer, 0, n);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset().AsSpan(0, 16));
    }
}

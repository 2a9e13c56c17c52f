using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Config;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using LongCtx.Passes;
using LongCtx.Passes.Rope;
using LongCtx.Compiler.Passes;
using NUnit.Framework;

namespace LongCtx.Tests.Foundation;

/// <summary>config.json is read in one place (<see cref="ModelConfig"/>); the architecture card and the RoPE passes read the same record.</summary>
[TestFixture]
public sealed class ModelConfigTests
{
    [Test]
    public void ReadsHuggingFaceFieldsAndSynonyms()
    {
        var c = ModelConfig.Parse("""
            {"num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096, "head_dim": 128, "rope_theta": 500000.0,
             "partial_rotary_factor": 0.5, "max_position_embeddings": 131072,
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
            """, "config.json");
        Assert.That((c.NumAttentionHeads, c.NumKeyValueHeads, c.HiddenSize, c.HeadDim, c.RopeTheta, c.PartialRotaryFactor, c.MaxPositionEmbeddings, c.TrainedContext),
            Is.EqualTo(((int?)32, (int?)8, (int?)4096, (int?)128, (double?)500000, (double?)0.5, (int?)131072, (int?)131072)));
        Assert.That(c.RopeScaling, Is.Not.Null);
        Assert.That((c.RopeScaling!.Type, c.RopeScaling.Factor, c.RopeScaling.LowFreqFactor, c.RopeScaling.HighFreqFactor, c.RopeScaling.OriginalMaxPositionEmbeddings),
            Is.EqualTo(("llama3", (double?)8, (double?)1, (double?)4, (int?)8192)));

        var gpt = ModelConfig.Parse("""{"n_head": 12, "n_embd": 768, "original_max_position_embeddings": 4096, "max_position_embeddings": 131072, "trained_max_position": 256.0}""", "x");
        Assert.That((gpt.NumAttentionHeads, gpt.HiddenSize, gpt.TrainedContext, gpt.RopeScaling), Is.EqualTo(((int?)12, (int?)768, (int?)256, (RopeScalingConfig?)null)),
            "trained_max_position first, then original_max_position_embeddings, then max_position_embeddings; 256.0 is an integer");
        Assert.That(ModelConfig.Parse("[1, 2]", "x").NumAttentionHeads, Is.Null);
    }

    [Test]
    public void FactorFilesAtTopLevelOrUnderRopeScaling()
    {
        var top = ModelConfig.Parse("""{"short_factor": [1, 2], "long_factor": [3, 4]}""", "f.json").RopeScaling!;
        Assert.That((top.ShortFactor, top.LongFactor), Is.EqualTo((new[] { 1.0, 2.0 }, new[] { 3.0, 4.0 })));
        var nested = ModelConfig.Parse("""{"rope_scaling": {"type": "longrope", "short_factor": [1], "long_factor": [2]}}""", "f.json").RopeScaling!;
        Assert.That((nested.Type, nested.ShortFactor, nested.LongFactor), Is.EqualTo(("longrope", new[] { 1.0 }, new[] { 2.0 })));
    }

    [Test]
    public void MissingOrBrokenFiles()
    {
        var dir = Directory.CreateTempSubdirectory("lcc-config").FullName;
        var model = Path.Combine(dir, "model.onnx");
        Assert.That(ModelConfig.Beside(model), Is.Null);
        Assert.That(ModelConfig.Beside(null), Is.Null);
        File.WriteAllText(Path.Combine(dir, "config.json"), "{ not json");
        Assert.That(ModelConfig.Beside(model), Is.Null, "a broken config.json beside a model is ignored, as before");
        var ex = Assert.Throws<ArgumentException>(() => ModelConfig.Load(Path.Combine(dir, "config.json")));
        Assert.That(ex!.Message, Does.Contain("config.json").And.Contain("not valid JSON"));
        var ex2 = Assert.Throws<ArgumentException>(() => LongRope.ReadFactors(Path.Combine(dir, "config.json")));
        Assert.That(ex2!.Message, Does.Contain("config.json"));
        Directory.Delete(dir, true);
    }

    /// <summary>The card and the RoPE pass both take the trained context from the same record.</summary>
    [Test]
    public void CardAndRopePassReadTheSameTrainedContext()
    {
        var dir = Directory.CreateTempSubdirectory("lcc-config").FullName;
        var c = new DecoderConfig(Layers: 1, MaxPositions: 64);
        var path = Path.Combine(dir, "model.onnx");
        OnnxWriter.Save(Builders.Build("torch", c), path);
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"rope_theta": 10000, "num_attention_heads": 4, "trained_max_position": 48}""");
        var m = OnnxReader.Load(path);
        Assert.That(ArchitectureCard.FromModelIo(m, out _)!.TrainedContext, Is.EqualTo(48));
        var r = PassManager.Run(m, [(Pipelines.Create("rope-linear"), new Dictionary<string, string>())], new PassManagerOptions { TargetContext = 96 });
        Assert.That(r.Passes.Single().Notes.Last(), Does.Contain("trained 48"));
        Directory.Delete(dir, true);
    }
}

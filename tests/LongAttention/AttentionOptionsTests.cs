using LongCtx.Cli.Commands;
using LongCtx.Passes;
using NUnit.Framework;

namespace LongCtx.Tests.LongAttention;

/// <summary>lcc compile --attention parsing into the lower-attention step, and where the step sits in the pipeline.</summary>
[TestFixture]
public sealed class AttentionOptionsTests
{
    [Test]
    public void ParsesPatternOptionsAndLayerLists()
    {
        var s = AttentionOptions.Parse("dca:chunk=192,local=16,layers=0-1,3", 256)!;
        Assert.That(s.Pass, Is.EqualTo("lower-attention"));
        Assert.That(s.Options, Is.EquivalentTo(new Dictionary<string, string>
        {
            ["pattern"] = "dca", ["chunk"] = "192", ["local"] = "16", ["layers"] = "0-1,3", ["trained-context"] = "256",
        }));
        Assert.That(AttentionOptions.Parse("streaming", null)!.Options, Is.EquivalentTo(new Dictionary<string, string> { ["pattern"] = "streaming" }));
        Assert.That(AttentionOptions.Parse(null, 256), Is.Null);
    }

    [TestCase("sparse", "unknown pattern; valid: dense, streaming, dca")]
    [TestCase("streaming:chunk=4", "unknown option 'chunk'; valid for streaming: sink, window, layers")]
    [TestCase("dca:window=4", "unknown option 'window'; valid for dca: chunk, local, layers")]
    [TestCase("dense:4", "is not k=v")]
    [TestCase("dense,layers=0-3", "options follow a colon: PATTERN:k=v")]
    public void RejectsBadInput(string spec, string message)
    {
        var ex = Assert.Throws<ArgumentException>(() => AttentionOptions.Parse(spec, null))!;
        Assert.That(ex.Message, Does.Contain(message));
    }

    [Test]
    public void TrainedContextWithoutRope_IsAcceptedOnlyWithAttention()
    {
        Assert.That(RopeOptions.Parse(null, null, 256, false, attention: true), Is.Empty);
        Assert.Throws<ArgumentException>(() => RopeOptions.Parse(null, null, 256, false));
    }

    [Test]
    public void LoweringRunsAfterCanonicalisationAndRope()
    {
        var rope = RopeOptions.Parse("yarn", 8192, 256, false);
        var steps = Pipelines.WithMethods(rope, AttentionOptions.Parse("dca", 256));
        Assert.That(steps.Select(s => s.Pass), Is.EqualTo(new[] { "dce", "rope-yarn", "canonicalize-noise", "canonicalize-attention", "dce", "lower-attention", "dedup-initializers" }));
        Assert.That(Pipelines.WithMethods(rope, null), Is.EqualTo(Pipelines.WithMethods(rope)));
    }
}
